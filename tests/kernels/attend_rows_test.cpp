// kernels/cpu/attend_rows.h: the fused exact-attention kernel over fp16 rows, against a float64 oracle written
// here (softmax of the fp16-rounded keys' logits, weighted fp16-rounded values), on both instruction-set paths,
// odd shapes (1 and 7 rows, tiles' edges, head_dim 8 / 24 / 96 / 128 / 256, 1..17 queries), peaky and flat
// softmaxes, and the inputs it must hand back to the caller's oracle path (overflowing or NaN logits).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kernels/cpu/attend_rows.h"
#include "kernels/cpu/row_kernels.h"
#include "kernels/formats/fp16.h"
#include "kernels/formats/fp8.h"
#include "kernels/formats/uniform.h"
#include "kernels/cpu/uniform_rows.h"
#include "kvb/core/half.h"
#include "kvb/core/rng.h"

namespace kvb::test {
namespace {

/// Output error of the fused kernel relative to the float64 oracle: float32 accumulation over up to 4099
/// rows in a different order than the oracle's (about √C·2^-24 ≈ 4e-6 relative, seen <= 1.5e-6) and the
/// polynomial exp (relative error < 2e-7 per weight).
constexpr double kFusedRelTol = 2e-5;

struct Case {
  int64_t rows;
  int d, nq;
  double spread;  ///< logit scale: 0.05 nearly flat softmax, 3 peaky
  uint64_t seed;
  std::string describe() const { return fmt::format("rows={} d={} nq={} spread={} seed={}", rows, d, nq, spread, seed); }
};

struct Data {
  std::vector<uint16_t> K, V;
  std::vector<std::vector<float>> q;
};

Data make(const Case& c) {
  Rng r(c.seed);
  Data x;
  const size_t n = static_cast<size_t>(c.rows) * c.d;
  x.K.resize(n), x.V.resize(n);
  for (size_t i = 0; i < n; ++i) {
    x.K[i] = kernels::f32_to_f16_sat(static_cast<float>(r.normal() * ((i % c.d) % 13 == 2 ? 6.0 : 1.0)));
    x.V[i] = kernels::f32_to_f16_sat(static_cast<float>(r.normal() + 0.25 * ((i / c.d) % 5)));
  }
  x.q.assign(static_cast<size_t>(c.nq), std::vector<float>(static_cast<size_t>(c.d)));
  for (auto& q : x.q)
    for (auto& v : q) v = static_cast<float>(r.normal() * c.spread);
  return x;
}

/// Float64 attention of query q over the fp16 rows, logit = scale·<q, k>.
std::vector<double> oracle(const Data& x, const Case& c, const std::vector<float>& q, double scale) {
  std::vector<double> s(static_cast<size_t>(c.rows)), o(static_cast<size_t>(c.d), 0.0);
  double m = -INFINITY;
  for (int64_t t = 0; t < c.rows; ++t) {
    double a = 0;
    for (int j = 0; j < c.d; ++j) a += static_cast<double>(q[j]) * f16_to_f32(x.K[t * c.d + j]);
    s[t] = scale * a;
    m = std::max(m, s[t]);
  }
  double l = 0;
  for (int64_t t = 0; t < c.rows; ++t) {
    const double w = std::exp(s[t] - m);
    l += w;
    for (int j = 0; j < c.d; ++j) o[j] += w * f16_to_f32(x.V[t * c.d + j]);
  }
  for (auto& v : o) v /= l;
  return o;
}

/// Runs the kernel; returns false if it declined. outs [nq][d].
bool run(const Data& x, const Case& c, float scale, std::vector<std::vector<float>>& outs) {
  outs.assign(static_cast<size_t>(c.nq), std::vector<float>(static_cast<size_t>(c.d), -7.f));
  std::vector<const float*> qs;
  std::vector<float*> op;
  for (int i = 0; i < c.nq; ++i) qs.push_back(x.q[i].data()), op.push_back(outs[i].data());
  std::vector<float> work(static_cast<size_t>(kernels::attend_rows_work_floats(c.nq, c.d)));
  kernels::RowAttend a;
  a.K = {kernels::RowCodec::kF16, x.K.data()}, a.V = {kernels::RowCodec::kF16, x.V.data()}, a.rows = c.rows, a.d = c.d;
  a.qs = qs.data(), a.nq = c.nq, a.outs = op.data();
  a.softmax_scale = scale;
  return kernels::attend_rows_fused(a, work.data());
}

void check_against_oracle(const Case& c) {
  SCOPED_TRACE(c.describe() + " path " + kernels::attend_rows_path(kernels::RowCodec::kF16, c.d));
  const Data x = make(c);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.d)));
  std::vector<std::vector<float>> outs;
  ASSERT_TRUE(run(x, c, scale, outs));
  for (int i = 0; i < c.nq; ++i) {
    const std::vector<double> o = oracle(x, c, x.q[i], scale);
    double num = 0, den = 0;
    for (int j = 0; j < c.d; ++j) {
      num += (outs[i][j] - o[j]) * (outs[i][j] - o[j]);
      den += o[j] * o[j];
    }
    EXPECT_LE(std::sqrt(num / den), kFusedRelTol) << "query " << i;
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  uint64_t seed = 100;
  for (int d : {8, 24, 96, 128, 256})
    for (int64_t rows : {1, 7, 63, 64, 65, 130, 4099})
      for (int nq : {1, 3, 4, 5, 17}) {
        if (rows == 4099 && (nq != 4 || d == 8)) continue;  // the long context: the GQA group of 4
        out.push_back({rows, d, nq, seed % 2 ? 3.0 : 0.05, seed});
        ++seed;
      }
  return out;
}

TEST(AttendRows, FusedEqualsTheFloat64OracleOnEveryPath) {
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU: the kernel declines";
  for (bool avx512 : {true, false}) {
    kernels::set_attend_rows_avx512(avx512);
    for (const Case& c : cases()) check_against_oracle(c);
  }
  kernels::set_attend_rows_avx512(true);
}

// The selection family's runs (RowSegment): a per-run logit bias, and a value factor that weights the run's values
// but not its share of the normalizer — against the float64 oracle with the same rule, on both paths, with runs
// that cut tiles at odd places (and an empty one).
TEST(AttendRows, SegmentsAddTheirBiasAndScaleOnlyTheirValues) {
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU";
  const Case c{300, 128, 4, 1.0, 42};
  const Data x = make(c);
  const std::vector<kernels::RowSegment> segs{{5, 0.f, 1.f}, {70, 1.3f, 0.25f}, {0, -2.f, 4.f}, {100, -0.7f, 2.f},
                                             {125, 0.f, 1.f}};
  const float scale = 0.0884f;
  for (bool avx512 : {true, false}) {
    kernels::set_attend_rows_avx512(avx512);
    SCOPED_TRACE(std::string("path ") + kernels::attend_rows_path(kernels::RowCodec::kF16, c.d));
    std::vector<std::vector<float>> outs(c.nq, std::vector<float>(c.d));
    std::vector<const float*> qs;
    std::vector<float*> op;
    for (int i = 0; i < c.nq; ++i) qs.push_back(x.q[i].data()), op.push_back(outs[i].data());
    std::vector<float> work(static_cast<size_t>(kernels::attend_rows_work_floats(c.nq, c.d)));
    kernels::RowAttend a;
    a.K = {kernels::RowCodec::kF16, x.K.data()}, a.V = {kernels::RowCodec::kF16, x.V.data()}, a.rows = c.rows, a.d = c.d, a.qs = qs.data(), a.nq = c.nq, a.outs = op.data();
    a.softmax_scale = scale, a.segs = segs.data(), a.nsegs = static_cast<int>(segs.size());
    ASSERT_TRUE(kernels::attend_rows_fused(a, work.data()));
    for (int i = 0; i < c.nq; ++i) {
      std::vector<double> s(c.rows), fac(c.rows), o(c.d, 0.0);
      int64_t t = 0;
      for (const auto& sg : segs)
        for (int64_t k = 0; k < sg.rows; ++k, ++t) {
          double dot = 0;
          for (int j = 0; j < c.d; ++j) dot += static_cast<double>(x.q[i][j]) * f16_to_f32(x.K[t * c.d + j]);
          s[t] = static_cast<double>(scale) * dot + sg.bias;
          fac[t] = sg.vfac;
        }
      const double m = *std::max_element(s.begin(), s.end());
      double l = 0;
      for (int64_t r = 0; r < c.rows; ++r) {
        const double w = std::exp(s[r] - m);
        l += w;
        for (int j = 0; j < c.d; ++j) o[j] += w * fac[r] * f16_to_f32(x.V[r * c.d + j]);
      }
      double num = 0, den = 0;
      for (int j = 0; j < c.d; ++j) {
        num += (outs[i][j] - o[j] / l) * (outs[i][j] - o[j] / l);
        den += (o[j] / l) * (o[j] / l);
      }
      EXPECT_LE(std::sqrt(num / den), kFusedRelTol) << "query " << i;
    }
    a.nsegs = 2;  // runs that do not cover the rows: declined
    EXPECT_FALSE(kernels::attend_rows_fused(a, work.data()));
  }
  kernels::set_attend_rows_avx512(true);
}

TEST(AttendRows, DeclinesWhatTheOraclePathMustHandle) {
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU";
  const Case c{70, 16, 2, 1.0, 7};
  Data x = make(c);
  std::vector<std::vector<float>> outs;
  EXPECT_FALSE(run(x, c, 1e38f, outs)) << "overflowing logits";
  x.q[1][3] = std::nanf("");
  EXPECT_FALSE(run(x, c, 0.25f, outs)) << "a NaN query";
  const Case odd{5, 7, 1, 1.0, 8};  // head_dim not a multiple of 8
  const Data y = make(odd);
  EXPECT_FALSE(run(y, odd, 0.25f, outs));
  EXPECT_STREQ(kernels::attend_rows_path(kernels::RowCodec::kF16, 7), "unfused");
  kernels::set_simd_kernels(false);
  EXPECT_FALSE(run(make(Case{5, 16, 1, 1.0, 9}), Case{5, 16, 1, 1.0, 9}, 0.25f, outs)) << "SIMD switched off";
  EXPECT_STREQ(kernels::attend_rows_path(kernels::RowCodec::kF16, 16), "unfused");
  kernels::set_simd_kernels(true);
}

// ---- coded rows (fp8, uniform) ----

/// rel-L2 of `out` against the float64 attention output softmax(logits) · V (V [rows][d] decoded values).
double rel_l2_vs_softmax(const std::vector<double>& logits, const std::vector<double>& V, int d, const std::vector<float>& out) {
  const double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> o(static_cast<size_t>(d), 0.0);
  double l = 0;
  for (size_t t = 0; t < logits.size(); ++t) {
    const double w = std::exp(logits[t] - m);
    l += w;
    for (int j = 0; j < d; ++j) o[j] += w * V[t * d + j];
  }
  double num = 0, den = 0;
  for (int j = 0; j < d; ++j) num += (out[j] - o[j] / l) * (out[j] - o[j] / l), den += (o[j] / l) * (o[j] / l);
  return std::sqrt(num / den);
}

struct CodedCase {
  kernels::RowCodec codec;
  int64_t rows;
  int d, group, nq;
  uint64_t seed;
  std::string describe() const {
    return fmt::format("codec={} rows={} d={} group={} nq={} seed={}", kernels::row_codec_name(codec), rows, d, group,
                       nq, seed);
  }
};

int bits_of(kernels::RowCodec c) {
  return c == kernels::RowCodec::kU8 ? 8 : c == kernels::RowCodec::kU4 ? 4 : c == kernels::RowCodec::kU2 ? 2 : 0;
}

/// One side's stored rows and their float64 decode (the oracle's values).
struct CodedSide {
  std::vector<uint8_t> codes;
  std::vector<kernels::uq::GroupParams> sm;
  std::vector<double> dec;  // [rows][d]
};

/// Encodes x[rows][d] with the library's encoders and decodes every stored value with the scalar format functions.
/// E4M3 values are stored as themselves (scale 1): the kernel sees dec·2^-8 and is given key/out factors of 256.
CodedSide encode_side(const CodedCase& c, const std::vector<float>& x) {
  CodedSide s;
  const int64_t n = c.rows * c.d;
  s.dec.resize(static_cast<size_t>(n));
  if (c.codec == kernels::RowCodec::kE4M3 || c.codec == kernels::RowCodec::kE5M2) {
    s.codes.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const bool e4 = c.codec == kernels::RowCodec::kE4M3;
      s.codes[i] = e4 ? kernels::fp8::encode_e4m3(x[i]) : kernels::fp8::encode_e5m2(x[i]);
      s.dec[i] = e4 ? kernels::fp8::decode_e4m3(s.codes[i]) : kernels::fp8::decode_e5m2(s.codes[i]);
    }
    return s;
  }
  const int b = bits_of(c.codec);
  const kernels::uq::RowFormat f{c.d, b, c.group};
  s.codes.resize(static_cast<size_t>(c.rows * f.bytes()));
  s.sm.resize(static_cast<size_t>(c.rows * f.groups()));
  kernels::uq::encode_rows(f, x.data(), c.rows, s.codes.data(), s.sm.data());
  for (int64_t t = 0; t < c.rows; ++t)
    for (int j = 0; j < c.d; ++j) {
      const kernels::uq::GroupParams gp = s.sm[t * f.groups() + j / c.group];
      const uint32_t code = kernels::uq::unpack_code(s.codes.data() + t * f.bytes(), j, b);
      s.dec[t * c.d + j] = static_cast<double>(code) * f16_to_f32(gp.scale) + f16_to_f32(gp.min);
    }
  return s;
}

void check_coded(const CodedCase& c) {
  SCOPED_TRACE(c.describe() + " path " + kernels::attend_rows_path(c.codec, c.d, c.group));
  Rng r(c.seed);
  const size_t n = static_cast<size_t>(c.rows) * c.d;
  std::vector<float> k(n), v(n);
  for (size_t i = 0; i < n; ++i) {
    k[i] = static_cast<float>(r.normal() * ((i % c.d) % 13 == 2 ? 6.0 : 1.0));
    v[i] = static_cast<float>(r.normal() + 0.25 * ((i / c.d) % 5));
  }
  for (int j = 0; j < c.d && c.rows > 3; ++j) k[3 * c.d + j] = 0.5f;  // a constant row: scale 0 in every group
  const CodedSide K = encode_side(c, k), V = encode_side(c, v);
  std::vector<std::vector<float>> q(c.nq, std::vector<float>(c.d)), outs(c.nq, std::vector<float>(c.d, -7.f));
  for (auto& qi : q)
    for (auto& x : qi) x = static_cast<float>(r.normal());
  std::vector<const float*> qs;
  std::vector<float*> op;
  for (int i = 0; i < c.nq; ++i) qs.push_back(q[i].data()), op.push_back(outs[i].data());
  const int groups = c.group > 0 ? c.d / c.group : 0;
  std::vector<float> work(static_cast<size_t>(kernels::attend_rows_work_floats(c.nq, c.d, groups)));
  kernels::RowAttend a;
  const auto* ksm = reinterpret_cast<const uint16_t*>(K.sm.data());
  const auto* vsm = reinterpret_cast<const uint16_t*>(V.sm.data());
  a.K = {c.codec, K.codes.data(), ksm, c.group}, a.V = {c.codec, V.codes.data(), vsm, c.group};
  a.rows = c.rows, a.d = c.d, a.qs = qs.data(), a.nq = c.nq, a.outs = op.data();
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  a.softmax_scale = static_cast<float>(scale);
  if (c.codec == kernels::RowCodec::kE4M3) a.key_factor = a.out_factor = 256.f;
  ASSERT_TRUE(kernels::attend_rows_fused(a, work.data()));
  for (int i = 0; i < c.nq; ++i) {
    std::vector<double> s(static_cast<size_t>(c.rows));
    for (int64_t t = 0; t < c.rows; ++t) {
      double dot = 0;
      for (int j = 0; j < c.d; ++j) dot += static_cast<double>(q[i][j]) * K.dec[t * c.d + j];
      s[t] = static_cast<double>(a.softmax_scale) * dot;
    }
    EXPECT_LE(rel_l2_vs_softmax(s, V.dec, c.d, outs[i]), kFusedRelTol) << "query " << i;
  }
}

// Every (codec, head_dim, group) a path takes, on both paths: rows 1, 7, 65 (a tile and one row) with 1, 4 and 5
// queries, and 4099 rows with the GQA group of 4 at head_dim 128. Counts the two-group chunks it ran.
TEST(AttendRows, CodedRowsEqualTheFloat64OracleOnEveryPath) {
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU: the kernel declines";
  using kernels::RowCodec;
  uint64_t seed = 500;
  int ran = 0, split_ran = 0;
  for (bool avx512 : {true, false}) {
    kernels::set_attend_rows_avx512(avx512);
    for (RowCodec codec : {RowCodec::kE4M3, RowCodec::kE5M2, RowCodec::kU8, RowCodec::kU4, RowCodec::kU2})
      for (int d : {8, 24, 32, 48, 96, 128, 256})
        for (int group : {0, 8, 16, 32, 64, 128}) {
          const bool uniform = bits_of(codec) > 0;
          if (uniform != (group > 0) || (group > 0 && d % group != 0)) continue;
          const std::string path = kernels::attend_rows_path(codec, d, group);
          if (path == "unfused") continue;
          const int W = path == "avx512f" ? 16 : 8;
          split_ran += uniform && 2 * group == W * 8 / bits_of(codec);
          for (int64_t rows : {int64_t{1}, int64_t{7}, int64_t{65}, int64_t{4099}})
            for (int nq : {1, 4, 5}) {
              if (rows == 4099 && (nq != 4 || d != 128)) continue;
              check_coded({codec, rows, d, group, nq, seed++});
              ++ran;
            }
        }
  }
  kernels::set_attend_rows_avx512(true);
  EXPECT_GE(ran, 300) << "cases run";
  EXPECT_GT(split_ran, 0) << "no two-group chunk ran";
}

TEST(AttendRows, CodedPathsAreTheDocumentedOnes) {
  using kernels::RowCodec;
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU";
  kernels::set_attend_rows_avx512(false);
  EXPECT_STREQ(kernels::attend_rows_path(RowCodec::kU2, 128, 32), "avx2-fma-f16c");  // 32-channel chunks
  EXPECT_STREQ(kernels::attend_rows_path(RowCodec::kU2, 128, 8), "unfused");         // 8 < 32 / 2
  EXPECT_STREQ(kernels::attend_rows_path(RowCodec::kU4, 40, 8), "unfused");          // 40 % 16 != 0
  kernels::set_attend_rows_avx512(true);
  EXPECT_STREQ(kernels::attend_rows_path(RowCodec::kU8, 100, 20), "unfused");
  EXPECT_STREQ(kernels::attend_rows_path(RowCodec::kE4M3, 12), "unfused");
  kernels::RowAttend a;  // different codecs on the two sides: declined
  a.K.codec = RowCodec::kU4, a.V.codec = RowCodec::kU8, a.rows = 1, a.d = 128, a.nq = 1;
  float work[8];
  EXPECT_FALSE(kernels::attend_rows_fused(a, work));
}

// KIVI's layout through chained calls: keys per-channel codes (a (scale, min) per channel per block of G tokens) for
// rows [0, Cq), fp16 after; values per-token codes for [0, Vq), fp16 after; the three ranges attended as three
// calls sharing one RowAttendState, against the float64 oracle of the decoded rows. Random code bytes and random
// binary16 parameters (every byte pattern is a valid packed row), cuts that fall inside blocks and tiles, both
// orders of Cq and Vq, both paths.
TEST(AttendRows, ChainedRangesOfMixedCodecsEqualTheOracle) {
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU";
  using kernels::RowCodec;
  struct Mixed {
    int bits, d, G, vgroup;
    int64_t C, Cq, Vq;
    int nq;
  };
  const std::vector<Mixed> cases{{4, 128, 32, 32, 300, 256, 172, 4},  {2, 128, 32, 32, 300, 256, 172, 5},
                                 {8, 96, 16, 32, 129, 96, 100, 3},    {4, 64, 8, 16, 200, 120, 199, 8},
                                 {2, 256, 32, 64, 4099, 4096, 3971, 4}, {4, 128, 32, 32, 77, 64, 0, 1}};
  uint64_t seed = 900;
  for (bool avx512 : {true, false}) {
    kernels::set_attend_rows_avx512(avx512);
    for (const Mixed& m : cases) {
      Rng r(seed++);
      const int rb = m.d * m.bits / 8, vg = m.d / m.vgroup;
      const RowCodec kc = m.bits == 8 ? RowCodec::kC8 : m.bits == 4 ? RowCodec::kC4 : RowCodec::kC2;
      const RowCodec vc = m.bits == 8 ? RowCodec::kU8 : m.bits == 4 ? RowCodec::kU4 : RowCodec::kU2;
      std::vector<uint8_t> kcodes(static_cast<size_t>(m.Cq * rb)), vcodes(static_cast<size_t>(m.Vq * rb));
      for (auto& x : kcodes) x = static_cast<uint8_t>(r.next_u64() & 0xFF);
      for (auto& x : vcodes) x = static_cast<uint8_t>(r.next_u64() & 0xFF);
      const auto h = [&](double lo, double hi) { return kernels::f32_to_f16_sat(static_cast<float>(lo + (hi - lo) * r.uniform())); };
      std::vector<uint16_t> ksm(static_cast<size_t>(2 * (m.Cq / m.G) * m.d)), vsm(static_cast<size_t>(2 * m.Vq * vg));
      for (size_t i = 0; i < ksm.size(); i += 2) ksm[i] = h(0.0, 0.3), ksm[i + 1] = h(-2.0, 0.5);
      for (size_t i = 0; i < vsm.size(); i += 2) vsm[i] = h(0.0, 0.2), vsm[i + 1] = h(-1.0, 0.0);
      std::vector<uint16_t> kres(static_cast<size_t>((m.C - m.Cq) * m.d)), vwin(static_cast<size_t>((m.C - m.Vq) * m.d));
      for (auto& x : kres) x = h(-2.0, 2.0);
      for (auto& x : vwin) x = h(-1.0, 1.5);
      // The oracle's decoded rows.
      std::vector<double> K(static_cast<size_t>(m.C * m.d)), V(K.size());
      for (int64_t t = 0; t < m.C; ++t)
        for (int j = 0; j < m.d; ++j) {
          if (t < m.Cq) {
            const size_t pj = static_cast<size_t>(2 * ((t / m.G) * m.d + j));
            K[t * m.d + j] = kernels::uq::unpack_code(kcodes.data() + t * rb, j, m.bits) * static_cast<double>(f16_to_f32(ksm[pj])) +
                             f16_to_f32(ksm[pj + 1]);
          } else {
            K[t * m.d + j] = f16_to_f32(kres[(t - m.Cq) * m.d + j]);
          }
          if (t < m.Vq) {
            const size_t pj = static_cast<size_t>(2 * (t * vg + j / m.vgroup));
            V[t * m.d + j] = kernels::uq::unpack_code(vcodes.data() + t * rb, j, m.bits) * static_cast<double>(f16_to_f32(vsm[pj])) +
                             f16_to_f32(vsm[pj + 1]);
          } else {
            V[t * m.d + j] = f16_to_f32(vwin[(t - m.Vq) * m.d + j]);
          }
        }
      std::vector<std::vector<float>> q(m.nq, std::vector<float>(m.d)), outs(m.nq, std::vector<float>(m.d, -7.f));
      for (auto& qi : q)
        for (auto& x : qi) x = static_cast<float>(r.normal());
      std::vector<const float*> qs;
      std::vector<float*> op;
      for (int i = 0; i < m.nq; ++i) qs.push_back(q[i].data()), op.push_back(outs[i].data());
      const auto kside = [&](int64_t t) {
        return t < m.Cq ? kernels::StoredRows{kc, kcodes.data() + t * rb, ksm.data(), m.G, t}
                        : kernels::StoredRows{RowCodec::kF16, kres.data() + (t - m.Cq) * m.d};
      };
      const auto vside = [&](int64_t t) {
        return t < m.Vq ? kernels::StoredRows{vc, vcodes.data() + t * rb, vsm.data() + t * 2 * vg, m.vgroup}
                        : kernels::StoredRows{RowCodec::kF16, vwin.data() + (t - m.Vq) * m.d};
      };
      const std::string what = fmt::format("bits={} d={} G={} vgroup={} C={} Cq={} Vq={} nq={} path {}", m.bits, m.d, m.G,
                                           m.vgroup, m.C, m.Cq, m.Vq, m.nq, kernels::attend_rows_path(kside(0), vside(0), m.d));
      SCOPED_TRACE(what);
      ASSERT_STRNE(kernels::attend_rows_path(kside(0), vside(0), m.d), "unfused");
      std::vector<float> work(static_cast<size_t>(kernels::attend_rows_work_floats(m.nq, m.d, std::max(vg, m.d / m.G))));
      const int64_t cuts[4] = {0, std::min(m.Cq, m.Vq), std::max(m.Cq, m.Vq), m.C};
      int last = 0;
      for (int k = 0; k < 3; ++k)
        if (cuts[k + 1] > cuts[k]) last = k;
      kernels::RowAttendState state;
      const float scale = 0.09f;
      for (int k = 0; k < 3; ++k) {
        if (cuts[k + 1] <= cuts[k]) continue;
        kernels::RowAttend a;
        a.K = kside(cuts[k]), a.V = vside(cuts[k]), a.rows = cuts[k + 1] - cuts[k], a.d = m.d;
        a.qs = qs.data(), a.nq = m.nq, a.outs = op.data(), a.softmax_scale = scale;
        a.state = &state, a.finish = k == last;
        ASSERT_TRUE(kernels::attend_rows_fused(a, work.data())) << "range " << k;
      }
      for (int i = 0; i < m.nq; ++i) {
        std::vector<double> sc(static_cast<size_t>(m.C));
        for (int64_t t = 0; t < m.C; ++t) {
          double dot = 0;
          for (int j = 0; j < m.d; ++j) dot += static_cast<double>(q[i][j]) * K[t * m.d + j];
          sc[t] = static_cast<double>(scale) * dot;
        }
        EXPECT_LE(rel_l2_vs_softmax(sc, V, m.d, outs[i]), kFusedRelTol) << "query " << i;
      }
    }
  }
  kernels::set_attend_rows_avx512(true);
}

// Logits given (the sketch codecs): the kernel's softmax and value sum over per-token 4-bit values, against the
// float64 oracle of the same logits; the keys are not read (null), and a NaN logit hands back to the caller.
TEST(AttendRows, GivenLogitsWeightTheCodedValues) {
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU";
  const CodedCase c{kernels::RowCodec::kU4, 1000, 128, 32, 5, 77};
  Rng r(c.seed);
  std::vector<float> v(static_cast<size_t>(c.rows * c.d)), logits(static_cast<size_t>(c.nq * c.rows));
  for (auto& x : v) x = static_cast<float>(r.normal());
  for (auto& x : logits) x = static_cast<float>(3.0 * r.normal());
  const CodedSide V = encode_side(c, v);
  std::vector<std::vector<float>> outs(c.nq, std::vector<float>(c.d));
  std::vector<float*> op;
  for (auto& o : outs) op.push_back(o.data());
  std::vector<float> work(static_cast<size_t>(kernels::attend_rows_work_floats(c.nq, c.d, c.d / c.group)));
  for (bool avx512 : {true, false}) {
    kernels::set_attend_rows_avx512(avx512);
    kernels::RowAttend a;
    a.V = {c.codec, V.codes.data(), reinterpret_cast<const uint16_t*>(V.sm.data()), c.group};
    a.rows = c.rows, a.d = c.d, a.nq = c.nq, a.outs = op.data(), a.logits = logits.data(), a.logits_stride = c.rows;
    a.softmax_scale = 123.f;  // not applied to given logits
    ASSERT_TRUE(kernels::attend_rows_fused(a, work.data()));
    for (int i = 0; i < c.nq; ++i) {
      const std::vector<double> li(logits.begin() + i * c.rows, logits.begin() + (i + 1) * c.rows);
      EXPECT_LE(rel_l2_vs_softmax(li, V.dec, c.d, outs[i]), kFusedRelTol) << "query " << i << (avx512 ? " avx512" : " avx2");
    }
    logits[17] = std::nanf("");
    EXPECT_FALSE(kernels::attend_rows_fused(a, work.data())) << "a NaN logit";
    logits[17] = 0.f;
  }
  kernels::set_attend_rows_avx512(true);
}

}  // namespace
}  // namespace kvb::test
