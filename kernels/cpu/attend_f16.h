#pragma once
/// Exact attention of a GQA group's queries over fp16 key and value rows, fused (issue 19 item 2): one pass over
/// the rows in tiles of kTile, each tile's logits for every query from register-blocked dot products (4 queries ×
/// 2 rows per FMA block, each fp16 row chunk converted once for all queries), an online softmax (running max
/// and normalizer per query, the partial output rescaled when the max grows, a vectorized exp), and the value
/// rows accumulated into all queries' outputs (4 queries × 16 channels of accumulators per row). Nothing is
/// materialized per row: no float copy of K or V, no C-long logit buffer.
///
/// The unfused path it replaces (codecs/common/baseline.h attend_many_rows: decoded rows, dots_many, softmax,
/// axpy_many) stays the oracle the tests hold it to.
#include <cstdint>

namespace kvb::kernels {

/// A run of consecutive rows sharing a logit bias and a value factor (the selection family's weight classes):
/// logit = softmax_scale·key_factor·<q, k> + bias; the row's softmax weight counts in the normalizer as is and
/// multiplies its value by vfac.
struct F16Segment {
  int64_t rows = 0;
  float bias = 0.f, vfac = 1.f;
};

struct F16Attend {
  const uint16_t* K = nullptr;  ///< [rows][d] binary16 bits
  const uint16_t* V = nullptr;  ///< [rows][d]
  int64_t rows = 0;
  int d = 0;
  const float* const* qs = nullptr;  ///< nq queries [d]
  int nq = 0;
  float softmax_scale = 1.f;
  float key_factor = 1.f;    ///< logit = softmax_scale·(key_factor·<q, k>), as to_logits (no softcap here)
  float out_factor = 1.f;    ///< outputs times this over the normalizer
  float* const* outs = nullptr;  ///< nq outputs [d]
  const F16Segment* segs = nullptr;  ///< nsegs runs covering the rows in order (Σ rows == rows); none: one plain run
  int nsegs = 0;
};

constexpr int kF16AttendTile = 64;

/// Floats of work space attend_f16_fused needs for nq queries.
inline int64_t attend_f16_work_floats(int nq) { return static_cast<int64_t>(nq) * kF16AttendTile + 64; }

/// Runs the fused kernel when it can (AVX2 + FMA + F16C present and not switched off, d % 8 == 0, rows >= 1) and
/// every logit is finite; returns false otherwise, leaving outs unspecified, and the caller runs the oracle path
/// (which also handles overflowing logits as softmax_weights documents). work: attend_f16_work_floats(nq).
bool attend_f16_fused(const F16Attend& a, float* work);

/// Which path attend_f16_fused takes at head_dim d: "avx512f" (d % 16 == 0 and the CPU has AVX-512F), "avx2-fma-f16c",
/// or "unfused" (the caller's oracle path).
const char* attend_f16_path(int d);
/// Switches the AVX-512 path off (false: AVX2 even where AVX-512 exists) or back on; for tests comparing the two.
/// Not thread-safe: call it while no attend is running.
void set_attend_f16_avx512(bool enabled);

}  // namespace kvb::kernels
