// kvcar's CUDA kernels (kvcar_kernels.h): latents to floats, the decoder's matrix products, attention over
// the decoded rows. Per-element math from kvcar_math.h, attn_math.h and half.h (shared with the CPU path).
#include <cuda_runtime.h>

#include "codecs/kvcar/kvcar_kernels.h"
#include "codecs/kvcar/kvcar_math.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/half.h"
#include "kvb/cuda/kernel.h"

namespace kvb::codecs::kvcar_gpu {
namespace {

constexpr int kTile = 16;
constexpr int kAttendThreads = 256;

__global__ void latents_kernel(const uint16_t* f16, const int8_t* q8, const float* sm, int64_t C, int dl, float* z) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= C * dl) return;
  if (f16) {
    z[i] = f16_to_f32(f16[i]);
  } else {
    const int64_t t = i / dl;
    z[i] = kvcar_int8_value(q8[i], sm[2 * t], sm[2 * t + 1]);
  }
}

__global__ void gemm_nt_kernel(const float* A, const float* B, int64_t m, int n, int k, const float* bias, int leaky,
                               float slope, float* out) {
  __shared__ float As[kTile][kTile + 1];
  __shared__ float Bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kTile + ty;
  const int col = blockIdx.x * kTile + tx;
  const int brow = blockIdx.x * kTile + ty;
  float acc = 0.f;
  for (int k0 = 0; k0 < k; k0 += kTile) {
    const int ka = k0 + tx;
    As[ty][tx] = (row < m && ka < k) ? A[row * k + ka] : 0.f;
    Bs[ty][tx] = (brow < n && ka < k) ? B[static_cast<int64_t>(brow) * k + ka] : 0.f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTile; ++kk) acc += As[ty][kk] * Bs[tx][kk];
    __syncthreads();
  }
  if (row < m && col < n) {
    const float y = acc + (bias ? bias[col] : 0.f);
    out[row * n + col] = leaky ? kvcar_leaky(y, slope) : y;
  }
}

__device__ float block_reduce(float v, float* red, bool is_max) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) red[threadIdx.x] = is_max ? fmaxf(red[threadIdx.x], red[threadIdx.x + w])
                                                   : red[threadIdx.x] + red[threadIdx.x + w];
    __syncthreads();
  }
  const float r = red[0];
  __syncthreads();
  return r;
}

__global__ void attend_kernel(const float* K, const float* V, int64_t C, int d, const float* q, float scale,
                              float cap, float* logits, float* work, float* out) {
  __shared__ float red[kAttendThreads];
  const int i = blockIdx.x;
  const float* qi = q + static_cast<int64_t>(i) * d;
  float* w = work + static_cast<int64_t>(i) * C;
  float mx = -INFINITY;
  for (int64_t t = threadIdx.x; t < C; t += blockDim.x) {
    float dot = 0.f;
    for (int j = 0; j < d; ++j) dot += qi[j] * K[t * d + j];
    const float s = softcap_f(scale * dot, cap);
    w[t] = s;
    if (logits) logits[static_cast<int64_t>(i) * C + t] = s;
    mx = fmaxf(mx, s);
  }
  const float m = block_reduce(mx, red, true);
  float sum = 0.f;
  for (int64_t t = threadIdx.x; t < C; t += blockDim.x) {
    const float e = expf(w[t] - m);
    w[t] = e;
    sum += e;
  }
  const float l = block_reduce(sum, red, false);  // >= 1: the max token contributes exp(0)
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = 0.f;
    for (int64_t t = 0; t < C; ++t) acc += w[t] * V[t * d + j];
    out[static_cast<int64_t>(i) * d + j] = acc / l;
  }
}

}  // namespace

cudaError_t launch_latents(const uint16_t* f16, const int8_t* q8, const float* sm, int64_t C, int dl, float* z,
                           cudaStream_t s) {
  const int64_t n = C * dl;
  if (n == 0) return cudaSuccess;
  KVB_LAUNCH(static_cast<unsigned>((n + 255) / 256), 256, 0, s, latents_kernel)(f16, q8, sm, C, dl, z);
  return cudaGetLastError();
}

cudaError_t launch_gemm_nt(const float* A, const float* B, int64_t m, int n, int k, const float* bias, bool leaky,
                           float slope, float* out, cudaStream_t s) {
  if (m == 0 || n == 0) return cudaSuccess;
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile), static_cast<unsigned>((m + kTile - 1) / kTile));
  KVB_LAUNCH(grid, block, 0, s, gemm_nt_kernel)(A, B, m, n, k, bias, leaky ? 1 : 0, slope, out);
  return cudaGetLastError();
}

cudaError_t launch_attend_rows(const float* K, const float* V, int64_t C, int d, const float* q, int nq, float scale,
                               float cap, float* logits, float* work, float* out, cudaStream_t s) {
  if (nq == 0) return cudaSuccess;
  KVB_LAUNCH(nq, kAttendThreads, 0, s, attend_kernel)(K, V, C, d, q, scale, cap, logits, work, out);
  return cudaGetLastError();
}

}  // namespace kvb::codecs::kvcar_gpu
