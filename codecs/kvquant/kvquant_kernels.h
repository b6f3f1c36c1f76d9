#pragma once
/// KVQuant's CUDA kernels (kvquant_cuda.cu) and the device-side view of a layer in the CPU layer's layout
/// (kvquant_codec.h): codes, value scales, outlier counts, block index, head offsets and the compacted outliers.
/// Plain data (nvcc compiles this as C++17).
///
/// Encode, three launches (the outliers are compacted per head as the CPU stores them):
///   1. encode_rows, one thread per (KV head, token) row: keys un-rotated with the host's float32 RoPE table
///      (rope::rotate_row, each product rounded once), normalized per channel, coded, outliers counted; values
///      sorted in registers/local memory for their quantiles and median, scaled, coded, counted; the kvquant_row.h
///      steps in the CPU encoder's order, so the bytes are the CPU's. Thread-per-row keeps the kernel free of
///      barriers (the emulator runs each thread as a fiber); its row reads are strided, acceptable for an encode
///      (issue 22 measures the attention kernels).
///   2. scan_counts, one thread per (head, part): the 64-row block index and the head's outlier total, then the
///      head offsets (prefix over heads).
///   3. write_outliers, one thread per row: the row's outliers (channel, fp16) at its place in the compacted list.
/// Attention, split-context as kernels/cuda/attend.cu: one block per (query, chunk) scans the chunk's outlier
/// counts once (two threads, keys and values), each warp decodes a key row (offset + range·level, outliers over
/// their channels) into shared memory, re-applies RoPE with the two-level table (rope::add_angles, as the CPU's
/// BlockTable) while taking the dot with the query; chunk_softmax; value rows decoded element-wise by
/// chunk_values; launch_attend_merge writes the outputs.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace kvb::codecs::kvquant::gpu {

struct PartView {
  int bits = 0, row_bytes = 0, count_bytes = 1, index_bytes = 1, levels_n = 0;
  int64_t blocks = 0;              ///< ⌈C/64⌉
  const float* bounds = nullptr;   ///< [levels_n − 1] midpoints of the assignment levels
  const float* levels = nullptr;   ///< [levels_n] decode levels
  uint8_t* codes = nullptr;        ///< [H][C][row_bytes]
  uint8_t* count = nullptr;        ///< [H][C][count_bytes]
  uint32_t* block = nullptr;       ///< [H][blocks]
  uint64_t* heads = nullptr;       ///< [H + 1]
  uint8_t* index = nullptr;        ///< [nnz][index_bytes]
  uint16_t* value = nullptr;       ///< [nnz]
};

struct LayerView {
  int H = 0, d = 0;
  int64_t C = 0;
  int rope = 0;  ///< kernels::rope::Style as int (0 = none)
  int sparse = 0;
  double q_hi = 1, q_lo = 0;       ///< value quantiles 1 − f/2, f/2
  PartView k, v;
  const float* k_norm = nullptr;   ///< [H][d][2] offset, range
  uint16_t* v_scale = nullptr;     ///< [H][C][2]
  const float* unrot_c = nullptr;  ///< [C][d/2] RoPE cos/sin of each row's position (encode; rope::Table)
  const float* unrot_s = nullptr;
  const float* coarse_c = nullptr; ///< [blocks][d/2] rope::BlockTable (attention)
  const float* coarse_s = nullptr;
  const float* fine_c = nullptr;   ///< [64][d/2]
  const float* fine_s = nullptr;
  float* v_thresh = nullptr;       ///< [H][C][2] encode scratch: each value row's (hi, lo) outlier thresholds
};

using Attend = kernels::gpu::SplitAttend;  ///< kernels/cuda/launch.h

/// Launch 1 of the encode: codes, counts, value scales and thresholds of every row of k, v ([H][C][d] floats).
cudaError_t launch_encode_rows(const LayerView& L, const float* k, const float* v, cudaStream_t s);
/// Launch 2: block indices and head offsets of both parts (heads[H] = nnz once it has run).
cudaError_t launch_scan_counts(const LayerView& L, cudaStream_t s);
/// Launch 3: the compacted outliers (index/value of both parts sized by launch 2's totals).
cudaError_t launch_write_outliers(const LayerView& L, const float* k, const float* v, cudaStream_t s);

int64_t plan_attend(int nq, int64_t C, int d, int* chunk, int* splits);
cudaError_t launch_attend(const LayerView& L, const Attend& a, cudaStream_t s);

}  // namespace kvb::codecs::kvquant::gpu
