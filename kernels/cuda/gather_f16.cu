// The fp16 row gather (kernels/cuda/launch.h): the kept rows of the token-selection codecs (codecs/select,
// equal-length heads) and of the eviction codecs (codecs/evict, packed variable-length heads) copied out of the
// float cache into binary16 rows, element by element as the CPU's f32_to_f16_sat_row converts them. One thread
// block per (output row, head) stripe: blockIdx.y is the head, blocks stride over its rows, threads over the
// d channels (coalesced reads and writes).
#include <cuda_runtime.h>

#include "kernels/cuda/launch.h"
#include "kernels/formats/fp16.h"
#include "kvb/cuda/kernel.h"

namespace kvb::kernels::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxBlocks = 4096;  // per head; blocks stride over longer heads

/// Rows [0, rows) of head g: out row first + r  <-  x[g][pos[first + r]].
__device__ __forceinline__ void gather_rows(const float* x, int64_t C, int d, const int32_t* pos, int g,
                                            int64_t first, int64_t rows, uint16_t* out) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* src = x + (static_cast<int64_t>(g) * C + pos[first + r]) * d;
    uint16_t* dst = out + (first + r) * d;
    for (int j = threadIdx.x; j < d; j += kThreads) dst[j] = f32_to_f16_sat(src[j]);
  }
}

__global__ void __launch_bounds__(kThreads) gather_f16(const float* x, int64_t C, int d, const int32_t* pos,
                                                         int64_t rows, uint16_t* out) {
  const int g = blockIdx.y;
  gather_rows(x, C, d, pos, g, static_cast<int64_t>(g) * rows, rows, out);
}

__global__ void __launch_bounds__(kThreads) gather_f16_packed(const float* x, int64_t C, int d, const int32_t* pos,
                                                                const int64_t* row_off, uint16_t* out) {
  const int g = blockIdx.y;
  gather_rows(x, C, d, pos, g, row_off[g], row_off[g + 1] - row_off[g], out);
}

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks); }

}  // namespace

cudaError_t launch_gather_f16(const float* x, int heads, int64_t C, int d, const int32_t* pos, int64_t rows,
                              uint16_t* out, cudaStream_t s) {
  if (rows <= 0 || heads <= 0) return cudaSuccess;
  KVB_LAUNCH(dim3(blocks_for(rows), heads), kThreads, 0, s, gather_f16)(x, C, d, pos, rows, out);
  return cudaGetLastError();
}

cudaError_t launch_gather_f16_packed(const float* x, int heads, int64_t C, int d, const int32_t* pos,
                                     const int64_t* row_off, int64_t max_rows, uint16_t* out, cudaStream_t s) {
  if (max_rows <= 0 || heads <= 0) return cudaSuccess;
  KVB_LAUNCH(dim3(blocks_for(max_rows), heads), kThreads, 0, s, gather_f16_packed)(x, C, d, pos, row_off, out);
  return cudaGetLastError();
}

}  // namespace kvb::kernels::gpu
