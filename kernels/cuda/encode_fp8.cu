// fp8 encode on the GPU: one block per (KV head) finds the absmax (order-free, so the scale is bitwise the
// CPU's), then every element is encoded with fp8.h's encode of x / scale, as fp8_cpu.cpp does.
#include <cuda_runtime.h>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/formats/fp8.h"
#include "kvb/cuda/kernel.h"

namespace kvb::kernels::gpu {
namespace {

constexpr int kThreads = 1024;

struct AbsTerm {
  __device__ float operator()(float v) const { return fabsf(v); }
};

__global__ void __launch_bounds__(kThreads) fp8_scale_kernel(const float* x, int64_t n, bool e4m3, float* scale) {
  __shared__ float red[kThreads / 32];
  const float a = block_max<kThreads>(x + static_cast<int64_t>(blockIdx.x) * n, n, red, AbsTerm{});
  if (threadIdx.x == 0) scale[blockIdx.x] = fp8::head_scale(a, e4m3 ? fp8::Format::kE4M3 : fp8::Format::kE5M2);
}

__global__ void fp8_codes_kernel(const float* x, int heads, int64_t n, bool e4m3, const float* scale, uint8_t* codes) {
  const int64_t total = static_cast<int64_t>(heads) * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float y = x[i] / scale[i / n];
    codes[i] = e4m3 ? fp8::encode_e4m3(y) : fp8::encode_e5m2(y);
  }
}

}  // namespace

cudaError_t launch_fp8_encode(const float* x, int heads, int64_t n, bool e4m3, uint8_t* codes, float* scale,
                              cudaStream_t s) {
  if (heads <= 0 || n <= 0) return cudaSuccess;
  KVB_LAUNCH(heads, kThreads, 0, s, fp8_scale_kernel)(x, n, e4m3, scale);
  const int64_t blocks = (static_cast<int64_t>(heads) * n + 255) / 256;
  KVB_LAUNCH(static_cast<unsigned>(blocks < 65535 ? blocks : 65535), 256, 0, s, fp8_codes_kernel)(x, heads, n, e4m3, scale,
                                                                                           codes);
  return cudaGetLastError();
}

template <fp8::Format F>
cudaError_t Fp8Codes<F>::encode(const float* x, int heads, int64_t C, int d, const EncodeTarget& t, cudaStream_t s) {
  // One scale per head over the whole head: the fp8 codec quantizes every token (no fp16 tail).
  if (t.q_tokens != C) return cudaErrorInvalidValue;
  return launch_fp8_encode(x, heads, C * d, F == fp8::Format::kE4M3, t.codes, t.head_scale, s);
}
template struct Fp8Codes<fp8::Format::kE4M3>;
template struct Fp8Codes<fp8::Format::kE5M2>;

}  // namespace kvb::kernels::gpu
