#pragma once
/// Host-side pieces shared by qjl and h1b (family one_bit_sketch): the seeded projection, sign sketches of
/// float vectors with a certified sign, and the CPU hot loops over packed sign bits (masked sums for QJL,
/// XOR + popcount for H1B), each with a portable version and an AVX-512 version picked at run time.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace kvb::codecs::sk {

/// A seeded random projection S [rows][d] (a seeded matrix costs its 8-byte seed: it is regenerated from
/// the seed, never stored). Entries i.i.d. N(0, 1) from kvb::Rng(seed) in row-major order; with
/// `orthogonal`, consecutive blocks of d rows (the last block may be shorter) are orthogonalized by
/// modified Gram-Schmidt (twice, in float64) and each row rescaled to norm sqrt(d): QJL's orthogonalized
/// JL (docs/codecs.md §7.2; QR of a Gaussian block and Gram-Schmidt of its rows give the same distribution).
struct Projection {
  int rows = 0, d = 0;
  uint64_t seed = 0;
  bool orthogonal = false;
  std::vector<double> s64;       ///< [rows][d], the definition
  std::vector<float> s32;        ///< [rows][d], s64 rounded to float (encode's fast path)
  std::vector<float> t32;        ///< [d][rows], transposed (query sketches S q accumulate row c of it)
  std::vector<double> row_norm;  ///< ‖S_i‖₂
  const double* row64(int i) const { return s64.data() + static_cast<size_t>(i) * d; }
  const float* row32(int i) const { return s32.data() + static_cast<size_t>(i) * d; }
};

/// Generates the projection (deterministic in its arguments). A projection with fewer rows is exactly the
/// first rows of one with more.
Projection make_projection(uint64_t seed, int rows, int d, bool orthogonal);

/// The projections of one codec instance: each (seed, rows, d, orthogonal) generated on first use and then
/// shared by every layer the instance encodes (and by its fit). A seeded projection is deterministic from
/// its seed, so it is the codec's fixed state, made once per instance and handed to the layers, not a
/// process-wide cache. A codec uses one seed per cell (QJL: one per layer set); the few most recent
/// projections are kept, so callers that change the seed per encode regenerate. Thread-safe.
class Projections {
 public:
  std::shared_ptr<const Projection> get(uint64_t seed, int rows, int d, bool orthogonal) const;

 private:
  static constexpr size_t kKeep = 4;
  mutable std::mutex mu_;
  mutable std::vector<std::shared_ptr<const Projection>> made_;  // most recent last, at most kKeep
};

/// <S_i, x> in float64, summed over j = 0..d-1 in order. References compute every projection this way; the
/// CPU path falls back to it whenever the float32 result is too close to 0 to certify its sign, so both
/// store identical bits.
double project_f64(const Projection& P, int i, const float* x);

/// Packs the signs of S_i·x for rows i < n (n a multiple of 8) into out[n/8] (written fully). Each projection
/// is computed in float32; when |z| <= (d + 2)·u·‖S_i‖·‖x‖·1.01 (u = 2^-24: a bound on the float32 dot's
/// error, including the rounding of S to float) its sign is not certain and it is recomputed with
/// project_f64. `x_norm` = ‖x‖₂ (float64).
void sign_sketch(const Projection& P, int n, const float* x, double x_norm, uint8_t* out);

/// sign_sketch of T <= kSketchBlock vectors x_t = X + t·ldx at once (norms[t] = ‖x_t‖), into out + t·ldo: the
/// float32 projections of the block form one small matrix product (no horizontal sums), then each sign is
/// certified or recomputed exactly as sign_sketch does, so the bits are identical.
constexpr int kSketchBlock = 16;
void sign_sketch_block(const Projection& P, int n, const float* X, int64_t ldx, int T, const double* norms,
                       uint8_t* out, int64_t ldo);

/// Same for a vector that is nonzero only on the channels idx[0..ni) (ascending): projections sum over those
/// channels only (identical in float64 to the full sum, whose other terms are exact zeros).
void sign_sketch_sparse(const Projection& P, int n, const float* x, const int* idx, int ni, double x_norm,
                        uint8_t* out);

/// xs[i] = Σ_c q[c]·S[i][c] for i < n (float32; the query side of QJL is not quantized).
void project_query(const Projection& P, int n, const float* q, float* xs);

/// For `count` sketch rows of `stride` bytes from `rows`: out[t] = Σ_{i < n: bit i of row t set} x[i]
/// (sketch_math.h masked_sum up to float reassociation), n a multiple of 8.
void masked_sums(const uint8_t* rows, int64_t stride, int64_t count, const float* x, int n, float* out);

/// out[t] = Hamming(q, rows + t·nbytes) for t < count (nbytes a multiple of 8).
void hamming_many(const uint8_t* q, const uint8_t* rows, int nbytes, int64_t count, int32_t* out);

/// Which loops masked_sums / hamming_many use: "avx512" (AVX-512F/VL, and VPOPCNTDQ for popcounts, found on
/// this CPU at run time, and kernels::simd_kernels_enabled()) or "portable".
const char* sketch_kernels_name();

/// Outlier channels of a group of n token rows x[n][d]: the `count` channels with the largest L2 norm over
/// the group (Σ_t x_tc² in float64, t ascending; ties to the lower channel), returned in ascending order.
void top_channels(const float* x, int n, int d, int count, int* out);

}  // namespace kvb::codecs::sk
