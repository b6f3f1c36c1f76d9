// fp16 rows on the GPU: the fp16 codec's cache and kivi's key residual / value window.
#include <cuda_runtime.h>

#include "kernels/formats/fp16.h"
#include "kernels/cuda/launch.h"
#include "kvb/cuda/kernel.h"

namespace kvb::kernels::gpu {
namespace {
__global__ void to_f16_kernel(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = f32_to_f16_sat(x[i]);  // the CPU's f32_to_f16_sat_row, element by element
}
}  // namespace

cudaError_t launch_to_f16(const float* x, int64_t n, uint16_t* out, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  const int64_t blocks = (n + 255) / 256;
  KVB_LAUNCH(static_cast<unsigned>(blocks < 65535 ? blocks : 65535), 256, 0, s, to_f16_kernel)(x, n, out);
  return cudaGetLastError();
}

cudaError_t launch_tail_to_f16(const float* x, int heads, int64_t C, int64_t first, int d, uint16_t* out,
                               cudaStream_t s) {
  const int64_t tail = C - first;
  for (int g = 0; g < heads && tail > 0; ++g) {
    const cudaError_t e = launch_to_f16(x + (static_cast<int64_t>(g) * C + first) * d, tail * d,
                                        out + static_cast<int64_t>(g) * tail * d, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace kvb::kernels::gpu
