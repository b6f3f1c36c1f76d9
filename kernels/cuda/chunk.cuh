#pragma once
/// Device code shared by every split-context attention kernel (kernels/cuda/attend.cu and the codec
/// families' own, e.g. lookat and the sketches): once a thread block has its chunk's logits
/// s[0, n) in shared memory, chunk_softmax turns them into max-shifted weights and chunk_values writes the
/// chunk's partial state (m, l, o[d]) to the work area, which launch_attend_merge (kernels/cuda/launch.h) combines
/// per query. Included by .cu files only.
#include <cuda_runtime.h>

#include "kernels/cuda/layer_view.h"

namespace kvb::kernels::gpu {

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

/// Block-wide (kThreads threads, red: kThreads/32 floats of shared memory): m = max_i s[i], then
/// s[i] = exp(s[i] − m)·factor(i) and l = Σ_i exp(s[i] − m) (without the factors: a row's factor weights
/// only its value, RowClasses' vfac). Max-shifted: no overflow whatever the logits.
template <int kThreads, class Factor>
__device__ void chunk_softmax(float* s, int n, float* red, float* m_out, float* l_out, Factor factor) {
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kThreads) m = fmaxf(m, s[i]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = red[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, red[w]);
  __syncthreads();
  float l = 0.f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const float p = expf(s[i] - m);
    s[i] = p * factor(i);
    l += p;
  }
  l = warp_sum(l);
  if (lane == 0) red[warp] = l;
  __syncthreads();
  l = 0.f;
  for (int w = 0; w < kWarps; ++w) l += red[w];
  *m_out = m;
  *l_out = l;
}

/// part[2 + j] = Σ_i s[i]·value(i, j) for j < d (thread j owns channels j, j + kThreads, ...: row reads
/// coalesced across threads), part[0] = m, part[1] = l. Rows whose weight underflowed to 0 are skipped.
template <int kThreads, class Value>
__device__ void chunk_values(const float* s, int n, int d, float m, float l, float* part, Value value) {
  for (int j = threadIdx.x; j < d; j += kThreads) {
    float acc = 0.f;
    for (int i = 0; i < n; ++i)
      if (s[i] != 0.f) acc += s[i] * value(i, j);
    part[2 + j] = acc;
  }
  if (threadIdx.x == 0) {
    part[0] = m;
    part[1] = l;
  }
}

}  // namespace kvb::kernels::gpu
