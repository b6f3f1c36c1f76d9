// Per-element math of the baseline codecs: fp16/bf16 conversions (kvb/core/half.h and the saturating
// store), FP8 E4M3/E5M2 encode/decode, the uniform quantizer and bit packing, and the CPU row kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "kernels/formats/fp16.h"
#include "codecs/common/ref_dense.h"
#include "kernels/cpu/row_kernels.h"
#include "kernels/formats/fp8.h"
#include "codecs/fp8/fp8_codec.h"
#include "kernels/formats/uniform.h"
#include "kernels/cpu/uniform_rows.h"
#include "kvb/core/half.h"
#include "kvb/core/rng.h"

namespace kvb::test {
namespace {

using kernels::f32_to_f16_sat;
namespace fp8 = kernels::fp8;
namespace uq = kernels::uq;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// The compiler's IEEE binary16 (g++ >= 12 on x86-64), an independent oracle for half.h.
uint16_t oracle_f16(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float oracle_f32(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
}

bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || bits_of(a) == bits_of(b); }

/// Floats that stress a binary16 conversion: random bit patterns, every binary16 value, the midpoints
/// between neighbours (ties) and one float ulp either side, subnormals, overflow, Inf and NaN.
std::vector<float> f16_probe_floats() {
  std::vector<float> xs;
  Rng rng(42);
  for (int i = 0; i < 200000; ++i) xs.push_back(float_of(static_cast<uint32_t>(rng.next_u64())));
  for (int i = 0; i < 200000; ++i)  // concentrated on binary16's range, exponents -30..17
    xs.push_back(static_cast<float>((rng.uniform() < 0.5 ? -1 : 1) * std::ldexp(1.0 + rng.uniform(), static_cast<int>(rng.below(48)) - 30)));
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double a = oracle_f32(static_cast<uint16_t>(h)), b = oracle_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((a + b) / 2);  // exact: 12 significant bits
    for (float x : {static_cast<float>(a), mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e9f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (float x : {65504.f, 65519.f, 65519.996f, 65520.f, 65536.f, 1e5f, 3e38f, INFINITY, -INFINITY, NAN, 0.f, -0.f,
                  1e-45f, 2.9802322e-08f, 2.9802326e-08f, 5.9604645e-08f, 6.1035156e-05f})
    xs.push_back(x);
  return xs;
}

TEST(HalfConversions, F16ToF32ExhaustiveAgainstCompiler) {
  for (uint32_t h = 0; h < 65536; ++h) {
    SCOPED_TRACE(fmt::format("binary16 bits 0x{:04x}", h));
    ASSERT_TRUE(same_float(f16_to_f32(static_cast<uint16_t>(h)), oracle_f32(static_cast<uint16_t>(h))));
  }
}

TEST(HalfConversions, F32ToF16AgainstCompiler) {
  for (float x : f16_probe_floats()) {
    const uint16_t got = f32_to_f16(x), want = oracle_f16(x);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(got))) << x;
      continue;
    }
    ASSERT_EQ(got, want) << fmt::format("x = {:a} ({})", x, x);
  }
}

TEST(HalfConversions, SaturatingStoreNeverMakesInf) {
  for (float x : f16_probe_floats()) {
    const float got = f16_to_f32(kernels::f32_to_f16_sat(x));
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(got));
      continue;
    }
    const float clamped = std::fmin(std::fmax(x, -65504.f), 65504.f);
    ASSERT_TRUE(same_float(got, oracle_f32(oracle_f16(clamped)))) << fmt::format("x = {:a}", x);
    ASSERT_TRUE(std::isfinite(got));
    // The references' independent rounding (double arithmetic) agrees bit for bit.
    ASSERT_TRUE(same_float(codecs::ref::round_f16_sat(x), got)) << fmt::format("x = {:a}", x);
  }
}

TEST(HalfConversions, Bf16ExhaustiveAndRoundToNearestEven) {
  for (uint32_t b = 0; b < 65536; ++b) ASSERT_EQ(bits_of(bf16_to_f32(static_cast<uint16_t>(b))), b << 16);
  for (float x : f16_probe_floats()) {
    const uint16_t got = f32_to_bf16(x);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(got)));
      continue;
    }
    if (std::isinf(x)) {
      EXPECT_EQ(got, static_cast<uint16_t>(bits_of(x) >> 16));
      continue;
    }
    // Independent: the nearer of the two bf16 neighbours (truncation and truncation + 1 ulp), ties to even.
    const uint16_t lo = static_cast<uint16_t>(bits_of(x) >> 16);
    const uint16_t hi = static_cast<uint16_t>(lo + 1);
    const double dl = std::fabs(static_cast<double>(x) - bf16_to_f32(lo));
    // IEEE rounding treats Inf as the value 2^128 when deciding overflow.
    const double vh = (hi & 0x7f80) == 0x7f80 ? std::copysign(0x1p128, static_cast<double>(x)) : bf16_to_f32(hi);
    const double dh = std::fabs(vh - x);
    const uint16_t want = (dl < dh || (dl == dh && (lo & 1) == 0)) ? lo : hi;
    ASSERT_EQ(got, want) << fmt::format("x = {:a}", x);
  }
}

// ---- FP8 -------------------------------------------------------------------------------------------

struct Fp8Case {
  kernels::fp8::Format f;
  const char* name;
  uint8_t max_code;
  float max_value;
  float min_sub;  // smallest subnormal
};
const Fp8Case kFormats[] = {{kernels::fp8::Format::kE4M3, "e4m3", 0x7e, 448.f, 0x1p-9f},
                            {kernels::fp8::Format::kE5M2, "e5m2", 0x7b, 57344.f, 0x1p-16f}};

TEST(Fp8, DecodeAllCodesMatchesFormula) {
  for (const auto& fc : kFormats)
    for (int c = 0; c < 256; ++c) {
      SCOPED_TRACE(fmt::format("{} code 0x{:02x}", fc.name, c));
      const float got = kernels::fp8::decode(fc.f, static_cast<uint8_t>(c));
      const double want = codecs::ref::fp8_decode_formula(fc.f, static_cast<uint8_t>(c));
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got));
      } else {
        EXPECT_EQ(static_cast<double>(got), want);
      }
    }
  EXPECT_EQ(kernels::fp8::decode_e4m3(0x7e), 448.f);
  EXPECT_TRUE(std::isnan(kernels::fp8::decode_e4m3(0x7f)));
  EXPECT_EQ(kernels::fp8::decode_e5m2(0x7b), 57344.f);
  EXPECT_TRUE(std::isinf(kernels::fp8::decode_e5m2(0x7c)));
  EXPECT_EQ(kernels::fp8::decode_e4m3(0x01), 0x1p-9f);
  EXPECT_EQ(kernels::fp8::decode_e5m2(0x01), 0x1p-16f);
}

TEST(Fp8, EncodeRoundTripsEveryFiniteCode) {
  for (const auto& fc : kFormats)
    for (int c = 0; c < 256; ++c) {
      if ((c & 0x7f) > fc.max_code) continue;  // NaN (and E5M2 Inf) codes
      EXPECT_EQ(kernels::fp8::encode(fc.f, kernels::fp8::decode(fc.f, static_cast<uint8_t>(c))), c) << fc.name << " code " << c;
    }
}

TEST(Fp8, EncodeMatchesNearestSearchIncludingTies) {
  Rng rng(7);
  for (const auto& fc : kFormats) {
    std::vector<float> xs;
    for (int c = 0; c < fc.max_code; ++c) {  // midpoints of neighbours and one float ulp either side
      const float a = kernels::fp8::decode(fc.f, static_cast<uint8_t>(c)), b = kernels::fp8::decode(fc.f, static_cast<uint8_t>(c + 1));
      const float mid = (a + b) / 2;  // exact in float
      for (float x : {mid, std::nextafter(mid, 0.f), std::nextafter(mid, INFINITY)}) {
        xs.push_back(x);
        xs.push_back(-x);
      }
    }
    for (int i = 0; i < 300000; ++i)
      xs.push_back(static_cast<float>((rng.uniform() < 0.5 ? -1 : 1) *
                                      std::ldexp(1.0 + rng.uniform(), static_cast<int>(rng.below(50)) - 30)));
    for (int i = 0; i < 100000; ++i) {
      const float x = float_of(static_cast<uint32_t>(rng.next_u64()));
      if (!std::isnan(x)) xs.push_back(x);
    }
    for (float x : xs)
      ASSERT_EQ(kernels::fp8::encode(fc.f, x), codecs::ref::fp8_encode_nearest(fc.f, x))
          << fmt::format("{} x = {:a} ({})", fc.name, x, x);
  }
}

TEST(Fp8, SaturationAndSmallValues) {
  // E4M3FN: 448 is the largest finite value; 464 (the midpoint to the non-existent 480) and beyond saturate.
  for (float x : {448.f, 449.f, 463.9f, 464.f, 480.f, 1e6f, 3e38f, INFINITY}) {
    EXPECT_EQ(kernels::fp8::encode_e4m3(x), 0x7e) << x;
    EXPECT_EQ(kernels::fp8::encode_e4m3(-x), 0xfe) << x;
  }
  // E5M2: saturates at 57344 instead of producing Inf (documented choice).
  for (float x : {57344.f, 61439.f, 61440.f, 65536.f, 1e9f, INFINITY}) {
    EXPECT_EQ(kernels::fp8::encode_e5m2(x), 0x7b) << x;
    EXPECT_EQ(kernels::fp8::encode_e5m2(-x), 0xfb) << x;
  }
  EXPECT_TRUE(std::isnan(kernels::fp8::decode_e4m3(kernels::fp8::encode_e4m3(NAN))));
  EXPECT_TRUE(std::isnan(kernels::fp8::decode_e5m2(kernels::fp8::encode_e5m2(NAN))));
  for (const auto& fc : kFormats) {
    SCOPED_TRACE(fc.name);
    EXPECT_EQ(kernels::fp8::encode(fc.f, 0.f), 0x00);
    EXPECT_EQ(kernels::fp8::encode(fc.f, -0.f), 0x80);
    EXPECT_EQ(kernels::fp8::encode(fc.f, fc.min_sub), 0x01);
    EXPECT_EQ(kernels::fp8::encode(fc.f, fc.min_sub / 2), 0x00);                        // tie -> even (0)
    EXPECT_EQ(kernels::fp8::encode(fc.f, std::nextafter(fc.min_sub / 2, 1.f)), 0x01);  // just above the tie
    EXPECT_EQ(kernels::fp8::encode(fc.f, 3 * fc.min_sub / 2), 0x02);                    // tie between 1 and 2 -> 2
    EXPECT_EQ(kernels::fp8::encode(fc.f, 1e-30f), 0x00);
    EXPECT_EQ(kernels::fp8::encode(fc.f, 1e-45f), 0x00);  // float subnormal
    EXPECT_EQ(kernels::fp8::head_scale(0.f, fc.f), 1.f);  // all-zero head
    EXPECT_EQ(kernels::fp8::head_scale(fc.max_value, fc.f), 1.f);
  }
}

// ---- uniform quantizer ---------------------------------------------------------------------------

/// Quantize -> dequantize one group with uniform.h; returns x̂ and fills codes.
std::vector<float> qdq(const std::vector<float>& x, int bits, std::vector<uint32_t>& codes, kernels::uq::GroupParams& gp) {
  float mn = x[0], mx = x[0];
  for (float v : x) mn = std::min(mn, v), mx = std::max(mx, v);
  gp = kernels::uq::make_group(mn, mx, bits);
  const float scale = f16_to_f32(gp.scale), lo = f16_to_f32(gp.min);
  std::vector<float> out(x.size());
  codes.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    codes[i] = kernels::uq::quantize(x[i], scale, lo, kernels::uq::max_code(bits));
    out[i] = kernels::uq::dequantize(static_cast<float>(codes[i]), scale, lo);
  }
  return out;
}

TEST(UniformQuantizer, CodesInRangeErrorBoundedAndMatchingTheReference) {
  Rng rng(3);
  for (int bits = 1; bits <= 8; ++bits)
    for (int trial = 0; trial < 400; ++trial) {
      const int n = 1 + static_cast<int>(rng.below(64));
      const double offset = trial % 4 == 0 ? 0 : (trial % 4 == 1 ? 1000 : rng.normal() * 10);
      const double spread = std::ldexp(1.0, static_cast<int>(rng.below(20)) - 10);
      std::vector<float> x(n);
      for (auto& v : x) v = static_cast<float>(offset + spread * rng.normal());
      if (trial % 7 == 0) x[rng.below(n)] *= 30;  // an outlier
      SCOPED_TRACE(fmt::format("bits {} n {} offset {} spread {} trial {}", bits, n, offset, spread, trial));
      std::vector<uint32_t> codes;
      kernels::uq::GroupParams gp;
      const std::vector<float> xh = qdq(x, bits, codes, gp);
      float mn = x[0], mx = x[0];
      for (float v : x) mn = std::min(mn, v), mx = std::max(mx, v);
      const float scale = f16_to_f32(gp.scale), lo = f16_to_f32(gp.min);
      const float scale32 = (mx - mn) / static_cast<float>(kernels::uq::max_code(bits));
      // |x − x̂| <= scale/2 inside [lo, lo + qmax·scale]; the fp16 rounding of min and scale can push x
      // outside that range by at most |mn − lo| + qmax·|scale32 − scale|; plus float rounding of the
      // arithmetic (a few ulps of the magnitudes involved).
      const double bound = scale / 2.0 + std::fabs(mn - lo) + kernels::uq::max_code(bits) * std::fabs(scale32 - scale);
      std::vector<float> xr(n);
      codecs::ref::minmax_qdq(x.data(), n, 1, bits, xr.data());
      for (int i = 0; i < n; ++i) {
        ASSERT_LE(codes[i], kernels::uq::max_code(bits));
        ASSERT_TRUE(std::isfinite(xh[i]));
        const double slack = 8 * 0x1p-24 * (std::fabs(x[i]) + std::fabs(lo) + kernels::uq::max_code(bits) * scale);
        ASSERT_LE(std::fabs(static_cast<double>(x[i]) - xh[i]), bound + slack) << "i=" << i;
        // The reference (independent code, same definition) reconstructs from the same code.
        const double ref_code = scale > 0 ? std::round((static_cast<double>(xr[i]) - lo) / scale) : 0.0;
        ASSERT_EQ(ref_code, static_cast<double>(codes[i])) << "i=" << i << " x=" << x[i];
      }
    }
}

TEST(UniformQuantizer, ConstantAndDegenerateGroups) {
  for (int bits = 1; bits <= 8; ++bits) {
    std::vector<uint32_t> codes;
    kernels::uq::GroupParams gp;
    for (float c : {0.f, 1.f, -3.25f, 1000.f, 1e-30f, 7e4f}) {
      SCOPED_TRACE(fmt::format("bits {} constant {}", bits, c));
      const std::vector<float> xh = qdq(std::vector<float>(32, c), bits, codes, gp);
      EXPECT_EQ(f16_to_f32(gp.scale), 0.f);
      for (size_t i = 0; i < xh.size(); ++i) {
        EXPECT_EQ(codes[i], 0u);
        EXPECT_EQ(xh[i], codecs::ref::round_f16_sat(c));  // x̂ = fp16(min), finite (7e4 saturates)
      }
    }
    // A spread too small for fp16 (scale underflows to 0): all codes 0, no NaN.
    std::vector<float> x(32);
    for (int i = 0; i < 32; ++i) x[i] = 1.f + i * 1e-10f;
    const std::vector<float> xh = qdq(x, bits, codes, gp);
    for (float v : xh) EXPECT_TRUE(std::isfinite(v));
    // Huge spread: the fp16 scale saturates at 65504, never Inf.
    const std::vector<float> big = qdq({-1e30f, 1e30f, 0.f}, bits, codes, gp);
    EXPECT_TRUE(std::isfinite(f16_to_f32(gp.scale)));
    for (float v : big) EXPECT_TRUE(std::isfinite(v));
  }
}

TEST(UniformQuantizer, PackUnpackRoundTripEveryWidthOddLengths) {
  Rng rng(11);
  for (int bits = 1; bits <= 8; ++bits)
    for (int n : {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 127, 128, 129, 257}) {
      SCOPED_TRACE(fmt::format("bits {} n {}", bits, n));
      std::vector<uint32_t> codes(n);
      for (auto& c : codes) c = static_cast<uint32_t>(rng.below(1u << bits));
      const int64_t rb = kernels::uq::row_bytes(n, bits);
      ASSERT_EQ(rb, (n * bits + 7) / 8);
      std::vector<uint8_t> row(rb + 4, 0xA5);  // 4 guard bytes must stay untouched
      kernels::uq::pack_row(codes.data(), n, bits, row.data());
      for (int64_t i = rb; i < rb + 4; ++i) EXPECT_EQ(row[i], 0xA5);
      // Bit-stream definition: code i at bits [i·b, i·b + b), little-endian; padding bits zero.
      std::vector<uint8_t> manual(rb, 0);
      for (int i = 0; i < n; ++i)
        for (int k = 0; k < bits; ++k)
          if ((codes[i] >> k) & 1u) manual[(i * bits + k) / 8] |= static_cast<uint8_t>(1u << ((i * bits + k) % 8));
      for (int64_t i = 0; i < rb; ++i) ASSERT_EQ(row[i], manual[i]) << "byte " << i;
      for (int i = 0; i < n; ++i) ASSERT_EQ(kernels::uq::unpack_code(row.data(), i, bits), codes[i]) << "i=" << i;
      std::vector<float> f(n);
      kernels::uq::dispatch_bits(bits, [&](auto b) { kernels::uq::unpack_row<decltype(b)::value>(row.data(), n, f.data()); });
      for (int i = 0; i < n; ++i) ASSERT_EQ(f[i], static_cast<float>(codes[i])) << "i=" << i;
      std::vector<uint8_t> one_by_one(rb, 0);
      for (int i = 0; i < n; ++i) kernels::uq::pack_code(one_by_one.data(), i, bits, codes[i]);
      for (int64_t i = 0; i < rb; ++i) ASSERT_EQ(one_by_one[i], manual[i]);
    }
}

// ---- row kernels ------------------------------------------------------------------------------------

TEST(RowKernels, DispatchedMatchesPortableAndDouble) {
  const auto& fast = kernels::row_kernels();
  const auto& port = kernels::row_kernels_portable();
  std::printf("[ row kernels ] using %s\n", fast.name);
  Rng rng(5);
  for (int n : {1, 7, 8, 15, 16, 17, 31, 64, 96, 127, 128, 256, 1024}) {
    SCOPED_TRACE(fmt::format("n {}", n));
    std::vector<float> a(n), b(n), y0(n), y1(n), y2(n);
    std::vector<uint16_t> h(n);
    double exact = 0, exact_h = 0, mag = 0;
    for (int i = 0; i < n; ++i) {
      a[i] = static_cast<float>(rng.normal());
      b[i] = static_cast<float>(rng.normal() * 3);
      h[i] = f32_to_f16(b[i]);
      y0[i] = y1[i] = static_cast<float>(rng.normal());
      exact += static_cast<double>(a[i]) * b[i];
      exact_h += static_cast<double>(a[i]) * f16_to_f32(h[i]);
      mag += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    const double tol = (n + 4) * 0x1p-24 * mag;
    EXPECT_NEAR(fast.dot_f32(a.data(), b.data(), n), exact, tol);
    EXPECT_NEAR(port.dot_f32(a.data(), b.data(), n), exact, tol);
    EXPECT_NEAR(fast.dot_f16(a.data(), h.data(), n), exact_h, tol);
    EXPECT_NEAR(port.dot_f16(a.data(), h.data(), n), exact_h, tol);
    y2 = y0;
    fast.axpy_f32(0.37f, b.data(), y0.data(), n);
    port.axpy_f32(0.37f, b.data(), y1.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_NEAR(y0[i], y1[i], 1e-6 * (std::fabs(y1[i]) + 1));
    y0 = y2;
    y1 = y2;
    fast.axpy_f16(-1.5f, h.data(), y0.data(), n);
    port.axpy_f16(-1.5f, h.data(), y1.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_NEAR(y0[i], y1[i], 1e-6 * (std::fabs(y1[i]) + 1));
  }
}

}  // namespace
}  // namespace kvb::test
