/// FP8 reference conversions (see ref_fp8.h), independent of kernels/formats/fp8.h's bit manipulation: codes
/// are decoded by the textbook formula and encoded by searching the sorted table of finite values.
#include "codecs/common/ref_fp8.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kvb::codecs::ref {
namespace {

struct FormatDef {
  int man_bits, bias;
  int max_code;  // largest finite code, sign cleared: E4M3FN 0x7e (S.1111.111 is NaN), E5M2 0x7b
  double max_value;
};

FormatDef def(kernels::fp8::Format f) { return f == kernels::fp8::Format::kE4M3 ? FormatDef{3, 7, 0x7e, 448.0} : FormatDef{2, 15, 0x7b, 57344.0}; }

/// values[c] for the non-negative finite codes c = 0 .. max_code, increasing in c.
const std::vector<double>& positive_values(kernels::fp8::Format f) {
  static const std::vector<double> tables[2] = {
      [] {
        std::vector<double> v;
        for (int c = 0; c <= def(kernels::fp8::Format::kE4M3).max_code; ++c) v.push_back(fp8_decode_formula(kernels::fp8::Format::kE4M3, static_cast<uint8_t>(c)));
        return v;
      }(),
      [] {
        std::vector<double> v;
        for (int c = 0; c <= def(kernels::fp8::Format::kE5M2).max_code; ++c) v.push_back(fp8_decode_formula(kernels::fp8::Format::kE5M2, static_cast<uint8_t>(c)));
        return v;
      }()};
  return tables[f == kernels::fp8::Format::kE4M3 ? 0 : 1];
}

}  // namespace

double fp8_max_finite(kernels::fp8::Format f) { return def(f).max_value; }

double fp8_decode_formula(kernels::fp8::Format f, uint8_t code) {
  const FormatDef d = def(f);
  const int exp_bits = 7 - d.man_bits;
  const int s = code >> 7, e = (code >> d.man_bits) & ((1 << exp_bits) - 1), m = code & ((1 << d.man_bits) - 1);
  const double sign = s ? -1.0 : 1.0;
  if ((code & 0x7f) > d.max_code) {
    if (f == kernels::fp8::Format::kE5M2 && (code & 0x7f) == 0x7c) return sign * INFINITY;
    return NAN;
  }
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), 1 - d.bias - d.man_bits);
  return sign * std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -d.man_bits), e - d.bias);
}

uint8_t fp8_encode_nearest(kernels::fp8::Format f, float x) {
  const FormatDef d = def(f);
  if (std::isnan(x)) return static_cast<uint8_t>(std::signbit(x) ? 0xff : 0x7f);
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= d.max_value) return static_cast<uint8_t>(sign | d.max_code);
  const auto& v = positive_values(f);
  // first value >= a; the nearest code is it or its predecessor
  const int hi = static_cast<int>(std::lower_bound(v.begin(), v.end(), a) - v.begin());
  int c = hi;
  if (hi > 0) {
    const double below = a - v[hi - 1], above = v[hi] - a;
    if (below < above || (below == above && (hi - 1) % 2 == 0)) c = hi - 1;
  }
  return static_cast<uint8_t>(sign | c);
}

}  // namespace kvb::codecs::ref

