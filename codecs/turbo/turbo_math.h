#pragma once
/// TurboQuant's per-element math shared by the CPU encoder/decoder (turbo_state.cpp) and the CUDA kernels
/// (turbo_cuda.cu): the code bitstream, the QJL scale and the float64 steps of the encoder, each rounded once
/// in a fixed order (kvb/core/hd.h: no FMA contraction), so every backend stores the same bytes.
/// Plain KVB_HD functions only (nvcc compiles this as C++17).
#include <cstdint>

#include "kernels/cpu/lloyd_max.h"  // nearest_level (host and device)
#include "kvb/core/half.h"
#include "kvb/core/hd.h"

namespace kvb::codecs::turbo {

/// Code i of `mb` bits (mb <= 8) at bit `pos` of a little-endian bitstream: ORs it in (the row starts zeroed).
KVB_HD_INLINE void put_code(uint8_t* row, int64_t pos, int mb, unsigned v) {
  const int64_t byte = pos >> 3;
  const int sh = static_cast<int>(pos & 7);
  row[byte] = static_cast<uint8_t>(row[byte] | (v << sh));
  if (sh + mb > 8) row[byte + 1] = static_cast<uint8_t>(row[byte + 1] | (v >> (8 - sh)));
}

/// The code of `mb` bits at bit `pos`.
KVB_HD_INLINE unsigned get_code(const uint8_t* row, int64_t pos, int mb) {
  const int64_t byte = pos >> 3;
  const int sh = static_cast<int>(pos & 7);
  unsigned w = row[byte];
  if (sh + mb > 8) w |= static_cast<unsigned>(row[byte + 1]) << 8;
  return (w >> sh) & ((1u << mb) - 1u);
}

/// κγ of a _prod instance of n channels: sqrt(π/2)/n times the stored fp16 residual norm (the magnitude of
/// each of its decoded sign coordinates).
KVB_HD_INLINE float qjl_scale(int n, uint16_t rnorm) { return static_cast<float>(kSqrtHalfPi / n) * f16_to_f32(rnorm); }

/// Sign bit k of a sketch (bit k&7 of byte k>>3; 1 iff the projected residual coordinate was > 0).
KVB_HD_INLINE bool sign_bit(const uint8_t* sb, int k) { return (sb[k >> 3] >> (k & 7)) & 1; }

/// ‖x_s‖² of an instance: Σ_j x[ch[j]]², j ascending.
KVB_HD_INLINE double norm2(const float* x, const int* ch, int n) {
  double s = 0;
  for (int j = 0; j < n; ++j) {
    const double v = x[ch[j]];
    s = dadd_rn(s, dmul_rn(v, v));
  }
  return s;
}

/// Σ_i u[i]², i ascending (γ² of _prod's residual).
KVB_HD_INLINE double sumsq(const double* u, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s = dadd_rn(s, dmul_rn(u[i], u[i]));
  return s;
}

/// Row i of y = A u for A given transposed (At[j][i], n×n): Σ_j At[j][i]·u[j], j ascending, each product
/// and sum rounded once. The CPU runs the n rows together (its loop order differs, its sums do not).
KVB_HD_INLINE double matvec_row(const double* At, int n, const double* u, int i) {
  double y = 0;
  for (int j = 0; j < n; ++j) y = dadd_rn(y, dmul_rn(At[static_cast<int64_t>(j) * n + i], u[j]));
  return y;
}

/// The rotated residual coordinate of _prod: ‖x‖·y − ‖x‖_fp16·c (what the stored _mse part misses).
KVB_HD_INLINE double residual(double nrm, double y, double nh, double c) {
  return dadd_rn(dmul_rn(nrm, y), -dmul_rn(nh, c));
}

}  // namespace kvb::codecs::turbo
