#pragma once
/// Asymmetric min-max uniform quantization and bit packing, shared by `int` and `kivi` (CPU now, CUDA
/// kernels later). Per group of values (channels of one token, or tokens of one channel):
///
///   scale = fp16((mx - mn) / (2^b - 1)),  min = fp16(mn)      (stored as binary16, saturating)
///   code  = clamp(floor((x - min) / scale + 0.5), 0, 2^b - 1)  (0 for every x when scale == 0)
///   x̂     = code · scale + min
///
/// What is stored is what is used: codes are computed against the fp16-ROUNDED scale and min, and
/// dequantization uses the same values. Rounding is half-up, floor(y + 0.5): branch-free, identical on
/// host and device, and independent of the FP rounding mode (unlike nearbyint). Because y >= 0 up to
/// the fp16 rounding of min, half-up and half-away-from-zero agree wherever it matters.
/// Error: |x - x̂| <= scale/2 for x inside [min, min + (2^b-1)·scale]; outside (only through the fp16
/// rounding of mn and of the scale) the clamp adds at most |mn - min| + (2^b-1)·|scale_f32 - scale|.
///
/// Packing: b-bit codes (1 <= b <= 8) of one row are a little-endian bit stream: code i occupies bits
/// [i·b, i·b + b) where bit k of the stream is bit (k mod 8) of byte k/8. A row of n codes takes
/// ceil(n·b / 8) bytes and starts on a byte boundary, so one token's codes are contiguous.
#include <cmath>
#include <cstdint>

#include "kernels/formats/fp16.h"
#include "kvb/core/half.h"
#include "kvb/core/hd.h"

namespace kvb::kernels::uq {

/// Largest code of a b-bit quantizer.
KVB_HD_INLINE uint32_t max_code(int bits) { return (1u << bits) - 1u; }

/// Bytes of one packed row of n b-bit codes.
KVB_HD_INLINE int64_t row_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

/// A group's stored parameters, binary16 bits.
struct GroupParams {
  uint16_t scale;
  uint16_t min;
};

/// Stored parameters of a group whose float min and max are mn, mx.
KVB_HD_INLINE GroupParams make_group(float mn, float mx, int bits) {
  return GroupParams{f32_to_f16_sat((mx - mn) / static_cast<float>(max_code(bits))), f32_to_f16_sat(mn)};
}

/// Code of x, given the group's DECODED scale and min (floats from the stored fp16):
/// clamp(floor(y), 0, qmax) with y = (x - min) / scale + 0.5, and 0 when scale == 0 (or x is NaN).
/// Computed as clamp-then-truncate, which equals floor-then-clamp (truncation is floor on [0, qmax]),
/// with selects only: GCC does not vectorize floorf without -fno-trapping-math, nor fminf/fmaxf without
/// fast-math, and this loop is most of an encode.
KVB_HD_INLINE uint32_t quantize(float x, float scale, float mn, uint32_t qmax) {
  const float y = (x - mn) / scale + 0.5f;
  const float top = static_cast<float>(qmax);
  float c = y > 0.f ? y : 0.f;  // also NaN -> 0
  c = c < top ? c : top;
  return scale > 0.f ? static_cast<uint32_t>(static_cast<int32_t>(c)) : 0u;  // via int32: vectorizes on x86
}

/// x̂ = code·scale + min (code passed as float: unpacked rows are float vectors).
KVB_HD_INLINE float dequantize(float code, float scale, float mn) { return code * scale + mn; }

/// Centered form of the same reconstruction, for long sums: x̂ = (code - c0)·scale + mid with
/// c0 = (2^b - 1)/2 and mid = min + c0·scale, the group's midpoint. Summing w·(code - c0)·scale and w·mid
/// instead of w·code·scale and w·min avoids adding two large opposite-signed totals when the data are
/// centred (values typically are): that cancellation cost up to 10x in float32 accuracy over 4k tokens.
KVB_HD_INLINE float code_center(int bits) { return 0.5f * static_cast<float>(max_code(bits)); }
KVB_HD_INLINE float group_mid(float scale, float mn, int bits) { return mn + code_center(bits) * scale; }

/// OR code (< 2^bits) into position i of a zero-initialised packed row.
KVB_HD_INLINE void pack_code(uint8_t* row, int64_t i, int bits, uint32_t code) {
  const int64_t pos = i * bits;
  const int64_t byte = pos >> 3;
  const int sh = static_cast<int>(pos & 7);
  row[byte] = static_cast<uint8_t>(row[byte] | (code << sh));
  if (sh + bits > 8) row[byte + 1] = static_cast<uint8_t>(row[byte + 1] | (code >> (8 - sh)));
}

/// Code at position i of a packed row (reads only the row's own bytes).
KVB_HD_INLINE uint32_t unpack_code(const uint8_t* row, int64_t i, int bits) {
  const int64_t pos = i * bits;
  const int64_t byte = pos >> 3;
  const int sh = static_cast<int>(pos & 7);
  uint32_t v = static_cast<uint32_t>(row[byte]) >> sh;
  if (sh + bits > 8) v |= static_cast<uint32_t>(row[byte + 1]) << (8 - sh);
  return v & max_code(bits);
}

/// The 8 codes of B bits stored in the B bytes at p (codes 8k .. 8k+7 of a row start at byte k·B).
template <int B>
KVB_HD_INLINE void unpack8(const uint8_t* p, uint32_t* out) {
  uint64_t w = 0;
  for (int i = 0; i < B; ++i) w |= static_cast<uint64_t>(p[i]) << (8 * i);
  constexpr uint32_t kMask = (1u << B) - 1u;
  for (int k = 0; k < 8; ++k) out[k] = static_cast<uint32_t>(w >> (B * k)) & kMask;
}

/// Inverse of unpack8: writes (not ORs) the B bytes at p from 8 codes.
template <int B>
KVB_HD_INLINE void pack8(const uint32_t* codes, uint8_t* p) {
  uint64_t w = 0;
  for (int k = 0; k < 8; ++k) w |= static_cast<uint64_t>(codes[k]) << (B * k);
  for (int i = 0; i < B; ++i) p[i] = static_cast<uint8_t>(w >> (8 * i));
}

}  // namespace kvb::kernels::uq
