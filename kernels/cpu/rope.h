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

namespace kvb::kernels::rope {

enum class Style { kNone, kHalf, kInterleaved };

/// "half" | "interleaved" | "none"; false (and *out untouched) for anything else.
bool parse(const std::string& s, Style* out);
const char* name(Style s);

/// Channels of pair i of P pairs.
inline int pair_a(Style st, int /*P*/, int i) { return st == Style::kInterleaved ? 2 * i : i; }
inline int pair_b(Style st, int P, int i) { return st == Style::kInterleaved ? 2 * i + 1 : i + P; }

/// (a, b) ← (a·c − b·s, b·c + a·s): rotation by the angle whose cos/sin are c, s (−s undoes it).
inline void rotate_pair(float& a, float& b, float c, float s) {
  const float x = a, y = b;
  a = x * c - y * s;
  b = y * c + x * s;
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
