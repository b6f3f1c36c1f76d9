#pragma once
/// TurboQuant's CUDA kernels (turbo_cuda.cu) and the device-side view of one part (K or V) of a layer, in the
/// CPU layer's layout (turbo_codec.h): every KV head's instances have the same channel count, so each matrix
/// is an array [heads][n][n] and each channel list [heads][n]. Plain data (nvcc compiles this as C++17).
///
/// Encode: one block per (KV head, token) runs turbo_math.h's float64 steps in the CPU encoder's order (the
/// norm summed by every thread alike, γ by one, rotated coordinate i by thread i mod 128, codes packed by one
/// thread), so the device writes the CPU's bytes. Attention, split-context as kernels/cuda/attend.cu: the query is
/// transformed once (q' = [Π q ; S Π q] per instance), each (query, chunk) block scores its tokens straight
/// from the codes (‖x‖·<q', c[idx]> + κγ·<q'_sk, ±1>) and sums the decoded value rows in the rotated
/// domain, the chunks merge (launch_attend_merge over the rotated width) and one block per query
/// un-transforms (o = Πᵀ(a + Sᵀ b)) onto its channels.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace kvb::codecs::turbo::gpu {

constexpr int kMaxInstances = 2;  ///< regular, or outliers + regular

struct InstView {
  int n = 0, mb = 0, prod = 0;
  int code_bit_off = 0, norm_slot = -1, sign_off = -1, rnorm_slot = -1;
  int w_off = 0;  ///< first float of this instance in a transformed query / rotated row (mse n, then signs n)
  int nb = 0;     ///< boundaries (2^mb − 1)
  const int* channels = nullptr;  ///< [heads][n]
  const double* pit = nullptr;    ///< [heads][n][n] Πᵀ (encoder)
  const double* st = nullptr;     ///< [heads][n][n] Sᵀ (encoder, prod)
  const float* pi32 = nullptr;    ///< [heads][n][n] Π (query and output transforms)
  const float* s32 = nullptr;     ///< [heads][n][n] S (prod)
  const double* bnd = nullptr;    ///< [nb]
  const double* cent = nullptr;   ///< [2^mb] (encoder's residual)
  const float* c32 = nullptr;     ///< [2^mb] (attention)
};

struct PartView {
  int ninst = 0;
  InstView inst[kMaxInstances];
  int code_bytes = 0, norms = 0, sign_bytes = 0, rnorms = 0;
  int width = 0;  ///< floats of a transformed query / rotated row
  uint8_t* codes = nullptr;   ///< [heads][C][code_bytes]
  uint16_t* normv = nullptr;  ///< [heads][C][norms]
  uint8_t* signs = nullptr;   ///< [heads][C][sign_bytes]
  uint16_t* rnormv = nullptr; ///< [heads][C][rnorms]
};

using Attend = kernels::gpu::SplitAttend;  ///< kernels/cuda/launch.h

/// Encodes x [heads][C][d] (device floats) into P's rows.
cudaError_t launch_encode(const PartView& P, int heads, int64_t C, int d, const float* x, cudaStream_t s);

/// Chunking and work floats of one attention launch (partials over V's width, transformed queries, rotated
/// outputs).
int64_t plan_attend(const PartView& K, const PartView& V, int nq, int64_t C, int* chunk, int* splits);

cudaError_t launch_attend(const PartView& K, const PartView& V, int64_t C, int d, const Attend& a, cudaStream_t s);

}  // namespace kvb::codecs::turbo::gpu
