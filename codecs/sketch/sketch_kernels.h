#pragma once
/// The CUDA backend of the one-bit sketch codecs (qjl, h1b): plain-data views of the device buffers (the CPU
/// layouts of qjl_cpu.cpp / h1b_cpu.cpp, byte for byte) and the launchers of the kernels in sketch_cuda.cu.
/// The per-element math is sketch_math.h (sign packing, certified signs, masked sums, QJL terms, popcount),
/// uniform.h through kernels/cuda/layer_view.h load() for values, and attn_math.h: the same headers the CPU path uses.
/// Host-callable, no kernel code here; nvcc compiles it as C++17.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/layer_view.h"

namespace kvb::codecs::sk::gpu {

/// A projection on the device (sk::Projection's arrays).
struct ProjView {
  int rows = 0, d = 0;
  const float* s32 = nullptr;       ///< [rows][d]
  const double* s64 = nullptr;      ///< [rows][d]
  const float* t32 = nullptr;       ///< [d][rows]
  const double* row_norm = nullptr;  ///< [rows]
};

/// QJL keys of all KV heads (qjl_cpu.cpp layout).
struct QjlKeys {
  int heads = 0;
  int64_t C = 0, Cq = 0;
  int d = 0, m = 0, mo = 0, G = 0, no = 0, ib = 0;
  uint8_t* bits_in = nullptr;   ///< [heads][Cq][m/8]
  uint8_t* bits_out = nullptr;  ///< [heads][Cq][mo/8]
  uint16_t* norms = nullptr;    ///< [heads][Cq][2]
  uint8_t* idx = nullptr;       ///< [heads][Cq/G][no·ib]
  uint16_t* res = nullptr;      ///< [heads][C - Cq][d]
  ProjView P;
};

/// H1B keys of all KV heads (h1b_cpu.cpp layout).
struct H1bKeys {
  int heads = 0;
  int64_t C = 0;
  int d = 0, bits = 0;
  bool angle = true;
  uint8_t* sketch = nullptr;  ///< [heads][C][bits/8]
  uint16_t* norms = nullptr;  ///< [heads][C] (angle)
  const float* tab = nullptr;  ///< [bits + 1]: cos(π h/b) or (1 − 2h/b)/T
  ProjView P;
};

/// Encoders: x [heads][C][d] floats on the device.
cudaError_t launch_qjl_encode(const QjlKeys& k, const float* x, cudaStream_t s);
cudaError_t launch_h1b_encode(const H1bKeys& k, const float* x, double* norm_work /* [heads·C] */, cudaStream_t s);

/// Split-context attention from the bits: query i attends KV head q_head[i]; values as kernels::gpu::Part (uniform.h
/// rows, fp16 window as the tail). `logits` [nq][C] optional.
struct SketchAttend : kernels::gpu::SplitAttend {
  kernels::gpu::Part v;  ///< the values (work: sketch_attend_work_floats(...))
};

/// Chooses chunk (a multiple of `align` tokens, at most kMaxSketchChunk) and splits; returns the work floats
/// (partials [nq][splits][d + 2] plus the per-query sketch area of `query_floats` floats each).
constexpr int kMaxSketchChunk = 1024;
int64_t plan_sketch_attend(int nq, int64_t C, int d, int align, int64_t query_floats, int* chunk, int* splits);

cudaError_t launch_qjl_attend(const QjlKeys& k, const SketchAttend& a, cudaStream_t s);
cudaError_t launch_h1b_attend(const H1bKeys& k, const SketchAttend& a, cudaStream_t s);

}  // namespace kvb::codecs::sk::gpu
