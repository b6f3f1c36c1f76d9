#pragma once
/// Per-element math of the one-bit sketch codecs (qjl, h1b), shared by the CPU path and the CUDA kernels
/// (KVB_HD, docs/design.md §4). Nothing here allocates or includes host-only libraries.
///
/// Sign sketches. A sketch of n bits (n a multiple of 8) is n/8 bytes; bit j of byte i holds row 8i + j
/// (docs/codecs.md §7.1: "bit j of byte i holds row 8i+j"). Bit = 1 iff the projection is > 0, so a projection
/// of exactly 0 is bit 0 (−1) in the encoder and the decoder alike (docs/codecs.md §7.6 pitfall 7).
///
/// QJL scores (docs/codecs.md §7.4): <q, k> ≈ sqrt(π/2)/m · ‖k‖ · Σ_i (S q)_i σ_i with σ_i = ±1 the stored bits. The sum is
/// formed with the masked-sum identity Σ_i x_i σ_i = 2·Σ_{i: bit=1} x_i − Σ_i x_i, so attend never expands
/// the bits into a dense ±1 vector, let alone a key.
///
/// H1B scores (docs/codecs.md §8): Hamming distance h between the query's and the key's sketches (XOR + popcount on 64-bit
/// words); angle variant ŝ = ‖q‖·‖k‖·cos(π·h/b), temperature variant ŝ = (1 − 2h/b)/T.
#include <cstdint>
#include <cstring>

#include "kvb/core/hd.h"

namespace kvb::codecs::sk {

/// π (the QJL estimator's constant sqrt(π/2) is kvb::kSqrtHalfPi: E|g| = sqrt(2/π) for g ~ N(0, 1)).
constexpr double kPi = 3.14159265358979323846;

/// Bytes of an n-bit sketch (n a multiple of 8).
KVB_HD_INLINE int64_t sketch_bytes(int64_t n) { return n / 8; }

/// Bit i of a sketch (1 = projection > 0).
KVB_HD_INLINE int sketch_bit(const uint8_t* row, int64_t i) { return (row[i >> 3] >> (i & 7)) & 1; }

/// Whether the sign of a float32 projection z = <S_i, x> (a sum of `terms` products, any order, FMA or not)
/// is certainly the sign of the exact value: |z| > (terms + 2)·u·1.01·‖S_i‖·‖x‖ (u = 2^-24; Higham's bound on
/// the dot's error plus the rounding of S_i to float). When it is not, encoders recompute z in float64 with
/// the channels in ascending order, so the CPU path, the CUDA path and the reference store identical bits.
KVB_HD_INLINE bool sign_is_certain(float z, int terms, double row_norm, double x_norm) {
  const double z64 = z < 0.f ? -static_cast<double>(z) : static_cast<double>(z);
  return z64 > (terms + 2) * 0x1p-24 * 1.01 * row_norm * x_norm;
}

/// Sets bit i of a zero-initialised sketch when z > 0.
KVB_HD_INLINE void put_sign(uint8_t* row, int64_t i, float z) {
  if (z > 0.f) row[i >> 3] = static_cast<uint8_t>(row[i >> 3] | (1u << (i & 7)));
}

/// Σ_{i < n: bit i set} x[i], n a multiple of 8 (portable form; the CPU has vectorized versions with the same
/// result up to float reassociation).
KVB_HD_INLINE float masked_sum(const uint8_t* bits, const float* x, int n) {
  float s = 0.f;
  for (int i = 0; i < n; i += 8) {
    const uint32_t b = bits[i >> 3];
    for (int k = 0; k < 8; ++k) s += (b >> k) & 1u ? x[i + k] : 0.f;
  }
  return s;
}

/// One QJL sketch's contribution to <q, k>: sqrt(π/2)/m · norm · (2·masked − total), where masked is the
/// masked sum of the projected query over the sketch's set bits and total the sum of all m of them.
KVB_HD_INLINE float qjl_term(float masked, float total, float norm, int m) {
  return static_cast<float>(kSqrtHalfPi) / static_cast<float>(m) * norm * (2.f * masked - total);
}

/// popcount of a 64-bit word.
KVB_HD_INLINE int popc64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __popcll(x);
#else
  return __builtin_popcountll(x);
#endif
}

/// 8 bytes at p as a little-endian word (any alignment).
KVB_HD_INLINE uint64_t load_word(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  uint64_t w = 0;
  for (int i = 0; i < 8; ++i) w |= static_cast<uint64_t>(p[i]) << (8 * i);
  return w;
#else
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
#endif
}

/// Hamming distance of two sketches of nbytes bytes (nbytes a multiple of 8 goes word by word; the tail,
/// if any, byte by byte).
KVB_HD_INLINE int hamming(const uint8_t* a, const uint8_t* b, int nbytes) {
  int h = 0, i = 0;
  for (; i + 8 <= nbytes; i += 8) h += popc64(load_word(a + i) ^ load_word(b + i));
  for (; i < nbytes; ++i) h += popc64(static_cast<uint64_t>(a[i] ^ b[i]));
  return h;
}

/// float64 products and sums rounded once each (kvb/core/hd.h): the encoders' float64 sums round identically
/// on the host and on the device.
using kvb::dadd_rn;
using kvb::dmul_rn;

/// Σ_c x_c² in float64, c ascending, over the channels with mask[c] == want (all when mask is null).
KVB_HD_INLINE double norm2_f64(const float* x, int d, const uint8_t* mask, uint8_t want) {
  double s = 0;
  for (int c = 0; c < d; ++c) {
    if (mask && mask[c] != want) continue;
    const double v = x[c];
    s = dadd_rn(s, dmul_rn(v, v));
  }
  return s;
}

/// Byte B (rows 8B .. 8B+7) of the sign sketch of x under a projection s32/s64 [rows][d] with row norms
/// row_norm: float32 dot (channels ascending; channels with zero_mask[c] != 0 read as 0), certified by
/// sign_is_certain, else the float64 sum in ascending channel order (sk::project_f64). The CUDA encoder runs
/// this per byte; the CPU encoder computes the same bits with vectorized dots (tests compare them).
KVB_HD_INLINE uint8_t dense_sign_byte(const float* s32, const double* s64, const double* row_norm, int d, int B,
                                      const float* x, const uint8_t* zero_mask, double xnorm) {
  uint8_t out = 0;
  for (int k = 0; k < 8; ++k) {
    const int i = 8 * B + k;
    const float* r = s32 + static_cast<int64_t>(i) * d;
    float z = 0.f;
    for (int c = 0; c < d; ++c) z += r[c] * ((zero_mask && zero_mask[c]) ? 0.f : x[c]);
    if (!sign_is_certain(z, d, row_norm[i], xnorm)) {
      const double* r64 = s64 + static_cast<int64_t>(i) * d;
      double z64 = 0;
      for (int c = 0; c < d; ++c)
        z64 = dadd_rn(z64, dmul_rn(r64[c], static_cast<double>((zero_mask && zero_mask[c]) ? 0.f : x[c])));
      z = z64 > 0 ? 1.f : 0.f;
    }
    put_sign(&out, k, z);
  }
  return out;
}

/// Same for x restricted to the channels idx[0..ni) (ascending): QJL's outlier sketch.
KVB_HD_INLINE uint8_t sparse_sign_byte(const float* s32, const double* s64, const double* row_norm, int d, int B,
                                       const float* x, const int* idx, int ni, double xnorm) {
  uint8_t out = 0;
  for (int k = 0; k < 8; ++k) {
    const int i = 8 * B + k;
    const float* r = s32 + static_cast<int64_t>(i) * d;
    float z = 0.f;
    for (int a = 0; a < ni; ++a) z += r[idx[a]] * x[idx[a]];
    if (!sign_is_certain(z, ni, row_norm[i], xnorm)) {
      const double* r64 = s64 + static_cast<int64_t>(i) * d;
      double z64 = 0;
      for (int a = 0; a < ni; ++a) z64 = dadd_rn(z64, dmul_rn(r64[idx[a]], static_cast<double>(x[idx[a]])));
      z = z64 > 0 ? 1.f : 0.f;
    }
    put_sign(&out, k, z);
  }
  return out;
}

/// Outlier channel index width: one byte while head_dim <= 256 (the paper's uint8), else two.
KVB_HD_INLINE int outlier_index_bytes(int head_dim) { return head_dim <= 256 ? 1 : 2; }

KVB_HD_INLINE int read_outlier_index(const uint8_t* idx, int i, int ib) {
  return ib == 1 ? idx[i] : (idx[2 * i] | (idx[2 * i + 1] << 8));
}

KVB_HD_INLINE void write_outlier_index(uint8_t* idx, int i, int ib, int c) {
  if (ib == 1) {
    idx[i] = static_cast<uint8_t>(c);
  } else {
    idx[2 * i] = static_cast<uint8_t>(c & 0xff);
    idx[2 * i + 1] = static_cast<uint8_t>(c >> 8);
  }
}

}  // namespace kvb::codecs::sk
