#pragma once
/// FP8 per-element math (OCP 8-bit floating point, v1.0), shared by the CPU path and future kernels.
///
///  format   exp/man  bias  max finite          subnormal step   special codes
///  E4M3FN   4 / 3    7     448  (code 0x7e)    2^-9             0x7f / 0xff NaN; no Inf
///  E5M2     5 / 2    15    57344 (code 0x7b)   2^-16            0x7c Inf, 0x7d-0x7f NaN (IEEE-like)
///
/// encode: round to nearest, ties to even, and SATURATE: every finite value or Inf beyond the largest
/// finite code (including values that would round past it) becomes ±max finite. E4M3FN has no Inf so
/// this is its only sensible overflow; for E5M2 we choose saturation over Inf too (the OCP "saturating"
/// conversion mode), so an encoded cache never holds Inf. NaN encodes to a NaN code (0x7f | sign).
#include <cstdint>

#include "kvb/core/half.h"
#include "kvb/core/hd.h"

namespace kvb::kernels::fp8 {

enum class Format : uint8_t { kE4M3, kE5M2 };

/// Largest finite magnitude of a format.
KVB_HD_INLINE float max_finite(Format f) { return f == Format::kE4M3 ? 448.f : 57344.f; }

/// Shared encoder: M mantissa bits, bias B, largest finite code kMaxCode (sign cleared). Written with
/// selects and no early returns (both the normal and the subnormal candidate are computed), so an encode
/// loop vectorizes on the CPU (3x faster than the branchy form with AVX2) and kernels do not diverge.
template <int M, int B, uint32_t kMaxCode>
KVB_HD_INLINE uint8_t encode_impl(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t ax = u & 0x7fffffffu;
  constexpr int kMaxExp = static_cast<int>(kMaxCode >> M) - B;  // unbiased exponent of max finite
  const int fe = static_cast<int>(ax >> 23) - 127;              // unbiased float exponent
  const uint32_t mant = ax & 0x7fffffu;
  // Normal in the target: keep M mantissa bits, round the dropped 23 - M bits to nearest even (a carry out
  // of the mantissa correctly bumps the exponent). Meaningful only when fe >= 1 - B.
  constexpr int kShift = 23 - M;
  const uint32_t normal = (static_cast<uint32_t>(fe + B) << M) | (mant >> kShift);
  const uint32_t rem_n = mant & ((1u << kShift) - 1u);
  const uint32_t up_n = static_cast<uint32_t>(rem_n > (1u << (kShift - 1)) ||
                                              (rem_n == (1u << (kShift - 1)) && (normal & 1u)));
  // Subnormal (or zero) in the target: code = round(|x| / 2^(1-B-M)) = round(m24 >> shift) with
  // |x| = m24 · 2^(fe-23) and shift = 24 - B - M - fe (>= 24 - M here). shift >= 25 rounds to 0 (so do
  // float subnormals, whose fe is -127); clamp it to 25 so the shifts stay defined.
  int shift = 24 - B - M - fe;
  shift = shift < 1 ? 1 : (shift > 25 ? 25 : shift);
  const uint32_t m24 = mant | 0x800000u;
  const uint32_t sub = m24 >> shift;
  const uint32_t rem_s = m24 & ((1u << shift) - 1u), half_s = 1u << (shift - 1);
  const uint32_t up_s = static_cast<uint32_t>(rem_s > half_s || (rem_s == half_s && (sub & 1u)));
  uint32_t code = fe >= 1 - B ? normal + up_n : sub + up_s;
  code = (fe > kMaxExp || code > kMaxCode) ? kMaxCode : code;  // overflow or Inf: saturate
  code = ax > 0x7f800000u ? 0x7fu : code;                       // NaN
  return static_cast<uint8_t>(sign | code);
}

/// Shared decoder, written with bit masks instead of branches so that a loop over codes vectorizes on the
/// CPU (a 256-entry table lookup does not) and stays branch-free in kernels.
template <int E, int M, int B>
KVB_HD_INLINE float decode_impl(uint8_t c) {
  const uint32_t u = c;
  const uint32_t sign = (u & 0x80u) << 24;
  const uint32_t e = (u >> M) & ((1u << E) - 1u);
  const uint32_t m = u & ((1u << M) - 1u);
  // normal: 2^(e-B) · (1 + m/2^M); subnormal (e == 0): m · 2^(1-B-M), exact in float
  const uint32_t normal = ((e + 127u - B) << 23) | (m << (23 - M));
  const uint32_t sub = float_bits(static_cast<float>(m) * bits_float(static_cast<uint32_t>(127 + 1 - B - M) << 23));
  const uint32_t is_sub = 0u - static_cast<uint32_t>(e == 0);
  uint32_t bits = (sub & is_sub) | (normal & ~is_sub);
  // specials: E4M3FN S.1111.111 is NaN; E5M2 exponent 31 is Inf (m == 0) or NaN
  const uint32_t special = E == 4 ? 0u - static_cast<uint32_t>((u & 0x7fu) == 0x7fu) : 0u - static_cast<uint32_t>(e == 31u);
  const uint32_t special_bits = E == 4 ? 0x7fc00000u : (0x7f800000u | (static_cast<uint32_t>(m != 0) << 22));
  bits = (bits & ~special) | (special_bits & special);
  return bits_float(bits | sign);
}

KVB_HD_INLINE uint8_t encode_e4m3(float x) { return encode_impl<3, 7, 0x7eu>(x); }
KVB_HD_INLINE uint8_t encode_e5m2(float x) { return encode_impl<2, 15, 0x7bu>(x); }
KVB_HD_INLINE float decode_e4m3(uint8_t c) { return decode_impl<4, 3, 7>(c); }
KVB_HD_INLINE float decode_e5m2(uint8_t c) { return decode_impl<5, 2, 15>(c); }

KVB_HD_INLINE uint8_t encode(Format f, float x) { return f == Format::kE4M3 ? encode_e4m3(x) : encode_e5m2(x); }
KVB_HD_INLINE float decode(Format f, uint8_t c) { return f == Format::kE4M3 ? decode_e4m3(c) : decode_e5m2(c); }

/// The per-(KV head, K or V) scale: absmax / max_finite, so the largest element maps to the largest code.
/// An all-zero (or denormal-only) head gets scale 1 (every code is then ±0). Stored as fp32.
KVB_HD_INLINE float head_scale(float absmax, Format f) {
  const float s = absmax / max_finite(f);
  return s >= 1.17549435e-38f ? s : 1.f;  // FLT_MIN: a denormal scale would lose the data's precision
}

}  // namespace kvb::kernels::fp8
