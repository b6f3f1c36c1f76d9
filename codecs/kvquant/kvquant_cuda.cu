// CUDA kernels of kvquant (see kvquant_kernels.h). The encoder runs kvquant_row.h's steps in the CPU encoder's
// order (kvquant_math.cpp encode), so the stored bytes equal the CPU's; attention decodes the codes and
// outliers, re-applies RoPE and scores in one pass per chunk.
#include <cuda_runtime.h>

#include "codecs/kvquant/kvquant_kernels.h"
#include "codecs/kvquant/kvquant_row.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/chunk.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/formats/uniform.h"
#include "kvb/core/attn_math.h"
#include "kvb/cuda/kernel.h"

namespace kvb::codecs::kvquant::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxD = kernels::gpu::kMaxHeadDim;
constexpr int kRowBlock = 64;  ///< rows per block-index entry (kvquant_codec.h sp_block)

using kernels::gpu::warp_sum;
using kernels::rope::Style;

__device__ __forceinline__ int count_at(const PartView& P, int64_t r) {
  const uint8_t* p = P.count + r * P.count_bytes;
  return P.count_bytes == 1 ? p[0] : p[0] | (p[1] << 8);
}
__device__ __forceinline__ void put_count(const PartView& P, int64_t r, int n) {
  uint8_t* p = P.count + r * P.count_bytes;
  p[0] = static_cast<uint8_t>(n & 0xff);
  if (P.count_bytes == 2) p[1] = static_cast<uint8_t>(n >> 8);
}
__device__ __forceinline__ int index_at(const PartView& P, uint64_t i) {
  const uint8_t* p = P.index + i * P.index_bytes;
  return P.index_bytes == 1 ? p[0] : p[0] | (p[1] << 8);
}
__device__ __forceinline__ void put_outlier(const PartView& P, uint64_t i, int c, float x) {
  uint8_t* p = P.index + i * P.index_bytes;
  p[0] = static_cast<uint8_t>(c & 0xff);
  if (P.index_bytes == 2) p[1] = static_cast<uint8_t>(c >> 8);
  P.value[i] = kernels::f32_to_f16_sat(x);
}

/// x[d] = key row r (token t) un-rotated to its pre-RoPE values (identity without RoPE), as the CPU encoder.
__device__ void key_row(const LayerView& L, const float* k, int64_t r, int64_t t, float* x) {
  const float* src = k + r * L.d;
  for (int c = 0; c < L.d; ++c) x[c] = src[c];
  const int P = L.d / 2;
  if (L.rope != 0)
    kernels::rope::rotate_row(x, static_cast<Style>(L.rope), P, L.unrot_c + t * P, L.unrot_s + t * P, -1.f);
}

/// First outlier of row t of head g within the head's list (the block index plus the counts before t).
__device__ uint64_t first_in_head(const PartView& P, int64_t C, int g, int64_t t) {
  const int64_t b = t / kRowBlock;
  uint64_t o = P.block[static_cast<int64_t>(g) * P.blocks + b];
  for (int64_t rr = kRowBlock * b; rr < t; ++rr) o += static_cast<uint64_t>(count_at(P, static_cast<int64_t>(g) * C + rr));
  return o;
}

__global__ void __launch_bounds__(kThreads) encode_rows(LayerView L, const float* k, const float* v) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= static_cast<int64_t>(L.H) * L.C) return;
  const int d = L.d;
  const int g = static_cast<int>(r / L.C);
  const int64_t t = r % L.C;
  const bool sparse = L.sparse != 0;
  float x[kMaxD];
  // Keys: un-rotate, normalize per channel, code or count as an outlier.
  key_row(L, k, r, t, x);
  const float* nrm = L.k_norm + static_cast<int64_t>(g) * d * 2;
  uint8_t* krow = L.k.codes + r * L.k.row_bytes;
  for (int b = 0; b < L.k.row_bytes; ++b) krow[b] = 0;
  int nk = 0;
  for (int c = 0; c < d; ++c) {
    const float y = key_normalized(x[c], nrm[2 * c], nrm[2 * c + 1]);
    if (key_outlier(sparse, y)) {
      ++nk;
      continue;
    }
    kernels::uq::pack_code(krow, c, L.k.bits, nearest(L.k.bounds, L.k.levels_n, y));
  }
  put_count(L.k, r, nk);
  // Values: the row's quantiles and lower median from its sorted copy, offset/range from the inliers.
  const float* vr = v + r * d;
  float hi = HUGE_VALF, lo = -HUGE_VALF, mx = -HUGE_VALF, mn = HUGE_VALF;
  if (sparse) {
    for (int c = 0; c < d; ++c) {  // insertion sort (d <= kMaxD)
      const float a = vr[c];
      int j = c;
      for (; j > 0 && x[j - 1] > a; --j) x[j] = x[j - 1];
      x[j] = a;
    }
    hi = static_cast<float>(quantile_sorted(x, d, L.q_hi));
    lo = static_cast<float>(quantile_sorted(x, d, L.q_lo));
    mx = mn = x[(d - 1) / 2];
  }
  for (int c = 0; c < d; ++c)
    if (!value_outlier(sparse, vr[c], hi, lo)) {
      mx = fmaxf(mx, vr[c]);
      mn = fminf(mn, vr[c]);
    }
  uint16_t* sc = L.v_scale + r * 2;
  value_scale(mx, mn, sc);
  const float off = f16_to_f32(sc[0]), rng = f16_to_f32(sc[1]);
  uint8_t* vrow = L.v.codes + r * L.v.row_bytes;
  for (int b = 0; b < L.v.row_bytes; ++b) vrow[b] = 0;
  int nv = 0;
  for (int c = 0; c < d; ++c) {
    if (value_outlier(sparse, vr[c], hi, lo)) {
      ++nv;
      continue;
    }
    kernels::uq::pack_code(vrow, c, L.v.bits, nearest(L.v.bounds, L.v.levels_n, value_normalized(vr[c], off, rng)));
  }
  put_count(L.v, r, nv);
  L.v_thresh[2 * r] = hi;
  L.v_thresh[2 * r + 1] = lo;
}

/// One thread per (part, head): block index and total; then thread 0 the head offsets of both parts.
__global__ void scan_counts(LayerView L) {
  KVB_DYNAMIC_SHARED(uint64_t, tot);  // [2][H]
  const int part = threadIdx.x / L.H, g = threadIdx.x % L.H;
  const PartView& P = part == 0 ? L.k : L.v;
  uint64_t run = 0;
  for (int64_t t = 0; t < L.C; ++t) {
    if (t % kRowBlock == 0) P.block[static_cast<int64_t>(g) * P.blocks + t / kRowBlock] = static_cast<uint32_t>(run);
    run += static_cast<uint64_t>(count_at(P, static_cast<int64_t>(g) * L.C + t));
  }
  tot[threadIdx.x] = run;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int p = 0; p < 2; ++p) {
    const PartView& Q = p == 0 ? L.k : L.v;
    Q.heads[0] = 0;
    for (int h = 0; h < L.H; ++h) Q.heads[h + 1] = Q.heads[h] + tot[p * L.H + h];
  }
}

__global__ void __launch_bounds__(kThreads) write_outliers(LayerView L, const float* k, const float* v) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= static_cast<int64_t>(L.H) * L.C || !L.sparse) return;
  const int d = L.d;
  const int g = static_cast<int>(r / L.C);
  const int64_t t = r % L.C;
  float x[kMaxD];
  key_row(L, k, r, t, x);
  const float* nrm = L.k_norm + static_cast<int64_t>(g) * d * 2;
  uint64_t o = L.k.heads[g] + first_in_head(L.k, L.C, g, t);
  for (int c = 0; c < d; ++c)
    if (key_outlier(true, key_normalized(x[c], nrm[2 * c], nrm[2 * c + 1]))) put_outlier(L.k, o++, c, x[c]);
  const float* vr = v + r * d;
  const float hi = L.v_thresh[2 * r], lo = L.v_thresh[2 * r + 1];
  o = L.v.heads[g] + first_in_head(L.v, L.C, g, t);
  for (int c = 0; c < d; ++c)
    if (value_outlier(true, vr[c], hi, lo)) put_outlier(L.v, o++, c, vr[c]);
}

/// One block per (query, chunk).
__global__ void __launch_bounds__(kThreads) attend_split(LayerView L, Attend a) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int d = L.d, P = d / 2;
  const int64_t C = L.C;
  float* q = sh;                 // [d]
  float* s = q + d;              // [chunk]
  float* red = s + a.chunk;      // [2·kWarps]
  float* xw = red + 2 * kWarps;  // [kWarps][d] decoded key rows
  uint32_t* offk = reinterpret_cast<uint32_t*>(xw + kWarps * d);  // [chunk + 1] first outlier of each row
  uint32_t* offv = offk + a.chunk + 1;
  const int qi = blockIdx.x, split = blockIdx.y;
  const int g = a.q_head[qi];
  const int64_t t0 = static_cast<int64_t>(split) * a.chunk;
  const int n = static_cast<int>(min(static_cast<int64_t>(a.chunk), C - t0));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t r0 = static_cast<int64_t>(g) * C + t0;
  for (int j = threadIdx.x; j < d; j += kThreads) q[j] = a.q[static_cast<int64_t>(qi) * d + j];
  if (threadIdx.x == 0 || threadIdx.x == 32) {  // the chunk's outlier offsets (keys by warp 0, values by warp 1)
    const PartView& Pt = threadIdx.x == 0 ? L.k : L.v;
    uint32_t* off = threadIdx.x == 0 ? offk : offv;
    uint32_t o = static_cast<uint32_t>(first_in_head(Pt, C, g, t0));
    for (int i = 0; i < n; ++i) {
      off[i] = o;
      o += static_cast<uint32_t>(count_at(Pt, r0 + i));
    }
    off[n] = o;
  }
  __syncthreads();
  const float* nrm = L.k_norm + static_cast<int64_t>(g) * d * 2;
  const uint64_t kh = L.k.heads[g], vh = L.v.heads[g];
  const Style st = static_cast<Style>(L.rope);
  float* x = xw + warp * d;
  for (int i = warp; i < n; i += kWarps) {
    const int64_t t = t0 + i;
    const uint8_t* row = L.k.codes + (r0 + i) * L.k.row_bytes;
    for (int c = lane; c < d; c += 32)
      x[c] = nrm[2 * c] + nrm[2 * c + 1] * L.k.levels[kernels::uq::unpack_code(row, c, L.k.bits)];
    __syncwarp();
    for (uint32_t j = offk[i] + lane; j < offk[i + 1]; j += 32)
      x[index_at(L.k, kh + j)] = f16_to_f32(L.k.value[kh + j]);
    __syncwarp();
    float acc = 0.f;
    if (st == Style::kNone) {
      for (int c = lane; c < d; c += 32) acc += q[c] * x[c];
    } else {
      const float* cc = L.coarse_c + (t / kRowBlock) * P;
      const float* cs = L.coarse_s + (t / kRowBlock) * P;
      const float* fc = L.fine_c + (t % kRowBlock) * P;
      const float* fs = L.fine_s + (t % kRowBlock) * P;
      for (int p = lane; p < P; p += 32) {
        float c, sn;
        kernels::rope::add_angles(cc[p], cs[p], fc[p], fs[p], &c, &sn);
        const int ia = kernels::rope::pair_a(st, P, p), ib = kernels::rope::pair_b(st, P, p);
        float xa = x[ia], xb = x[ib];
        kernels::rope::rotate_pair(xa, xb, c, sn);
        acc += q[ia] * xa + q[ib] * xb;
      }
      if ((d & 1) && lane == 0) acc += q[d - 1] * x[d - 1];  // an odd head_dim's last channel is not rotated
    }
    const float e = warp_sum(acc);
    if (lane == 0) {
      const float logit = softcap_f(a.softmax_scale * e, a.softcap);
      s[i] = logit;
      if (a.logits) a.logits[static_cast<int64_t>(qi) * C + t] = logit;
    }
    __syncwarp();  // every lane is done with x before the next row overwrites it
  }
  __syncthreads();
  float m, l;
  kernels::gpu::chunk_softmax<kThreads>(s, n, red, &m, &l, [](int) { return 1.f; });
  kernels::gpu::chunk_values<kThreads>(
      s, n, d, m, l, a.work + (static_cast<int64_t>(qi) * a.splits + split) * (d + 2), [&](int i, int j) {
        const int64_t r = r0 + i;
        const uint16_t* sc = L.v_scale + r * 2;
        float val = f16_to_f32(sc[0]) +
                    f16_to_f32(sc[1]) * L.v.levels[kernels::uq::unpack_code(L.v.codes + r * L.v.row_bytes, j, L.v.bits)];
        for (uint32_t o = offv[i]; o < offv[i + 1]; ++o)
          if (index_at(L.v, vh + o) == j) val = f16_to_f32(L.v.value[vh + o]);
        return val;
      });
}

unsigned row_blocks(const LayerView& L) {
  return static_cast<unsigned>((static_cast<int64_t>(L.H) * L.C + kThreads - 1) / kThreads);
}

}  // namespace

cudaError_t launch_encode_rows(const LayerView& L, const float* k, const float* v, cudaStream_t s) {
  if (L.H == 0 || L.C == 0) return cudaSuccess;
  if (L.d > kMaxD) return cudaErrorInvalidValue;
  KVB_LAUNCH(row_blocks(L), kThreads, 0, s, encode_rows)(L, k, v);
  return cudaGetLastError();
}

cudaError_t launch_scan_counts(const LayerView& L, cudaStream_t s) {
  if (L.H == 0) return cudaSuccess;
  if (2 * L.H > 1024) return cudaErrorInvalidValue;
  KVB_LAUNCH(1, 2 * L.H, 2 * L.H * sizeof(uint64_t), s, scan_counts)(L);
  return cudaGetLastError();
}

cudaError_t launch_write_outliers(const LayerView& L, const float* k, const float* v, cudaStream_t s) {
  if (L.H == 0 || L.C == 0 || !L.sparse) return cudaSuccess;
  KVB_LAUNCH(row_blocks(L), kThreads, 0, s, write_outliers)(L, k, v);
  return cudaGetLastError();
}

int64_t plan_attend(int nq, int64_t C, int d, int* chunk, int* splits) {
  return kernels::gpu::plan_attend(nq, C, d, chunk, splits);
}

cudaError_t launch_attend(const LayerView& L, const Attend& a, cudaStream_t s) {
  if (a.nq <= 0) return cudaSuccess;
  if (a.chunk <= 0 || a.chunk > kernels::gpu::kMaxChunk || L.d > kMaxD) return cudaErrorInvalidValue;
  const size_t shmem = (static_cast<size_t>(L.d) * (1 + kWarps) + a.chunk + 2 * kWarps) * sizeof(float) +
                       2 * (static_cast<size_t>(a.chunk) + 1) * sizeof(uint32_t);
  KVB_LAUNCH(dim3(a.nq, a.splits), kThreads, shmem, s, attend_split)(L, a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  return kernels::gpu::launch_attend_merge(a.work, a.nq, a.splits, L.d, a.out, s);
}

}  // namespace kvb::codecs::kvquant::gpu
