#pragma once
/// How every baseline codec stores a float as binary16 (its fp16 payloads, scales and minima).
#include <cstdint>

#include "kvb/core/half.h"
#include "kvb/core/hd.h"

namespace kvb::kernels {

/// Largest finite binary16 value.
constexpr float kF16Max = 65504.f;

/// float32 -> binary16 bits for storage, round to nearest even, SATURATING: anything that would round to
/// ±Inf (|x| >= 65520, bf16/fp32 dumps can hold such values) is stored as ±65504, so a stored cache never
/// holds Inf and attention over it never turns into NaN. NaN stays NaN (the loader rejects NaN inputs).
KVB_HD_INLINE uint16_t f32_to_f16_sat(float x) {
  if (x > kF16Max) x = kF16Max;
  else if (x < -kF16Max) x = -kF16Max;
  return f32_to_f16(x);
}

}  // namespace kvb::kernels
