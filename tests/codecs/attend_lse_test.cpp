// EncodedLayer::attend_lse (src/kvb/core/codec.h) for every registered codec and each implementation its
// entry offers (cpu, ref): the output is attend()'s, and lse is the log of the normalizer attend() divided
// by, so that `kvbench e2e` can merge the compressed prompt's attention with exact attention over other
// tokens (merge_attention) with no error of its own.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "codec_test_util.h"
#include "codecs/common/baseline.h"
#include "codecs/select/select_layer.h"
#include "kernels/formats/fp16.h"
#include "kvb/core/half.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

// ---- tolerances ---------------------------------------------------------------------------------------
//
// kLseRel: lse against a log-sum-exp recomputed from the same logits. The CPU paths form lse from their
// float32 weights exp(ŝ − max) (a few ulps each, ~2^-22 relative) summed in double, where
// logsumexp_logits takes exp in double: the two differ by ~1e-7 in lse. The references compute in float64
// and scores() reports their logits rounded to float32: half an ulp of |ŝ| <= |lse| + ln C, 2^-24 relative.
// So 1e-6·max(1, |lse|) leaves >= 10x margin, and a wrong normalizer (a missing max shift, a class bias
// left out, dropped tokens counted) is off by O(1).
constexpr double kLseRel = 1e-6;
double lse_tol(double lse) { return kLseRel * std::max(1.0, std::fabs(lse)); }

// kRefHandRel: the selection reference's lse against the hand formula below. Both are float64 sums over the
// same fp16-rounded keys in the same channel order; they differ only in how the bias is written (ln w or
// T·ln 2 against ln 2^(T−k)), an ulp of a number <= T·ln 2: 1e-12 relative is thousands of ulps of margin.
constexpr double kRefHandRel = 1e-12;

// Selection cpu vs ref: cpu logits are float32 dots of the same fp16 rows the ref dots in float64, so
// |ŝ_cpu − ŝ_ref| <= (d + 16)·u·softmax_scale·‖q‖₁·max|k̂| (Higham's bound for recursive summation, the
// bound tests/codecs/registry_codecs_test.cpp uses), soft-cap being 1-Lipschitz; the class bias is added
// in float32 (cpu: e·ln 2 rounded once) vs float64, <= 2^-24·T·ln 2. Log-sum-exp is 1-Lipschitz in the max
// norm, so lse moves by at most that, plus kLseRel for the float32 weights.
constexpr double kU = 0x1p-24;
constexpr double kSelectExtraUlps = 16;

// kMergeRelL2: fp16 codec merged with exact attention over extra tokens against dense float64 attention
// over the union. The ref path is float64 throughout (outputs rounded to float32: 2^-24 relative) and
// merge_attention rounds once more; the cpu path adds float32 logits (d·u relative of softmax_scale·|q||k|,
// a few 1e-6 in a logit of ~10 at head_dim 128) and float32 value sums: worst observed rel_l2 about
// 1e-6 (cpu) and 1e-7 (ref) on these shapes. 2e-5 and 1e-6 keep >= 10x margin; a merge with the wrong
// weights (lse off by 1, i.e. e^1 on one side) errs by ~1e-1.
constexpr double kMergeRelL2Cpu = 2e-5;
constexpr double kMergeRelL2Ref = 1e-6;

/// ln Σ exp(s_t), max-shifted, in float64.
double lse_f64(const double* s, int64_t n) {
  double m = -INFINITY, l = 0;
  for (int64_t t = 0; t < n; ++t) m = std::max(m, s[t]);
  if (std::isinf(m)) return m;
  for (int64_t t = 0; t < n; ++t) l += std::exp(s[t] - m);
  return m + std::log(l);
}

struct Shape {
  int64_t C;
  int d;
  int group;  // query heads per KV head
  float softcap;
};

/// Odd shapes: 1 token, 7 tokens (shorter than every window and sink), 300 tokens; head_dim 96 and 128;
/// MHA and GQA 2:1; soft-cap off and on.
std::vector<Shape> shapes() {
  std::vector<Shape> out;
  for (int64_t C : {1, 7, 300})
    for (int d : {96, 128})
      for (int group : {1, 2})
        for (float cap : {0.f, 30.f}) out.push_back({C, d, group, cap});
  return out;
}

SynthLayer layer_of(const Shape& s, uint64_t seed) {
  SynthOptions o;
  o.tokens = s.C;
  o.head_dim = s.d;
  o.group = s.group;
  o.softcap = s.softcap;
  o.queries = 2;
  o.seed = seed;
  return make_layer(o);
}

struct Impl {
  const char* name;
  CodecFactory CodecEntry::*make;
};
constexpr Impl kImpls[] = {{"cpu", &CodecEntry::make_cpu}, {"ref", &CodecEntry::make_ref}};

/// Defaults, the smallest and the largest budget candidate; for the selection family also the other
/// estimator and a split small enough (sink 1, window 1, T = 1) that 7 tokens keep weighted rows.
std::vector<std::pair<std::string, Json>> lse_configs(const CodecEntry& e, int d) {
  std::vector<std::pair<std::string, Json>> out{{"defaults", Json::object()}};
  const auto cands = e.candidates(d);
  if (!cands.empty()) out.push_back({"candidate[0]", cands.front().params});
  if (cands.size() > 1) out.push_back({fmt::format("candidate[{}]", cands.size() - 1), cands.back().params});
  if (e.info.family == "token_eviction") out.push_back({"one row in 64", Json{{"keep", 1.0 / 64}}});
  if (e.info.family == "token_selection") {
    out.push_back({"repo", Json{{"estimator", "repo"}}});
    out.push_back({"small split", Json{{"sink", 1}, {"window", 1}, {"levels", 1}}});
    out.push_back({"small split repo", Json{{"sink", 1}, {"window", 1}, {"levels", 1}, {"estimator", "repo"}}});
  }
  return out;
}

/// A codec of one implementation and its encode of L (trainable codecs fitted first on a calibration cache
/// of 256 tokens from another seed, through `fits`). Empty when the configuration does not fit the shape.
struct Encoded {
  std::unique_ptr<Codec> codec;
  std::unique_ptr<EncodedLayer> layer;
};

Encoded encode_with(const CodecEntry& e, const Json& params, const Impl& impl, const SynthLayer& L, FitStore& fits) {
  Encoded out;
  try {
    out.codec = (e.*(impl.make))(params, L.shape);
  } catch (const Unsupported&) {
    return out;
  }
  if (e.info.trainable) {
    SynthOptions co;
    co.kv_heads = L.shape.n_kv_heads;
    co.group = L.shape.group();
    co.head_dim = L.shape.head_dim;
    co.tokens = 256;
    co.softcap = L.attn.softcap;
    co.seed = 424242 + static_cast<uint64_t>(L.shape.head_dim);
    const SynthLayer calib = make_layer(co);
    fits.fit(*out.codec, e.info.name, fmt::format("{} {}", co.seed, calib.describe()), 0, {&calib.kv}, calib.ctx());
  }
  out.layer = out.codec->encode(0, L.kv, nullptr, L.ctx());
  return out;
}

/// The exact float64 logits of q against KV head g of L's (unrounded) cache.
std::vector<double> exact_logits(const SynthLayer& L, int g, const float* q) {
  std::vector<double> s(static_cast<size_t>(L.kv.tokens));
  exact_attention_f64(L.kv.k_head(g), L.kv.v_head(g), L.kv.tokens, L.shape.head_dim, q, L.attn.softmax_scale,
                      L.attn.softcap, s.data(), nullptr, nullptr);
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- (a) and (b): every codec, every implementation ----------------------------------------------------

class AttendLse : public ::testing::TestWithParam<std::string> {};

TEST_P(AttendLse, OutputIsAttendAndLseIsTheNormalizer) {
  const CodecEntry& e = registry().at(GetParam());
  FitStore fits;
  int ran = 0;
  double worst_scores = 0, worst_exact = 0;  // |lse − LSE(ŝ)| / tol, (|lse − lse_exact| − max|ŝ − s|) / tol
  for (const Shape& sh : shapes()) {
    const SynthLayer L = layer_of(sh, 7000 + sh.C * 13 + sh.d * 5 + sh.group + (sh.softcap > 0 ? 1 : 0));
    const int d = sh.d;
    for (const auto& [cfg_name, cfg] : lse_configs(e, d)) {
      const Json params = resolve_params(e.info.params, cfg, e.info.name);
      for (const Impl& impl : kImpls) {
        SCOPED_TRACE(fmt::format("codec {} {} ({}: {}) label {} on {}", e.info.name, impl.name, cfg_name,
                                 params.dump(), e.label(params), L.describe()));
        const Encoded enc = encode_with(e, params, impl, L, fits);
        if (!enc.layer) continue;
        ++ran;
        Scratch scratch;
        std::vector<float> o(d), o_lse(d), o_def(d), s_hat(sh.C);
        for (int h = 0; h < L.shape.n_heads; ++h)
          for (int qi = 0; qi < L.nq; ++qi) {
            SCOPED_TRACE(fmt::format("query head {}, query {}", h, qi));
            const int g = h / sh.group;
            const float* q = L.query(h, qi);
            double lse = NAN;
            enc.layer->attend(g, q, o.data(), scratch);
            enc.layer->attend_lse(g, q, o_lse.data(), &lse, scratch);
            // (a) the same function computes both: identical bits, not merely close.
            ASSERT_TRUE(same_bits(o, o_lse)) << "attend_lse's output differs from attend()'s";
            ASSERT_TRUE(all_finite(o_lse.data(), d));
            ASSERT_TRUE(std::isfinite(lse)) << lse;
            if (e.info.family == "token_eviction") {
              // Eviction keeps rows with weight 1: lse = LSE of scores() over the held tokens only (a dropped
              // token's 0 must not enter the normalizer).
              ASSERT_TRUE(enc.layer->scores(g, q, s_hat.data(), scratch));
              const std::vector<uint8_t> held = enc.layer->held_tokens(g);
              std::vector<float> kept;
              for (int64_t t = 0; t < sh.C; ++t)
                if (held.empty() || held[t]) kept.push_back(s_hat[t]);
              const double want = logsumexp_logits(kept.data(), static_cast<int64_t>(kept.size()));
              EXPECT_LE(std::fabs(lse - want), lse_tol(lse)) << "lse " << lse << " vs LSE(held scores) " << want;
              continue;
            }
            if (e.info.selects_tokens || !e.info.defines_scores) continue;  // (c) below
            // (b) the codec weights every token by exp(ŝ_t): lse = LSE(scores()), and EncodedLayer's
            // default (scores() then logsumexp_logits) agrees with the override.
            ASSERT_TRUE(enc.layer->scores(g, q, s_hat.data(), scratch));
            const double from_scores = logsumexp_logits(s_hat.data(), sh.C);
            EXPECT_LE(std::fabs(lse - from_scores), lse_tol(lse)) << "lse " << lse << " vs LSE(scores) " << from_scores;
            worst_scores = std::max(worst_scores, std::fabs(lse - from_scores) / lse_tol(lse));
            double lse_def = NAN;
            enc.layer->EncodedLayer::attend_lse(g, q, o_def.data(), &lse_def, scratch);
            EXPECT_TRUE(same_bits(o, o_def)) << "the default's output differs from attend()'s";
            EXPECT_LE(std::fabs(lse - lse_def), lse_tol(lse)) << "override " << lse << " vs default " << lse_def;
            // ... and is within the logits' own error of the exact lse (1-Lipschitz in the max norm).
            const std::vector<double> s = exact_logits(L, g, q);
            double err = 0;
            for (int64_t t = 0; t < sh.C; ++t) err = std::max(err, std::fabs(static_cast<double>(s_hat[t]) - s[t]));
            const double lse_exact = lse_f64(s.data(), sh.C);
            EXPECT_LE(std::fabs(lse - lse_exact), err + lse_tol(lse_exact))
                << "lse " << lse << " exact " << lse_exact << " max |ŝ − s| " << err;
            worst_exact = std::max(worst_exact, (std::fabs(lse - lse_exact) - err) / lse_tol(lse_exact));
          }
      }
    }
  }
  EXPECT_GT(ran, 0);
  std::printf("[ %s ] %d encodes; worst |lse − LSE(scores)| / tol %.3g, worst (|lse − lse_exact| − max|ŝ − s|) / "
              "tol %.3g\n",
              e.info.name.c_str(), ran, worst_scores, worst_exact);
}

std::vector<std::string> registered_names() {
  std::vector<std::string> out;
  for (const auto& e : registry().all()) out.push_back(e.info.name);
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, AttendLse, ::testing::ValuesIn(registered_names()),
                         [](const auto& info) { return info.param; });

// ---- (c) selection codecs: the estimator's weighted denominator ---------------------------------------

/// ln Σ_r ω_r·exp(s̃_r) over the CPU layer's stored rows, independently of both implementations' attend:
/// s̃_r = softcap(softmax_scale·<q, fp16(k_pos(r))>) in float64, ω_r = 1 for sink and window rows and, for a
/// kept row of class k (weight 2^(T−k)), 2^(T−k) (consistent) or 2^T (repo: the authors' T·ln 2 bias).
double hand_lse(const codecs::SelectLayerBase& sel, const SynthLayer& L, int g, const float* q, int T, bool repo,
                int64_t sink) {
  const int d = L.shape.head_dim;
  const int64_t rows = sel.rows();
  const int32_t* pos = &sel.positions()[static_cast<size_t>(g) * rows];
  const int32_t* cnt = &sel.class_counts()[static_cast<size_t>(g) * (T + 1)];
  std::vector<double> w(static_cast<size_t>(rows), 1.0);
  int64_t r = sink;
  for (int k = 0; k <= T; ++k)
    for (int32_t i = 0; i < cnt[k]; ++i) w[r++] = std::ldexp(1.0, repo ? T : T - k);
  std::vector<double> s(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    const float* k = L.kv.k_head(g) + static_cast<size_t>(pos[i]) * d;
    double dot = 0;
    for (int j = 0; j < d; ++j) dot += static_cast<double>(q[j]) * f16_to_f32(kernels::f32_to_f16_sat(k[j]));
    double x = L.attn.softmax_scale * dot;
    if (L.attn.softcap > 0) x = L.attn.softcap * std::tanh(x / L.attn.softcap);
    s[i] = x + std::log(w[i]);
  }
  return lse_f64(s.data(), rows);
}

TEST(AttendLse, SelectionCpuMatchesRefAndTheEstimatorsDenominator) {
  FitStore fits;  // the selection codecs learn nothing; encode_with needs one
  int ran = 0, dropped = 0;
  double worst_cpu_ref = 0;
  for (const std::string codec : {"balancekv", "uniform"}) {
    const CodecEntry& e = registry().at(codec);
    for (const Shape& sh : shapes()) {
      const SynthLayer L = layer_of(sh, 9100 + sh.C * 3 + sh.d + sh.group * 7 + (sh.softcap > 0 ? 2 : 0));
      const int d = sh.d;
      for (const auto& [cfg_name, cfg] : lse_configs(e, d)) {
        const Json params = resolve_params(e.info.params, cfg, codec);
        SCOPED_TRACE(fmt::format("codec {} ({}: {}) on {}", codec, cfg_name, params.dump(), L.describe()));
        const Encoded cpu = encode_with(e, params, kImpls[0], L, fits), ref = encode_with(e, params, kImpls[1], L, fits);
        ASSERT_TRUE(cpu.layer && ref.layer);
        const auto* sel = dynamic_cast<const codecs::SelectLayerBase*>(cpu.layer.get());
        ASSERT_NE(sel, nullptr);
        const int T = params.at("levels").get<int>();
        const bool repo = params.at("estimator").get<std::string>() == "repo";
        const int64_t sink = std::min<int64_t>(params.at("sink").get<int>(), sh.C);
        ++ran;
        Scratch scratch;
        std::vector<float> o(d), o_lse(d), o_base(d);
        for (int h = 0; h < L.shape.n_heads; ++h)
          for (int qi = 0; qi < L.nq; ++qi) {
            SCOPED_TRACE(fmt::format("query head {}, query {}", h, qi));
            const int g = h / sh.group;
            const float* q = L.query(h, qi);
            ASSERT_EQ(cpu.layer->held_tokens(g), ref.layer->held_tokens(g));
            const std::vector<uint8_t> held = cpu.layer->held_tokens(g);
            for (uint8_t m : held) dropped += m == 0;
            double lse_c = NAN, lse_r = NAN, lse_base = NAN;
            cpu.layer->attend_lse(g, q, o_lse.data(), &lse_c, scratch);
            ref.layer->attend_lse(g, q, o.data(), &lse_r, scratch);
            double q1 = 0, kmax = 0;
            for (int j = 0; j < d; ++j) q1 += std::fabs(q[j]);
            for (int64_t i = 0; i < sh.C * d; ++i) kmax = std::max(kmax, static_cast<double>(std::fabs(L.kv.k_head(g)[i])));
            const double tol = (d + kSelectExtraUlps) * kU * L.attn.softmax_scale * q1 * (1.01 * kmax + 1e-3) +
                               kU * T * std::log(2.0) + lse_tol(lse_r);
            EXPECT_LE(std::fabs(lse_c - lse_r), tol) << "cpu " << lse_c << " ref " << lse_r;
            worst_cpu_ref = std::max(worst_cpu_ref, std::fabs(lse_c - lse_r) / tol);
            const double hand = hand_lse(*sel, L, g, q, T, repo, sink);
            EXPECT_LE(std::fabs(lse_r - hand), kRefHandRel * std::max(1.0, std::fabs(hand)))
                << "ref " << lse_r << " hand formula " << hand;
            // SelectLayerBase's form (what the CUDA layer runs: scores() gathered, class biases, log-sum-exp,
            // then attend()) on the CPU layer: attend()'s bits and the one-pass lse.
            cpu.layer->attend(g, q, o.data(), scratch);
            sel->SelectLayerBase::attend_lse(g, q, o_base.data(), &lse_base, scratch);
            EXPECT_TRUE(same_bits(o, o_base));
            EXPECT_TRUE(same_bits(o, o_lse));
            EXPECT_LE(std::fabs(lse_c - lse_base), lse_tol(lse_c)) << "one pass " << lse_c << " generic " << lse_base;
          }
      }
    }
  }
  EXPECT_GT(ran, 0);
  EXPECT_GT(dropped, 0) << "no configuration dropped a token: the test would not see dropped tokens counted";
  std::printf("[ selection ] %d encodes, %d dropped (token, query) pairs; worst |lse_cpu − lse_ref| / tol %.3g\n",
              ran, dropped, worst_cpu_ref);
}

// ---- (d) the merge identity, with fp16 (stores exactly up to fp16 rounding) ----------------------------

TEST(AttendLse, Fp16MergedWithExactTokensEqualsDenseAttentionOverTheUnion) {
  const CodecEntry& e = registry().at("fp16");
  FitStore fits;
  double worst[2] = {0, 0};
  for (int64_t C : {1, 7, 130})
    for (int64_t C2 : {1, 3, 16})
      for (int d : {96, 128})
        for (float cap : {0.f, 30.f}) {
          const Shape sh{C + C2, d, 2, cap};
          const SynthLayer full = layer_of(sh, 555 + C * 31 + C2 * 7 + d + (cap > 0 ? 1 : 0));
          // The prompt: the first C tokens of every KV head; X: the C2 after them.
          SynthLayer prompt = full;
          prompt.kv.tokens = C;
          prompt.kv.k.clear(), prompt.kv.v.clear();
          for (int g = 0; g < full.kv.kv_heads; ++g) {
            prompt.kv.k.insert(prompt.kv.k.end(), full.kv.k_head(g), full.kv.k_head(g) + C * d);
            prompt.kv.v.insert(prompt.kv.v.end(), full.kv.v_head(g), full.kv.v_head(g) + C * d);
          }
          for (int ii = 0; ii < 2; ++ii) {
            const Impl& impl = kImpls[ii];
            SCOPED_TRACE(fmt::format("fp16 {} C={} C2={} head_dim={} softcap={}", impl.name, C, C2, d, cap));
            const Encoded enc = encode_with(e, Json::object(), impl, prompt, fits);
            ASSERT_TRUE(enc.layer);
            Scratch scratch;
            for (int h = 0; h < full.shape.n_heads; ++h)
              for (int qi = 0; qi < full.nq; ++qi) {
                SCOPED_TRACE(fmt::format("query head {}, query {}", h, qi));
                const int g = h / sh.group;
                const float* q = full.query(h, qi);
                std::vector<float> oa(d), ob(d), om(d);
                double la = NAN;
                enc.layer->attend_lse(g, q, oa.data(), &la, scratch);
                // Exact float64 attention over X (unrounded).
                std::vector<double> sx(C2), ox(d);
                exact_attention_f64(full.kv.k_head(g) + C * d, full.kv.v_head(g) + C * d, C2, d, q,
                                    full.attn.softmax_scale, cap, sx.data(), nullptr, ox.data());
                for (int j = 0; j < d; ++j) ob[j] = static_cast<float>(ox[j]);
                merge_attention(oa.data(), la, ob.data(), lse_f64(sx.data(), C2), om.data(), d);
                // Dense float64 attention over the union: fp16-rounded prompt, exact X.
                std::vector<float> ku(full.kv.k_head(g), full.kv.k_head(g) + (C + C2) * d);
                std::vector<float> vu(full.kv.v_head(g), full.kv.v_head(g) + (C + C2) * d);
                for (int64_t i = 0; i < C * d; ++i) {
                  ku[i] = f16_to_f32(kernels::f32_to_f16_sat(ku[i]));
                  vu[i] = f16_to_f32(kernels::f32_to_f16_sat(vu[i]));
                }
                std::vector<double> ou(d);
                exact_attention_f64(ku.data(), vu.data(), C + C2, d, q, full.attn.softmax_scale, cap, nullptr, nullptr,
                                    ou.data());
                const double rel = rel_l2(om.data(), ou.data(), d);
                EXPECT_LE(rel, ii == 0 ? kMergeRelL2Cpu : kMergeRelL2Ref);
                worst[ii] = std::max(worst[ii], rel);
              }
          }
        }
  std::printf("[ fp16 merge ] worst rel_l2 vs dense over the union: cpu %.3g, ref %.3g\n", worst[0], worst[1]);
}

// ---- (e) hostile input -------------------------------------------------------------------------------

TEST_P(AttendLse, HugeKeysGiveNoNaN) {
  const CodecEntry& e = registry().at(GetParam());
  FitStore fits;
  int ran = 0;
  for (int64_t C : {7, 300}) {
    const Shape sh{C, 128, 2, 0.f};
    SynthLayer L = layer_of(sh, 31337 + C);
    for (float& k : L.kv.k) k *= 1e30f;  // fp16 saturation (±65504) for the 16-bit formats; logits ~1e6 or more
    for (const auto& [cfg_name, cfg] : lse_configs(e, sh.d)) {
      const Json params = resolve_params(e.info.params, cfg, e.info.name);
      for (const Impl& impl : kImpls) {
        SCOPED_TRACE(fmt::format("codec {} {} ({}: {}) on {} with keys x 1e30", e.info.name, impl.name, cfg_name,
                                 params.dump(), L.describe()));
        const Encoded enc = encode_with(e, params, impl, L, fits);  // fitted on normal calibration keys
        if (!enc.layer) continue;
        ++ran;
        Scratch scratch;
        std::vector<float> o(sh.d);
        for (int h = 0; h < L.shape.n_heads; ++h) {
          double lse = NAN;
          enc.layer->attend_lse(h / sh.group, L.query(h, 0), o.data(), &lse, scratch);
          EXPECT_TRUE(all_finite(o.data(), sh.d)) << "output of query head " << h;
          EXPECT_FALSE(std::isnan(lse)) << "query head " << h;
          EXPECT_TRUE(std::isfinite(lse) || lse > 0) << "lse " << lse << ": −Inf would drop the prompt in a merge";
        }
      }
    }
  }
  EXPECT_GT(ran, 0);
}

TEST(AttendLse, SoftmaxWeightsOfInfiniteLogitsShareTheMass) {
  const float inf = std::numeric_limits<float>::infinity();
  {
    std::vector<float> s{inf, 1.f, inf};
    double lse = 0;
    EXPECT_EQ(kvb::softmax_weights(s.data(), 3, &lse), 2.0);
    EXPECT_EQ(s, (std::vector<float>{1.f, 0.f, 1.f}));
    EXPECT_EQ(lse, INFINITY);
  }
  {
    std::vector<float> s{-inf, -inf};
    double lse = 0;
    EXPECT_EQ(kvb::softmax_weights(s.data(), 2, &lse), 2.0);
    EXPECT_EQ(s, (std::vector<float>{1.f, 1.f}));
    EXPECT_EQ(lse, -INFINITY);  // an empty side for merge_attention
  }
  {
    std::vector<float> s{0.5f, -2.f, 3.f};
    double lse = 0;
    const double l = kvb::softmax_weights(s.data(), 3, &lse);
    EXPECT_NEAR(lse, std::log(std::exp(0.5) + std::exp(-2.0) + std::exp(3.0)), 1e-7);
    EXPECT_NEAR(lse, 3.0 + std::log(l), 1e-15);
  }
}

}  // namespace
}  // namespace kvb::test
