// Microscaling encode on the GPU (kernels/formats/mx.h): for nvfp4 one block per KV head first finds the
// tensor's amax (order-free, so the global scale is bitwise the CPU's); then one thread per (head, token,
// block of channels) runs mx.h's encode_row_block, the function the CPU encoder loops over.
#include <cuda_runtime.h>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/formats.h"
#include "kernels/cuda/launch.h"
#include "kernels/formats/mx.h"
#include "kvb/cuda/kernel.h"

namespace kvb::kernels::gpu {
namespace {

constexpr int kThreads = 1024;

struct AmaxTerm {
  __device__ float operator()(float v) const { return mx::amax_term(v); }
};

__global__ void __launch_bounds__(kThreads) nvfp4_global_kernel(const float* x, int64_t n, float* global) {
  __shared__ float red[kThreads / 32];
  const float a = block_max<kThreads>(x + static_cast<int64_t>(blockIdx.x) * n, n, red, AmaxTerm{});
  if (threadIdx.x == 0) global[blockIdx.x] = mx::nvfp4_global_scale(a);
}

template <mx::Kind K>
__global__ void mx_blocks_kernel(const float* x, int64_t rows_per_head, int64_t rows, int d, const float* global,
                                 uint8_t* codes, uint8_t* scales) {
  const int nb = mx::blocks_per_row(K, d), rb = mx::row_bytes(K, d);
  const int64_t total = rows * nb;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / nb;
    const int b = static_cast<int>(i % nb);
    const float gs = K == mx::Kind::kNvfp4 ? global[row / rows_per_head] : 1.f;
    mx::encode_row_block(K, x + row * d, d, b, gs, codes + row * rb, scales + row * nb);
  }
}

}  // namespace

template <mx::Kind K>
cudaError_t MxBlocks<K>::encode(const float* x, int heads, int64_t C, int d, const EncodeTarget& t, cudaStream_t s) {
  // The per-tensor scale covers the whole head: the codecs quantize every token (no fp16 tail).
  if (t.q_tokens != C) return cudaErrorInvalidValue;
  if (heads <= 0 || C <= 0) return cudaSuccess;
  if (K == mx::Kind::kNvfp4) {
    KVB_LAUNCH(heads, kThreads, 0, s, nvfp4_global_kernel)(x, C * d, t.head_scale);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  const int64_t total = static_cast<int64_t>(heads) * C * mx::blocks_per_row(K, d);
  const int64_t blocks = (total + 255) / 256;
  KVB_LAUNCH(static_cast<unsigned>(blocks < 65535 ? blocks : 65535), 256, 0, s, mx_blocks_kernel<K>)(
      x, C, static_cast<int64_t>(heads) * C, d, t.head_scale, t.codes, t.block_scale);
  return cudaGetLastError();
}
template struct MxBlocks<mx::Kind::kNvfp4>;
template struct MxBlocks<mx::Kind::kMxfp4>;
template struct MxBlocks<mx::Kind::kMxfp8>;

}  // namespace kvb::kernels::gpu
