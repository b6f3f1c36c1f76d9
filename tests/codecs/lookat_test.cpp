// lookat (codecs/pq): fidelity rises with the number of subspaces, 1-d subspaces reproduce the scores within
// the quantization step, calibration/evaluation overlap is refused, storage and b_eff, parameter errors and
// the k-means trainer.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "codec_test_util.h"
#include "codecs/pq/lookat_codec.h"
#include "kvb/core/error.h"
#include "kvb/core/half.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

/// Splits one synthetic layer into an evaluated cache (the first `eval_tokens` tokens, with the sink and
/// the queries) and a calibration cache (the remaining tokens): same heads, same key statistics, disjoint
/// tokens — the situation of two sequences of one model.
struct Split {
  SynthLayer eval;
  LayerKV calib;
};

Split split_layer(const SynthOptions& o, int64_t eval_tokens) {
  Split s;
  s.eval = make_layer(o);
  const int64_t C = o.tokens, d = o.head_dim, Ce = eval_tokens, Cc = C - Ce;
  LayerKV e, c;
  e.kv_heads = c.kv_heads = o.kv_heads;
  e.head_dim = c.head_dim = o.head_dim;
  e.tokens = Ce;
  c.tokens = Cc;
  for (int g = 0; g < o.kv_heads; ++g) {
    const float* K = s.eval.kv.k_head(g);
    const float* V = s.eval.kv.v_head(g);
    e.k.insert(e.k.end(), K, K + Ce * d);
    e.v.insert(e.v.end(), V, V + Ce * d);
    c.k.insert(c.k.end(), K + Ce * d, K + C * d);
    c.v.insert(c.v.end(), V + Ce * d, V + C * d);
  }
  s.eval.kv = std::move(e);
  s.calib = std::move(c);
  return s;
}

std::vector<double> ranks(const std::vector<double>& x) {
  std::vector<size_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> r(x.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && x[idx[j + 1]] == x[idx[i]]) ++j;
    for (size_t k = i; k <= j; ++k) r[idx[k]] = 0.5 * static_cast<double>(i + j);  // average rank of ties
    i = j + 1;
  }
  return r;
}

double cosine_centered(const std::vector<double>& a, const std::vector<double>& b) {
  const double ma = std::accumulate(a.begin(), a.end(), 0.0) / a.size();
  const double mb = std::accumulate(b.begin(), b.end(), 0.0) / b.size();
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += (a[i] - ma) * (b[i] - mb);
    aa += (a[i] - ma) * (a[i] - ma);
    bb += (b[i] - mb) * (b[i] - mb);
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 1.0;
}

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  return cosine_centered(ranks(a), ranks(b));  // Pearson correlation of the ranks
}

const CodecEntry& lookat() { return registry().at("lookat"); }

std::unique_ptr<Codec> make(const Json& params, const ModelShape& shape) {
  return lookat().make_cpu(resolve_params(lookat().info.params, params, "lookat"), shape);
}

struct Fidelity {
  double cosine = 0, spearman = 0;
};

/// Mean output cosine and score Spearman ρ over every query of every head, CPU path against exact.
Fidelity fidelity(const Split& s, const Json& params) {
  const SynthLayer& L = s.eval;
  auto codec = make(params, L.shape);
  codec->fit(0, {&s.calib}, L.ctx());
  const auto enc = codec->encode(0, L.kv, nullptr, L.ctx());
  Scratch scratch;
  const int d = L.shape.head_dim;
  const int64_t C = L.kv.tokens;
  std::vector<float> sc(C), o(d);
  std::vector<double> s_hat(C), s_ex(C);
  Fidelity f;
  int n = 0;
  for (int h = 0; h < L.shape.n_heads; ++h)
    for (int i = 0; i < L.nq; ++i) {
      const int g = h / L.shape.group();
      const float* q = L.query(h, i);
      EXPECT_TRUE(enc->scores(g, q, sc.data(), scratch));
      exact_attention_f64(L.kv.k_head(g), L.kv.v_head(g), C, d, q, L.attn.softmax_scale, L.attn.softcap, s_ex.data(),
                          nullptr, nullptr);
      for (int64_t t = 0; t < C; ++t) s_hat[t] = sc[t];
      enc->attend(g, q, o.data(), scratch);
      EXPECT_TRUE(all_finite(o.data(), d));
      const auto ex = exact_output(L, h, q);
      f.cosine += cosine(o.data(), ex.data(), d);
      f.spearman += spearman(s_hat, s_ex);
      ++n;
    }
  f.cosine /= n;
  f.spearman /= n;
  return f;
}

TEST(Lookat, FidelityRisesWithSubspaces) {
  SynthOptions o;
  o.kv_heads = 2;
  o.head_dim = 64;
  o.tokens = 1024 + 4096;  // 1024 evaluated, 4096 calibration tokens
  o.queries = 12;
  o.seed = 505;
  // No sink token: the evaluated split would hold the only high-norm key, which no calibration key
  // resembles; its score error then dominates the output (cosine 0.27 at m=2, 0.77 at m=32 with it).
  o.sink_logit = 0.f;
  const Split s = split_layer(o, 1024);
  Fidelity prev{-1, -1};
  for (int m : {2, 4, 8, 16, 32}) {
    const Json params{{"subspaces", m}, {"iters", 12}};
    SCOPED_TRACE(fmt::format("m={} on {} (calibration {} tokens)", m, s.eval.describe(), s.calib.tokens));
    const Fidelity f = fidelity(s, params);
    std::printf("[ lookat ] d=64 m=%d: output cosine %.4f, score spearman %.4f\n", m, f.cosine, f.spearman);
    EXPECT_GT(f.cosine, prev.cosine);
    EXPECT_GT(f.spearman, prev.spearman);
    prev = f;
  }
  // With 2-channel subspaces the keys are close to exact (measured: ρ 0.996, cosine 0.995).
  EXPECT_GT(prev.spearman, 0.99);
  EXPECT_GT(prev.cosine, 0.98);
}

// With 1-dimensional subspaces and 256 levels every key channel is a scalar quantizer: each score is within
// scale·Σ_j |q_j|·e_j of the exact one, where e_j is half the widest gap between adjacent centroids of
// channel j (the farthest a value inside the centroids' range can be from its nearest centroid), or the
// distance of an evaluated value beyond the outermost centroids, plus the centroid's binary16 rounding
// (2^-11 relative). A wrong code (off by one level) costs a whole gap and breaks the bound.
TEST(Lookat, OneDimensionalSubspacesMatchExactScoresWithinTheStep) {
  SynthOptions o;
  o.kv_heads = 2;
  o.head_dim = 16;
  o.tokens = 512 + 8192;
  o.queries = 4;
  o.seed = 77;
  const Split s = split_layer(o, 512);
  const SynthLayer& L = s.eval;
  const int d = o.head_dim;
  const Json params{{"subspaces", d}, {"iters", 25}, {"train_points", 8192}};
  auto codec = make(params, L.shape);
  codec->fit(0, {&s.calib}, L.ctx());
  const auto enc = codec->encode(0, L.kv, nullptr, L.ctx());
  // The codebooks, as stored (k.codebooks: [kv_head][m][K][1] binary16).
  std::vector<uint16_t> cb16;
  for (const auto& b : enc->buffers())
    if (b.name == "k.codebooks") cb16.assign(reinterpret_cast<const uint16_t*>(b.bytes.data()),
                                             reinterpret_cast<const uint16_t*>(b.bytes.data() + b.bytes.size()));
  ASSERT_EQ(cb16.size(), static_cast<size_t>(o.kv_heads) * d * 256);
  Scratch scratch;
  std::vector<float> sc(L.kv.tokens);
  std::vector<double> ex(L.kv.tokens);
  double worst_ratio = 0, mean_err = 0, mean_bound = 0;
  for (int g = 0; g < o.kv_heads; ++g) {
    std::vector<double> e(d);
    for (int j = 0; j < d; ++j) {
      std::vector<float> c(256);
      for (int k = 0; k < 256; ++k) c[k] = f16_to_f32(cb16[(static_cast<size_t>(g) * d + j) * 256 + k]);
      std::sort(c.begin(), c.end());
      double gap = 0;
      for (int k = 1; k < 256; ++k) gap = std::max(gap, static_cast<double>(c[k] - c[k - 1]));
      double out = 0;
      for (int64_t t = 0; t < L.kv.tokens; ++t) {
        const double x = L.kv.k_head(g)[t * d + j];
        out = std::max({out, c.front() - x, x - c.back()});
      }
      e[j] = std::max(gap / 2, out) + std::max(std::fabs(c.front()), std::fabs(c.back())) * 0x1p-11;
    }
    for (int h = g * L.shape.group(); h < (g + 1) * L.shape.group(); ++h)
      for (int i = 0; i < L.nq; ++i) {
        const float* q = L.query(h, i);
        ASSERT_TRUE(enc->scores(g, q, sc.data(), scratch));
        exact_attention_f64(L.kv.k_head(g), L.kv.v_head(g), L.kv.tokens, d, q, L.attn.softmax_scale, 0.f, ex.data(),
                            nullptr, nullptr);
        double bound = 0;
        for (int j = 0; j < d; ++j) bound += std::fabs(q[j]) * e[j];
        // + float32 rounding of the d-term table sum (d·u relative to scale·Σ|q||k|, far below the step).
        bound = L.attn.softmax_scale * bound * (1 + 1e-5);
        for (int64_t t = 0; t < L.kv.tokens; ++t) {
          const double err = std::fabs(sc[t] - ex[t]);
          EXPECT_LE(err, bound) << "head " << g << " query " << i << " token " << t;
          worst_ratio = std::max(worst_ratio, err / bound);
          mean_err += err;
          mean_bound += bound;
        }
      }
  }
  std::printf("[ lookat ] 1-d subspaces: worst |ŝ − s| / step bound %.3f, mean error / mean bound %.3f\n", worst_ratio,
              mean_err / mean_bound);
}

TEST(Lookat, CalibrationAndEvaluationNeverOverlap) {
  SynthOptions o;
  o.tokens = 300 + 600;
  o.seed = 9;
  const Split s = split_layer(o, 300);
  auto codec = make(Json{{"subspaces", 8}, {"iters", 3}}, s.eval.shape);
  codec->fit(0, {&s.calib}, s.eval.ctx());
  // The calibration cache itself, or a prefix of it, is refused at encode (Unsupported: the runner skips
  // that cell with the reason).
  EXPECT_THROW(codec->encode(0, s.calib, nullptr, s.eval.ctx()), Unsupported);
  LayerKV prefix = s.calib;
  prefix.tokens = 50;
  prefix.k.clear();
  prefix.v.clear();
  for (int g = 0; g < s.calib.kv_heads; ++g) {
    prefix.k.insert(prefix.k.end(), s.calib.k_head(g), s.calib.k_head(g) + 50 * s.calib.head_dim);
    prefix.v.insert(prefix.v.end(), s.calib.v_head(g), s.calib.v_head(g) + 50 * s.calib.head_dim);
  }
  EXPECT_THROW(codec->encode(0, prefix, nullptr, s.eval.ctx()), Unsupported);
  // Disjoint tokens encode.
  EXPECT_NO_THROW(codec->encode(0, s.eval.kv, nullptr, s.eval.ctx()));
  // A layer that was never fitted is a usage error.
  EXPECT_THROW(codec->encode(1, s.eval.kv, nullptr, s.eval.ctx()), UsageError);
}

TEST(Lookat, StorageAndEffectiveBits) {
  SynthOptions o;
  o.head_dim = 128;
  o.tokens = 1000 + 1000;
  o.seed = 31;
  const Split s = split_layer(o, 1000);
  FitStore fits;  // the value options of one m share its codebooks
  for (const auto& cand : lookat().candidates(128)) {
    SCOPED_TRACE(cand.params.dump());
    Json p = cand.params;
    p["iters"] = 2;
    auto codec = make(p, s.eval.shape);
    fits.fit(*codec, "lookat", "", 0, {&s.calib}, s.eval.ctx());
    const Storage st = codec->encode(0, s.eval.kv, nullptr, s.eval.ctx())->storage();
    double bpt = 0, fixed = 0;
    for (const auto& it : st.items) {
      if (it.kind == StorageKind::kCompressed) bpt += static_cast<double>(it.bytes) / (st.kv_heads * it.tokens);
      if (it.kind == StorageKind::kFixed) fixed += static_cast<double>(it.bytes);
    }
    EXPECT_DOUBLE_EQ(8.0 * bpt / 256.0, cand.bits);
    EXPECT_DOUBLE_EQ(fixed, st.kv_heads * 256.0 * 128 * 2);  // K·d binary16 per KV head
  }
  // LOOKAT-2 / LOOKAT-4 at d = 64 (docs/codecs.md §9.1): 2 (4) key bytes + 128 fp16 value bytes per token.
  const auto& e = lookat();
  codecs::LookatParams p2 = codecs::LookatParams::from_json(resolve_preset(e, "paper-2", Json::object(), "x"));
  codecs::LookatParams p4 = codecs::LookatParams::from_json(resolve_preset(e, "paper-4", Json::object(), "x"));
  EXPECT_DOUBLE_EQ(p2.bytes_per_token(64), 130.0);
  EXPECT_DOUBLE_EQ(p4.bytes_per_token(64), 132.0);
  EXPECT_EQ(e.label(resolve_preset(e, "paper-2", Json::object(), "x")), "lookat-m2");
  EXPECT_EQ(e.label(Json{{"subspaces", 8}, {"values", "int4"}}), "lookat-m8+vint4-g32");
  // Budgets: 3 bits at d = 128 takes int4 values with m = 16 (b_eff 2.5 + 16/32 = 3.0).
  const BudgetResolution r = resolve_budget(e, 3.0, Json::object(), 128, "codecs[0]");
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(e.label(r.params), "lookat-m16+vint4-g32");
  EXPECT_DOUBLE_EQ(r.candidate_bits, 3.0);
  EXPECT_TRUE(e.info.trainable);
}

TEST(Lookat, BadParametersAreUnsupportedOrUsageErrors) {
  const auto& e = lookat();
  EXPECT_THROW(e.make_cpu(Json{{"subspaces", 3}}, ModelShape{1, 1, 1, 64}), Unsupported);
  EXPECT_THROW(e.make_cpu(Json{{"subspaces", 128}}, ModelShape{1, 1, 1, 64}), Unsupported);
  EXPECT_THROW(e.make_cpu(Json{{"values", "int4"}, {"value_group", 48}}, ModelShape{1, 1, 1, 64}), Unsupported);
  EXPECT_THROW(e.make_cpu(Json{{"values", "int3"}}, ModelShape{1, 1, 1, 64}), UsageError);
  EXPECT_THROW(e.make_cpu(Json{{"nbits", 9}}, ModelShape{1, 1, 1, 64}), UsageError);
  try {
    e.make_cpu(Json{{"subspaces", 3}}, ModelShape{1, 1, 1, 64});
  } catch (const Unsupported& ex) {
    EXPECT_NE(std::string(ex.what()).find("head_dim 64"), std::string::npos) << ex.what();
  }
}

TEST(Lookat, KmeansRecoversSeparatedClustersAndHandlesFewPoints) {
  // 8 well separated clusters in 3-d, 8 centroids: k-means++ then Lloyd finds every cluster centre.
  Rng rng(4242);
  const int dsub = 3, K = 8, per = 200;
  std::vector<float> centres(K * dsub), x;
  for (auto& c : centres) c = static_cast<float>(20.0 * rng.uniform());
  for (int k = 0; k < K; ++k)
    for (int i = 0; i < per; ++i)
      for (int j = 0; j < dsub; ++j) x.push_back(centres[k * dsub + j] + static_cast<float>(0.01 * rng.normal()));
  std::vector<float> cb(K * dsub);
  const double mse = codecs::pq::kmeans(x.data(), K * per, dsub, dsub, K, 25, 99, cb.data());
  EXPECT_LT(mse, 3 * dsub * 0.01 * 0.01);  // ~ the within-cluster variance (dsub·σ²)
  // Fewer points than centroids: the points themselves, no NaN, zero error.
  std::vector<float> few{1.f, 2.f, 3.f, 4.f, 5.f, 6.f};  // 2 points in 3-d
  std::vector<float> cb2(K * dsub);
  EXPECT_EQ(codecs::pq::kmeans(few.data(), 2, dsub, dsub, K, 25, 1, cb2.data()), 0.0);
  EXPECT_TRUE(all_finite(cb2.data(), K * dsub));
  // More iterations never increase the error (Lloyd is monotone; same seeding).
  std::vector<float> y;
  for (int i = 0; i < 3000; ++i) y.push_back(static_cast<float>(rng.normal()));
  std::vector<float> cb3(64 * 3);
  const double e0 = codecs::pq::kmeans(y.data(), 1000, 3, 3, 64, 0, 5, cb3.data());
  const double e25 = codecs::pq::kmeans(y.data(), 1000, 3, 3, 64, 25, 5, cb3.data());
  EXPECT_TRUE(all_finite(cb3.data(), 64 * 3));
  EXPECT_LT(e25, e0);
}

// Trained state handed over: the reference (and another value option) adopt the CPU codec's codebooks and
// store exactly the codebooks they would have trained; a state of other training parameters, another layer
// or another codec is refused.
TEST(Lookat, AdoptsTheTrainedStateOfAnotherImplementation) {
  SynthOptions o;
  o.tokens = 400 + 300;
  o.seed = 12;
  const Split s = split_layer(o, 300);
  const CodecEntry& e = lookat();
  const Json p = resolve_params(e.info.params, Json{{"subspaces", 8}, {"iters", 3}}, "lookat");
  auto cpu = e.make_cpu(p, s.eval.shape);
  EXPECT_EQ(cpu->trained(0), nullptr);
  cpu->fit(0, {&s.calib}, s.eval.ctx());
  ASSERT_NE(cpu->trained(0), nullptr);
  auto codebooks = [&](const Codec& c) {
    for (const auto& b : c.encode(0, s.eval.kv, nullptr, s.eval.ctx())->buffers())
      if (b.name == "k.codebooks") return b.bytes;
    return std::vector<uint8_t>{};
  };
  Json pi = p;
  pi["values"] = "int8";
  auto int8 = e.make_cpu(pi, s.eval.shape), fitted = e.make_cpu(pi, s.eval.shape);
  int8->adopt(0, cpu->trained(0));
  fitted->fit(0, {&s.calib}, s.eval.ctx());
  EXPECT_EQ(codebooks(*int8), codebooks(*cpu));
  EXPECT_EQ(codebooks(*fitted), codebooks(*cpu));
  auto ref = e.make_ref(p, s.eval.shape);
  fit_like(*ref, *cpu, 0, {&s.calib}, s.eval.ctx());
  EXPECT_EQ(ref->trained(0), cpu->trained(0));  // the same object: nothing was trained again
  EXPECT_NO_THROW(ref->encode(0, s.eval.kv, nullptr, s.eval.ctx()));
  Json pm = p;
  pm["subspaces"] = 4;
  EXPECT_THROW(e.make_cpu(pm, s.eval.shape)->adopt(0, cpu->trained(0)), UsageError);
  const CodecEntry& kv = registry().at("kvcar");
  EXPECT_THROW(kv.make_cpu(resolve_params(kv.info.params, Json::object(), "kvcar"), s.eval.shape)
                   ->adopt(0, cpu->trained(0)),
               UsageError);
  EXPECT_THROW(registry().at("int").make_cpu(Json::object(), s.eval.shape)->adopt(0, cpu->trained(0)), UsageError);
}

// The parameter table reads and writes every field: defaults and every budget candidate round-trip.
TEST(Lookat, ParameterTableRoundTrips) {
  const CodecEntry& e = lookat();
  EXPECT_EQ(codecs::LookatParams::table().specs().size(), e.info.params.size());
  for (const auto& c : e.candidates(128)) {
    const Json r = resolve_params(e.info.params, c.params, "lookat");
    EXPECT_EQ(codecs::LookatParams::table().to_json(codecs::LookatParams::from_json(r)), r);
  }
}

}  // namespace
}  // namespace kvb::test
