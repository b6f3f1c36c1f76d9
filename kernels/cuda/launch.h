#pragma once
/// Launchers of the baseline codecs' CUDA kernels, shared with the codec families (defined in
/// kernels/cuda/attend.cu, kernels/cuda/encode_f16.cu, kernels/cuda/gather_f16.cu, kernels/cuda/encode_fp8.cu and
/// kernels/cuda/encode_uniform.cu). Host-callable,
/// no kernel code here; each returns the launch status (cudaGetLastError) for kvb::cuda::check.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/layer_view.h"

namespace kvb::kernels::gpu {

/// One split-context attention launch of a codec family's own kernels (turboquant, polarquant, kvquant; the
/// sketches add their value part): queries on the device and their KV heads, outputs, optional logits, the
/// work floats and chunking of the family's plan, and the logit transform. Filled by split_attend()
/// (drivers.h) from the drivers' QueryLaunch.
struct SplitAttend {
  const float* q = nullptr;     ///< [nq][d]
  const int* q_head = nullptr;  ///< [nq]
  int nq = 0;
  float* out = nullptr;     ///< [nq][d]
  float* logits = nullptr;  ///< [nq][C] or null
  float* work = nullptr;    ///< the plan's floats
  int chunk = 0, splits = 0;
  float softmax_scale = 1.f, softcap = 0.f;
};

/// Split-context decode attention (flash-decoding): every query i attends KV head q_head[i] of `L`; the
/// context is cut into `splits` chunks of `chunk` tokens, one thread block per (query, chunk) computes
/// its logits from the compressed rows (dequantization fused into the loads, kernels/cuda/layer_view.h load()), a
/// max-shifted softmax and the weighted value sum, and a second kernel merges the chunks
/// (merge_factors). Optional `logits` [nq][C] receives ŝ (softmax_scale and softcap applied), without the
/// RowClasses biases. Packed views (LayerView::row_off: variable-length fp16 heads, C the longest) keep that
/// [nq][C] layout indexed by the row within the query's head, −inf past the head's last row (layer_view.h).
struct AttendArgs {
  LayerView L;
  const float* q = nullptr;      ///< [nq][d]
  const int* q_head = nullptr;   ///< [nq] KV head of each query
  int nq = 0;
  float softmax_scale = 1.f;
  float softcap = 0.f;
  float* out = nullptr;          ///< [nq][d]
  float* logits = nullptr;       ///< [nq][C] or nullptr
  float* work = nullptr;         ///< attend_work_floats(...) floats
  int chunk = 0, splits = 0;     ///< from plan_attend
};

/// Chooses chunk and splits for nq queries over C tokens (enough blocks to fill the GPU, chunks of at
/// most kMaxChunk tokens so a chunk's logits fit in shared memory); returns the work floats needed.
constexpr int kMaxChunk = 2048;
constexpr int kMaxHeadDim = 512;
int64_t plan_attend(int nq, int64_t C, int d, int* chunk, int* splits);

cudaError_t launch_attend(const AttendArgs& a, cudaStream_t s);

/// out[qi][j] = Σ_split e^{m_s − M} o_s[j] / Σ_split e^{m_s − M} l_s for qi < nq, from partials
/// work[qi][split] = (m, l, o[d]) (kernels/cuda/chunk.cuh chunk_values): the merge of every split-context kernel.
cudaError_t launch_attend_merge(const float* work, int nq, int splits, int d, float* out, cudaStream_t s);

/// out[i] = f32_to_f16_sat(x[i]) (fp16 caches, kivi's residual and window).
cudaError_t launch_to_f16(const float* x, int64_t n, uint16_t* out, cudaStream_t s);

/// The fp16 tail of every head: rows [first, C) of each head of x [heads][C][d] into out [heads][C - first][d]
/// (kivi's residual and window, qjl's key buffer and value window, every part's rows past its quantized range).
cudaError_t launch_tail_to_f16(const float* x, int heads, int64_t C, int64_t first, int d, uint16_t* out,
                               cudaStream_t s);

/// The fp16 row gather of the token-selection and eviction codecs: out [heads][rows][d] binary16 (saturating,
/// the CPU's f32_to_f16_sat) of x[g][pos[g][r]][:] for r < rows, x [heads][C][d], pos (device) [heads][rows].
cudaError_t launch_gather_f16(const float* x, int heads, int64_t C, int d, const int32_t* pos, int64_t rows,
                              uint16_t* out, cudaStream_t s);

/// The packed variant (LayerView::row_off): head g's rows are [row_off[g], row_off[g + 1]) of out
/// [row_off[heads]][d], row r being x[g][pos[r]][:]; pos [row_off[heads]] and row_off [heads + 1] are device
/// pointers, max_rows (host) the longest head's row count (the grid's width).
cudaError_t launch_gather_f16_packed(const float* x, int heads, int64_t C, int d, const int32_t* pos,
                                     const int64_t* row_off, int64_t max_rows, uint16_t* out, cudaStream_t s);

/// fp8: per head g of `heads` with n floats each, scale[g] = fp8::head_scale(absmax) and codes of x/scale.
cudaError_t launch_fp8_encode(const float* x, int heads, int64_t n, bool e4m3, uint8_t* codes, float* scale,
                              cudaStream_t s);

/// Per-token asymmetric rows (uniform.h): x [rows][d] -> codes [rows][row_bytes], sm [rows][d/group].
cudaError_t launch_token_quant(const float* x, int64_t rows, int d, int bits, int group, uint8_t* codes,
                               uq::GroupParams* sm, cudaStream_t s);

/// KIVI keys: per head, per block of `block` tokens and per channel, over the first q_tokens tokens of
/// each head (x [heads][C][d]): sm [heads][q_tokens/block][d] and token rows codes [heads][q_tokens][row_bytes].
cudaError_t launch_channel_quant(const float* x, int heads, int64_t C, int64_t q_tokens, int d, int bits,
                                 int block, uint8_t* codes, uq::GroupParams* sm, cudaStream_t s);

}  // namespace kvb::kernels::gpu
