#pragma once
/// Launchers of lookat's CUDA kernels (codecs/pq/lookat_cuda.cu). Host-callable, no kernel code here; each
/// returns the launch status (cudaGetLastError) for kvb::cuda::check. Built only with the CUDA backend.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/layer_view.h"

namespace kvb::codecs::gpu {

/// Nearest-centroid codes: x [heads][C][d] floats, cb [heads][m][K][d/m] floats (the fp16 codebook values)
/// -> codes [heads][C][m]; one thread per (token, subspace), float64 distances (pq_math.h), lowest index on ties.
cudaError_t launch_lookat_encode(const float* x, int heads, int64_t C, int d, int m, int K, const float* cb,
                                 uint8_t* codes, cudaStream_t s);

/// Split-context LOOKAT attention: every query i attends KV head q_head[i]. One thread block per (query,
/// chunk) builds the query's m lookup tables in shared memory (LUT_i[c] = <q_i, C_i[c]>), scores the chunk's
/// tokens as table sums, takes a max-shifted softmax and the weighted value sum (values through kernels/cuda/layer_view.h
/// load(): fp16 rows or per-token INTn); a second kernel merges the chunks (merge_factors).
struct LookatAttendArgs {
  const uint8_t* codes = nullptr;  ///< [heads][C][m]
  const float* cb = nullptr;       ///< [heads][m][K][d/m]
  kernels::gpu::Part v;                          ///< values (kF16: tail = all rows; kTokenQuant: q_tokens = C)
  int heads = 0;
  int64_t C = 0;
  int d = 0, m = 0, K = 0;
  const float* q = nullptr;     ///< [nq][d]
  const int* q_head = nullptr;  ///< [nq]
  int nq = 0;
  float softmax_scale = 1.f, softcap = 0.f;
  float* out = nullptr;     ///< [nq][d]
  float* logits = nullptr;  ///< [nq][C] or nullptr
  float* work = nullptr;    ///< plan_attend(...) floats (kernels/cuda/launch.h)
  int chunk = 0, splits = 0;
};

/// Dynamic shared memory the attention kernel needs (lookup tables, query, chunk logits).
size_t lookat_attend_shmem(int d, int m, int K, int chunk);
cudaError_t launch_lookat_attend(const LookatAttendArgs& a, cudaStream_t s);

}  // namespace kvb::codecs::gpu
