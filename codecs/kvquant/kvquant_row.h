#pragma once
/// The per-element steps of KVQuant's encode (kvquant_codec.h), compiled by the host compiler and by nvcc: the
/// CPU encode (kvquant_math.cpp) and the device encode (kvquant_cuda.cu) both call these, so they write the same
/// bytes (every float64 step rounded once: kvb/core/hd.h). Plain data only (docs/design.md §4).
#include <cmath>
#include <cstdint>

#include "kernels/formats/fp16.h"
#include "kvb/core/half.h"
#include "kvb/core/hd.h"

namespace kvb::codecs::kvquant {

/// Nearest level: code = #{j : y > bounds[j]} over the k − 1 midpoints of the assignment levels (ties to the
/// lower level; y beyond the outer levels clamps to them).
KVB_HD_INLINE uint32_t nearest(const float* bounds, int k, float y) {
  uint32_t c = 0;
  for (int j = 0; j + 1 < k; ++j) c += y > bounds[j] ? 1u : 0u;
  return c;
}

/// Key channel value x normalized by its calibrated offset and range; ±∞ when the range is 0 and x differs
/// from the offset (such a value is an outlier whenever outliers are kept, and clamps to an outer level if not).
KVB_HD_INLINE float key_normalized(float x, float off, float rng) {
  const float diff = x - off;
  if (rng > 0.f) return diff / rng;
  return diff == 0.f ? 0.f : (diff > 0.f ? HUGE_VALF : -HUGE_VALF);
}
/// A key element is an outlier (kept in fp16) when outliers are on and it falls outside the calibrated range.
KVB_HD_INLINE bool key_outlier(bool sparse, float y) { return sparse && (y > 1.f || y < -1.f); }

/// numpy.percentile's linear interpolation at fraction q of n sorted values: position h = q·(n − 1), its floor
/// `lo` (clamped to [0, n − 1]) and the interpolated value from the lo-th and (lo+1)-th smallest a, b.
KVB_HD_INLINE double quantile_pos(double q, int64_t n) { return dmul_rn(q, static_cast<double>(n - 1)); }
KVB_HD_INLINE int64_t quantile_lo(double h, int64_t n) {
  const int64_t lo = static_cast<int64_t>(floor(h));
  return lo < 0 ? 0 : (lo > n - 1 ? n - 1 : lo);
}
KVB_HD_INLINE double quantile_interp(double a, double b, double h, int64_t lo) {
  return dadd_rn(a, dmul_rn(dadd_rn(h, -static_cast<double>(lo)), dadd_rn(b, -a)));
}

/// numpy.percentile(x, 100·q) of n >= 1 ascending values (the device encode's form of kvquant::percentile).
KVB_HD_INLINE double quantile_sorted(const float* x, int64_t n, double q) {
  const double h = quantile_pos(q, n);
  const int64_t lo = quantile_lo(h, n);
  if (lo + 1 >= n || h == static_cast<double>(lo)) return x[lo];
  return quantile_interp(x[lo], x[lo + 1], h, lo);
}

/// A value element is an outlier when outliers are on and it reaches the row's upper or lower quantile.
KVB_HD_INLINE bool value_outlier(bool sparse, float a, float hi, float lo) { return sparse && (a >= hi || a <= lo); }
/// fp16 offset and range of a value row from the max and min of its inliers (and its median).
KVB_HD_INLINE void value_scale(float mx, float mn, uint16_t* sc) {
  sc[0] = kernels::f32_to_f16_sat(0.5f * (mx + mn));
  sc[1] = kernels::f32_to_f16_sat(0.5f * (mx - mn));
}
KVB_HD_INLINE float value_normalized(float v, float off, float rng) { return rng > 0.f ? (v - off) / rng : 0.f; }

}  // namespace kvb::codecs::kvquant
