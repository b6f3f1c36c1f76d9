#pragma once
/// Per-element math of kvcar's CPU path and CUDA kernels (KVB_HD): LeakyReLU and the per-token int8 latent
/// quantizer of docs/codecs.md §10.3 (see kvcar_codec.h for the float-minimum zero point).
#include <cmath>
#include <cstdint>

#include "kvb/core/hd.h"

namespace kvb::codecs {

KVB_HD_INLINE float kvcar_leaky(float y, float slope) { return y > 0.f ? y : slope * y; }

/// Per-token int8 grid of the latent z[0..n): scale = 255/(max − min); a constant row uses span |min|
/// (or 1 when it is 0), so its one value is still reproduced to 1/510 of itself.
KVB_HD_INLINE void kvcar_int8_grid(const float* z, int n, float* scale, float* lo) {
  float mn = z[0], mx = z[0];
  for (int i = 1; i < n; ++i) {
    mn = z[i] < mn ? z[i] : mn;
    mx = z[i] > mx ? z[i] : mx;
  }
  float span = mx - mn;
  if (!(span > 0.f)) span = mn != 0.f ? fabsf(mn) : 1.f;
  *scale = 255.f / span;
  *lo = mn;
}

/// q = clamp(round(scale·(z − lo)) − 128, −128, 127) (round half up).
KVB_HD_INLINE int8_t kvcar_int8_code(float z, float scale, float lo) {
  float y = floorf(scale * (z - lo) + 0.5f) - 128.f;
  y = y < -128.f ? -128.f : (y > 127.f ? 127.f : y);
  return static_cast<int8_t>(y);
}

/// ẑ = (q + 128)/scale + lo.
KVB_HD_INLINE float kvcar_int8_value(int8_t q, float scale, float lo) {
  return (static_cast<float>(q) + 128.f) / scale + lo;
}

}  // namespace kvb::codecs
