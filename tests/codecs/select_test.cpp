// BalanceKV and uniform (codecs/select): the walk on hand-checkable data, the halving's bookkeeping,
// determinism, overflow-proof sign decisions, the estimators. Cpu-vs-ref on odd shapes runs in
// registry_codecs_test.cpp; the real-data comparison with uniform in tests/run/test_balancekv_real.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "codec_test_util.h"
#include "codecs/select/select_codec.h"
#include "codecs/select/walk_math.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

using codecs::KeptSet;
using codecs::SelectParams;
using codecs::SelectWalk;

SelectParams balance(int T) {
  SelectParams p;
  p.walk = SelectWalk::kBalance;
  p.levels = T;
  return p;
}

/// n/2 pairs of identical tokens at positions (2i, 2i+1); keys are random directions of norm r, so a
/// token's kernel entry with its twin, exp(τ·r²/√d), dwarfs every other entry.
void twin_tokens(int64_t pairs, int d, double r, uint64_t seed, std::vector<float>& K, std::vector<float>& V) {
  Rng rng(seed);
  K.assign(static_cast<size_t>(2 * pairs * d), 0.f);
  V.assign(K.size(), 0.f);
  for (int64_t i = 0; i < pairs; ++i) {
    std::vector<double> k(d);
    double n2 = 0;
    for (int j = 0; j < d; ++j) n2 += (k[j] = rng.normal()) * k[j];
    for (int j = 0; j < d; ++j) {
      const float kv = static_cast<float>(k[j] * r / std::sqrt(n2)), vv = static_cast<float>(rng.normal());
      K[(2 * i) * d + j] = K[(2 * i + 1) * d + j] = kv;
      V[(2 * i) * d + j] = V[(2 * i + 1) * d + j] = vv;
    }
  }
}

TEST(BalanceWalk, DuplicatedTokensEndInBalancedPairs) {
  // A twin's running sum is dominated by exp(τ r²/√d)·(‖v‖² + c)·σ_twin, far past γ·|S| >= 0.5, so the
  // walk must give the second twin the opposite sign; the halving then keeps exactly one of each pair,
  // with weight 2 for every pair inside the cut prefix — Σ weights = n exactly.
  const int d = 64;
  for (uint64_t seed : {1u, 2u, 3u}) {
    for (int64_t pairs : {64, 50}) {  // one full block of B = 128, and a padded one
      SCOPED_TRACE(::testing::Message() << "seed " << seed << " pairs " << pairs);
      std::vector<float> K, V;
      twin_tokens(pairs, d, 24.0, seed, K, V);
      const KeptSet ks = codecs::select_head_cpu(balance(1), K.data(), V.data(), 2 * pairs, d, seed, 0, 0);
      ASSERT_EQ(static_cast<int64_t>(ks.index.size()), pairs);
      std::set<int64_t> pair_ids;
      int64_t wsum = 0;
      for (size_t i = 0; i < ks.index.size(); ++i) {
        pair_ids.insert(ks.index[i] / 2);
        wsum += ks.weight[i];
      }
      EXPECT_EQ(static_cast<int64_t>(pair_ids.size()), pairs) << "some pair kept both twins";
      // All but possibly the last pair (split by the cut) carry weight 2.
      EXPECT_GE(wsum, 2 * pairs - 1);
      EXPECT_LE(wsum, 2 * pairs);
    }
  }
}

TEST(BalanceWalk, TwinsGiveExactAttentionAtLevelOne) {
  // One of each twin pair with weight 2 reproduces the pairs' softmax sums exactly (consistent estimator);
  // the only error is fp16 storage of the kept rows (relative 2^-11 per element, so 1e-3 on the output).
  const int d = 32;
  const int64_t pairs = 64, C = 2 * pairs;
  std::vector<float> K, V;
  twin_tokens(pairs, d, 12.0, 5, K, V);
  for (auto& x : K) x *= 0.25f;  // moderate logits for the attention check (the walk still pairs them)
  LayerKV kv;
  kv.kv_heads = 1, kv.tokens = C, kv.head_dim = d, kv.k = K, kv.v = V;
  const CodecEntry& e = registry().at("balancekv");
  const Json params = Json{{"levels", 1}, {"sink", 0}, {"window", 0}};
  const ModelShape shape{1, 1, 1, d};
  auto codec = e.make_cpu(params, shape);
  CodecContext ctx{shape, AttnConfig{1.f / std::sqrt(static_cast<float>(d)), 0.f}, 11};
  auto enc = codec->encode(0, kv, nullptr, ctx);
  // On this data the cut falls at the end, so every kept twin carries weight 2 (exactness needs that).
  for (int32_t w : codecs::select_head_cpu(balance(1), kv.k.data(), kv.v.data(), C, d, ctx.seed, 0, 0).weight)
    ASSERT_EQ(w, 2);
  Rng rng(9);
  Scratch s;
  for (int qi = 0; qi < 8; ++qi) {
    std::vector<float> q(d), o(d);
    for (auto& x : q) x = static_cast<float>(rng.normal());
    enc->attend(0, q.data(), o.data(), s);
    std::vector<double> ox(d);
    exact_attention_f64(kv.k.data(), kv.v.data(), C, d, q.data(), ctx.attn.softmax_scale, 0.f, nullptr, nullptr,
                        ox.data());
    EXPECT_LT(rel_l2(o.data(), ox.data(), d), 1e-3) << "query " << qi;
  }
}

TEST(BalanceWalk, WeightsArePowersOfTwoAndSumNearTheMiddle) {
  // Each halving keeps exactly ⌊n/2⌋ and weights the balanced prefix by 2, the tail by 1, so Σ w equals the
  // middle's token count exactly when the prefix is balanced in count and is off by the walk's count
  // imbalance otherwise (the weights balance kernel features, of which the count is one, c·1).
  for (SelectWalk walk : {SelectWalk::kBalance, SelectWalk::kUniform})
    for (int T : {1, 2, 3}) {
      SynthOptions o;
      o.tokens = 2000, o.head_dim = 64, o.kv_heads = 1, o.seed = 42 + T;
      const SynthLayer L = make_layer(o);
      SelectParams p = balance(T);
      p.walk = walk;
      SCOPED_TRACE(::testing::Message() << p.label());
      const KeptSet ks = codecs::select_head_cpu(p, L.kv.k_head(0), L.kv.v_head(0), 2000, 64, 7, 0, 0);
      ASSERT_EQ(static_cast<int64_t>(ks.index.size()), 2000 >> T);
      int64_t wsum = 0;
      std::set<int32_t> uniq;
      for (size_t i = 0; i < ks.index.size(); ++i) {
        const int32_t w = ks.weight[i];
        EXPECT_TRUE(w >= 1 && w <= (1 << T) && (w & (w - 1)) == 0) << "weight " << w;
        if (i) EXPECT_GE(ks.weight[i - 1], w) << "rows must be grouped by class, heaviest first";
        wsum += w;
        uniq.insert(ks.index[i]);
        EXPECT_TRUE(ks.index[i] >= 0 && ks.index[i] < 2000);
      }
      EXPECT_EQ(uniq.size(), ks.index.size()) << "a token kept twice";
      EXPECT_NEAR(static_cast<double>(wsum), 2000.0, 0.1 * 2000.0);
    }
}

TEST(BalanceWalk, DeterministicPerSeedAndSeedSensitive) {
  SynthOptions o;
  o.tokens = 700, o.head_dim = 96, o.kv_heads = 1, o.seed = 3;
  const SynthLayer L = make_layer(o);
  // γ = 4 makes the walk nearly greedy (|γ·S| >= 0.5 at almost every step, so no draw is consulted);
  // a small γ keeps p_i inside (0, 1), where the draws, and thus the seed and layer, decide.
  for (SelectWalk walk : {SelectWalk::kBalance, SelectWalk::kUniform}) {
    SelectParams p = balance(2);
    p.walk = walk;
    p.gamma = 1e-4;
    const auto a = codecs::select_head_cpu(p, L.kv.k_head(0), L.kv.v_head(0), 700, 96, 5, 1, 0);
    const auto b = codecs::select_head_cpu(p, L.kv.k_head(0), L.kv.v_head(0), 700, 96, 5, 1, 0);
    const auto c = codecs::select_head_cpu(p, L.kv.k_head(0), L.kv.v_head(0), 700, 96, 6, 1, 0);
    const auto d = codecs::select_head_cpu(p, L.kv.k_head(0), L.kv.v_head(0), 700, 96, 5, 2, 0);
    EXPECT_EQ(a.index, b.index);
    EXPECT_EQ(a.weight, b.weight);
    EXPECT_NE(a.index, c.index) << "another seed must draw other signs";
    EXPECT_NE(a.index, d.index) << "another layer must draw other signs";
  }
}

TEST(BalanceWalk, HugeKeyNormsNeverReachTheSignDecisionAsInfOrNaN) {
  // Keys of norm ~300-600 at d = 128: τ<k̄,k̄>/√d reaches several thousand, past exp's range in float64.
  // The max-shifted sums keep every decision finite; cpu and ref (written independently) still agree.
  SynthOptions o;
  o.tokens = 600, o.head_dim = 128, o.kv_heads = 2, o.seed = 77, o.outlier_scale = 200.f, o.outliers = 4;
  SynthLayer L = make_layer(o);
  for (auto& x : L.kv.k) x *= 3.f;
  double max_norm = 0;
  for (int64_t t = 0; t < o.tokens; ++t) {
    double n2 = 0;
    for (int j = 0; j < 128; ++j) n2 += static_cast<double>(L.kv.k[t * 128 + j]) * L.kv.k[t * 128 + j];
    max_norm = std::max(max_norm, std::sqrt(n2));
  }
  ASSERT_GT(max_norm, 300.0) << "the test must feed keys with norms of several hundred";
  EXPECT_FALSE(std::isfinite(std::exp(max_norm * max_norm / std::sqrt(128.0) * 0.25)));
  const CodecEntry& e = registry().at("balancekv");
  for (int T : {1, 2, 3}) {
    const Json params{{"levels", T}};
    SCOPED_TRACE(params.dump());
    auto cpu = e.make_cpu(params, L.shape)->encode(0, L.kv, nullptr, L.ctx());
    auto ref = e.make_ref(params, L.shape)->encode(0, L.kv, nullptr, L.ctx());
    for (int g = 0; g < 2; ++g) EXPECT_EQ(cpu->held_tokens(g), ref->held_tokens(g)) << "KV head " << g;
    Scratch s;
    std::vector<float> oc(128), orf(128);
    for (int h = 0; h < L.shape.n_heads; ++h) {
      cpu->attend(h, L.query(h, 0), oc.data(), s);
      ref->attend(h, L.query(h, 0), orf.data(), s);
      ASSERT_TRUE(all_finite(oc.data(), 128));
      EXPECT_LT(rel_l2(oc.data(), orf.data(), 128), 1e-4);
    }
  }
}

TEST(WalkMath, DecisionMatchesTheDirectFormulaWhereThatIsFinite) {
  // decide() must equal "u < 0.5 − γ e^M R" wherever that expression is finite, including at the
  // deterministic edges, and stay defined where e^M overflows.
  Rng rng(2024);
  for (int i = 0; i < 20000; ++i) {
    const double M = rng.uniform() * 40 - 20, R = (rng.uniform() - 0.5) * 4, g = std::exp(rng.uniform() * 6 - 3);
    const double u = rng.uniform();
    const double p = 0.5 - g * std::exp(M) * R;
    const int want = u < p ? 1 : -1;
    const double margin = std::fabs(u - p);
    if (margin < 1e-12) continue;  // rounding of the log-space test may differ exactly at the boundary
    ASSERT_EQ(codecs::walk::decide(M, R, g, u), want) << "M " << M << " R " << R << " gamma " << g << " u " << u;
  }
  EXPECT_EQ(codecs::walk::decide(5000.0, 1e-3, 4.0, 0.0), -1);
  EXPECT_EQ(codecs::walk::decide(5000.0, -1e-3, 4.0, 0.999), 1);
  EXPECT_EQ(codecs::walk::decide(5000.0, 0.0, 4.0, 0.3), 1);
}

TEST(SelectCodecs, BothEstimatorsMatchTheReferenceAndShareTheSelection) {
  // The registry-wide cpu-vs-ref test runs defaults, candidates and presets, all with the consistent
  // estimator; here the repo estimator too (bias T ln 2, values × w/2^T), on odd shapes and GQA. The
  // estimator must not change which tokens are kept, and the two must differ where kept weights are below
  // 2^T (tail rows), else the parameter would be ignored. Tolerance: same stored fp16 rows, float32 vs
  // float64 sums (registry test's kSameCodesF32, 1e-4).
  double max_diff = 0;
  for (int64_t C : {int64_t{7}, int64_t{300}, int64_t{1500}})
    for (int d : {64, 96}) {
      SynthOptions o;
      o.tokens = C, o.head_dim = d, o.kv_heads = 2, o.group = 2, o.seed = 8 + C + d;
      const SynthLayer L = make_layer(o);
      for (const char* codec : {"balancekv", "uniform"}) {
        const CodecEntry& e = registry().at(codec);
        const Json cons{{"levels", 3}, {"sink", 4}, {"window", 4}};
        Json repo = cons;
        repo["estimator"] = "repo";
        SCOPED_TRACE(fmt::format("{} {}", codec, L.describe()));
        auto c_cons = e.make_cpu(cons, L.shape)->encode(0, L.kv, nullptr, L.ctx());
        auto c_repo = e.make_cpu(repo, L.shape)->encode(0, L.kv, nullptr, L.ctx());
        auto r_repo = e.make_ref(repo, L.shape)->encode(0, L.kv, nullptr, L.ctx());
        Scratch s;
        std::vector<float> a(d), b(d), r(d);
        for (int h = 0; h < L.shape.n_heads; ++h) {
          const int g = h / 2;
          EXPECT_EQ(c_cons->held_tokens(g), c_repo->held_tokens(g));
          c_cons->attend(g, L.query(h, 0), a.data(), s);
          c_repo->attend(g, L.query(h, 0), b.data(), s);
          r_repo->attend(g, L.query(h, 0), r.data(), s);
          EXPECT_LE(rel_l2(b.data(), r.data(), d), 1e-4) << "repo estimator, cpu vs ref, head " << h;
          max_diff = std::max(max_diff, rel_l2(a.data(), b.data(), d));
        }
      }
    }
  EXPECT_GT(max_diff, 1e-3) << "consistent and repo estimators never differed";
  auto rep = registry().at("balancekv").make_cpu(Json{{"estimator", "repo"}}, ModelShape{1, 1, 1, 64})->report();
  EXPECT_NE(rep.at("estimator").get<std::string>().find("repo"), std::string::npos);
}

TEST(SelectCodecs, ShortCachesKeepEverythingVerbatim) {
  // C <= sink + window: no middle, the output is fp16 exact attention and every token is held.
  SynthOptions o;
  o.tokens = 50, o.head_dim = 64, o.kv_heads = 1, o.seed = 4;
  const SynthLayer L = make_layer(o);
  for (const char* name : {"balancekv", "uniform"}) {
    auto enc = registry().at(name).make_cpu(Json::object(), L.shape)->encode(0, L.kv, nullptr, L.ctx());
    for (uint8_t h : enc->held_tokens(0)) EXPECT_EQ(h, 1);
    Scratch s;
    std::vector<float> oo(64);
    enc->attend(0, L.query(0, 0), oo.data(), s);
    EXPECT_LT(rel_l2(oo.data(), exact_output(L, 0, L.query(0, 0)).data(), 64), 2e-3) << name;
  }
}

TEST(SelectCodecs, IidSyntheticTokensReportedNotAsserted) {
  // Tokens drawn independently (make_layer) have no redundancy for the walk to exploit (docs/codecs.md §6.5
  // item 9): print both errors so a reader sees the contrast with the real-data test, assert only sanity.
  SynthOptions o;
  o.tokens = 1024, o.head_dim = 64, o.kv_heads = 2, o.queries = 8, o.seed = 31;
  const SynthLayer L = make_layer(o);
  std::printf("i.i.d. synthetic C=1024 d=64, 3 seeds:  T  balancekv  uniform  (mean rel_l2)\n");
  for (int T : {1, 2, 3}) {
    double err[2] = {0, 0};
    int n = 0;
    for (int c = 0; c < 2; ++c)
      for (uint64_t seed : {1u, 2u, 3u}) {
        const CodecEntry& e = registry().at(c == 0 ? "balancekv" : "uniform");
        CodecContext ctx = L.ctx();
        ctx.seed = seed;
        auto enc = e.make_cpu(Json{{"levels", T}, {"sink", 16}, {"window", 16}}, L.shape)->encode(0, L.kv, nullptr, ctx);
        Scratch s;
        std::vector<float> out(64);
        for (int h = 0; h < L.shape.n_heads; ++h)
          for (int i = 0; i < L.nq; ++i) {
            enc->attend(h, L.query(h, i), out.data(), s);
            err[c] += rel_l2(out.data(), exact_output(L, h, L.query(h, i)).data(), 64);
            n += c == 0;
          }
      }
    std::printf("  %d  %.4f  %.4f\n", T, err[0] / n, err[1] / n);
    EXPECT_TRUE(std::isfinite(err[0]) && std::isfinite(err[1]));
    EXPECT_LT(err[0] / n, 1.0);
  }
}

}  // namespace
}  // namespace kvb::test
