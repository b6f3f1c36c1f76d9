// CUDA kernels of turboquant (see turbo_kernels.h). The encoder is turbo_math.h's float64 arithmetic in the
// CPU encoder's order (turbo_state.cpp encode_vector), so the stored bytes equal the CPU's; attention scores
// and sums straight from the codes in the rotated domain.
#include <cuda_runtime.h>

#include "codecs/turbo/turbo_kernels.h"
#include "codecs/turbo/turbo_math.h"
#include "kernels/cuda/chunk.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/formats/fp16.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/half.h"
#include "kvb/cuda/kernel.h"

namespace kvb::codecs::turbo::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

using kernels::gpu::warp_sum;

/// One block per row (KV head g, token t): every instance's norm, codes and (prod) residual signs.
/// Shared: u[d], y[d] doubles and code[d] ints (an instance has at most d channels). Every thread computes
/// the instance's norm and its fp16 rounding itself (the same float64 sums as the CPU, so the same values):
/// four barriers per instance, which the emulator (one fiber per thread) pays for per row.
__global__ void __launch_bounds__(kThreads) encode_rows(PartView P, int64_t C, int d, const float* x) {
  KVB_DYNAMIC_SHARED(unsigned char, smem);
  double* u = reinterpret_cast<double*>(smem);
  double* y = u + d;
  int* code = reinterpret_cast<int*>(y + d);
  const int64_t r = blockIdx.x;
  const int g = static_cast<int>(r / C);
  const float* xr = x + r * d;
  uint8_t* codes = P.codes + r * P.code_bytes;
  uint8_t* signs = P.signs + r * P.sign_bytes;
  for (int b = threadIdx.x; b < P.code_bytes; b += kThreads) codes[b] = 0;
  for (int b = threadIdx.x; b < P.sign_bytes; b += kThreads) signs[b] = 0;
  for (int s = 0; s < P.ninst; ++s) {
    const InstView& I = P.inst[s];
    const int n = I.n;
    const int* ch = I.channels + static_cast<int64_t>(g) * n;
    if (s > 0) __syncthreads();  // the previous instance is done with u, y and code
    const double nrm = dsqrt_rn(norm2(xr, ch, n));
    for (int j = threadIdx.x; j < n; j += kThreads) u[j] = nrm > 0 ? ddiv_rn(xr[ch[j]], nrm) : 0.0;
    __syncthreads();
    const double* pit = I.pit + static_cast<int64_t>(g) * n * n;
    for (int i = threadIdx.x; i < n; i += kThreads) y[i] = matvec_row(pit, n, u, i);  // y = Π u
    __syncthreads();  // every u[j] read: the residual may overwrite it
    // Thread i reads y[i] here and writes z[i] into y[i] below: no other thread touches it in between.
    if (I.mb > 0) {
      const uint16_t h = kernels::f32_to_f16_sat(static_cast<float>(nrm));
      const double nh = f16_to_f32(h);
      if (threadIdx.x == 0) P.normv[r * P.norms + I.norm_slot] = h;
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const int c = kernels::lloyd::nearest_level(I.bnd, I.nb, y[i]);
        code[i] = c;
        if (I.prod) u[i] = residual(nrm, y[i], nh, I.cent[c]);  // Π r
      }
      __syncthreads();
      if (threadIdx.x == 0)  // instances share bytes at their boundary: one writer
        for (int i = 0; i < n; ++i)
          put_code(codes, I.code_bit_off + static_cast<int64_t>(i) * I.mb, I.mb, static_cast<unsigned>(code[i]));
    } else if (I.prod) {
      for (int i = threadIdx.x; i < n; i += kThreads) u[i] = dmul_rn(nrm, y[i]);
      __syncthreads();
    }
    if (!I.prod) continue;
    if (threadIdx.x == 0)
      P.rnormv[r * P.rnorms + I.rnorm_slot] = kernels::f32_to_f16_sat(static_cast<float>(dsqrt_rn(sumsq(u, n))));
    const double* st = I.st + static_cast<int64_t>(g) * n * n;
    for (int i = threadIdx.x; i < n; i += kThreads) y[i] = matvec_row(st, n, u, i);  // z = S Π r
    __syncthreads();
    for (int B = threadIdx.x; B < (n + 7) / 8; B += kThreads) {
      unsigned byte = 0;
      for (int k = 0; k < 8 && 8 * B + k < n; ++k)
        if (y[8 * B + k] > 0) byte |= 1u << k;
      signs[I.sign_off + B] = static_cast<uint8_t>(byte);
    }
  }
}

/// qt[qi][width] = per instance [Π q_s ; S Π q_s] (float32), after the partials and before the rotated outputs.
__global__ void __launch_bounds__(kThreads) transform_queries(PartView K, int d, Attend a, float* qt_all) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int qi = blockIdx.x;
  const int g = a.q_head[qi];
  const float* q = a.q + static_cast<int64_t>(qi) * d;
  float* qt = qt_all + static_cast<int64_t>(qi) * K.width;
  float* qs = sh;        // [d]
  float* tmp = sh + d;   // [d]
  for (int s = 0; s < K.ninst; ++s) {
    const InstView& I = K.inst[s];
    const int n = I.n;
    const int* ch = I.channels + static_cast<int64_t>(g) * n;
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += kThreads) qs[j] = q[ch[j]];
    __syncthreads();
    const float* pi = I.pi32 + static_cast<int64_t>(g) * n * n;
    for (int i = threadIdx.x; i < n; i += kThreads) {
      float acc = 0.f;
      for (int j = 0; j < n; ++j) acc += pi[static_cast<int64_t>(i) * n + j] * qs[j];
      tmp[i] = acc;
      if (I.mb > 0) qt[I.w_off + i] = acc;
    }
    if (!I.prod) continue;
    __syncthreads();
    const float* sm = I.s32 + static_cast<int64_t>(g) * n * n;
    const int zo = I.w_off + (I.mb > 0 ? n : 0);
    for (int i = threadIdx.x; i < n; i += kThreads) {
      float acc = 0.f;
      for (int j = 0; j < n; ++j) acc += sm[static_cast<int64_t>(i) * n + j] * tmp[j];
      qt[zo + i] = acc;
    }
  }
}

/// Element j (< width) of the decoded rotated row of token row r (= g·C + t): ‖x_s‖·c[idx] or ±κγ.
__device__ __forceinline__ float row_elem(const PartView& P, int64_t r, int j) {
  for (int s = 0; s < P.ninst; ++s) {
    const InstView& I = P.inst[s];
    int k = j - I.w_off;
    if (k < 0 || k >= I.n * (1 + (I.mb > 0 && I.prod ? 1 : 0))) continue;
    if (I.mb > 0 && k < I.n) {
      const float nh = f16_to_f32(P.normv[r * P.norms + I.norm_slot]);
      return nh * I.c32[get_code(P.codes + r * P.code_bytes, I.code_bit_off + static_cast<int64_t>(k) * I.mb, I.mb)];
    }
    if (I.mb > 0) k -= I.n;
    const float gam = qjl_scale(I.n, P.rnormv[r * P.rnorms + I.rnorm_slot]);
    return sign_bit(P.signs + r * P.sign_bytes + I.sign_off, k) ? gam : -gam;
  }
  return 0.f;
}

/// One block per (query, chunk): logits from the key codes, softmax, the rotated value sum as a partial.
__global__ void __launch_bounds__(kThreads) attend_split(PartView K, PartView V, int64_t C, Attend a,
                                                        const float* qt_all) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int wk = K.width, wv = V.width;
  float* qt = sh;            // [wk]
  float* s = qt + wk;        // [chunk]
  float* red = s + a.chunk;  // [2·kWarps]
  const int qi = blockIdx.x, split = blockIdx.y;
  const int g = a.q_head[qi];
  const int64_t t0 = static_cast<int64_t>(split) * a.chunk;
  const int n = static_cast<int>(min(static_cast<int64_t>(a.chunk), C - t0));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int j = threadIdx.x; j < wk; j += kThreads) qt[j] = qt_all[static_cast<int64_t>(qi) * wk + j];
  __syncthreads();
  for (int i = warp; i < n; i += kWarps) {
    const int64_t r = static_cast<int64_t>(g) * C + t0 + i;
    float e = 0.f;
    for (int sI = 0; sI < K.ninst; ++sI) {
      const InstView& I = K.inst[sI];
      int o = I.w_off;
      if (I.mb > 0) {
        const uint8_t* row = K.codes + r * K.code_bytes;
        float acc = 0.f;
        for (int k = lane; k < I.n; k += 32)
          acc += qt[o + k] * I.c32[get_code(row, I.code_bit_off + static_cast<int64_t>(k) * I.mb, I.mb)];
        e += f16_to_f32(K.normv[r * K.norms + I.norm_slot]) * warp_sum(acc);
        o += I.n;
      }
      if (I.prod) {
        const uint8_t* sb = K.signs + r * K.sign_bytes + I.sign_off;
        float acc = 0.f;
        for (int k = lane; k < I.n; k += 32) acc += sign_bit(sb, k) ? qt[o + k] : -qt[o + k];
        e += qjl_scale(I.n, K.rnormv[r * K.rnorms + I.rnorm_slot]) * warp_sum(acc);
      }
    }
    if (lane == 0) {
      const float logit = softcap_f(a.softmax_scale * e, a.softcap);
      s[i] = logit;
      if (a.logits) a.logits[static_cast<int64_t>(qi) * C + t0 + i] = logit;
    }
  }
  __syncthreads();
  float m, l;
  kernels::gpu::chunk_softmax<kThreads>(s, n, red, &m, &l, [](int) { return 1.f; });
  const int64_t r0 = static_cast<int64_t>(g) * C + t0;
  kernels::gpu::chunk_values<kThreads>(s, n, wv, m, l, a.work + (static_cast<int64_t>(qi) * a.splits + split) * (wv + 2),
                                      [&](int i, int j) { return row_elem(V, r0 + i, j); });
}

/// o[qi][channels] = per instance Πᵀ (a_s + Sᵀ b_s) from the merged rotated row.
__global__ void __launch_bounds__(kThreads) untransform(PartView V, int d, Attend a, const float* rot_all) {
  KVB_DYNAMIC_SHARED(float, sh);
  const int qi = blockIdx.x;
  const int g = a.q_head[qi];
  const float* acc = rot_all + static_cast<int64_t>(qi) * V.width;
  float* o = a.out + static_cast<int64_t>(qi) * d;
  float* t = sh;  // [d]
  for (int s = 0; s < V.ninst; ++s) {
    const InstView& I = V.inst[s];
    const int n = I.n;
    const int* ch = I.channels + static_cast<int64_t>(g) * n;
    const int bo = I.w_off + (I.mb > 0 ? n : 0);
    const float* sm = I.s32 + static_cast<int64_t>(g) * n * n;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kThreads) {
      float v = I.mb > 0 ? acc[I.w_off + i] : 0.f;
      if (I.prod)
        for (int rr = 0; rr < n; ++rr) v += sm[static_cast<int64_t>(rr) * n + i] * acc[bo + rr];
      t[i] = v;
    }
    __syncthreads();
    const float* pi = I.pi32 + static_cast<int64_t>(g) * n * n;
    for (int j = threadIdx.x; j < n; j += kThreads) {
      float v = 0.f;
      for (int i = 0; i < n; ++i) v += pi[static_cast<int64_t>(i) * n + j] * t[i];
      o[ch[j]] = v;
    }
  }
}

}  // namespace

cudaError_t launch_encode(const PartView& P, int heads, int64_t C, int d, const float* x, cudaStream_t s) {
  const int64_t rows = static_cast<int64_t>(heads) * C;
  if (rows == 0) return cudaSuccess;
  const size_t shmem = 2 * sizeof(double) * d + sizeof(int) * d;
  KVB_LAUNCH(static_cast<unsigned>(rows), kThreads, shmem, s, encode_rows)(P, C, d, x);
  return cudaGetLastError();
}

int64_t plan_attend(const PartView& K, const PartView& V, int nq, int64_t C, int* chunk, int* splits) {
  const int64_t parts = kernels::gpu::plan_attend(nq, C, V.width, chunk, splits);
  return parts + static_cast<int64_t>(nq) * (K.width + V.width);
}

cudaError_t launch_attend(const PartView& K, const PartView& V, int64_t C, int d, const Attend& a, cudaStream_t s) {
  if (a.nq <= 0) return cudaSuccess;
  if (a.chunk <= 0 || a.chunk > kernels::gpu::kMaxChunk) return cudaErrorInvalidValue;
  float* qt = a.work + static_cast<int64_t>(a.nq) * a.splits * (V.width + 2);
  float* rot = qt + static_cast<int64_t>(a.nq) * K.width;
  KVB_LAUNCH(a.nq, kThreads, 2 * sizeof(float) * d, s, transform_queries)(K, d, a, qt);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const size_t shmem = (static_cast<size_t>(K.width) + a.chunk + 2 * kWarps) * sizeof(float);
  KVB_LAUNCH(dim3(a.nq, a.splits), kThreads, shmem, s, attend_split)(K, V, C, a, qt);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  if ((e = kernels::gpu::launch_attend_merge(a.work, a.nq, a.splits, V.width, rot, s)) != cudaSuccess) return e;
  KVB_LAUNCH(a.nq, kThreads, sizeof(float) * d, s, untransform)(V, d, a, rot);
  return cudaGetLastError();
}

}  // namespace kvb::codecs::turbo::gpu
