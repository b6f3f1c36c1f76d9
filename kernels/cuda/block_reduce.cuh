#pragma once
/// Block-wide reductions shared by the encode kernels (fp8's per-head scale, nvfp4's per-tensor scale).
/// Included by .cu files only.
#include <cuda_runtime.h>

#include <cstdint>

namespace kvb::kernels::gpu {

/// max over i < n of term(x[i]), by a block of kThreads threads (red: kThreads/32 floats of shared memory);
/// every thread returns it. Order-free, so the result is bitwise the CPU's max; fmaxf drops NaN terms.
template <int kThreads, class Term>
__device__ float block_max(const float* x, int64_t n, float* red, Term term) {
  float m = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) m = fmaxf(m, term(x[i]));
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
  __syncthreads();
  float a = 0.f;
  for (int w = 0; w < kThreads / 32; ++w) a = fmaxf(a, red[w]);
  return a;
}

}  // namespace kvb::kernels::gpu
