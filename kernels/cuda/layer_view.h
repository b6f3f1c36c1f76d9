#pragma once
/// The device-side description of a baseline codec's cache (fp16, fp8, int, kivi), shared by the CUDA
/// kernels (kernels/cuda/attend.cu, codecs/*/..._cuda.cu) and the host layer (gpu_layer.cpp).
/// Plain data and KVB_HD functions only: nvcc compiles this as C++17.
///
/// Every baseline stores K (and V) of one KV head as two token ranges, with the CPU layouts unchanged:
///   tokens [0, q_tokens)   in the part's format (codes + metadata, token-major rows)
///   tokens [q_tokens, C)   verbatim fp16 rows (kivi's key residual / value window; all of fp16's cache)
/// so one attention kernel serves all four codecs, with the dequantization fused into its loads
/// (`load` below, through the format-traits table of formats.h). The token-selection and eviction codecs
/// reuse it over fp16 rows: weighted rows (RowClasses) and packed variable-length heads (LayerView::row_off).
#include <cmath>
#include <cstdint>

#include "kernels/cuda/formats.h"
#include "kvb/core/half.h"
#include "kvb/core/hd.h"

namespace kvb::kernels::gpu {

/// Weighted rows of the token-selection codecs (codecs/select): in each head, rows [first, first + Σ counts)
/// are kept tokens grouped by weight class; a row of class c adds bias[c] to its logit (after softcap) and
/// scales its softmax weight in the value sum by vfac[c] (docs/codecs.md §6.3). n = 0: no weighted rows.
constexpr int kMaxRowClasses = 17;
struct RowClasses {
  int n = 0;
  int64_t first = 0;
  const int32_t* counts = nullptr;  ///< [heads][n]
  float bias[kMaxRowClasses] = {};
  float vfac[kMaxRowClasses] = {};
};

/// Packed variable-length heads (the eviction codecs, codecs/evict, where AdaKV keeps a different number of
/// rows per KV head): when row_off (a device pointer, [heads + 1], row_off[0] = 0, non-decreasing) is set,
/// K and V are fp16 tails only (q_tokens = 0, no RowClasses) holding all heads' rows back to back, head g
/// being rows [row_off[g], row_off[g + 1]) of tail [row_off[heads]][d], and C is the longest head's row
/// count: the attention plans its splits over C, and a chunk past a head's end is an empty partial
/// (m = −inf, l = 0) that the merge ignores; a head with no rows attends to 0. Row t of head g (t < its row
/// count) is the t-th kept row, whatever token it came from. The per-query logits keep the [nq][C] layout:
/// logits[qi][t] is row t of the query's head for t < its row count, and −inf for t in [count, C) (a row
/// that is not there: weight exp(−inf) = 0, so a log-sum-exp over the whole [C] row is the head's own).
struct LayerView {
  int heads = 0;
  int64_t C = 0;  ///< rows per head (packed views: the longest head's)
  int d = 0;
  Part k, v;
  RowClasses rows;
  const int64_t* row_off = nullptr;  ///< packed views only: [heads + 1] row offsets (device memory)
};

/// Rows of head g: C, or its packed row count.
KVB_HD_INLINE int64_t head_rows(const LayerView& L, int g) {
  return L.row_off ? L.row_off[g + 1] - L.row_off[g] : L.C;
}

/// The weight class of row t of head g, or -1 for an unweighted row.
KVB_HD_INLINE int row_class(const RowClasses& rc, int g, int64_t t) {
  if (rc.n == 0 || t < rc.first) return -1;
  int64_t end = rc.first;
  for (int c = 0; c < rc.n; ++c) {
    end += rc.counts[g * rc.n + c];
    if (t < end) return c;
  }
  return -1;
}

/// Element j of token t of KV head g, dequantized from the stored form (what the CPU decodes too): the fp16
/// tail, or the part's format through the traits table (formats.h).
KVB_HD_INLINE float load(const Part& p, int64_t C, int d, int g, int64_t t, int j) {
  if (t >= p.q_tokens) {
    const int64_t tail = C - p.q_tokens;
    return f16_to_f32(p.tail[(static_cast<int64_t>(g) * tail + (t - p.q_tokens)) * d + j]);
  }
  return load_format(Formats{}, p, d, g, t, j);
}

/// Element j of row t (< head_rows(L, g)) of KV head g of a packed view (L.row_off set): K's (`p` = L.k) or
/// V's (L.v) fp16 row.
KVB_HD_INLINE float load_packed(const LayerView& L, const Part& p, int g, int64_t t, int j) {
  return f16_to_f32(p.tail[(L.row_off[g] + t) * L.d + j]);
}

/// Merging two partial softmax states (m: max logit, l: Σ exp(s - m), o: Σ exp(s - m)·v) of disjoint token
/// ranges: the split-context reduction of the attention kernel (flash-decoding). Returns the factors that
/// scale each side's l and o onto the merged max.
struct MergeFactors {
  float m, a, b;
};
KVB_HD_INLINE MergeFactors merge_factors(float m1, float m2) {
  const float m = m1 > m2 ? m1 : m2;
  if (m == -INFINITY) return MergeFactors{m, 0.f, 0.f};  // both empty
  return MergeFactors{m, m1 == -INFINITY ? 0.f : expf(m1 - m), m2 == -INFINITY ? 0.f : expf(m2 - m)};
}

}  // namespace kvb::kernels::gpu
