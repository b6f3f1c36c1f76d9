#pragma once
/// Microscaling block formats (NVFP4, MXFP4, MXFP8): per-element and per-block math shared by the CPU path
/// and the CUDA kernels (KVB_HD_INLINE, like fp8.h). The E4M3 encode/decode of MXFP8 elements and NVFP4
/// block scales is fp8.h's, not a copy.
///
/// Element formats
///  E2M1 (FP4)  1 sign, 2 exponent bits (bias 1), 1 mantissa bit: ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}; no Inf, no
///              NaN. Magnitude code m = 0..7 is the value table's index (m = 1 is the one subnormal, 0.5).
///              encode: round to nearest, ties to the EVEN code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2,
///              2.5 -> 2, 3.5 -> 4, 5 -> 4), saturating: everything >= 5 (and ±Inf) becomes ±6. The sign is
///              kept, so a negative value that rounds to zero is code 0x8 (−0). NaN encodes to 0x0 here; a
///              NaN block is marked NaN by its scale instead (below), as the MX spec does.
///  E4M3FN      fp8.h (max 448, saturating, 0x7f NaN): MXFP8's elements and NVFP4's block scales.
///  E8M0        the MX shared scale: 2^(c − 127) for c = 0..254 (2^-127 .. 2^127), c = 0xFF NaN; no sign,
///              no zero.
///
/// MX (OCP Microscaling Formats (MX) v1.0, §5 "scale and element formats", §6.3 "conversion from a vector
/// of FP32 to MX"): for a block of k values V_i (k = 32 along head_dim in kvbench),
///   shared_exp = floor(log2(max_i |V_i|)) − emax_elem      emax_elem = 2 (E2M1), 8 (E4M3)
///   X = 2^shared_exp (E8M0),   P_i = quantize_to_element(V_i / X) with saturation (round to nearest even).
/// floor(log2(amax)) is the float's exponent field minus 127 (exact for normal amax). Bounds as the OCP
/// reference library (microsoft/microxcaling, clamp_shared_exp) applies them: shared_exp < −127 is clamped to
/// −127 (so an all-zero or denormal-only block gets code 0, X = 2^-127, every element ±0), and shared_exp >
/// 127 would be NaN — unreachable for finite inputs (floor(log2(FLT_MAX)) − 2 = 125). Our choices beyond the
/// spec: ±Inf inputs count as FLT_MAX in the amax (so X stays finite and the Inf element saturates to the
/// element's max: the "saturating" conversion, as fp8.h's), and a NaN anywhere in the block makes the scale
/// 0xFF (NaN), so the whole block decodes to NaN (the spec's "X = NaN" case; kvbench's loader rejects NaN
/// inputs, so caches never hold one). V_i / X is an exact power-of-two division except where it lands in
/// float subnormals (X >= 2^-127 keeps it normal for the block's large values).
///
/// NVFP4 (NVIDIA: Transformer Engine "NVFP4 recipe" / cuBLAS "1D block scaling, CUBLASLT_MATMUL_MATRIX_SCALE_
/// VEC16_UE4M3", and the Blackwell NVFP4 blog): two-level scaling, blocks of 16 E2M1 elements.
///   global = amax_tensor / (448·6)                     fp32, one per tensor (kvbench: per (layer, KV head,
///                                                       K or V)); 1 when that is below FLT_MIN (all-zero
///                                                       or denormal-only tensor, as fp8.h's head_scale)
///   block scale code = E4M3(amax_block / 6 / global)   round to nearest even, saturating at 448
///   element code = E2M1(V_i / (E4M3dec(code) · global)), or ±0 when that denominator is 0 (a block whose
///                                                       scale underflowed E4M3: every element encodes to ±0)
///   decode: E2M1dec(c) · E4M3dec(code) · global.
/// Every division above is one IEEE float32 division in this order (the CPU, the CUDA kernels and the
/// reference evaluate the same expressions), so all three produce identical codes. Transformer Engine
/// multiplies by the reciprocal 448·6/amax instead; the two agree except when a quotient lies within a float
/// rounding of an E4M3/E2M1 rounding boundary. A NaN in a block gives its scale the E4M3 NaN code; ±Inf
/// counts as FLT_MAX in the amaxes, as for MX.
///
/// Storage layout used by codecs/mx (and kernels/cuda): FP4 codes are packed two per byte, element 2i in the
/// low nibble and 2i + 1 in the high nibble (as PyTorch's float4_e2m1fn_x2 and the MX spec's packing); a row of
/// d elements takes ceil(d/2) bytes (an odd d leaves the last high nibble 0). Blocks run along head_dim from
/// channel 0; a head_dim that is not a multiple of the block size ends with a partial block of d % k channels
/// that has its own scale, computed over just those channels.
#include <cstdint>

#include "kernels/formats/fp8.h"
#include "kvb/core/half.h"
#include "kvb/core/hd.h"

namespace kvb::kernels::mx {

/// The three block formats.
enum class Kind : uint8_t { kNvfp4, kMxfp4, kMxfp8 };

/// Elements per block along head_dim.
KVB_HD_INLINE int block_size(Kind k) { return k == Kind::kNvfp4 ? 16 : 32; }
/// Whether elements are E2M1 (4 bits, packed two per byte) rather than E4M3 (one byte).
KVB_HD_INLINE bool is_fp4(Kind k) { return k != Kind::kMxfp8; }
/// Bytes of one row of d element codes.
KVB_HD_INLINE int row_bytes(Kind k, int d) { return is_fp4(k) ? (d + 1) / 2 : d; }
/// Blocks (= scale bytes) per row of d elements, the last one partial when k does not divide d.
KVB_HD_INLINE int blocks_per_row(Kind k, int d) { return (d + block_size(k) - 1) / block_size(k); }

constexpr float kE2M1Max = 6.f;
constexpr float kE4M3Max = 448.f;
constexpr float kFltMax = 3.40282347e38f;
constexpr float kFltMin = 1.17549435e-38f;

// ---- E2M1 ---------------------------------------------------------------------------------------------

/// The 4-bit code of x (sign in bit 3), round to nearest even, saturating at ±6 (see the header).
KVB_HD_INLINE uint8_t encode_e2m1(float x) {
  const uint32_t sign = (float_bits(x) >> 28) & 0x8u;
  const float a = bits_float(float_bits(x) & 0x7fffffffu);
  // Each threshold is the midpoint between two neighbouring values; `>=` where the upper code is even.
  const uint32_t m = static_cast<uint32_t>(a > 0.25f) + static_cast<uint32_t>(a >= 0.75f) +
                     static_cast<uint32_t>(a > 1.25f) + static_cast<uint32_t>(a >= 1.75f) +
                     static_cast<uint32_t>(a > 2.5f) + static_cast<uint32_t>(a >= 3.5f) +
                     static_cast<uint32_t>(a > 5.f);
  return static_cast<uint8_t>(sign | m);
}

/// The value of a 4-bit code (the high bits of c are ignored): normal 2^(e−1)·(1 + m/2), subnormal m·0.5.
KVB_HD_INLINE float decode_e2m1(uint8_t c) {
  const uint32_t u = c & 0xfu;
  const uint32_t e = (u >> 1) & 3u, m = u & 1u;
  const uint32_t normal = ((e + 126u) << 23) | (m << 22);
  const uint32_t sub = m == 0u ? 0u : 0x3f000000u;  // 0.5
  const uint32_t bits = e == 0u ? sub : normal;
  return bits_float(bits | ((u & 8u) << 28));
}

/// Code of element j (0-based) of a packed FP4 row.
KVB_HD_INLINE uint8_t fp4_at(const uint8_t* row, int j) {
  return static_cast<uint8_t>((row[j >> 1] >> ((j & 1) * 4)) & 0xfu);
}

// ---- E8M0 ---------------------------------------------------------------------------------------------

constexpr uint8_t kE8M0Nan = 0xff;

/// 2^(c − 127), NaN for 0xFF. c = 0 is 2^-127 (a float subnormal, exact).
KVB_HD_INLINE float decode_e8m0(uint8_t c) {
  if (c == kE8M0Nan) return bits_float(0x7fc00000u);
  return c == 0 ? bits_float(0x00400000u) : bits_float(static_cast<uint32_t>(c) << 23);
}

/// floor(log2(a)) for a finite a >= 0 as the float exponent field − 127 (−127 for 0 and subnormals, which
/// the MX clamp maps to the smallest scale anyway).
KVB_HD_INLINE int floor_log2(float a) { return static_cast<int>((float_bits(a) >> 23) & 0xffu) - 127; }

/// The MX shared-scale code of a block with max magnitude `amax` (finite, Inf already counted as FLT_MAX)
/// for elements with largest exponent emax_elem (2: E2M1, 8: E4M3); `nan`: the block holds a NaN.
KVB_HD_INLINE uint8_t mx_scale_code(float amax, int emax_elem, bool nan) {
  int s = floor_log2(amax) - emax_elem;
  s = s < -127 ? -127 : s;
  if (nan || s > 127) return kE8M0Nan;
  return static_cast<uint8_t>(s + 127);
}

KVB_HD_INLINE int emax_elem(Kind k) { return k == Kind::kMxfp8 ? 8 : 2; }

// ---- NVFP4 --------------------------------------------------------------------------------------------

/// The per-tensor fp32 scale: amax / (448·6), or 1 when that is below FLT_MIN.
KVB_HD_INLINE float nvfp4_global_scale(float amax) {
  const float s = amax / (kE4M3Max * kE2M1Max);
  return s >= kFltMin ? s : 1.f;
}

/// The E4M3 block-scale code of a block with max magnitude `amax` under the tensor's global scale.
KVB_HD_INLINE uint8_t nvfp4_scale_code(float amax, float global, bool nan) {
  return nan ? static_cast<uint8_t>(0x7f) : fp8::encode_e4m3(amax / kE2M1Max / global);
}

// ---- shared by the three formats ----------------------------------------------------------------------

/// |x| for the amaxes: ±Inf count as FLT_MAX. A NaN passes through and is ignored by the max
/// (`a > amax ? a : amax` is false for it); encode_row tracks it with is_nan.
KVB_HD_INLINE float amax_term(float x) {
  const float a = bits_float(float_bits(x) & 0x7fffffffu);
  return a > kFltMax ? kFltMax : a;
}
KVB_HD_INLINE bool is_nan(float x) { return x != x; }

/// The value a block-scale code stands for: E8M0 for MX, E4M3 times nothing for NVFP4 (the global scale is
/// applied separately: once per logit / output on the CPU, per element in the kernels).
KVB_HD_INLINE float decode_scale(Kind k, uint8_t c) {
  return k == Kind::kNvfp4 ? fp8::decode_e4m3(c) : decode_e8m0(c);
}

/// The divisor of a block's elements at encode: decoded scale (MX), decoded scale · global (NVFP4).
KVB_HD_INLINE float element_divisor(Kind k, uint8_t scale_code, float global) {
  return k == Kind::kNvfp4 ? fp8::decode_e4m3(scale_code) * global : decode_e8m0(scale_code);
}

/// The element code of x in a block whose divisor is `div` (0 for an NVFP4 block whose scale underflowed:
/// the element is then ±0).
KVB_HD_INLINE uint8_t encode_element(Kind k, float x, float div) {
  if (k == Kind::kMxfp8) return fp8::encode_e4m3(x / div);
  return div > 0.f ? encode_e2m1(x / div) : static_cast<uint8_t>((float_bits(x) >> 28) & 0x8u);
}

/// Element value of code c before the block scale: E2M1 or E4M3.
KVB_HD_INLINE float decode_element(Kind k, uint8_t c) {
  return k == Kind::kMxfp8 ? fp8::decode_e4m3(c) : decode_e2m1(c);
}

/// Encodes one block x[0, n) (n <= block_size, n even unless it ends the row) into its element codes
/// (FP4: ceil(n/2) bytes, the last high nibble 0 when n is odd) and returns its scale code (global: the
/// tensor's NVFP4 scale, unused by MX). Every code byte is written in full, so the output does not depend
/// on the buffers' previous contents.
KVB_HD_INLINE uint8_t encode_block(Kind k, const float* x, int n, float global, uint8_t* codes) {
  float amax = 0.f;
  bool nan = false;
  for (int i = 0; i < n; ++i) {
    const float a = amax_term(x[i]);
    amax = a > amax ? a : amax;
    nan = nan || is_nan(x[i]);
  }
  const uint8_t sc = k == Kind::kNvfp4 ? nvfp4_scale_code(amax, global, nan) : mx_scale_code(amax, emax_elem(k), nan);
  const float div = element_divisor(k, sc, global);
  if (is_fp4(k)) {
    // Codes first, then the packing: the first loop has no cross-element dependence, so it vectorizes.
    uint8_t c[32];
    for (int i = 0; i < n; ++i) c[i] = encode_element(k, x[i], div);
    for (int i = 0; i < n; i += 2)
      codes[i >> 1] = static_cast<uint8_t>(c[i] | (i + 1 < n ? c[i + 1] << 4 : 0));
  } else {
    for (int i = 0; i < n; ++i) codes[i] = encode_element(k, x[i], div);
  }
  return sc;
}

/// Encodes block b of the row x[0, d): its codes into the row's codes[row_bytes], its scale into scales[b].
/// Blocks start at even channels (16, 32 divide them), so blocks never share a code byte.
KVB_HD_INLINE void encode_row_block(Kind k, const float* x, int d, int b, float global, uint8_t* codes,
                                    uint8_t* scales) {
  const int B = block_size(k), b0 = b * B;
  const int n = d - b0 < B ? d - b0 : B;
  scales[b] = encode_block(k, x + b0, n, global, codes + (is_fp4(k) ? b0 / 2 : b0));
}

/// Encodes one row x[0, d) into codes[row_bytes] and scales[blocks_per_row].
KVB_HD_INLINE void encode_row(Kind k, const float* x, int d, float global, uint8_t* codes, uint8_t* scales) {
  for (int b = 0, nb = blocks_per_row(k, d); b < nb; ++b) encode_row_block(k, x, d, b, global, codes, scales);
}

/// Element j of a stored row, dequantized up to the NVFP4 global scale (MX: the final value).
KVB_HD_INLINE float load_element(Kind k, const uint8_t* codes, const uint8_t* scales, int j) {
  const uint8_t c = is_fp4(k) ? fp4_at(codes, j) : codes[j];
  return decode_element(k, c) * decode_scale(k, scales[j / block_size(k)]);
}

}  // namespace kvb::kernels::mx
