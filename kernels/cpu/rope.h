#pragma once
/// Rotary position embedding (RoPE, Su et al. 2021) as kvdump records it (docs/dump-format.md: `rope_style`,
/// `rope_theta`): pair i of P = ⌊d/2⌋ pairs rotates by the angle pos·θ^(−2i/d),
///   (a, b) ← (a·cos − b·sin, b·cos + a·sin),
/// on channels (i, i + P) for style "half" (Hugging Face's rotate_half) or (2i, 2i + 1) for "interleaved"
/// (llama2.c, GPT-J); an odd head_dim leaves its last channel unrotated. Used by the synthetic generator
/// (src/kvb/gen) to apply it and by KVQuant (codecs/kvquant) to undo it on cached keys and re-apply it when
/// scoring. Angles and their cos/sin are computed in float64 and rounded once to float.
#include <cstdint>
#include <string>
#include <vector>

#include "kvb/core/hd.h"

namespace kvb::kernels::rope {

enum class Style { kNone, kHalf, kInterleaved };

/// "half" | "interleaved" | "none"; false (and *out untouched) for anything else.
bool parse(const std::string& s, Style* out);
const char* name(Style s);

/// Channels of pair i of P pairs.
KVB_HD_INLINE int pair_a(Style st, int /*P*/, int i) { return st == Style::kInterleaved ? 2 * i : i; }
KVB_HD_INLINE int pair_b(Style st, int P, int i) { return st == Style::kInterleaved ? 2 * i + 1 : i + P; }

/// (a, b) ← (a·c − b·s, b·c + a·s): rotation by the angle whose cos/sin are c, s (−s undoes it). Each product
/// and sum rounded once (fmul_rn/fadd_rn), so a device computes the host's bytes (KVQuant's device encode).
KVB_HD_INLINE void rotate_pair(float& a, float& b, float c, float s) {
  const float x = a, y = b;
  a = fadd_rn(fmul_rn(x, c), -fmul_rn(y, s));
  b = fadd_rn(fmul_rn(y, c), fmul_rn(x, s));
}

/// x ← R x for one vector of P pairs with per-pair cos/sin c[P], s[P]; sign −1 applies Rᵀ (undoes it).
KVB_HD_INLINE void rotate_row(float* x, Style st, int P, const float* c, const float* s, float sign) {
  if (st == Style::kNone) return;
  for (int i = 0; i < P; ++i) rotate_pair(x[pair_a(st, P, i)], x[pair_b(st, P, i)], c[i], sign * s[i]);
}

/// BlockTable's angle addition for one pair: (c, s) of the sum of the angles whose cos/sin are (cc, cs), (fc, fs).
KVB_HD_INLINE void add_angles(float cc, float cs, float fc, float fs, float* c, float* s) {
  *c = cc * fc - cs * fs;
  *s = cs * fc + cc * fs;
}

/// cos and sin of pos·θ^(−2i/d), in float64.
void angle_cos_sin(int64_t pos, int i, int d, double theta, double* c, double* s);

/// x[d] ← R(pos) x with cos/sin computed here (one vector; Table for many).
void apply(float* x, int d, int64_t pos, Style st, double theta);

/// cos/sin of every (position, pair) for positions [pos0, pos0 + n): apply/unapply cost d multiply-adds per
/// vector. n·P floats each; for long caches read many times, BlockTable holds the same in ~2·√n·P.
struct Table {
  Style style = Style::kNone;
  int d = 0, P = 0;
  int64_t pos0 = 0, n = 0;
  std::vector<float> cs, sn;  ///< [n][P]

  Table() = default;
  Table(Style st, int d, double theta, int64_t pos0, int64_t n);
  /// x ← R(pos0 + row) x, or its inverse Rᵀ (unapply).
  void apply(float* x, int64_t row) const;
  void unapply(float* x, int64_t row) const;
};

/// The same rotations from two small tables: cos/sin of (pos0 + kBlock·b) and of j < kBlock, combined per
/// row by one complex product (angle addition): row r = kBlock·b + j rotates by e^{iω(pos0 + kBlock·b)}·e^{iωj},
/// each factor rounded once to float, so the combined cos/sin is within ~3 float ulps of the exact one.
/// Memory (⌈n/kBlock⌉ + kBlock)·P·2 floats instead of n·P·2: 32k positions at head_dim 128 take 288 KB, not 16 MB.
struct BlockTable {
  static constexpr int kBlock = 64;
  Style style = Style::kNone;
  int d = 0, P = 0;
  int64_t pos0 = 0, n = 0;
  std::vector<float> coarse_c, coarse_s;  ///< [⌈n/kBlock⌉][P]
  std::vector<float> fine_c, fine_s;      ///< [kBlock][P]

  BlockTable() = default;
  BlockTable(Style st, int d, double theta, int64_t pos0, int64_t n);
  /// c[P], s[P]: cos/sin of every pair's angle at row r (0 <= r < n).
  void cos_sin(int64_t r, float* c, float* s) const;
  /// x ← R(pos0 + r) x given that row's c, s from cos_sin.
  void apply(float* x, const float* c, const float* s) const;
};

}  // namespace kvb::kernels::rope
