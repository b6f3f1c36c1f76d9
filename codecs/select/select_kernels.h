#pragma once
/// Launchers of the token-selection codecs' CUDA kernels (select_cuda.cu). Host-callable, no kernel code;
/// each returns the launch status for kvb::cuda::check. The walk's math is walk_math.h, shared with the
/// CPU path; the halving between levels runs on the host (select_layer.h halve()), shared too. The fp16 row
/// gather of the kept rows is kernels/cuda/launch.h launch_gather_f16, shared with the eviction codecs.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvb::codecs::gpu {

struct WalkArgs {
  uint64_t seed = 0;
  int layer = 0, level = 0;
  int block = 128;  ///< B
  double gamma = 4, temp = 1, beta = 0, const_denom = 0.025;
};

/// Largest walk block the CUDA walk supports (its row of kernel entries lives in shared memory).
constexpr int kMaxWalkBlock = 2048;

/// For the n survivors idx/w [heads][n] of each head's middle (token `sink` onwards of K, V [heads][C][d]):
/// kbar = keys minus their walk block's mean, vw = values times the cumulative weights, [heads][n][d] float64.
cudaError_t launch_walk_prep(const float* K, const float* V, int heads, int64_t C, int d, int64_t sink,
                             const int32_t* idx, const int32_t* w, int64_t n, int block, double* kbar, double* vw,
                             cudaStream_t s);

/// sigma [heads][n]: the self-balancing walk's signs, one warp per (head, walk block).
cudaError_t launch_walk(const double* kbar, const double* vw, int heads, int64_t n, int d, const WalkArgs& a,
                        int8_t* sigma, cudaStream_t s);

/// sigma [heads][n]: fair coins (the uniform baseline), the same draws as the CPU path.
cudaError_t launch_coin_signs(int heads, int64_t n, uint64_t seed, int layer, int level, int8_t* sigma,
                              cudaStream_t s);

}  // namespace kvb::codecs::gpu
