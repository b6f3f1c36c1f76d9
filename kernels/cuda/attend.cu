// Split-context decode attention over the baseline codecs' compressed caches (see kernels/cuda/launch.h).
// One thread block (kThreads) per (query, chunk):
//   1. the query is staged in shared memory; each warp takes every kWarps-th token of the chunk and its
//      lanes dot channels j = lane, lane+32, ... with the key row, dequantized on load (kernels/cuda/layer_view.h load(),
//      the same math the CPU path decodes with); logits ŝ = softcap(scale·<q,k̂>) go to shared memory;
//   2. block max m and p_t = exp(ŝ_t - m), l = Σ p_t (max-shifted: no overflow whatever the logits);
//      rows of a weight class (token selection, kernels/cuda/layer_view.h RowClasses) add the class's bias to ŝ_t and
//      enter the value sum with p_t·vfac;
//   3. thread j sums Σ_t p_t·v̂_tj for its channels (loads coalesced across threads);
// packed variable-length heads (LayerView::row_off, the eviction codecs) are a third template flag: every head
// is planned over the longest one's C rows and a chunk past a head's end is an empty partial;
// the partial (m, l, o) of each chunk goes to `work` and attend_merge combines the chunks of a query with
// merge_factors (kernels/cuda/layer_view.h). K and V formats are template parameters (traits of formats.h),
// so each element's dequantization is resolved at compile time.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/chunk.cuh"
#include "kernels/cuda/launch.h"
#include "kvb/core/attn_math.h"
#include "kvb/cuda/kernel.h"

namespace kvb::kernels::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

/// load() with the format fixed at compile time: the traits' load, or the fp16 tail.
template <class F>
__device__ __forceinline__ float load_as(const Part& p, int64_t C, int d, int g, int64_t t, int j) {
  if (t >= p.q_tokens) {
    const int64_t tail = C - p.q_tokens;
    return f16_to_f32(p.tail[(static_cast<int64_t>(g) * tail + (t - p.q_tokens)) * d + j]);
  }
  return F::load(p, d, g, t, j);
}

/// kPacked: L.row_off is set (KF = VF = F16Rows): head g's rows are its packed fp16 range, `rows` of them
/// (layer_view.h); a chunk at or past its end has n <= 0 rows and leaves the empty partial (m = −inf, l = 0,
/// o = 0) that attend_merge skips, and its logits slots [rows, C) read −inf.
template <class KF, class VF, bool kPacked>
__global__ void __launch_bounds__(kThreads) attend_split(AttendArgs a) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int d = a.L.d;
  const int64_t C = a.L.C;
  float* qs = sh;               // [d]
  float* s = sh + d;            // [chunk]
  float* red = s + a.chunk;     // [kWarps]
  const int qi = blockIdx.x, split = blockIdx.y;
  const int g = a.q_head[qi];
  const int64_t t0 = static_cast<int64_t>(split) * a.chunk;
  const int64_t rows = kPacked ? head_rows(a.L, g) : C;
  const int n = static_cast<int>(max(int64_t{0}, min(static_cast<int64_t>(a.chunk), rows - t0)));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  auto key = [&](int64_t t, int j) {
    if constexpr (kPacked) return load_packed(a.L, a.L.k, g, t, j);
    else return load_as<KF>(a.L.k, C, d, g, t, j);
  };
  auto value = [&](int64_t t, int j) {
    if constexpr (kPacked) return load_packed(a.L, a.L.v, g, t, j);
    else return load_as<VF>(a.L.v, C, d, g, t, j);
  };
  for (int j = threadIdx.x; j < d; j += kThreads) qs[j] = a.q[static_cast<int64_t>(qi) * d + j];
  __syncthreads();

  for (int i = warp; i < n; i += kWarps) {
    float acc = 0.f;
    for (int j = lane; j < d; j += 32) acc += qs[j] * key(t0 + i, j);
    acc = warp_sum(acc);
    if (lane == 0) {
      const float logit = softcap_f(acc * a.softmax_scale, a.softcap);
      const int cls = row_class(a.L.rows, g, t0 + i);
      s[i] = cls < 0 ? logit : logit + a.L.rows.bias[cls];  // a weighted row's multiplicity
      if (a.logits) a.logits[static_cast<int64_t>(qi) * C + t0 + i] = logit;
    }
  }
  if constexpr (kPacked) {
    // The chunk's slots past the head's last row: no row there (layer_view.h LayerView).
    const int64_t full = min(static_cast<int64_t>(a.chunk), C - t0);
    if (a.logits)
      for (int64_t i = n + threadIdx.x; i < full; i += kThreads) a.logits[static_cast<int64_t>(qi) * C + t0 + i] = -INFINITY;
  }
  __syncthreads();

  float m, l;
  chunk_softmax<kThreads>(s, n, red, &m, &l, [&](int i) {
    const int cls = row_class(a.L.rows, g, t0 + i);
    return cls < 0 ? 1.f : a.L.rows.vfac[cls];  // the value sum's weight; l keeps the plain p
  });
  chunk_values<kThreads>(s, n, d, m, l, a.work + (static_cast<int64_t>(qi) * a.splits + split) * (d + 2),
                         [&](int i, int j) { return value(t0 + i, j); });
}

/// out[qi] = Σ_split e^{m_s - M} o_s / Σ_split e^{m_s - M} l_s, merged pairwise with merge_factors.
__global__ void __launch_bounds__(kThreads) attend_merge(const float* work, int splits, int d, float* out) {
  const int qi = blockIdx.x;
  const float* base = work + static_cast<int64_t>(qi) * splits * (d + 2);
  for (int j = threadIdx.x; j < d; j += kThreads) {
    float m = -INFINITY, l = 0.f, o = 0.f;
    for (int sp = 0; sp < splits; ++sp) {
      const float* p = base + static_cast<int64_t>(sp) * (d + 2);
      const MergeFactors f = merge_factors(m, p[0]);
      l = l * f.a + p[1] * f.b;
      o = o * f.a + p[2 + j] * f.b;
      m = f.m;
    }
    out[static_cast<int64_t>(qi) * d + j] = l > 0.f ? o / l : 0.f;
  }
}

template <class KF, class VF, bool kPacked = false>
cudaError_t launch_pair(const AttendArgs& a, cudaStream_t st) {
  const size_t shmem = (static_cast<size_t>(a.L.d) + a.chunk + kWarps) * sizeof(float);
  if (a.splits > 0) {  // 0 splits (C = 0: every packed head empty): the merge alone writes zeros
    KVB_LAUNCH(dim3(a.nq, a.splits), kThreads, shmem, st, attend_split<KF, VF, kPacked>)(a);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return launch_attend_merge(a.work, a.nq, a.splits, a.L.d, a.out, st);
}

}  // namespace

cudaError_t launch_attend_merge(const float* work, int nq, int splits, int d, float* out, cudaStream_t st) {
  if (nq <= 0) return cudaSuccess;
  KVB_LAUNCH(nq, kThreads, 0, st, attend_merge)(work, splits, d, out);
  return cudaGetLastError();
}

int64_t plan_attend(int nq, int64_t C, int d, int* chunk, int* splits) {
  // Aim for >= 2048 blocks (a few waves on 132 SMs) without chunks shorter than 64 tokens.
  int64_t c = 64;
  while (c < kMaxChunk && static_cast<int64_t>(nq) * ((C + c - 1) / c) > 2048) c *= 2;
  *chunk = static_cast<int>(c);
  *splits = static_cast<int>((C + c - 1) / c);
  return static_cast<int64_t>(nq) * *splits * (d + 2);
}

cudaError_t launch_attend(const AttendArgs& a, cudaStream_t st) {
  if (a.nq <= 0) return cudaSuccess;
  if (a.L.d > kMaxHeadDim || a.chunk <= 0 || a.chunk > kMaxChunk) return cudaErrorInvalidValue;
  if (a.L.row_off) {  // packed variable-length heads: fp16 rows only, no weight classes (layer_view.h)
    if (a.L.k.q_tokens != 0 || a.L.v.q_tokens != 0 || a.L.rows.n != 0) return cudaErrorInvalidValue;
    return launch_pair<F16Rows, F16Rows, true>(a, st);
  }
  const Fmt kf = a.L.k.q_tokens > 0 ? a.L.k.fmt : Fmt::kF16;
  const Fmt vf = a.L.v.q_tokens > 0 ? a.L.v.fmt : Fmt::kF16;
  // Every (K, V) pair of the traits table (formats.h) has its kernel; an id outside the table is an error.
  cudaError_t e = cudaErrorInvalidValue;
  visit_format(kf, [&](auto k) {
    visit_format(vf, [&](auto v) { e = launch_pair<decltype(k), decltype(v)>(a, st); });
  });
  return e;
}

}  // namespace kvb::kernels::gpu
