#pragma once
/// The device-side description of a baseline codec's cache (fp16, fp8, int, kivi), shared by the CUDA
/// kernels (kernels/cuda/attend.cu, codecs/*/..._cuda.cu) and the host layer (gpu_layer.cpp).
/// Plain data and KVB_HD functions only: nvcc compiles this as C++17.
///
/// Every baseline stores K (and V) of one KV head as two token ranges, with the CPU layouts unchanged:
///   tokens [0, q_tokens)   in the part's format (codes + metadata, token-major rows)
///   tokens [q_tokens, C)   verbatim fp16 rows (kivi's key residual / value window; all of fp16's cache)
/// so one attention kernel serves all four codecs, with the dequantization fused into its loads
/// (`load` below, through the format-traits table of formats.h).
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

struct LayerView {
  int heads = 0;
  int64_t C = 0;  ///< rows per head
  int d = 0;
  Part k, v;
  RowClasses rows;
};

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
