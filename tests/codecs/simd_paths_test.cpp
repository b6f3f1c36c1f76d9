// The hand-written AVX2 attend kernels (kernels/cpu/uniform_avx2.cpp, codecs/fp8/fp8_cpu.cpp, codecs/mx/mx_cpu.cpp) against the
// portable loops and a float64 evaluation of the same stored values, on odd lengths, every code width and
// group sizes that do and do not allow the AVX2 path (those fall back, and must still agree).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "codec_test_util.h"
#include "kernels/cpu/row_kernels.h"
#include "kernels/cpu/uniform_rows.h"
#include "kvb/core/error.h"
#include "kvb/core/half.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"

namespace kvb::test {
namespace {

constexpr double kU = 0x1p-24;

/// Restores the AVX2 switch on scope exit.
struct SimdGuard {
  ~SimdGuard() { kernels::set_simd_kernels(true); }
};

TEST(SimdPaths, UniformRowsAvx2MatchesPortableAndDouble) {
  namespace uq = kernels::uq;
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "CPU without AVX2/FMA/F16C";
  Rng rng(17);
  int checked = 0;
  for (int bits = 1; bits <= 8; ++bits)
    for (int d : {8, 24, 64, 96, 136})
      for (int group : {8, 16, 24, 32, 12, d}) {
        if (d % group != 0) continue;
        const kernels::uq::RowFormat f{d, bits, group};
        for (int64_t n : {1, 3, 17, 33, 130}) {
          SCOPED_TRACE(fmt::format("bits {} d {} group {} n {}", bits, d, group, n));
          std::vector<float> x(static_cast<size_t>(n * d)), q(d), w(n);
          for (auto& v : x) v = static_cast<float>(3.0 + rng.normal());  // offset: exercises the min term
          for (auto& v : q) v = static_cast<float>(rng.normal());
          for (auto& v : w) v = static_cast<float>(rng.uniform());
          std::vector<uint8_t> codes(static_cast<size_t>(n * f.bytes()));
          std::vector<kernels::uq::GroupParams> sm(static_cast<size_t>(n * f.groups()));
          kernels::uq::encode_rows(f, x.data(), n, codes.data(), sm.data());
          // float64 of the stored values, and the magnitude Σ|a|·((code + 2^bits)·|scale| + |min|) the bounds scale with
          std::vector<double> xh(x.size()), mag(x.size());
          for (int64_t t = 0; t < n; ++t)
            for (int j = 0; j < d; ++j) {
              const auto& p = sm[t * f.groups() + j / group];
              const double s = f16_to_f32(p.scale), m = f16_to_f32(p.min);
              const double c = kernels::uq::unpack_code(codes.data() + t * f.bytes(), j, bits);
              xh[t * d + j] = c * s + m;
              mag[t * d + j] = (c + (1 << bits)) * std::fabs(s) + std::fabs(m);  // + the centred form's midpoint
            }
          std::vector<float> tmp(f.scratch_floats()), da(n), dp(n), oa(d, 0.f), op(d, 0.f);
          const bool fast = kernels::uq::avx2_rows_ok(f);
          if (fast) {
            kernels::uq::dot_rows_avx2(f, q.data(), codes.data(), sm.data(), n, da.data(), tmp.data());
            kernels::uq::accumulate_rows_avx2(f, w.data(), codes.data(), sm.data(), n, oa.data(), tmp.data());
          } else {
            kernels::uq::dot_rows(f, q.data(), codes.data(), sm.data(), n, da.data(), tmp.data());  // falls back
            kernels::uq::accumulate_rows(f, w.data(), codes.data(), sm.data(), n, oa.data(), tmp.data());
          }
          kernels::uq::dot_rows_portable(f, q.data(), codes.data(), sm.data(), n, dp.data(), tmp.data());
          kernels::uq::accumulate_rows_portable(f, w.data(), codes.data(), sm.data(), n, op.data(), tmp.data());
          // Logit: a float32 sum of 2d terms (codes and mins) -> (2d + 16)·u·Σ|q_j|·mag_j.
          for (int64_t t = 0; t < n; ++t) {
            double e = 0, b = 0;
            for (int j = 0; j < d; ++j) {
              e += q[j] * xh[t * d + j];
              b += std::fabs(q[j]) * mag[t * d + j];
            }
            const double tol = (2 * d + 16) * kU * b;
            ASSERT_NEAR(da[t], e, tol) << "avx2 logit, token " << t;
            ASSERT_NEAR(dp[t], e, tol) << "portable logit, token " << t;
          }
          // Value sum: n tokens (two terms each) -> (2n + 16)·u·Σ_t w_t·mag_tj per channel.
          for (int j = 0; j < d; ++j) {
            double e = 0, b = 0;
            for (int64_t t = 0; t < n; ++t) {
              e += w[t] * xh[t * d + j];
              b += w[t] * mag[t * d + j];
            }
            const double tol = (2 * n + 16) * kU * b;
            ASSERT_NEAR(oa[j], e, tol) << "avx2 value sum, channel " << j;
            ASSERT_NEAR(op[j], e, tol) << "portable value sum, channel " << j;
          }
          ++checked;
        }
      }
  EXPECT_GT(checked, 100);
}

/// Every baseline codec with the AVX2 kernels on and off: same stored bytes, so scores and outputs agree to
/// float32 reassociation (the cpu-vs-ref tolerances of registry_codecs_test: rel_l2 1e-4, logits within
/// (d + 16)·u·scale·‖q‖₁·max|k̂| each, so 2x that between the two).
TEST(SimdPaths, CodecsAgreeWithAndWithoutAvx2) {
  if (!kernels::simd_kernels_enabled()) GTEST_SKIP() << "CPU without AVX2/FMA/F16C";
  SimdGuard guard;
  const std::vector<std::pair<std::string, Json>> cells{
      {"fp8", Json{{"format", "e4m3"}}},
      {"fp8", Json{{"format", "e5m2"}}},
      {"int", Json{{"code_bits", 2}, {"group_size", 32}}},
      {"int", Json{{"code_bits", 3}, {"group_size", 8}}},
      {"int", Json{{"code_bits", 4}, {"group_size", 16}}},
      {"int", Json{{"code_bits", 8}, {"group_size", 32}}},
      {"int", Json{{"code_bits", 4}, {"group_size", 4}}},  // group not a multiple of 8: portable
      {"kivi", Json{{"code_bits", 2}, {"group_size", 32}, {"residual", 64}}},
      {"kivi", Json{{"code_bits", 4}, {"group_size", 8}, {"residual", 32}}},
      {"kivi", Json{{"code_bits", 5}, {"group_size", 16}, {"residual", 32}}},
      {"nvfp4", Json::object()},  // d % 8 == 0: the AVX2 rows (codecs/mx/mx_cpu.cpp); d = 12: the tables
      {"mxfp4", Json::object()},
      {"mxfp8", Json::object()},  // the E4M3 shift decode
  };
  for (int64_t C : {1, 7, 127, 1029})
    for (int d : {8, 24, 96, 128, 12}) {
      SynthOptions o;
      o.tokens = C;
      o.head_dim = d;
      o.group = 2;
      o.seed = 77 + C + d;
      const SynthLayer L = make_layer(o);
      for (const auto& [name, params] : cells) {
        const CodecEntry& e = registry().at(name);
        const Json p = resolve_params(e.info.params, params, name);
        SCOPED_TRACE(fmt::format("{} on {}", e.label(p), L.describe()));
        std::unique_ptr<Codec> codec;
        try {
          codec = e.make_cpu(p, L.shape);
        } catch (const Unsupported&) {
          continue;  // e.g. a group that does not divide d
        }
        const auto enc = codec->encode(0, L.kv, nullptr, L.ctx());
        Scratch sa, sb;
        std::vector<float> s_a(C), s_b(C), o_a(d), o_b(d);
        for (int h = 0; h < L.shape.n_heads; ++h)
          for (int qi = 0; qi < L.nq; ++qi) {
            const int g = h / o.group;
            const float* q = L.query(h, qi);
            kernels::set_simd_kernels(true);
            enc->scores(g, q, s_a.data(), sa);
            enc->attend(g, q, o_a.data(), sa);
            kernels::set_simd_kernels(false);
            enc->scores(g, q, s_b.data(), sb);
            enc->attend(g, q, o_b.data(), sb);
            double q1 = 0, kmax = 0;
            for (int j = 0; j < d; ++j) q1 += std::fabs(q[j]);
            const float* K = L.kv.k_head(g);
            for (int64_t i = 0; i < C * d; ++i) kmax = std::max(kmax, static_cast<double>(std::fabs(K[i])));
            const double tol = 2 * (d + 16) * kU * L.attn.softmax_scale * q1 * (1.01 * kmax + 1e-3);
            for (int64_t t = 0; t < C; ++t) ASSERT_NEAR(s_a[t], s_b[t], tol) << "token " << t;
            EXPECT_LE(rel_l2(o_a.data(), o_b.data(), d), 1e-4);
          }
      }
    }
}

}  // namespace
}  // namespace kvb::test
