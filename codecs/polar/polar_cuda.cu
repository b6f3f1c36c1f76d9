// CUDA kernels of polarquant (see polar_kernels.h). The encoder is polar_math.h's float64 arithmetic in the
// CPU encoder's order (polar_cpu.cpp encode_head), so the stored bytes equal the CPU's; attention scores and
// sums straight from the codes in the rotated domain.
#include <cuda_runtime.h>

#include "codecs/polar/polar_kernels.h"
#include "codecs/polar/polar_math.h"
#include "kernels/cuda/chunk.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/formats/fp16.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/half.h"
#include "kvb/cuda/kernel.h"

namespace kvb::codecs::polar::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

using kernels::gpu::warp_sum;

/// One block per row (KV head g, token t): y = Π [x; 0], the levels (ping-pong between y and w, a barrier
/// each), the fp16 radii and the packed codes. Shared: encode_shared_bytes(lay).
__global__ void __launch_bounds__(kThreads) encode_rows(LayerView L, PartView P, const float* x) {
  KVB_DYNAMIC_SHARED(unsigned char, smem);
  const Layout& lay = L.lay;
  const int dp = lay.dp, d = L.d;
  double* y = reinterpret_cast<double*>(smem);             // [dp]
  double* w = y + dp;                                      // [dp/2]
  uint8_t* code = reinterpret_cast<uint8_t*>(w + dp / 2);  // [angles], level-major
  uint8_t* row = code + lay.angles;                        // [row_bytes]
  const int64_t r = blockIdx.x;
  const int g = static_cast<int>(r / L.C);
  const float* xr = x + r * d;
  const double* pit = P.pit + static_cast<int64_t>(g) * dp * dp;
  // y_i = Σ_{j<d} Πᵀ[j][i]·x_j, j ascending, each product and sum rounded once: the CPU's row updates.
  for (int i = threadIdx.x; i < dp; i += kThreads) {
    double acc = 0;
    for (int j = 0; j < d; ++j)
      acc = dadd_rn(acc, dmul_rn(pit[static_cast<int64_t>(j) * dp + i], static_cast<double>(xr[j])));
    y[i] = acc;
  }
  for (int b = threadIdx.x; b < lay.row_bytes; b += kThreads) row[b] = 0;
  __syncthreads();
  double* in = y;
  double* out = w;
  for (int l = 1; l <= lay.levels; ++l) {
    const int b = lay.bits[l - 1];
    const double* bcs = L.bcs + 2 * lay.cb_off[l - 1];
    uint8_t* cl = code + lay.angle_off[l - 1];
    for (int i = threadIdx.x; i < lay.count[l - 1]; i += kThreads)
      cl[i] = static_cast<uint8_t>(encode_node(l, in[2 * i], in[2 * i + 1], bcs, (1 << b) - 1, &out[i]));
    __syncthreads();  // level l + 1 reads this level's norms
    double* t = in;
    in = out, out = t;
  }
  for (int i = threadIdx.x; i < lay.radii; i += kThreads)
    P.radii[r * lay.radii + i] = kernels::f32_to_f16_sat(static_cast<float>(in[i]));
  if (threadIdx.x == 0)  // codes share bytes: one writer
    for (int l = 1; l <= lay.levels; ++l) {
      const int b = lay.bits[l - 1];
      for (int i = 0; i < lay.count[l - 1]; ++i)
        put_code(row, lay.bit_off[l - 1] + i * b, b, code[lay.angle_off[l - 1] + i]);
    }
  __syncthreads();
  uint8_t* dst = P.codes + r * lay.row_bytes;
  for (int b = threadIdx.x; b < lay.row_bytes; b += kThreads) dst[b] = row[b];
}

/// qr[qi][dp] = Π_K [q; 0] (float32), after the partials and before the rotated outputs. Shared: q [d].
__global__ void __launch_bounds__(kThreads) transform_queries(LayerView L, Attend a, float* qr_all) {
  KVB_DYNAMIC_SHARED(float, qs);
  const int qi = blockIdx.x, dp = L.lay.dp, d = L.d;
  const int g = a.q_head[qi];
  for (int j = threadIdx.x; j < d; j += kThreads) qs[j] = a.q[static_cast<int64_t>(qi) * d + j];
  __syncthreads();
  const float* pi = L.k.pi32 + static_cast<int64_t>(g) * dp * dp;
  for (int i = threadIdx.x; i < dp; i += kThreads) {
    float acc = 0.f;
    for (int j = 0; j < d; ++j) acc += pi[static_cast<int64_t>(i) * dp + j] * qs[j];
    qr_all[static_cast<int64_t>(qi) * dp + i] = acc;
  }
}

/// Element j of the decoded rotated row r (= g·C + t) of part P.
__device__ __forceinline__ float row_elem(const LayerView& L, const PartView& P, int64_t r, int j) {
  return decode_elem(L.lay, P.codes + r * L.lay.row_bytes, P.radii + r * L.lay.radii, L.cs, j);
}

/// One block per (query, chunk): logits from the key codes, softmax, the rotated value sum as a partial.
/// Shared: qr [dp], s [chunk], red [2·kWarps].
__global__ void __launch_bounds__(kThreads) attend_split(LayerView L, Attend a, const float* qr_all) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int dp = L.lay.dp;
  const int64_t C = L.C;
  float* qr = sh;            // [dp]
  float* s = qr + dp;        // [chunk]
  float* red = s + a.chunk;  // [2·kWarps]
  const int qi = blockIdx.x, split = blockIdx.y;
  const int g = a.q_head[qi];
  const int64_t t0 = static_cast<int64_t>(split) * a.chunk;
  const int n = static_cast<int>(min(static_cast<int64_t>(a.chunk), C - t0));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int j = threadIdx.x; j < dp; j += kThreads) qr[j] = qr_all[static_cast<int64_t>(qi) * dp + j];
  __syncthreads();
  const int64_t r0 = static_cast<int64_t>(g) * C + t0;
  for (int i = warp; i < n; i += kWarps) {
    float acc = 0.f;
    for (int j = lane; j < dp; j += 32) acc += qr[j] * row_elem(L, L.k, r0 + i, j);
    const float e = warp_sum(acc);
    if (lane == 0) {
      const float logit = softcap_f(a.softmax_scale * e, a.softcap);
      s[i] = logit;
      if (a.logits) a.logits[static_cast<int64_t>(qi) * C + t0 + i] = logit;
    }
  }
  __syncthreads();
  float m, l;
  kernels::gpu::chunk_softmax<kThreads>(s, n, red, &m, &l, [](int) { return 1.f; });
  kernels::gpu::chunk_values<kThreads>(s, n, dp, m, l, a.work + (static_cast<int64_t>(qi) * a.splits + split) * (dp + 2),
                                      [&](int i, int j) { return row_elem(L, L.v, r0 + i, j); });
}

/// o[qi][0, d) = (Π_Vᵀ acc)[0, d) from the merged rotated row (the padded coordinates dropped). Shared: acc [dp].
__global__ void __launch_bounds__(kThreads) untransform(LayerView L, Attend a, const float* rot_all) {
  KVB_DYNAMIC_SHARED(float, acc);
  const int qi = blockIdx.x, dp = L.lay.dp, d = L.d;
  const int g = a.q_head[qi];
  for (int i = threadIdx.x; i < dp; i += kThreads) acc[i] = rot_all[static_cast<int64_t>(qi) * dp + i];
  __syncthreads();
  const float* pi = L.v.pi32 + static_cast<int64_t>(g) * dp * dp;
  for (int j = threadIdx.x; j < d; j += kThreads) {
    float v = 0.f;
    for (int i = 0; i < dp; ++i) v += pi[static_cast<int64_t>(i) * dp + j] * acc[i];
    a.out[static_cast<int64_t>(qi) * d + j] = v;
  }
}

}  // namespace

cudaError_t launch_encode(const LayerView& L, const PartView& P, int heads, const float* x, cudaStream_t s) {
  const int64_t rows = static_cast<int64_t>(heads) * L.C;
  if (rows == 0) return cudaSuccess;
  KVB_LAUNCH(static_cast<unsigned>(rows), kThreads, encode_shared_bytes(L.lay), s, encode_rows)(L, P, x);
  return cudaGetLastError();
}

int64_t plan_attend(const LayerView& L, int nq, int* chunk, int* splits) {
  const int64_t parts = kernels::gpu::plan_attend(nq, L.C, L.lay.dp, chunk, splits);
  return parts + 2 * static_cast<int64_t>(nq) * L.lay.dp;
}

cudaError_t launch_attend(const LayerView& L, const Attend& a, cudaStream_t s) {
  if (a.nq <= 0) return cudaSuccess;
  if (a.chunk <= 0 || a.chunk > kernels::gpu::kMaxChunk) return cudaErrorInvalidValue;
  const int dp = L.lay.dp;
  float* qr = a.work + static_cast<int64_t>(a.nq) * a.splits * (dp + 2);
  float* rot = qr + static_cast<int64_t>(a.nq) * dp;
  KVB_LAUNCH(a.nq, kThreads, sizeof(float) * L.d, s, transform_queries)(L, a, qr);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const size_t shmem = (static_cast<size_t>(dp) + a.chunk + 2 * kWarps) * sizeof(float);
  KVB_LAUNCH(dim3(a.nq, a.splits), kThreads, shmem, s, attend_split)(L, a, qr);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  if ((e = kernels::gpu::launch_attend_merge(a.work, a.nq, a.splits, dp, rot, s)) != cudaSuccess) return e;
  KVB_LAUNCH(a.nq, kThreads, sizeof(float) * dp, s, untransform)(L, a, rot);
  return cudaGetLastError();
}

}  // namespace kvb::codecs::polar::gpu
