// BalanceKV / uniform encode kernels (select_kernels.h). Per halving level:
//   walk_prep  one block per (walk block, head): the block's key mean (masked to its real rows), then the
//              centred keys and weighted values in float64, in the CPU path's arithmetic order;
//   walk       one warp per (walk block, head): the sequential walk. Step i computes its row of kernel
//              entries x_ij, y_ij (j < i) with lanes over j (walk::dot4, O(i·d) per step, O(B²·d) per
//              block), the row max M and the max-shifted sum R by warp reductions, and lane 0 decides
//              σ_i with walk::decide and the counter-based draw of (seed, layer, head, level, block, i).
//              The row lives in shared memory (2·B doubles + B signs).
// The cut point and halving need the whole head's signs and run on the host between levels; the kept rows'
// fp16 gather is the shared kernels/cuda primitive (launch_gather_f16).
#include <cuda_runtime.h>

#include "codecs/select/select_kernels.h"
#include "codecs/select/walk_math.h"
#include "kvb/cuda/kernel.h"

namespace kvb::codecs::gpu {
namespace {

__global__ void walk_prep(const float* K, const float* V, int64_t C, int d, int64_t sink, const int32_t* idx,
                          const int32_t* w, int64_t n, int B, double* kbar, double* vw) {
  const int g = blockIdx.y;
  const int64_t lo = static_cast<int64_t>(blockIdx.x) * B;
  const int nb = static_cast<int>(min(static_cast<int64_t>(B), n - lo));
  const int32_t* ix = idx + static_cast<int64_t>(g) * n + lo;
  const int32_t* wx = w + static_cast<int64_t>(g) * n + lo;
  const float* Kg = K + (static_cast<int64_t>(g) * C + sink) * d;
  const float* Vg = V + (static_cast<int64_t>(g) * C + sink) * d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    double mean = 0;
    for (int i = 0; i < nb; ++i) mean += Kg[static_cast<int64_t>(ix[i]) * d + j];
    mean /= nb;
    for (int i = 0; i < nb; ++i) {
      const int64_t o = (static_cast<int64_t>(g) * n + lo + i) * d + j;
      kbar[o] = static_cast<double>(Kg[static_cast<int64_t>(ix[i]) * d + j]) - mean;
      vw[o] = static_cast<double>(Vg[static_cast<int64_t>(ix[i]) * d + j]) * static_cast<double>(wx[i]);
    }
  }
}

__global__ void walk(const double* kbar, const double* vw, int64_t n, int d, WalkArgs a, int8_t* sigma) {
  KVB_DYNAMIC_SHARED(double, sh);
  const int B = a.block;
  double* x = sh;
  double* y = sh + B;
  int8_t* sg = reinterpret_cast<int8_t*>(sh + 2 * B);
  const int g = blockIdx.y, lane = threadIdx.x;
  const int64_t lo = static_cast<int64_t>(blockIdx.x) * B;
  const int nb = static_cast<int>(min(static_cast<int64_t>(B), n - lo));
  const double* kb = kbar + (static_cast<int64_t>(g) * n + lo) * d;
  const double* vb = vw + (static_cast<int64_t>(g) * n + lo) * d;
  const double inv_sqrt_d = 1.0 / sqrt(static_cast<double>(d));
  if (lane == 0) sg[0] = 1;
  __syncwarp();
  for (int i = 1; i < nb; ++i) {
    const double* ki = kb + static_cast<int64_t>(i) * d;
    const double* vi = vb + static_cast<int64_t>(i) * d;
    double m = -INFINITY;
    for (int j = lane; j < i; j += 32) {
      x[j] = walk::kernel_logit(walk::dot4(ki, kb + static_cast<int64_t>(j) * d, d), a.temp, inv_sqrt_d, a.beta);
      y[j] = walk::kernel_value(walk::dot4(vi, vb + static_cast<int64_t>(j) * d, d), a.const_denom);
      m = fmax(m, x[j]);
    }
    for (int o = 16; o > 0; o >>= 1) m = fmax(m, __shfl_xor_sync(0xffffffffu, m, o));
    double r = 0;
    for (int j = lane; j < i; j += 32) r += exp(x[j] - m) * y[j] * sg[j];
    for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
    if (lane == 0)
      sg[i] = static_cast<int8_t>(walk::decide(
          m, r, a.gamma, walk::uniform01(a.seed, a.layer, g, a.level, blockIdx.x, static_cast<uint64_t>(i))));
    __syncwarp();
  }
  for (int i = lane; i < nb; i += 32) sigma[static_cast<int64_t>(g) * n + lo + i] = sg[i];
}

__global__ void coin_signs(int64_t n, uint64_t seed, int layer, int level, int8_t* sigma) {
  const int g = blockIdx.y;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    sigma[static_cast<int64_t>(g) * n + i] =
        walk::uniform01(seed, layer, g, level, 0, static_cast<uint64_t>(i)) < 0.5 ? 1 : -1;
}

unsigned blocks_for(int64_t n, int64_t per) { return static_cast<unsigned>((n + per - 1) / per); }

}  // namespace

cudaError_t launch_walk_prep(const float* K, const float* V, int heads, int64_t C, int d, int64_t sink,
                             const int32_t* idx, const int32_t* w, int64_t n, int block, double* kbar, double* vw,
                             cudaStream_t s) {
  if (n <= 0 || heads <= 0) return cudaSuccess;
  KVB_LAUNCH(dim3(blocks_for(n, block), heads), 128, 0, s, walk_prep)(K, V, C, d, sink, idx, w, n, block, kbar, vw);
  return cudaGetLastError();
}

cudaError_t launch_walk(const double* kbar, const double* vw, int heads, int64_t n, int d, const WalkArgs& a,
                        int8_t* sigma, cudaStream_t s) {
  if (n <= 0 || heads <= 0) return cudaSuccess;
  if (a.block < 1 || a.block > kMaxWalkBlock) return cudaErrorInvalidValue;
  const size_t shmem = 2 * sizeof(double) * a.block + a.block;
  KVB_LAUNCH(dim3(blocks_for(n, a.block), heads), 32, shmem, s, walk)(kbar, vw, n, d, a, sigma);
  return cudaGetLastError();
}

cudaError_t launch_coin_signs(int heads, int64_t n, uint64_t seed, int layer, int level, int8_t* sigma,
                              cudaStream_t s) {
  if (n <= 0 || heads <= 0) return cudaSuccess;
  const unsigned nb = blocks_for(n, 256) < 1024u ? blocks_for(n, 256) : 1024u;
  KVB_LAUNCH(dim3(nb, heads), 256, 0, s, coin_signs)(n, seed, layer, level, sigma);
  return cudaGetLastError();
}

}  // namespace kvb::codecs::gpu
