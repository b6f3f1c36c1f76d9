#pragma once
/// PolarQuant's CUDA kernels (polar_cuda.cu) and the device-side view of a layer, in the CPU layer's layout
/// (polar_codec.h, polar_math.h): every KV head has the same padded width dp, so each rotation is an array
/// [heads][dp][dp] and each part's rows [heads][C][...]. Plain data (nvcc compiles this as C++17).
///
/// Encode: one block per (KV head, token) runs polar_math.h's float64 steps in the CPU encoder's order
/// (polar_cpu.cpp encode_head): y_i = Σ_{j<d} Πᵀ[j][i]·x_j (j ascending, thread i mod 128), then level by level
/// each node's norm (pair_norm) and code (angle_code) by one thread, a barrier per level, the radii to fp16
/// and the codes packed by one thread with put_code, so the device writes the CPU's bytes. No atan2 anywhere:
/// a code is decided by exact sign tests of the node's pair against the boundaries' host-computed cos/sin
/// (polar_math.h angle_code), so host and device agree on every code, a real GPU included (atan2, which is
/// not correctly rounded and differs between glibc and CUDA, would not).
///
/// Attention, split-context as kernels/cuda/attend.cu: the query is rotated once (q' = Π_K q, float32), each
/// (query, chunk) block scores its tokens from the key codes (<q', ŷ_t>, ŷ decoded element by element with
/// polar_math.h decode_elem: the CPU decode's float32 products in its order) and sums the decoded value rows in
/// the rotated domain (kernels/cuda/chunk.cuh), the chunks merge over dp (launch_attend_merge) and one block
/// per query un-rotates (o = (Π_Vᵀ a)[0, d): the padding dropped).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/launch.h"

#include "codecs/polar/polar_math.h"

namespace kvb::codecs::polar::gpu {

/// One part (K or V) of every KV head.
struct PartView {
  const double* pit = nullptr;  ///< [heads][dp][dp] Πᵀ, float64 (encoder: row j is column j of Π)
  const float* pi32 = nullptr;  ///< [heads][dp][dp] Π rounded to float32 (query and output transforms)
  uint8_t* codes = nullptr;     ///< [heads][C][row_bytes] packed angle codes
  uint16_t* radii = nullptr;    ///< [heads][C][radii] binary16
};

struct LayerView {
  Layout lay;
  int d = 0;       ///< head_dim (<= dp)
  int64_t C = 0;   ///< tokens per head
  const double* bcs = nullptr;  ///< [2·codebook_size] Tables::bcs (encoder's code decisions)
  const float* cs = nullptr;    ///< [2·codebook_size] Tables::cs (decode)
  PartView k, v;
};

using Attend = kernels::gpu::SplitAttend;  ///< kernels/cuda/launch.h

/// Dynamic shared memory of an encode block: y [dp] and the level buffer [dp/2] (float64), the codes
/// [angles] and the packed row [row_bytes] (bytes). At most 13.3 KB (dp = 1024).
inline size_t encode_shared_bytes(const Layout& lay) {
  return sizeof(double) * (static_cast<size_t>(lay.dp) + lay.dp / 2) + static_cast<size_t>(lay.angles) + lay.row_bytes;
}

/// Encodes x [heads][C][d] (device floats) into P's rows.
cudaError_t launch_encode(const LayerView& L, const PartView& P, int heads, const float* x, cudaStream_t s);

/// Chunking and work floats of one attention launch (partials over dp, rotated queries, rotated outputs).
int64_t plan_attend(const LayerView& L, int nq, int* chunk, int* splits);

cudaError_t launch_attend(const LayerView& L, const Attend& a, cudaStream_t s);

}  // namespace kvb::codecs::polar::gpu
