#pragma once
/// PolarQuant's math (Han, Kacham, Karbasi, Mirrokni, Zandieh; arXiv 2502.02617; docs/codecs.md "polarquant"):
/// the recursive polar transform of a preconditioned vector, its per-level angle codebooks, the packed row
/// layout, and the seeded preconditioners. Shared by the CPU path, the reference and the CUDA kernels of
/// codecs/polar only; the per-element functions are KVB_HD (kvb/core/hd.h: nvcc compiles this header as C++17,
/// the float64 steps rounded once each in a fixed order, no FMA contraction), so every backend stores the same
/// bytes.
///
/// Transform of y ∈ R^n (n = dp, a multiple of 2^L), L levels:
///   level 1:  r¹_i = ‖(y_{2i}, y_{2i+1})‖,        ψ¹_i = atan2(y_{2i+1}, y_{2i}) ∈ [0, 2π)   (i < n/2)
///   level ℓ:  r^ℓ_i = ‖(r^{ℓ−1}_{2i}, r^{ℓ−1}_{2i+1})‖, ψ^ℓ_i = atan2(r^{ℓ−1}_{2i+1}, r^{ℓ−1}_{2i}) ∈ [0, π/2]
/// leaving n/2^L radii r^L and n − n/2^L angles (each norm sqrt(a·a + b·b), every step rounded once: pair_norm).
/// Inverse, top-down: the children of r^ℓ_i are (r^ℓ_i cos ψ^ℓ_i, r^ℓ_i sin ψ^ℓ_i). For y = Π x with Π Haar-random, the direction of y is uniform on the
/// sphere, so the level-ℓ angles are independent with density ∝ sin^{2^{ℓ−1}−1}(2ψ) on [0, π/2] (ℓ >= 2; the
/// ratio of two χ_{2^{ℓ−1}} norms) and uniform on [0, 2π) at level 1.
///
/// Packed row of one token (one part, K or V): the angle codes as one little-endian bitstream — level 1's n/2
/// codes first (angle i at bit i·b₁), then level 2's n/4 at bit offset (n/2)·b₁, and so on; code c's bit k is
/// bit (pos + k) of the stream, stream bit p is bit p % 8 of byte p / 8 — padded with zero bits to a whole
/// byte (row_bytes = ceil(Σ_ℓ (n/2^ℓ)·b_ℓ / 8)); the n/2^L radii are stored beside it as binary16.
///
/// Angle codes without atan2 (angle_code): atan2 is not correctly rounded (glibc's and CUDA's differ by an ulp
/// here and there), so a code decided from atan2's angle could differ between backends where the angle lies
/// within an ulp of a boundary. Instead each comparison ψ > β against a boundary β is decided exactly as
/// written from the pair (a, b): ψ > β ⇔ b·cos β − a·sin β > 0 (for ψ, β in one half-turn), with cos β and
/// sin β precomputed on the host (Tables::bcs, the same float64 values on every backend) and both products
/// correctly rounded. In exact arithmetic this is nearest_level on the angle; it can differ from atan2 +
/// nearest_level only within ~1 ulp of a boundary (and on the axes: ψ = π exactly is above the boundary
/// π_double, atan2 rounds it onto it).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvb/core/half.h"
#include "kvb/core/hd.h"

namespace kvb::codecs::polar {

constexpr int kMaxLevels = 10;  ///< 2^10 = 1024, the largest head_dim kvbench accepts
constexpr int kMaxBits = 8;     ///< angle bits per level (a code spans at most two bytes)
constexpr double kPi = 3.14159265358979323846;
constexpr double kTwoPi = 2 * kPi;

/// The preconditioned dimension: head_dim rounded up to a multiple of 2^levels (zero padding; docs/codecs.md).
KVB_HD_INLINE int padded_dim(int head_dim, int levels) {
  const int b = 1 << levels;
  return (head_dim + b - 1) / b * b;
}

/// Where everything of one token row lives. Level ℓ (1-based) is index ℓ − 1 of the arrays.
struct Layout {
  int d = 0;       ///< head_dim
  int dp = 0;      ///< padded_dim(d, levels)
  int levels = 0;  ///< L
  int bits[kMaxLevels] = {};       ///< angle bits of level ℓ
  int count[kMaxLevels] = {};      ///< angles of level ℓ: dp >> ℓ
  int angle_off[kMaxLevels] = {};  ///< first angle of level ℓ in the level-major angle list
  int bit_off[kMaxLevels] = {};    ///< first code bit of level ℓ in the row
  int cb_off[kMaxLevels] = {};     ///< first centroid of level ℓ in the concatenated codebook
  int angles = 0;         ///< dp − dp/2^L
  int radii = 0;          ///< dp / 2^L
  int code_bits = 0;      ///< Σ_ℓ count·bits
  int row_bytes = 0;      ///< ceil(code_bits / 8)
  int codebook_size = 0;  ///< Σ_ℓ 2^bits (centroids of all levels)
  /// Stored bytes per token of one part: packed codes plus fp16 radii.
  int part_bytes() const { return row_bytes + 2 * radii; }
};

/// The layout for head_dim d, `levels` levels with bits[ℓ−1] angle bits at level ℓ (levels in [1, kMaxLevels],
/// bits in [1, kMaxBits], bits.size() == levels; throws std::invalid_argument otherwise).
Layout make_layout(int d, int levels, const std::vector<int>& bits);

/// One level's angle quantizer: ascending centroids and the decision boundaries between them.
struct Codebook {
  std::vector<double> centroids;
  std::vector<double> boundaries;  ///< centroids.size() − 1
  double distortion = 0;           ///< E (ψ − Q(ψ))² under the level's density
};

/// The codebook of `bits` bits for level `level` (computed once per (level, bits), then cached; thread-safe):
///  * level 1: the uniform grid of bin centers (j + ½)·2π/2^b, boundaries j·2π/2^b. The level-1 angle is
///    circular and uniform; on the circle the nearest of these centers is the one whose bin [j·Δ, (j+1)·Δ)
///    holds ψ, so the linear boundaries already give the nearest level on the circle (ψ = 2π, the only wrap
///    point, ties between the last and the first center). Lloyd–Max on the uniform quadrature returns the same
///    grid (tests check it), but the circle is not an interval, so the grid is used directly.
///  * level ℓ >= 2: kernels/cpu/lloyd_max.h's solver on angle_quadrature(level, 2^16), made exactly symmetric
///    about π/4 (as the density is) by averaging it with its mirror image: the solver's discrete fixed point is
///    symmetric only to about one quadrature spacing (~2e-5 rad).
const Codebook& codebook(int level, int bits);

/// Quadrature of the level-ℓ (ℓ >= 2) angle density ∝ sin^{2^{ℓ−1}−1}(2ψ) on [0, π/2]: N midpoints, weights
/// the density (computed in the log domain, no underflow at high levels).
void angle_quadrature(int level, int N, std::vector<double>& x, std::vector<double>& w);

/// Forward transform in float64: y[dp] -> angles[layout.angles] (level-major, level 1 first; level 1 in
/// [0, 2π), higher levels in [0, π/2]) and radii[layout.radii]. work: dp/2 doubles.
void forward(const Layout& lay, const double* y, double* angles, double* radii, double* work);

/// Inverse transform in place, top-down, in T's arithmetic: on entry out[0, radii) holds the level-L radii; on
/// return out[0, dp) holds the vector. cs(level, i, c, s) gives cos and sin of angle i of `level`.
template <class T, class CosSin>
inline void inverse_in_place(const Layout& lay, T* out, CosSin&& cs) {
  for (int l = lay.levels; l >= 1; --l)
    for (int i = lay.count[l - 1] - 1; i >= 0; --i) {  // descending: children 2i, 2i+1 >= i are already read
      T c, s;
      cs(l, i, c, s);
      const T r = out[i];
      out[2 * i + 1] = r * s;
      out[2 * i] = r * c;
    }
}

/// Code of angle psi at `level`: lloyd::nearest_level on the level's boundaries (see codebook() for level 1).
/// The encoders decide codes from the pairs instead (angle_code), which agrees except within ~1 ulp of a boundary.
int quantize_angle(const Codebook& cb, double psi);

/// ‖(a, b)‖ of one node: sqrt(a·a + b·b), each step rounded once (host and device alike).
KVB_HD_INLINE double pair_norm(double a, double b) { return dsqrt_rn(dadd_rn(dmul_rn(a, a), dmul_rn(b, b))); }

/// Whether the angle of (a, b) lies strictly beyond the boundary direction cs = (cos β, sin β), both in one
/// half-turn [0, π): b·cos β − a·sin β > 0, i.e. b·cos β > a·sin β with correctly rounded products.
KVB_HD_INLINE bool beyond(double a, double b, const double* cs) { return dmul_rn(b, cs[0]) > dmul_rn(a, cs[1]); }

/// #{boundaries j < nb the angle of (a, b) lies beyond}: binary search over the ascending boundaries' (cos, sin)
/// pairs cs[2j], cs[2j + 1] (lloyd::nearest_level's search, a value on a boundary going to the lower level).
KVB_HD_INLINE int count_beyond(double a, double b, const double* cs, int nb) {
  int lo = 0, hi = nb;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (beyond(a, b, cs + 2 * mid)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/// The code at `level` of the node (a, b) (a = the even child, b = the odd one), from its level's nb =
/// 2^bits − 1 boundaries' (cos, sin) table cs (Tables::bcs): level >= 2 (a, b >= 0, ψ ∈ [0, π/2]) the boundaries
/// below ψ; level 1 by half-plane: ψ ∈ [0, π) (b > 0, or b = 0 and a >= 0) against the boundaries j·2π/2^bits
/// in (0, π), ψ ∈ [π, 2π) as 2^{bits−1} plus the code of (−a, −b) (ψ − π, whose boundaries are the same).
KVB_HD_INLINE int angle_code(int level, double a, double b, const double* cs, int nb) {
  if (level >= 2) return count_beyond(a, b, cs, nb);
  const int half = (nb + 1) / 2;  // boundary half − 1 is π; those below it lie in (0, π)
  if (b < 0 || (b == 0 && a < 0)) return half + count_beyond(-a, -b, cs, half - 1);
  return count_beyond(a, b, cs, half - 1);
}

/// One node of the forward transform: *r = pair_norm(a, b), returns angle_code (a and b read before *r is
/// written, so the encoders may run a level in place).
KVB_HD_INLINE int encode_node(int level, double a, double b, const double* cs, int nb, double* r) {
  const int c = angle_code(level, a, b, cs, nb);
  *r = pair_norm(a, b);
  return c;
}

/// Writes code (b bits) at stream bit pos of a zero-initialized row.
KVB_HD_INLINE void put_code(uint8_t* row, int pos, int b, unsigned code) {
  const int k = pos >> 3, sh = pos & 7;
  row[k] = static_cast<uint8_t>(row[k] | (code << sh));
  if (sh + b > 8) row[k + 1] = static_cast<uint8_t>(row[k + 1] | (code >> (8 - sh)));
}

/// Reads the b-bit code at stream bit pos (b <= 8: at most two bytes, never past the row's last byte).
KVB_HD_INLINE unsigned get_code(const uint8_t* row, int pos, int b) {
  const int k = pos >> 3, sh = pos & 7;
  unsigned v = static_cast<unsigned>(row[k]) >> sh;
  if (sh + b > 8) v |= static_cast<unsigned>(row[k + 1]) << (8 - sh);
  return v & ((1u << b) - 1u);
}

/// Element j (< dp) of a row decoded top-down in the rotated domain, in float32 exactly as the CPU path's
/// decode (inverse_in_place over the tables): the level-L radius of its subtree (binary16) times, from level
/// L down to 1, the cos (j's ancestor at level ℓ − 1 is an even child) or sin (odd) of its level-ℓ ancestor's
/// stored angle, each product rounded once in that order. cs: Tables::cs; codes / radii: the row's.
KVB_HD_INLINE float decode_elem(const Layout& lay, const uint8_t* codes, const uint16_t* radii, const float* cs,
                                int j) {
  float v = f16_to_f32(radii[j >> lay.levels]);
  for (int l = lay.levels; l >= 1; --l) {
    const int b = lay.bits[l - 1];
    const unsigned c = get_code(codes, lay.bit_off[l - 1] + (j >> l) * b, b);
    v *= cs[2 * (lay.cb_off[l - 1] + static_cast<int>(c)) + ((j >> (l - 1)) & 1)];
  }
  return v;
}

/// The seed of the preconditioner of (layer, KV head, part) — part 0 keys, 1 values — from the run seed:
/// kvb::derive_seed(seed, {"polar", layer, head, part}). The matrix costs this seed (8 bytes).
uint64_t rotation_seed(uint64_t run_seed, int layer, int head, int part);

/// A seeded Haar-random orthogonal dp×dp matrix (kernels/cpu/orthogonal.h haar_orthogonal, row-major), in
/// float64 (encode, reference) and rounded to float32 (the CPU path's query rotation and output un-rotation).
struct Rotation {
  int n = 0;
  std::vector<double> m64;   ///< Π, row-major
  std::vector<double> m64t;  ///< Πᵀ, row-major (so y = Σ_j x_j·Πᵀ[j] runs along rows)
  std::vector<float> m32;    ///< Π rounded to float32, row-major
};

/// The per-layer tables of a layout (host-computed once, the same values on every backend):
struct Tables {
  std::vector<float> codebook;  ///< the stored float32 centroids (polar::codebook), level-major [codebook_size]
  std::vector<float> cs;        ///< [2·codebook_size]: cos, sin of each stored float32 angle (decode)
  std::vector<double> bcs;      ///< [2·codebook_size]: cos β_j, sin β_j of level ℓ's boundary j at slot
                                ///< cb_off + j (angle_code; a level's last slot unused, zero)
};
Tables make_tables(const Layout& lay);

/// The rotation of (n, seed): the process-wide memoized Haar matrix (kernels/cpu/orthogonal.h memoized) with
/// entries are dropped first, layers keep theirs alive). Thread-safe.
std::shared_ptr<const Rotation> rotation(int n, uint64_t seed);

}  // namespace kvb::codecs::polar
