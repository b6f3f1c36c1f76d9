/// Microscaling reference, independent of mx.h's and fp8.h's bit manipulation: E2M1 by searching its value
/// table, E4M3 through codecs/common/ref_fp8.h (the fp8 reference's conversions), E8M0 as ldexp, the scale
/// rules written out as the OCP MX spec and NVIDIA's NVFP4 recipe state them (see kernels/formats/mx.h for
/// the exact float32 expressions both implement).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/common/ref_fp8.h"
#include "codecs/mx/mx_codec.h"

namespace kvb::codecs::ref {
namespace {

constexpr double kE2M1Values[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

}  // namespace

double e2m1_decode_formula(uint8_t code) {
  const int s = (code >> 3) & 1, e = (code >> 1) & 3, m = code & 1;
  const double mag = e == 0 ? 0.5 * m : std::ldexp(1.0 + 0.5 * m, e - 1);
  return s ? -mag : mag;
}

uint8_t e2m1_encode_nearest(double x) {
  if (std::isnan(x)) return 0;
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  const double a = std::fabs(x);
  if (a >= 6.0) return static_cast<uint8_t>(sign | 7);
  const int hi = static_cast<int>(std::lower_bound(kE2M1Values, kE2M1Values + 8, a) - kE2M1Values);
  int c = hi;
  if (hi > 0) {
    const double below = a - kE2M1Values[hi - 1], above = kE2M1Values[hi] - a;
    if (below < above || (below == above && (hi - 1) % 2 == 0)) c = hi - 1;
  }
  return static_cast<uint8_t>(sign | c);
}

int mx_shared_exp(double amax, int emax_elem) {
  const int e = amax > 0 ? std::ilogb(amax) : -1000;  // floor(log2(amax))
  return std::max(e - emax_elem, -127);
}

}  // namespace kvb::codecs::ref

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> mx_encode_ref(const MxParams& p, const LayerKV& kv, const CodecContext& ctx) {
  using kernels::mx::Kind;
  const Kind kind = p.kind;
  const int d = kv.head_dim, B = kind == Kind::kNvfp4 ? 16 : 32;
  const int64_t n = kv.tokens * d;
  const auto e4m3 = kernels::fp8::Format::kE4M3;
  // |x| with ±Inf counted as FLT_MAX (the saturating conversion); NaN is flagged separately.
  auto mag = [](float x) { return std::isinf(x) ? FLT_MAX : std::fabs(x); };
  std::vector<float> k(kv.k.size()), v(kv.v.size());
  auto qdq = [&](const float* x, float* out) {
    float global = 1.f;
    if (kind == Kind::kNvfp4) {
      float amax = 0.f;
      for (int64_t i = 0; i < n; ++i)
        if (!std::isnan(x[i])) amax = std::max(amax, mag(x[i]));
      global = amax / (448.f * 6.f);
      if (!(global >= FLT_MIN)) global = 1.f;
    }
    for (int64_t t = 0; t < kv.tokens; ++t)
      for (int b0 = 0; b0 < d; b0 += B) {
        const int64_t r = t * d;
        const int end = std::min(d, b0 + B);
        float amax = 0.f;
        bool nan = false;
        for (int j = b0; j < end; ++j) {
          if (std::isnan(x[r + j])) nan = true;
          else amax = std::max(amax, mag(x[r + j]));
        }
        // NVFP4 block scale: E4M3 of amax/6 relative to the global scale; MX: 2^shared_exp (NaN for a NaN block)
        const uint8_t sc = nan ? 0x7f : ref::fp8_encode_nearest(e4m3, amax / 6.f / global);
        const double dec = ref::fp8_decode_formula(e4m3, sc);
        const int s = ref::mx_shared_exp(amax, kind == Kind::kMxfp8 ? 8 : 2);
        const double X = nan ? NAN : std::ldexp(1.0, s);
        for (int j = b0; j < end; ++j) {
          const float xv = x[r + j];
          double val;
          if (kind == Kind::kNvfp4) {
            // elements E2M1 of x / (scale·global)
            const float div = static_cast<float>(dec) * global;
            const uint8_t c = div > 0.f ? ref::e2m1_encode_nearest(xv / div) : (std::signbit(xv) ? 0x8 : 0x0);
            val = ref::e2m1_decode_formula(c) * dec * global;
          } else {
            const double y = static_cast<double>(xv) / std::ldexp(1.0, s);  // exact: a power of two
            val = (kind == Kind::kMxfp8 ? ref::fp8_decode_formula(e4m3, ref::fp8_encode_nearest(e4m3, static_cast<float>(y)))
                                        : ref::e2m1_decode_formula(ref::e2m1_encode_nearest(y))) *
                  X;
          }
          out[r + j] = static_cast<float>(val);
        }
      }
  };
  for (int g = 0; g < kv.kv_heads; ++g) {
    qdq(kv.k_head(g), k.data() + g * n);
    qdq(kv.v_head(g), v.data() + g * n);
  }
  // Byte formulas: codes ceil(d/2) (FP4) or d (FP8) bytes per token, one scale byte per started block.
  const uint64_t row = kind == Kind::kMxfp8 ? d : (d + 1) / 2, blocks = (d + B - 1) / B;
  const uint64_t H = kv.kv_heads, C = kv.tokens;
  StorageList st(kv.kv_heads, 2.0 * static_cast<double>(row + blocks));
  for (const char* part : {"k", "v"}) {
    const std::string pre(part);
    st.add(pre + ".codes", StorageKind::kCompressed, H * C * row, kv.tokens)
        .add(pre + ".scales", StorageKind::kCompressed, H * C * blocks, kv.tokens);
    if (kind == Kind::kNvfp4) st.add(pre + ".global", StorageKind::kFixed, 4 * H, 0);
  }
  return ref::dense_layer(kv, std::move(k), std::move(v), ctx, st.get());
}

}  // namespace kvb::codecs
