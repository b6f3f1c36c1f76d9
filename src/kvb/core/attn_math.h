#pragma once
/// Attention arithmetic shared by every codec's CPU path and its CUDA kernels.
#include <cmath>

#include "kvb/core/hd.h"

namespace kvb {

/// Logit soft-capping (Gemma 2 style): cap * tanh(s / cap); cap <= 0 means none.
KVB_HD_INLINE float softcap_f(float s, float cap) { return cap > 0.f ? cap * tanhf(s / cap) : s; }

/// Streaming (online) softmax-weighted sum: feed (logit, value row) pairs in any order; `out` ends as
/// Σ softmax(s)_i v_i. Numerically stable: keeps the running max and rescales the accumulator.
/// acc has `d` floats owned by the caller.
struct OnlineSoftmax {
  float m = -INFINITY;  ///< running max logit
  float l = 0.f;        ///< running Σ exp(s - m)

  /// Returns the weight exp(s - m) to apply to the new row after rescaling acc by `*rescale`.
  KVB_HD_INLINE float push(float s, float* rescale) {
    if (s > m) {
      *rescale = (m == -INFINITY) ? 0.f : expf(m - s);
      l = l * *rescale + 1.f;
      m = s;
      return 1.f;
    }
    *rescale = 1.f;
    const float w = expf(s - m);
    l += w;
    return w;
  }
};

}  // namespace kvb
