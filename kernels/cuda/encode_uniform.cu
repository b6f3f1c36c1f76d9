// int / kivi encode on the GPU with uniform.h's quantizer (make_group, quantize): the codes and the fp16
// (scale, min) pairs are bitwise the CPU's, because min/max are order-free and the quantizer is the same
// function. Rows are packed as uniform.h's little-endian bit stream by one thread per token row.
#include <cuda_runtime.h>

#include "kernels/cuda/launch.h"
#include "kernels/formats/uniform.h"
#include "kvb/cuda/kernel.h"

namespace kvb::kernels::gpu {
namespace {

/// Appends b-bit codes to a row as uniform.h's bit stream (code i at bits [i·b, i·b + b)).
struct RowWriter {
  uint8_t* row;
  uint32_t acc = 0;
  int nbits = 0;
  __device__ void put(uint32_t code, int bits) {
    acc |= code << nbits;
    nbits += bits;
    while (nbits >= 8) {
      *row++ = static_cast<uint8_t>(acc);
      acc >>= 8;
      nbits -= 8;
    }
  }
  __device__ void flush() {
    if (nbits > 0) *row = static_cast<uint8_t>(acc);
  }
};

__global__ void token_quant_kernel(const float* x, int64_t rows, int d, int bits, int group, uint8_t* codes,
                                   uq::GroupParams* sm) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= rows) return;
  const float* xr = x + r * d;
  const int ng = d / group;
  const uint32_t qmax = uq::max_code(bits);
  RowWriter w{codes + r * uq::row_bytes(d, bits)};
  for (int gi = 0; gi < ng; ++gi) {
    const float* xg = xr + gi * group;
    float mn = xg[0], mx = xg[0];
    for (int j = 1; j < group; ++j) {
      mn = xg[j] < mn ? xg[j] : mn;  // the CPU's comparison form (min_max)
      mx = xg[j] > mx ? xg[j] : mx;
    }
    const uq::GroupParams p = uq::make_group(mn, mx, bits);
    sm[r * ng + gi] = p;
    const float scale = f16_to_f32(p.scale), lo = f16_to_f32(p.min);
    for (int j = 0; j < group; ++j) w.put(uq::quantize(xg[j], scale, lo, qmax), bits);
  }
  w.flush();
}

/// One thread per (head, block, channel): the block's per-channel (scale, min).
__global__ void channel_params_kernel(const float* x, int heads, int64_t C, int64_t blocks, int d, int bits, int block,
                                      uq::GroupParams* sm) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // (g, b, j)
  if (i >= static_cast<int64_t>(heads) * blocks * d) return;
  const int j = static_cast<int>(i % d);
  const int64_t b = (i / d) % blocks;
  const int g = static_cast<int>(i / (static_cast<int64_t>(d) * blocks));
  const float* xc = x + (static_cast<int64_t>(g) * C + b * block) * d + j;
  float mn = xc[0], mx = xc[0];
  for (int t = 1; t < block; ++t) {
    const float v = xc[static_cast<int64_t>(t) * d];
    mn = v < mn ? v : mn;  // std::min, as kivi_cpu.cpp
    mx = v > mx ? v : mx;
  }
  sm[i] = uq::make_group(mn, mx, bits);
}

/// One thread per (head, token) of the quantized range: the token's row against its block's parameters.
__global__ void channel_codes_kernel(const float* x, int heads, int64_t C, int64_t q_tokens, int d, int bits, int block,
                                     const uq::GroupParams* sm, uint8_t* codes) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // (g, t)
  if (i >= static_cast<int64_t>(heads) * q_tokens) return;
  const int64_t t = i % q_tokens;
  const int g = static_cast<int>(i / q_tokens);
  const float* xr = x + (static_cast<int64_t>(g) * C + t) * d;
  const uq::GroupParams* p = sm + (static_cast<int64_t>(g) * (q_tokens / block) + t / block) * d;
  const uint32_t qmax = uq::max_code(bits);
  RowWriter w{codes + i * uq::row_bytes(d, bits)};
  for (int j = 0; j < d; ++j) w.put(uq::quantize(xr[j], f16_to_f32(p[j].scale), f16_to_f32(p[j].min), qmax), bits);
  w.flush();
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

cudaError_t launch_token_quant(const float* x, int64_t rows, int d, int bits, int group, uint8_t* codes,
                               uq::GroupParams* sm, cudaStream_t s) {
  if (rows <= 0) return cudaSuccess;
  KVB_LAUNCH(blocks_for(rows, 128), 128, 0, s, token_quant_kernel)(x, rows, d, bits, group, codes, sm);
  return cudaGetLastError();
}

cudaError_t launch_channel_quant(const float* x, int heads, int64_t C, int64_t q_tokens, int d, int bits, int block,
                                 uint8_t* codes, uq::GroupParams* sm, cudaStream_t s) {
  if (q_tokens <= 0 || heads <= 0) return cudaSuccess;
  const int64_t blocks = q_tokens / block;
  KVB_LAUNCH(blocks_for(static_cast<int64_t>(heads) * blocks * d, 128), 128, 0, s, channel_params_kernel)(
      x, heads, C, blocks, d, bits, block, sm);
  KVB_LAUNCH(blocks_for(static_cast<int64_t>(heads) * q_tokens, 128), 128, 0, s, channel_codes_kernel)(
      x, heads, C, q_tokens, d, bits, block, sm, codes);
  return cudaGetLastError();
}

cudaError_t TokenQuant::encode(const float* x, int heads, int64_t C, int d, const EncodeTarget& t, cudaStream_t s) {
  const int64_t q = t.q_tokens;
  for (int g = 0; g < heads; ++g) {
    const cudaError_t e = launch_token_quant(x + static_cast<int64_t>(g) * C * d, q, d, t.bits, t.group,
                                             t.codes + g * q * uq::row_bytes(d, t.bits), t.sm + g * q * (d / t.group), s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t ChannelQuant::encode(const float* x, int heads, int64_t C, int d, const EncodeTarget& t, cudaStream_t s) {
  return launch_channel_quant(x, heads, C, t.q_tokens, d, t.bits, t.group, t.codes, t.sm, s);
}

}  // namespace kvb::kernels::gpu
