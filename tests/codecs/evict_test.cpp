// The eviction family (codecs/evict): kept sets against the float64 reference on odd shapes, the observation
// scores against a dense recomputation, sinks and windows always held, budgets met exactly per layer (pyramidkv
// over layers, adakv over heads), storage = 16·K/C bits, and a clear error without observation queries.
// The registry-wide suite (registry_codecs_test.cpp) adds cpu-vs-ref outputs, storage and attend_many.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "codec_test_util.h"
#include "codecs/evict/evict_codec.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

using codecs::EvictGqa;

const char* kAll[] = {"streamingllm", "h2o", "snapkv", "pyramidkv", "adakv"};

std::unique_ptr<EncodedLayer> encode(const std::string& codec, const Json& params, const SynthLayer& L, bool ref,
                                     int layer = 0, int n_layers = 1) {
  const CodecEntry& e = registry().at(codec);
  ModelShape shape = L.shape;
  shape.n_layers = n_layers;
  CodecContext ctx = L.ctx();
  ctx.shape = shape;
  auto c = ref ? e.make_ref(params, shape) : e.make_cpu(params, shape);
  return c->encode(layer, L.kv, nullptr, ctx);
}

int64_t held(const EncodedLayer& enc, int g) {
  const auto m = enc.held_tokens(g);
  return std::accumulate(m.begin(), m.end(), int64_t{0});
}

TEST(Evict, KeptSetsEqualReferenceOnOddShapes) {
  // The CPU planner scores with float32 dots and the reference in float64: a kept set could differ only where
  // two candidates' scores tie to ~1e-7, which these seeded caches do not contain (a failure prints the case).
  for (const char* codec : kAll)
    for (int64_t C : {1, 7, 40, 127, 700})
      for (int d : {64, 96})
        for (int group : {1, 4})
          for (double keep : {0.5, 0.25, 1.0 / 16}) {
            SynthOptions o;
            o.tokens = C, o.head_dim = d, o.group = group, o.kv_heads = 3, o.seed = 17 + C + d;
            const SynthLayer L = make_layer(o);
            const Json params{{"keep", keep}};
            const int n_layers = 4, layer = 2;
            auto a = encode(codec, params, L, false, layer, n_layers);
            auto b = encode(codec, params, L, true, layer, n_layers);
            for (int g = 0; g < o.kv_heads; ++g)
              ASSERT_EQ(a->held_tokens(g), b->held_tokens(g))
                  << codec << " keep " << keep << " head " << g << " " << L.describe();
          }
}

TEST(Evict, ObservationScoresEqualDenseSoftmax) {
  // A_t = Σ_i softmax_i(s)_t over each query's causal prefix, mean or max over the group, recomputed densely.
  SynthOptions o;
  o.tokens = 300, o.head_dim = 64, o.group = 2, o.kv_heads = 2, o.softcap = 30.f, o.seed = 5;
  const SynthLayer L = make_layer(o);
  const ObsQueries& ob = L.kv.obs;
  for (EvictGqa gqa : {EvictGqa::kMean, EvictGqa::kMax})
    for (int64_t q0 : {int64_t{0}, int64_t{20}})
      for (int g = 0; g < o.kv_heads; ++g) {
        const int64_t n = 280;
        const auto A = codecs::evict_obs_scores(L.kv, g, q0, n, gqa, L.attn);
        std::vector<double> want(n, gqa == EvictGqa::kMax ? -1.0 : 0.0);
        for (int h = g * o.group; h < (g + 1) * o.group; ++h) {
          std::vector<double> a(n, 0.0);
          for (int64_t i = q0; i < ob.n; ++i) {
            const int64_t seen = ob.positions[i] + 1;
            std::vector<double> s(seen);
            double mx = -INFINITY, den = 0;
            for (int64_t t = 0; t < seen; ++t) {
              double dot = 0;
              for (int j = 0; j < o.head_dim; ++j) dot += double(ob.query(h, i)[j]) * L.kv.k_head(g)[t * o.head_dim + j];
              s[t] = o.softcap * std::tanh(dot * L.attn.softmax_scale / o.softcap);
              mx = std::max(mx, s[t]);
            }
            for (double x : s) den += std::exp(x - mx);
            for (int64_t t = 0; t < std::min(seen, n); ++t) a[t] += std::exp(s[t] - mx) / den;
          }
          for (int64_t t = 0; t < n; ++t)
            want[t] = gqa == EvictGqa::kMax ? std::max(want[t], a[t]) : want[t] + a[t] / o.group;
        }
        for (int64_t t = 0; t < n; ++t)
          ASSERT_NEAR(A[t], want[t], 1e-5 * std::max(1.0, want[t])) << "t " << t << " head " << g << " q0 " << q0;
        // Every query's probabilities sum to 1 over its prefix: the mass on [0, n) is at most (W - q0).
        EXPECT_LE(std::accumulate(A.begin(), A.end(), 0.0), double(ob.n - q0) * (gqa == EvictGqa::kMax ? o.group : 1) + 1e-6);
      }
}

TEST(Evict, SinksAndWindowsAlwaysHeld) {
  SynthOptions o;
  o.tokens = 1000, o.head_dim = 64, o.group = 2, o.seed = 9;
  const SynthLayer L = make_layer(o);
  for (double keep : {0.5, 0.1, 0.03}) {
    const int64_t K = codecs::evict_head_budget(keep, o.tokens);
    auto s = encode("streamingllm", Json{{"keep", keep}, {"sink", 4}}, L, false);
    auto h = encode("h2o", Json{{"keep", keep}}, L, false);
    auto k = encode("snapkv", Json{{"keep", keep}, {"window", 16}}, L, false);
    for (int g = 0; g < o.kv_heads; ++g) {
      const auto ms = s->held_tokens(g), mh = h->held_tokens(g), mk = k->held_tokens(g);
      for (int64_t t = 0; t < 4; ++t) EXPECT_TRUE(ms[t]) << "sink " << t;
      for (int64_t t = o.tokens - (K - 4); t < o.tokens; ++t) ASSERT_TRUE(ms[t]) << "recent " << t;
      for (int64_t t = o.tokens - std::llround(0.5 * K); t < o.tokens; ++t) ASSERT_TRUE(mh[t]) << "h2o recent " << t;
      for (int64_t t = o.tokens - 16; t < o.tokens; ++t) ASSERT_TRUE(mk[t]) << "snapkv window " << t;
      EXPECT_EQ(held(*s, g), K);
      EXPECT_EQ(held(*h, g), K);
      EXPECT_EQ(held(*k, g), K);
    }
  }
}

TEST(Evict, SnapKVKeepsTheTokensTheWindowAttendsTo) {
  // Plant a needle: the window's queries all point at token 123's key; with kernel 1 (no pooling) snapkv must
  // keep it at any budget that selects at least one prefix token, and uniform eviction would not.
  SynthOptions o;
  o.tokens = 2000, o.head_dim = 64, o.kv_heads = 1, o.seed = 3, o.outliers = 0, o.sink_logit = 0.f;
  SynthLayer L = make_layer(o);
  const int64_t needle = 123;
  const float* kn = L.kv.k_head(0) + needle * o.head_dim;
  double n2 = 0;
  for (int j = 0; j < o.head_dim; ++j) n2 += double(kn[j]) * kn[j];
  // q = 12·√d·k̂_needle: the needle's logit is 12·‖k‖ (about 12·8 here), every other key's about ±12.
  for (int64_t i = 0; i < L.kv.obs.n; ++i)
    for (int j = 0; j < o.head_dim; ++j)
      L.kv.obs.q[i * o.head_dim + j] = static_cast<float>(12.0 * std::sqrt(double(o.head_dim)) * kn[j] / std::sqrt(n2));
  for (const char* codec : {"snapkv", "pyramidkv", "adakv", "h2o"}) {
    auto enc = encode(codec, Json{{"keep", 1.0 / 32}}, L, false);
    EXPECT_TRUE(enc->held_tokens(0)[needle]) << codec;
  }
}

TEST(Evict, PyramidBudgetsSumExactlyAndShrinkWithDepth) {
  for (int L : {1, 2, 5, 32})
    for (int64_t S : {0, 1, 7, 100, 1000})
      for (int64_t cap : {S, S + 1, 2 * S + 3, int64_t{100000}})
        for (double beta : {1.0, 20.0, 200.0}) {
          const auto b = codecs::pyramid_budgets(L, S, cap, beta);
          ASSERT_EQ(static_cast<int>(b.size()), L);
          EXPECT_EQ(std::accumulate(b.begin(), b.end(), int64_t{0}), int64_t{L} * S)
              << "L " << L << " S " << S << " cap " << cap << " beta " << beta;
          for (int l = 0; l < L; ++l) {
            EXPECT_GE(b[l], 0);
            EXPECT_LE(b[l], cap);
            if (l > 0) EXPECT_LE(b[l], b[l - 1] + 1) << "rounding may lift a layer by one, never more";
          }
          if (L == 32 && S == 1000 && cap == 100000 && beta == 20.0) {
            EXPECT_GT(b[0], 1900);  // 2S - S/β = 1950
            EXPECT_LT(b[31], 60);   // S/β = 50
          }
        }
}

TEST(Evict, BudgetsMetExactlyOverLayersAndHeads) {
  SynthOptions o;
  o.tokens = 777, o.head_dim = 64, o.kv_heads = 4, o.group = 2, o.seed = 21;
  const SynthLayer L = make_layer(o);
  for (double keep : {0.5, 0.25, 0.125, 1.0 / 16}) {
    const int64_t K = codecs::evict_head_budget(keep, o.tokens);
    // PyramidKV: each layer's heads keep K_l rows; Σ_l K_l = L·K.
    const int n_layers = 6;
    for (int g = 0; g < o.kv_heads; ++g) {
      int64_t total = 0;
      for (int l = 0; l < n_layers; ++l) total += held(*encode("pyramidkv", Json{{"keep", keep}}, L, false, l, n_layers), g);
      EXPECT_EQ(total, int64_t{n_layers} * K) << "pyramidkv keep " << keep << " head " << g;
    }
    // Ada-KV: heads differ, the layer total is H·K; each head keeps its window and its safeguard share.
    auto a = encode("adakv", Json{{"keep", keep}}, L, false);
    int64_t total = 0;
    for (int g = 0; g < o.kv_heads; ++g) {
      const int64_t w = std::min<int64_t>(32, K), S = K - w;
      EXPECT_GE(held(*a, g), w + static_cast<int64_t>(std::floor(0.2 * S)));
      total += held(*a, g);
    }
    EXPECT_EQ(total, int64_t{o.kv_heads} * K) << "adakv keep " << keep;
    // Storage: 16·ΣK_g/(H·C) bits per element, the counts as fixed bytes.
    const Storage st = a->storage();
    uint64_t comp = 0, fixed = 0;
    for (const auto& it : st.items) (it.kind == StorageKind::kCompressed ? comp : fixed) += it.bytes;
    EXPECT_EQ(comp, uint64_t(o.kv_heads) * K * 2 * 2 * o.head_dim);
    EXPECT_EQ(fixed, uint64_t(o.kv_heads) * 4);
  }
}

TEST(Evict, AdaKVMovesBudgetToBroadHeads) {
  // Head 0's window attends to one token, head 1's broadly: the peaked head needs only its safeguard, so the
  // broad head receives more than the flat budget.
  SynthOptions o;
  o.tokens = 1024, o.head_dim = 64, o.kv_heads = 2, o.seed = 4, o.sink_logit = 0.f;
  SynthLayer L = make_layer(o);
  for (int64_t i = 0; i < L.kv.obs.n; ++i)
    for (int j = 0; j < o.head_dim; ++j) {
      L.kv.obs.q[(0 * L.kv.obs.n + i) * o.head_dim + j] = 4.f * L.kv.k_head(0)[77 * o.head_dim + j] / 8.f;
      L.kv.obs.q[(1 * L.kv.obs.n + i) * o.head_dim + j] = 0.f;  // uniform attention
    }
  auto a = encode("adakv", Json{{"keep", 0.25}, {"pooling", "none"}}, L, false);
  EXPECT_LT(held(*a, 0), held(*a, 1));
}

TEST(Evict, WithoutObservationQueriesSaysSo) {
  SynthOptions o;
  o.obs_window = 0;
  const SynthLayer L = make_layer(o);
  for (const char* codec : {"h2o", "snapkv", "pyramidkv", "adakv"}) {
    EXPECT_TRUE(registry().at(codec).info.needs_obs_queries);
    try {
      encode(codec, Json::object(), L, false);
      ADD_FAILURE() << codec << " encoded without observation queries";
    } catch (const Unsupported& e) {
      EXPECT_NE(std::string(e.what()).find("obs_queries"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(registry().at("streamingllm").info.needs_obs_queries);
  EXPECT_NO_THROW(encode("streamingllm", Json::object(), L, false));
}

TEST(Evict, BudgetResolvesFromBits) {
  for (const char* codec : kAll) {
    const CodecEntry& e = registry().at(codec);
    for (auto [bits, keep] : {std::pair{8.0, 0.5}, {4.0, 0.25}, {2.0, 0.125}, {1.0, 0.0625}, {3.0, 0.1875}}) {
      const BudgetResolution r = resolve_budget(e, bits, Json::object(), 128, "test");
      ASSERT_TRUE(r.ok) << codec << " " << r.reason;
      EXPECT_DOUBLE_EQ(r.params.at("keep").get<double>(), keep) << codec << " bits " << bits;
    }
  }
}

}  // namespace
}  // namespace kvb::test
