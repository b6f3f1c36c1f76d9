#pragma once
/// FP8 conversions for the naive references (`*_ref.cpp`) and tests, written without kernels/formats/fp8.h's
/// bit manipulation (ref_dense.h explains why): the fp8 reference's codes and the E4M3 block scales and
/// elements of the microscaling reference (codecs/mx). Only the Format enum comes from fp8.h.
#include <cstdint>

#include "kernels/formats/fp8.h"

namespace kvb::codecs::ref {

/// Independent FP8 encoder for tests: nearest of the format's finite values found by search over the
/// decoded code table (ties to the even code), saturating at ±max finite.
uint8_t fp8_encode_nearest(kernels::fp8::Format f, float x);
/// Independent FP8 decoder: (-1)^s · 2^(e-bias) · (1 + m/2^M), subnormals m · 2^(1-bias-M).
double fp8_decode_formula(kernels::fp8::Format f, uint8_t code);
/// Largest finite magnitude: 448 (E4M3FN), 57344 (E5M2).
double fp8_max_finite(kernels::fp8::Format f);

}  // namespace kvb::codecs::ref
