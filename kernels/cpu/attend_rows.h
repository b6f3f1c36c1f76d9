#pragma once
/// Exact attention of a GQA group's queries over token-major stored rows, fused (issue 19 items 2 and 3): one pass
/// over the rows in tiles of kRowAttendTile, each tile's logits for every query from register-blocked dot products
/// (4 queries × 2/4 rows per FMA block, each row chunk decoded once for all queries), an online softmax (running
/// max and normalizer per query, the partial output rescaled when the max grows, a vectorized exp), and the value
/// rows accumulated into all queries' outputs (4 queries × 2/4 vectors of channels per row). Nothing is
/// materialized per row: no float copy of K or V, no C-long logit buffer.
///
/// The rows are decoded in registers from the stored bytes, never through memory:
///   kF16    binary16 rows (the fp16 codec, the eviction and selection families): one conversion per vector;
///   kE4M3   fp8 rows, sign·(bits & 0x7F) moved into a binary16 (exponent bias 15 vs 7: the value times 2^-8,
///           which the caller folds into key_factor / out_factor as the fp8 codec's shift decode does);
///           valid for every code except E4M3's NaN (0x7F/0xFF), which the caller must exclude;
///   kE5M2   fp8 rows, the high byte of a binary16 (exact for every code);
///   kU8/U4/U2  per-token uniform codes (kernels/formats/uniform.h: x̂ = code·scale + min per group of `group`
///           channels, the int codec): a chunk of W packed bytes is zero-extended to W 32-bit lanes once, and
///           vector s of the chunk takes bits [s·b, s·b + b) of every lane — channels S·k + s of the chunk (S = 8/b
///           vectors per chunk). That lane order is a fixed permutation of each chunk's channels: the kernel
///           applies it to the queries once per call and undoes it on the outputs once per call, so the dot
///           products and value sums are the unpermuted ones. Each vector's scale and min are broadcasts of the
///           row's group parameters (converted once per tile), or a blend of two groups' when a chunk spans
///           exactly two groups (AVX-512, 2-bit codes, group 32). x̂ = fma(code, scale, min) in registers.
///   kC8/C4/C2  per-channel uniform codes (KIVI's keys): the same packed token rows, with a (scale, min) per channel
///           per block of `group` consecutive tokens ([blocks][d] pairs); each block's parameters are converted once
///           per call into the lane order and loaded as vectors, x̂ = fma(code, scale_j, min_j).
/// The two sides may differ where a codec stores them differently: same codec on both sides, or keys kC_b with
/// values kU_b or kF16, or keys kF16 with values kU_b (KIVI's ranges: quantized keys and values, quantized keys and
/// the fp16 value window, the fp16 key residual and quantized values).
///
/// The query is never quantized: scores are float32 dot products of the float query with the exactly decoded
/// stored values, the same numbers the oracle computes (up to summation order). The unfused path the codecs
/// fall back to (codecs/common/baseline.h attend_many_rows: decoded rows, dots_many, softmax, axpy_many) stays
/// the oracle the tests hold it to.
#include <cstdint>

namespace kvb::kernels {

/// A run of consecutive rows sharing a logit bias and a value factor (the selection family's weight classes):
/// logit = softmax_scale·key_factor·<q, k> + bias; the row's softmax weight counts in the normalizer as is and
/// multiplies its value by vfac.
struct RowSegment {
  int64_t rows = 0;
  float bias = 0.f, vfac = 1.f;
};

/// How a side's rows are stored.
enum class RowCodec : uint8_t { kF16, kE4M3, kE5M2, kU8, kU4, kU2, kC8, kC4, kC2 };

/// One side (keys or values) of the stored rows.
struct StoredRows {
  RowCodec codec = RowCodec::kF16;
  /// [rows][row bytes]: d binary16 (kF16), d bytes (fp8), uniform.h packed rows of d·b/8 bytes (kU*)
  const void* rows = nullptr;
  /// kU*: [rows][d / group] (scale, min) binary16 pairs (uniform.h GroupParams); kC*: [blocks][d] pairs, block 0
  /// being the one of absolute row 0 (row0 below); unused otherwise
  const uint16_t* sm = nullptr;
  int group = 0;  ///< kU*: channels per (scale, min) pair; kC*: tokens per block (>= 8)
  int64_t row0 = 0;  ///< kC*: the absolute row index of rows[0] (its block is row0 / group)
};

/// The running softmax of a GQA group's queries across chained calls over consecutive row ranges (a codec whose
/// rows change format part-way, KIVI): m, l per query; the outputs hold the unnormalized sums between calls.
struct RowAttendState {
  float m[64];
  double l[64];
  bool started = false;
};

struct RowAttend {
  StoredRows K, V;  ///< the same codec on both sides
  int64_t rows = 0;
  int d = 0;
  const float* const* qs = nullptr;  ///< nq queries [d]
  int nq = 0;
  float softmax_scale = 1.f;
  float key_factor = 1.f;    ///< logit = softmax_scale·(key_factor·<q, k>), as to_logits (no softcap here)
  float out_factor = 1.f;    ///< outputs times this over the normalizer
  float* const* outs = nullptr;  ///< nq outputs [d]
  const RowSegment* segs = nullptr;  ///< nsegs runs covering the rows in order (Σ rows == rows); none: one plain run
  int nsegs = 0;
  /// Chained calls: null for one call over all rows. Otherwise the first call (state->started false) starts the
  /// softmax, later ones continue it from state and the outputs' unnormalized sums, and the call with `finish`
  /// normalizes (times out_factor); a call without `finish` leaves the sums in outs.
  RowAttendState* state = nullptr;
  bool finish = true;
  /// Logits given (codecs that score from sketches: qjl, h1b): [nq][logits_stride], the final logits of rows
  /// [0, rows) (softmax_scale, key_factor and segments are not applied; K is not read and must stay kF16). The
  /// kernel then runs the online softmax and the fused value sum only.
  const float* logits = nullptr;
  int64_t logits_stride = 0;
};

constexpr int kRowAttendTile = 64;

/// Floats of work space attend_rows_fused needs for nq queries of head_dim d whose rows have `groups` (scale,
/// min) pairs each (0 for fp16 / fp8): the tile's logits, the permuted queries and outputs, the tile's group
/// parameters.
inline int64_t attend_rows_work_floats(int nq, int d, int groups = 0) {
  return static_cast<int64_t>(nq) * kRowAttendTile + 2 * static_cast<int64_t>(nq) * d +
         4 * static_cast<int64_t>(kRowAttendTile) * groups + 24 * static_cast<int64_t>(d) + 128;
}

/// Runs the fused kernel when it can (attend_rows_path is not "unfused", 1 <= nq <= 64, rows >= 1, segments cover
/// the rows) and every logit is finite; returns false otherwise, leaving outs unspecified, and the caller runs the
/// oracle path (which also handles overflowing logits as softmax_weights documents). work:
/// attend_rows_work_floats.
bool attend_rows_fused(const RowAttend& a, float* work);

/// Which path attend_rows_fused takes for rows of `codec` at head_dim d (group: channels per scale of kU*):
/// "avx512f" (the CPU has AVX-512F and d, group fit its 16-lane chunks), "avx2-fma-f16c" (8-lane chunks), or
/// "unfused" (the caller's oracle path). A kU* chunk holds W·8/b channels (W = 16 or 8 lanes); a path needs
/// d % chunk == 0 and group % chunk == 0 or group == chunk / 2; fp16 and fp8 need d % W == 0.
const char* attend_rows_path(RowCodec codec, int d, int group = 0);
/// The same for keys and values stored differently (both sides must fit a path; kC* needs d % chunk == 0 and a
/// block of >= 8 tokens); "unfused" for a pair the kernel does not take.
const char* attend_rows_path(const StoredRows& K, const StoredRows& V, int d);
/// Switches the AVX-512 path off (false: AVX2 even where AVX-512 exists) or back on; for tests comparing the two.
/// Not thread-safe: call it while no attend is running.
void set_attend_rows_avx512(bool enabled);

/// The name of a RowCodec ("f16", "e4m3", "e5m2", "u8", "u4", "u2", "c8", "c4", "c2").
const char* row_codec_name(RowCodec codec);

}  // namespace kvb::kernels
