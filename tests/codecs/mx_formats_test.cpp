// Microscaling formats (kernels/formats/mx.h, codecs/mx): E2M1 and E8M0 bit-exact against the value tables
// and the independent reference, the MX and NVFP4 scale rules on hand-computed blocks, packing, hostile
// magnitudes (never NaN for finite input), storage and bits at odd head_dims, and the budget rule.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "codec_test_util.h"
#include "codecs/mx/mx_codec.h"
#include "kernels/formats/mx.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"

namespace kvb::test {
namespace {

namespace mx = kernels::mx;
using mx::Kind;

constexpr float kE2M1[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};

TEST(E2M1, DecodeIsTheValueTable) {
  for (int c = 0; c < 16; ++c) {
    const float want = (c & 8 ? -1.f : 1.f) * kE2M1[c & 7];
    EXPECT_EQ(mx::decode_e2m1(static_cast<uint8_t>(c)), want) << "code " << c;
    EXPECT_EQ(std::signbit(mx::decode_e2m1(static_cast<uint8_t>(c))), (c & 8) != 0) << "code " << c;
    EXPECT_EQ(codecs::ref::e2m1_decode_formula(static_cast<uint8_t>(c)), static_cast<double>(want)) << "code " << c;
  }
}

TEST(E2M1, EveryValueEncodesToItsCode) {
  for (int c = 0; c < 8; ++c) {
    EXPECT_EQ(mx::encode_e2m1(kE2M1[c]), c) << kE2M1[c];
    EXPECT_EQ(mx::encode_e2m1(-kE2M1[c]), c | 8) << -kE2M1[c];
  }
}

TEST(E2M1, TiesGoToTheEvenCode) {
  // midpoint -> code (the even one of its two neighbours)
  const std::vector<std::pair<float, int>> ties = {{0.25f, 0}, {0.75f, 2}, {1.25f, 2}, {1.75f, 4},
                                                   {2.5f, 4},  {3.5f, 6},  {5.f, 6}};
  for (const auto& [x, c] : ties) {
    EXPECT_EQ(mx::encode_e2m1(x), c) << x;
    EXPECT_EQ(mx::encode_e2m1(-x), c | 8) << -x;
    // one float ulp either side leaves the tie: the nearest value wins
    const int below = c == 0 ? 0 : (x < kE2M1[c] ? c - 1 : c), above = x < kE2M1[c] ? c : c + 1;
    EXPECT_EQ(mx::encode_e2m1(std::nextafter(x, 0.f)), below) << "just below " << x;
    EXPECT_EQ(mx::encode_e2m1(std::nextafter(x, 10.f)), above) << "just above " << x;
  }
}

TEST(E2M1, SaturatesZeroesAndNan) {
  for (float x : {6.f, 6.5f, 7.99f, 100.f, 1e30f, FLT_MAX, INFINITY}) {
    EXPECT_EQ(mx::encode_e2m1(x), 0x7) << x;
    EXPECT_EQ(mx::encode_e2m1(-x), 0xf) << -x;
  }
  EXPECT_EQ(mx::encode_e2m1(0.f), 0x0);
  EXPECT_EQ(mx::encode_e2m1(-0.f), 0x8);
  EXPECT_EQ(mx::encode_e2m1(1e-45f), 0x0);   // float subnormal
  EXPECT_EQ(mx::encode_e2m1(-0.2f), 0x8);    // rounds to −0, sign kept
  EXPECT_EQ(mx::encode_e2m1(NAN), 0x0);      // a NaN block is marked by its scale
  EXPECT_EQ(codecs::ref::e2m1_encode_nearest(NAN), 0x0);
}

TEST(E2M1, EncodeEqualsTheNearestValueSearch) {
  Rng rng(2026);
  for (int i = 0; i < 200000; ++i) {
    // magnitudes concentrated on the format's range, plus the midpoints' neighbourhoods
    const float x = i % 2 ? static_cast<float>(rng.normal() * 3.0)
                          : static_cast<float>(std::ldexp(rng.uniform(), static_cast<int>(rng.below(8)) - 3) *
                                               (rng.uniform() < 0.5 ? -1 : 1));
    ASSERT_EQ(mx::encode_e2m1(x), codecs::ref::e2m1_encode_nearest(x)) << fmt::format("x = {:a} (i = {})", x, i);
  }
}

TEST(E8M0, DecodeAndSpecials) {
  EXPECT_EQ(mx::decode_e8m0(127), 1.f);
  EXPECT_EQ(mx::decode_e8m0(128), 2.f);
  EXPECT_EQ(mx::decode_e8m0(126), 0.5f);
  EXPECT_EQ(mx::decode_e8m0(254), std::ldexp(1.f, 127));
  EXPECT_EQ(mx::decode_e8m0(0), std::ldexp(1.f, -127));  // a float subnormal, exact
  EXPECT_TRUE(std::isnan(mx::decode_e8m0(0xff)));
  for (int c = 0; c < 255; ++c) EXPECT_EQ(mx::decode_e8m0(static_cast<uint8_t>(c)), std::ldexp(1.f, c - 127)) << c;
}

TEST(MxScale, SharedExponentOfKnownBlocks) {
  // amax 5 (floor(log2 5) = 2): MXFP4 2 − 2 = 0 -> X = 1 (code 127); MXFP8 2 − 8 = −6 -> code 121.
  EXPECT_EQ(mx::mx_scale_code(5.f, 2, false), 127);
  EXPECT_EQ(mx::mx_scale_code(5.f, 8, false), 121);
  // exact powers of two: floor(log2 8) = 3; just below 8 it is 2
  EXPECT_EQ(mx::mx_scale_code(8.f, 2, false), 128);
  EXPECT_EQ(mx::mx_scale_code(std::nextafter(8.f, 0.f), 2, false), 127);
  // all-zero, denormal-only and tiny blocks clamp at 2^-127 (code 0); huge finite blocks stay finite
  for (float a : {0.f, 1e-45f, 1e-40f, 1e-38f}) EXPECT_EQ(mx::mx_scale_code(a, 2, false), 0) << a;
  EXPECT_EQ(mx::mx_scale_code(FLT_MAX, 2, false), 125 + 127);
  EXPECT_EQ(mx::mx_scale_code(FLT_MAX, 8, false), 119 + 127);
  EXPECT_EQ(mx::mx_scale_code(1.f, 2, true), 0xff);  // a NaN in the block
  for (double a : {5.0, 8.0, 0.0, 1e-40, 3.0e38})
    for (int em : {2, 8})
      EXPECT_EQ(mx::mx_scale_code(static_cast<float>(a), em, false), codecs::ref::mx_shared_exp(static_cast<float>(a), em) + 127)
          << a << " emax " << em;
}

/// Encodes one row with mx.h and returns its element codes (unpacked) and scales.
struct Row {
  std::vector<uint8_t> codes, scales, elem;
};
Row encode(Kind k, const std::vector<float>& x, float global = 1.f) {
  const int d = static_cast<int>(x.size());
  Row r;
  r.codes.assign(mx::row_bytes(k, d), 0xAA);  // garbage: every byte must be written
  r.scales.assign(mx::blocks_per_row(k, d), 0xAA);
  mx::encode_row(k, x.data(), d, global, r.codes.data(), r.scales.data());
  for (int j = 0; j < d; ++j) r.elem.push_back(mx::is_fp4(k) ? mx::fp4_at(r.codes.data(), j) : r.codes[j]);
  return r;
}

TEST(MxScale, Mxfp4BlockOfKnownValues) {
  // X = 1 (amax 5): 5 -> 4 (tie to even), 1.25 -> 1 (tie), −0.3 -> −0.5, 2.75 -> 3, 0.2 -> 0, −6e-8 -> −0.
  std::vector<float> x(32, 0.f);
  x[0] = 5.f, x[1] = 1.25f, x[2] = -0.3f, x[3] = 2.75f, x[4] = 0.2f, x[5] = -6e-8f;
  const Row r = encode(Kind::kMxfp4, x);
  ASSERT_EQ(r.scales.size(), 1u);
  EXPECT_EQ(r.scales[0], 127);
  const std::vector<uint8_t> want = {0x6, 0x2, 0x9, 0x5, 0x0, 0x8};
  for (size_t j = 0; j < want.size(); ++j) EXPECT_EQ(r.elem[j], want[j]) << "element " << j;
  for (int j = 6; j < 32; ++j) EXPECT_EQ(r.elem[j], 0) << "element " << j;
  EXPECT_EQ(r.codes[0], 0x26);  // element 0 in the low nibble, element 1 in the high nibble
  EXPECT_EQ(r.codes[1], 0x59);
  // amax 7.9: floor(log2 7.9) − 2 = 0, X = 1, and 7.9 saturates to 6
  x[0] = 7.9f;
  const Row s = encode(Kind::kMxfp4, x);
  EXPECT_EQ(s.scales[0], 127);
  EXPECT_EQ(s.elem[0], 0x7);
}

TEST(MxScale, Mxfp8BlockOfKnownValues) {
  // amax 5: X = 2^-6; 5 / X = 320 = E4M3 0x7a (2^8·1.25); 1.25 / X = 80 = 0x6a; −0.3 / X = −19.2 -> −20 (0xda: 2^4·1.25)
  std::vector<float> x(32, 0.f);
  x[0] = 5.f, x[1] = 1.25f, x[2] = -0.3f;
  const Row r = encode(Kind::kMxfp8, x);
  EXPECT_EQ(r.scales[0], 121);
  EXPECT_EQ(r.elem[0], 0x7a);
  EXPECT_EQ(r.elem[1], 0x6a);
  EXPECT_EQ(r.elem[2], 0xda);
  // 7.99 / 2^-6 = 511 saturates to 448 (0x7e)
  x[0] = 7.99f;
  EXPECT_EQ(encode(Kind::kMxfp8, x).elem[0], 0x7e);
}

TEST(Nvfp4, BlockOfKnownValues) {
  // Tensor amax 2688 -> global = 2688 / (448·6) = 1. Block 0: amax 9 -> scale E4M3(9/6) = 1.5 = 0x3c;
  // elements / 1.5: 9 -> 6 (0x7), −4.5 -> −3 (0xd), 0.75 -> 0.5 (0x1), 2.25 -> 1.5 (0x3).
  // Block 1: amax 2688 -> scale 448 (0x7e). Block 2: amax 1e-4 -> 1.7e-5 underflows E4M3 -> code 0, elements ±0.
  std::vector<float> x(48, 0.f);
  x[0] = 9.f, x[1] = -4.5f, x[2] = 0.75f, x[3] = 2.25f;
  x[16] = 2688.f, x[17] = -1000.f;
  x[32] = 1e-4f, x[33] = -1e-4f;
  const float global = mx::nvfp4_global_scale(2688.f);
  ASSERT_EQ(global, 1.f);
  const Row r = encode(Kind::kNvfp4, x, global);
  ASSERT_EQ(r.scales.size(), 3u);
  EXPECT_EQ(r.scales[0], 0x3c);
  EXPECT_EQ(r.scales[1], 0x7e);
  EXPECT_EQ(r.scales[2], 0x00);
  const std::vector<uint8_t> want = {0x7, 0xd, 0x1, 0x3};
  for (size_t j = 0; j < want.size(); ++j) EXPECT_EQ(r.elem[j], want[j]) << "element " << j;
  EXPECT_EQ(r.elem[16], 0x7);  // 2688 / 448 = 6
  EXPECT_EQ(r.elem[17], 0xc);  // −1000 / 448 = −2.23 -> −2
  EXPECT_EQ(r.elem[32], 0x0);
  EXPECT_EQ(r.elem[33], 0x8);
  for (int j = 32; j < 48; ++j)
    EXPECT_EQ(mx::load_element(Kind::kNvfp4, r.codes.data(), r.scales.data(), j) * global, 0.f) << j;
  // The global scale: amax / 2688, and 1 for an all-zero or denormal-only tensor.
  EXPECT_EQ(mx::nvfp4_global_scale(26.88f), 26.88f / 2688.f);
  EXPECT_EQ(mx::nvfp4_global_scale(0.f), 1.f);
  EXPECT_EQ(mx::nvfp4_global_scale(1e-36f), 1.f);
}

TEST(MxFormats, PartialBlocksAndOddHeadDims) {
  // d = 40: MXFP4 blocks [0,32) and [32,40), NVFP4 [0,16) [16,32) [32,40); d = 7: one partial block, 4 bytes
  // (the last high nibble 0). The partial block's scale is its own channels' amax.
  EXPECT_EQ(mx::blocks_per_row(Kind::kMxfp4, 40), 2);
  EXPECT_EQ(mx::blocks_per_row(Kind::kNvfp4, 40), 3);
  EXPECT_EQ(mx::row_bytes(Kind::kNvfp4, 7), 4);
  EXPECT_EQ(mx::row_bytes(Kind::kMxfp8, 7), 7);
  std::vector<float> x(40, 1.f);
  x[35] = 20.f;  // only the partial block's scale sees it
  const Row r = encode(Kind::kMxfp4, x);
  EXPECT_EQ(r.scales[0], 127 - 2);  // amax 1: floor(log2 1) − 2 = −2, X = 1/4
  EXPECT_EQ(r.scales[1], 127 + 2);  // amax 20: floor(log2 20) = 4, X = 4
  const Row odd = encode(Kind::kNvfp4, std::vector<float>{1, 2, 3, 4, 5, 6, -6}, 1.f);
  EXPECT_EQ(odd.codes.size(), 4u);
  EXPECT_EQ(odd.codes[3] >> 4, 0);
}

TEST(MxFormats, HostileMagnitudesNeverGiveNan) {
  // finite inputs of every magnitude, and all-zero blocks: decoded values finite, at most twice the input
  // (round to nearest never more than doubles a magnitude; saturation only lowers it), signs kept.
  const std::vector<std::vector<float>> rows = {
      std::vector<float>(64, 0.f),
      std::vector<float>(64, 1e-40f),
      std::vector<float>(64, -1e-45f),
      std::vector<float>(64, 3e38f),
      std::vector<float>(64, -FLT_MAX),
      [] {
        std::vector<float> v(64);
        for (int j = 0; j < 64; ++j) v[j] = std::ldexp(j % 2 ? -1.f : 1.f, (j * 17) % 250 - 125);
        return v;
      }(),
  };
  for (const Kind k : {Kind::kNvfp4, Kind::kMxfp4, Kind::kMxfp8})
    for (size_t ri = 0; ri < rows.size(); ++ri) {
      const auto& x = rows[ri];
      float amax = 0.f;
      for (float v : x) amax = std::max(amax, mx::amax_term(v));
      const float global = k == Kind::kNvfp4 ? mx::nvfp4_global_scale(amax) : 1.f;
      const Row r = encode(k, x, global);
      for (int j = 0; j < 64; ++j) {
        const float y = mx::load_element(k, r.codes.data(), r.scales.data(), j) * global;
        ASSERT_TRUE(std::isfinite(y)) << fmt::format("{} row {} j {} x {:a} -> {}", codecs::mx_name(k), ri, j, x[j], y);
        EXPECT_LE(std::fabs(y), 2.f * std::fabs(x[j])) << codecs::mx_name(k) << " row " << ri << " j " << j;
        if (y != 0.f) EXPECT_EQ(std::signbit(y), std::signbit(x[j]));
      }
    }
  // ±Inf saturates (the saturating conversion) instead of producing Inf or NaN scales.
  for (const Kind k : {Kind::kMxfp4, Kind::kMxfp8}) {
    std::vector<float> x(32, 1.f);
    x[3] = -INFINITY;
    const Row r = encode(k, x);
    EXPECT_NE(r.scales[0], mx::kE8M0Nan);
    EXPECT_TRUE(std::isfinite(mx::load_element(k, r.codes.data(), r.scales.data(), 3)));
  }
  // A NaN marks its block NaN (the spec's X = NaN) and only that block.
  std::vector<float> x(64, 1.f);
  x[40] = NAN;
  const Row r = encode(Kind::kMxfp4, x);
  EXPECT_EQ(r.scales[1], mx::kE8M0Nan);
  EXPECT_TRUE(std::isnan(mx::load_element(Kind::kMxfp4, r.codes.data(), r.scales.data(), 33)));
  EXPECT_EQ(mx::load_element(Kind::kMxfp4, r.codes.data(), r.scales.data(), 0), 1.f);
}

TEST(MxCodecs, StorageCountsEveryByteAtOddHeadDims) {
  // bits per element = 8·(row bytes + scale bytes) / d; nvfp4 adds 2 fp32 per KV head as fixed bytes.
  struct Want {
    const char* codec;
    int d;
    double bits;
  };
  const std::vector<Want> wants = {{"nvfp4", 64, 4.5},       {"mxfp4", 64, 4.25},      {"mxfp8", 64, 8.25},
                                   {"nvfp4", 96, 4.5},       {"mxfp4", 96, 4.25},      {"mxfp8", 96, 8.25},
                                   {"nvfp4", 40, 4.6},       {"mxfp4", 40, 4.4},       {"mxfp8", 40, 8.4},
                                   {"nvfp4", 72, 8.0 * 41 / 72}, {"mxfp4", 72, 8.0 * 39 / 72}, {"mxfp8", 72, 8.0 * 75 / 72},
                                   {"nvfp4", 7, 8.0 * 5 / 7}};
  for (const auto& w : wants) {
    SCOPED_TRACE(fmt::format("{} d={}", w.codec, w.d));
    SynthOptions o;
    o.head_dim = w.d;
    o.tokens = 33;
    const SynthLayer L = make_layer(o);
    const CodecEntry& e = registry().at(w.codec);
    const auto enc = e.make_cpu(Json::object(), L.shape)->encode(0, L.kv, nullptr, L.ctx());
    const Storage st = enc->storage();
    uint64_t compressed = 0, fixed = 0;
    for (const auto& it : st.items) (it.kind == StorageKind::kFixed ? fixed : compressed) += it.bytes;
    EXPECT_DOUBLE_EQ(8.0 * compressed / (2.0 * o.kv_heads * o.tokens * w.d), w.bits);
    EXPECT_EQ(fixed, std::string(w.codec) == "nvfp4" ? 2u * 4u * o.kv_heads : 0u);
    ASSERT_EQ(e.candidates(w.d).size(), 1u);
    EXPECT_DOUBLE_EQ(e.candidates(w.d)[0].bits, w.bits);
    // every stored buffer is a storage item of the same size
    const auto bufs = enc->buffers();
    ASSERT_EQ(bufs.size(), st.items.size());
    for (size_t i = 0; i < bufs.size(); ++i) {
      EXPECT_EQ(bufs[i].name, st.items[i].name);
      EXPECT_EQ(bufs[i].bytes.size(), st.items[i].bytes);
    }
  }
}

TEST(MxCodecs, CpuMatchesRefAtHeadDimsWithPartialBlocks) {
  // d = 40 and 72 (partial last blocks for both block sizes; the registry suite covers 1, 7, 8, 64, 96, ...).
  for (const int d : {40, 72})
    for (const char* name : {"nvfp4", "mxfp4", "mxfp8"}) {
      SynthOptions o;
      o.head_dim = d;
      o.tokens = 61;
      o.group = 2;
      o.seed = 300 + d;
      const SynthLayer L = make_layer(o);
      SCOPED_TRACE(fmt::format("{} on {} seed {}", name, L.describe(), o.seed));
      const CodecEntry& e = registry().at(name);
      const auto c = e.make_cpu(Json::object(), L.shape)->encode(0, L.kv, nullptr, L.ctx());
      const auto r = e.make_ref(Json::object(), L.shape)->encode(0, L.kv, nullptr, L.ctx());
      for (int h = 0; h < L.shape.n_heads; ++h) {
        Scratch sc, sr;
        std::vector<float> oc(d), orf(d);
        c->attend(h / o.group, L.query(h, 0), oc.data(), sc);
        r->attend(h / o.group, L.query(h, 0), orf.data(), sr);
        EXPECT_LE(rel_l2(oc.data(), orf.data(), d), 1e-4) << "query head " << h;
      }
    }
}

TEST(MxCodecs, BudgetBelowTheFormatIsSkipped) {
  const BudgetResolution lo = resolve_budget(registry().at("nvfp4"), 4.0, Json::object(), 128, "x");
  EXPECT_FALSE(lo.ok);
  EXPECT_NE(lo.reason.find("no nvfp4 configuration fits 4 bits"), std::string::npos) << lo.reason;
  const BudgetResolution hi = resolve_budget(registry().at("mxfp4"), 4.25, Json::object(), 128, "x");
  EXPECT_TRUE(hi.ok);
  EXPECT_DOUBLE_EQ(hi.candidate_bits, 4.25);
  EXPECT_EQ(registry().at("mxfp8").label(Json::object()), "mxfp8");
}

TEST(MxCodecs, HostileCachesAttendToFiniteOutputs) {
  // Keys: head 0 all zero, head 1 denormal-tiny; values: huge (1e30) in head 0 with zero blocks, tiny in head
  // 1. Attention stays finite and matches the reference.
  const int H = 2, d = 40;
  const int64_t C = 19;
  LayerKV kv;
  kv.kv_heads = H, kv.tokens = C, kv.head_dim = d;
  kv.k.assign(static_cast<size_t>(H * C * d), 0.f);
  kv.v.assign(kv.k.size(), 0.f);
  Rng rng(5);
  for (int64_t i = 0; i < C * d; ++i) {
    kv.k[C * d + i] = static_cast<float>(rng.normal() * 1e-39);
    kv.v[i] = (i % d) < 16 ? 0.f : static_cast<float>(rng.normal() * 1e30);
    kv.v[C * d + i] = static_cast<float>(rng.normal() * 1e-41);
  }
  const ModelShape shape{1, H, H, d};
  const CodecContext ctx{shape, AttnConfig{1.f / std::sqrt(40.f), 0.f}, 7};
  std::vector<float> q(d);
  for (auto& x : q) x = static_cast<float>(rng.normal());
  for (const char* name : {"nvfp4", "mxfp4", "mxfp8"}) {
    SCOPED_TRACE(name);
    const CodecEntry& e = registry().at(name);
    const auto c = e.make_cpu(Json::object(), shape)->encode(0, kv, nullptr, ctx);
    const auto r = e.make_ref(Json::object(), shape)->encode(0, kv, nullptr, ctx);
    for (int g = 0; g < H; ++g) {
      Scratch sc, sr;
      std::vector<float> oc(d), orf(d);
      c->attend(g, q.data(), oc.data(), sc);
      r->attend(g, q.data(), orf.data(), sr);
      ASSERT_TRUE(all_finite(oc.data(), d)) << "head " << g;
      for (int j = 0; j < d; ++j) EXPECT_NEAR(oc[j], orf[j], 1e-5 * std::fabs(orf[j]) + 1e-45) << "head " << g << " j " << j;
    }
  }
}

}  // namespace
}  // namespace kvb::test
