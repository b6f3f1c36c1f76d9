// kvcar (KV-CAR-proxy): gradients, training, cross-layer reuse, storage accounting.
#include <gtest/gtest.h>

#include <cmath>

#include "codec_test_util.h"
#include "codecs/kvcar/kvcar_codec.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

using codecs::KvcarLoss;
using codecs::KvcarParams;

KvcarParams params_of(const Json& j) {
  return KvcarParams::from_json(resolve_params(registry().at("kvcar").info.params, j, "kvcar"));
}

// Analytic gradients (Linear, BatchNorm in training mode, LeakyReLU, MSE / L1) against central differences
// in float64. Step 1e-6: truncation error ~1e-12·|f'''|, rounding ~1e-16/1e-6 = 1e-10 relative to the loss,
// so a correct gradient agrees to ~1e-7 relative; 1e-5 flags any wrong term (a dropped BatchNorm mean or
// variance term gives relative errors of order 1). A kink of LeakyReLU or |x| inside the ±step interval
// would break the check; with 7 random rows this happens with probability ~1e-5 per entry, and the seeds
// below are fixed.
TEST(Kvcar, GradientsMatchFiniteDifferences) {
  for (KvcarLoss loss : {KvcarLoss::kMse, KvcarLoss::kL1})
    for (uint64_t seed : {1u, 2u, 3u}) {
      SCOPED_TRACE(fmt::format("loss {} seed {}", loss == KvcarLoss::kMse ? "mse" : "l1", seed));
      EXPECT_LT(codecs::kvcar_gradient_check(6, 5, 3, 7, loss, seed), 1e-5);
      EXPECT_LT(codecs::kvcar_gradient_check(4, 9, 9, 5, loss, seed + 10), 1e-5);
    }
}

/// Rows x = A·u (u standard normal in R^D, A fixed): "simple data", full rank.
std::vector<float> simple_rows(int64_t n, int D, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> A(static_cast<size_t>(D) * D);
  for (double& a : A) a = rng.normal();
  std::vector<float> X(static_cast<size_t>(n) * D);
  std::vector<double> u(D);
  for (int64_t t = 0; t < n; ++t) {
    for (double& x : u) x = rng.normal();
    for (int i = 0; i < D; ++i) {
      double s = 0.5 * i;
      for (int j = 0; j < D; ++j) s += A[static_cast<size_t>(i) * D + j] * u[j];
      X[static_cast<size_t>(t) * D + i] = static_cast<float>(s);
    }
  }
  return X;
}

// d_lat = D (h = 2D): the autoencoder can represent the identity (LeakyReLU pairs), so the trained
// inference-mode reconstruction error (standardized MSE, i.e. relative to unit channel variance) must get
// near zero: below 1% of the variance (measured 0.54%; the floor is Adam's step noise and BatchNorm's
// batch-vs-running statistics), far below what a D/4 latent reaches on the same full-rank data (~0.33:
// it must lose most of the variance).
TEST(Kvcar, FullWidthLatentReconstructsNearZero) {
  const int D = 8;
  const int64_t n = 1024;
  const std::vector<float> X = simple_rows(n, D, 5);
  KvcarParams p = params_of(Json{{"ratio", 1.0}, {"hidden", 2.0}, {"epochs", 800}, {"batch", 256}, {"lr", 2e-3}});
  codecs::TrainLog lg;
  const codecs::AeWeights w = codecs::kvcar_train_ae(X.data(), n, D, 2 * D, D, p, 11, &lg, "");
  const double full = codecs::kvcar_eval_loss(w, X.data(), n, KvcarLoss::kMse);
  const codecs::AeWeights w4 = codecs::kvcar_train_ae(X.data(), n, D, 2 * D, D / 4, p, 11, nullptr, "");
  const double quarter = codecs::kvcar_eval_loss(w4, X.data(), n, KvcarLoss::kMse);
  std::printf("[ kvcar ] d_lat = D: standardized MSE %.3g (first epoch %.3g); d_lat = D/4: %.3g\n", full,
              lg.loss.front(), quarter);
  EXPECT_LT(full, 1e-2);
  EXPECT_GT(quarter, 0.3);
}

SynthLayer synth(uint64_t seed, int kv_heads, int d, int64_t C) {
  SynthOptions o;
  o.kv_heads = kv_heads;
  o.head_dim = d;
  o.tokens = C;
  o.seed = seed;
  o.queries = 2;
  return make_layer(o);
}

/// A layer whose K and V rows (all heads together) lie near a `rank`-dimensional subspace shared by every
/// sequence with the same `basis_seed` (real caches are strongly low-rank across the layer width; the
/// i.i.d. channels of make_layer are incompressible by any autoencoder). Channel means and scales differ,
/// plus 2% isotropic noise. Queries: make_layer's.
SynthLayer low_rank(uint64_t seed, uint64_t basis_seed, int kv_heads, int d, int64_t C, int rank) {
  SynthLayer L = synth(seed, kv_heads, d, C);
  const int D = kv_heads * d;
  Rng b(basis_seed), r(seed + 777);
  std::vector<double> A(static_cast<size_t>(2) * rank * D), mu(2 * static_cast<size_t>(D));
  for (double& a : A) a = b.normal() / std::sqrt(static_cast<double>(rank));
  for (double& m : mu) m = 2 * b.normal();
  std::vector<double> u(rank);
  for (int which = 0; which < 2; ++which)
    for (int64_t t = 0; t < C; ++t) {
      for (double& x : u) x = r.normal() * 2.0;
      for (int c = 0; c < D; ++c) {
        double s = mu[which * D + c] + 0.02 * r.normal();
        for (int k = 0; k < rank; ++k) s += A[(static_cast<size_t>(which) * rank + k) * D + c] * u[k];
        const int g = c / d, j = c % d;
        (which ? L.kv.v_head(g) : L.kv.k_head(g))[t * d + j] = static_cast<float>(s);
      }
    }
  return L;
}

TEST(Kvcar, TrainingLossFallsAndIsDeterministic) {
  SynthOptions o;
  o.kv_heads = 2;
  o.head_dim = 32;
  o.tokens = 600;
  const SynthLayer L = low_rank(1, 2, 2, 32, 600, 8);
  for (const char* loss : {"mse", "l1"}) {
    SCOPED_TRACE(loss);
    const KvcarParams p = params_of(Json{{"epochs", 8}, {"loss", loss}});
    // Rows of the layer: [C, 2·32], the two heads' keys side by side.
    std::vector<float> X(static_cast<size_t>(o.tokens) * 64);
    for (int64_t t = 0; t < o.tokens; ++t)
      for (int g = 0; g < 2; ++g)
        for (int j = 0; j < 32; ++j) X[t * 64 + g * 32 + j] = L.kv.k_head(g)[t * 32 + j];
    codecs::TrainLog a, b, c;
    const auto wa = codecs::kvcar_train_ae(X.data(), o.tokens, 64, 32, 32, p, 3, &a, "");
    const auto wb = codecs::kvcar_train_ae(X.data(), o.tokens, 64, 32, 32, p, 3, &b, "");
    const auto wc = codecs::kvcar_train_ae(X.data(), o.tokens, 64, 32, 32, p, 4, &c, "");
    ASSERT_EQ(a.loss.size(), 8u);
    EXPECT_LT(a.loss.back(), 0.7 * a.loss.front()) << "loss " << a.loss.front() << " -> " << a.loss.back();
    for (size_t i = 1; i < a.loss.size(); ++i) EXPECT_TRUE(std::isfinite(a.loss[i]));
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(wa.w1, wb.w1);
    EXPECT_EQ(wa.rv3, wb.rv3);
    EXPECT_NE(wa.w1, wc.w1);
  }
}

/// Fit and encode layers 0 and 1 of a two-layer "model" with the given codec.
struct TwoLayers {
  std::unique_ptr<Codec> codec;
  std::unique_ptr<EncodedLayer> e0, e1;
};

TwoLayers two_layers(const char* impl, const Json& params, const SynthLayer& l0, const SynthLayer& l1,
                     const SynthLayer& c0, const SynthLayer& c1) {
  const CodecEntry& e = registry().at("kvcar");
  const Json p = resolve_params(e.info.params, params, "kvcar");
  TwoLayers t;
  t.codec = std::string(impl) == "cpu" ? e.make_cpu(p, l0.shape) : e.make_ref(p, l0.shape);
  t.codec->fit(0, {&c0.kv}, c0.ctx());
  t.codec->fit(1, {&c1.kv}, c1.ctx());
  t.e0 = t.codec->encode(0, l0.kv, nullptr, l0.ctx());
  t.e1 = t.codec->encode(1, l1.kv, t.e0.get(), l1.ctx());
  return t;
}



// A layer identical to its predecessor: every head's distance is 0, all r = n_kv_heads heads are reused,
// the layer stores nothing per token, and its attention equals the previous layer's bit for bit (same
// decoded rows, same code path).
TEST(Kvcar, IdenticalLayerIsFullyReusedWithExactAttention) {
  const SynthLayer L = synth(21, 2, 32, 300), C = synth(22, 2, 32, 300);
  for (const char* impl : {"cpu", "ref"}) {
    SCOPED_TRACE(impl);
    const TwoLayers t = two_layers(impl, Json{{"reuse_heads", 2}, {"epochs", 2}}, L, L, C, C);
    for (const auto& it : t.e1->storage().items) {
      SCOPED_TRACE(it.name);
      EXPECT_EQ(it.bytes, it.name == "reuse.heads" ? 8u : 0u);
    }
    EXPECT_EQ(t.e1->storage().nominal_bytes_per_token, 0.0);
    const Json rep = t.codec->report();
    EXPECT_EQ(rep.at("variant"), codecs::kKvcarProxyLabel);
    EXPECT_EQ(rep.at("layers").at(1).at("reused_heads"), Json::array({0, 1}));
    EXPECT_EQ(rep.at("layers").at(0).at("reused_heads"), Json::array());  // layer 0 has no predecessor
    Scratch s0, s1;
    std::vector<float> o0(32), o1(32), l0(300), l1(300);
    for (int h = 0; h < 2; ++h) {
      const float* q = L.query(h, 0);
      t.e0->attend(h, q, o0.data(), s0);
      t.e1->attend(h, q, o1.data(), s1);
      EXPECT_EQ(o0, o1);
      ASSERT_TRUE(t.e0->scores(h, q, l0.data(), s0));
      ASSERT_TRUE(t.e1->scores(h, q, l1.data(), s1));
      EXPECT_EQ(l0, l1);
    }
  }
}

// One head equal to the previous layer's, the other different: r = 1 reuses exactly the equal head; the
// stored head's autoencoder spans one head (D_s = head_dim).
TEST(Kvcar, ReuseRanksTheClosestHead) {
  const SynthLayer L0 = synth(31, 2, 16, 200), C0 = synth(32, 2, 16, 200);
  SynthLayer L1 = L0, C1 = C0;
  const SynthLayer other = synth(33, 2, 16, 200), other_c = synth(34, 2, 16, 200);
  for (int64_t i = 0; i < 200 * 16; ++i) {  // head 0 replaced, head 1 kept
    L1.kv.k[i] = other.kv.k[i], L1.kv.v[i] = other.kv.v[i];
    C1.kv.k[i] = other_c.kv.k[i], C1.kv.v[i] = other_c.kv.v[i];
  }
  const TwoLayers t = two_layers("cpu", Json{{"reuse_heads", 1}, {"epochs", 2}}, L0, L1, C0, C1);
  const Json l1 = t.codec->report().at("layers").at(1);
  EXPECT_EQ(l1.at("reused_heads"), Json::array({1}));
  EXPECT_EQ(l1.at("stored_heads"), Json::array({0}));
  EXPECT_EQ(l1.at("D_s"), 16);
  EXPECT_EQ(l1.at("d_lat"), 8);
  EXPECT_DOUBLE_EQ(l1.at("head_l1_distance_to_prev_layer").at(1).get<double>(), 0.0);
  EXPECT_GT(l1.at("head_l1_distance_to_prev_layer").at(0).get<double>(), 0.1);
  Scratch s0, s1;
  std::vector<float> o0(16), o1(16);
  t.e0->attend(1, L0.query(1, 0), o0.data(), s0);
  t.e1->attend(1, L0.query(1, 0), o1.data(), s1);
  EXPECT_EQ(o0, o1);  // head 1 of layer 1 is layer 0's reconstruction
  // Encoding layer 1 without its predecessor cannot honour the reuse.
  EXPECT_THROW(t.codec->encode(1, L1.kv, nullptr, L1.ctx()), Unsupported);
}

// Storage: every item's bytes are the real buffers; per-token bytes equal the nominal formula.
TEST(Kvcar, StorageMatchesBuffers) {
  const SynthLayer L = synth(41, 4, 24, 130), C = synth(42, 4, 24, 130);
  struct Want {
    Json params;
    int64_t dl;
    bool int8;
  };
  // D = 4·24 = 96: ratio 1/2 -> 48, 1/4 -> 24, 1/8 -> 12; ratio 0.3 -> ceil(28.8) = 29.
  for (const Want& w : {Want{Json{{"ratio", 0.5}}, 48, false}, Want{Json{{"ratio", 0.25}, {"int8", true}}, 24, true},
                        Want{Json{{"ratio", 0.125}}, 12, false}, Want{Json{{"ratio", 0.3}, {"int8", true}}, 29, true}}) {
    Json p = w.params;
    p["epochs"] = 1;
    SCOPED_TRACE(p.dump());
    const CodecEntry& e = registry().at("kvcar");
    auto c = e.make_cpu(resolve_params(e.info.params, p, "kvcar"), L.shape);
    c->fit(0, {&C.kv}, C.ctx());
    const Storage st = c->encode(0, L.kv, nullptr, L.ctx())->storage();
    const uint64_t per = w.int8 ? 1 : 2;
    std::map<std::string, uint64_t> bytes;
    for (const auto& it : st.items) bytes[it.name] = it.bytes;
    EXPECT_EQ(bytes.at("k.latent"), 130u * w.dl * per);
    EXPECT_EQ(bytes.at("v.latent"), 130u * w.dl * per);
    if (w.int8) EXPECT_EQ(bytes.at("k.scale_min"), 130u * 8);
    const int64_t h = 48;  // hidden 0.5·96 (>= d_lat)
    EXPECT_EQ(bytes.at("k.ae_weights"), 4u * (h * 96 + h + w.dl * h + w.dl + h * w.dl + h + 96 * h + 96));
    EXPECT_EQ(bytes.at("reuse.heads"), 0u);
    double bpt = 0;
    for (const auto& it : st.items)
      if (it.kind == StorageKind::kCompressed) bpt += static_cast<double>(it.bytes) / (4.0 * it.tokens);
    EXPECT_DOUBLE_EQ(bpt, st.nominal_bytes_per_token);
    EXPECT_DOUBLE_EQ(st.nominal_bytes_per_token, (w.int8 ? 2.0 * (w.dl + 8) : 4.0 * w.dl) / 4);
  }
  // d_lat = D/2 in fp16 is 8 bits per element; candidates state one KV head's bits (an upper bound).
  EXPECT_DOUBLE_EQ(registry().at("kvcar").candidates(128).front().bits, 8.0);
  EXPECT_DOUBLE_EQ(registry().at("kvcar").candidates(128)[1].bits, 4.0 + 0.5);  // int8: 8·64/256 + 64/128
}

TEST(Kvcar, ErrorsAreClear) {
  const SynthLayer L = synth(51, 2, 16, 50);
  const CodecEntry& e = registry().at("kvcar");
  auto c = e.make_cpu(resolve_params(e.info.params, Json::object(), "kvcar"), L.shape);
  EXPECT_THROW(c->encode(0, L.kv, nullptr, L.ctx()), RuntimeError);  // not fitted
  EXPECT_THROW(e.make_cpu(Json{{"reuse_heads", 3}}, L.shape), Unsupported);
  EXPECT_THROW(e.make_cpu(Json{{"loss", "huber"}}, L.shape), UsageError);
  EXPECT_THROW(e.make_cpu(Json{{"ratio", 0.0}}, L.shape), UsageError);
  EXPECT_TRUE(e.info.trainable);
  EXPECT_NE(e.info.summary.find(codecs::kKvcarProxyLabel), std::string::npos);
}

// Trained at the paper's d_lat = D/2 with a longer schedule, the attention output keeps its direction on
// a low-rank layer (rank 12 of D = 64; trained on another sequence of the same distribution). The
// bound is loose (measured ~0.9x): it catches a broken encoder/decoder (cosine near 0), not small drift.
TEST(Kvcar, TrainedAttentionIsFaithful) {
  const SynthLayer L = low_rank(61, 60, 2, 32, 512, 12), C = low_rank(62, 60, 2, 32, 1024, 12);
  const CodecEntry& e = registry().at("kvcar");
  auto c = e.make_cpu(resolve_params(e.info.params, Json{{"epochs", 30}}, "kvcar"), L.shape);
  c->fit(0, {&C.kv}, C.ctx());
  const auto enc = c->encode(0, L.kv, nullptr, L.ctx());
  Scratch s;
  std::vector<float> o(32);
  double worst = 1, mean = 0;
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 2; ++i) {
      const auto ex = exact_output(L, h, L.query(h, i));
      enc->attend(h, L.query(h, i), o.data(), s);
      const double cs = cosine(o.data(), ex.data(), 32);
      worst = std::min(worst, cs), mean += cs / 4;
    }
  std::printf("[ kvcar ] d_lat = D/2, 30 epochs: attention cosine mean %.4f, worst %.4f\n", mean, worst);
  EXPECT_GT(worst, 0.8);
}

}  // namespace
}  // namespace kvb::test

namespace kvb::test {
namespace {

// decode=once keeps each head's decoded rows: outputs and logits equal the per-call decode bit for bit.
TEST(Kvcar, DecodeOnceEqualsEveryCall) {
  const SynthLayer L = synth(71, 2, 16, 150), C = synth(72, 2, 16, 150);
  const CodecEntry& e = registry().at("kvcar");
  // One fit: int8 and decode act after training, so all four codecs take the same model.
  auto fitted = e.make_cpu(resolve_params(e.info.params, Json::object(), "kvcar"), L.shape);
  fitted->fit(0, {&C.kv}, C.ctx());
  for (bool int8 : {false, true}) {
    SCOPED_TRACE(int8);
    auto a = e.make_cpu(resolve_params(e.info.params, Json{{"int8", int8}}, "kvcar"), L.shape);
    auto b = e.make_cpu(resolve_params(e.info.params, Json{{"int8", int8}, {"decode", "once"}}, "kvcar"), L.shape);
    fit_like(*a, *fitted, 0, {&C.kv}, C.ctx());
    fit_like(*b, *fitted, 0, {&C.kv}, C.ctx());
    const auto ea = a->encode(0, L.kv, nullptr, L.ctx()), eb = b->encode(0, L.kv, nullptr, L.ctx());
    Scratch sa, sb;
    std::vector<float> oa(16), ob(16), la(150), lb(150);
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 2; ++i) {
        ea->attend(h, L.query(h, i), oa.data(), sa);
        eb->attend(h, L.query(h, i), ob.data(), sb);
        EXPECT_EQ(oa, ob);
        ea->scores(h, L.query(h, i), la.data(), sa);
        eb->scores(h, L.query(h, i), lb.data(), sb);
        EXPECT_EQ(la, lb);
      }
  }
}

// The parameter table reads and writes every field, the choices (loss, decode) included.
TEST(Kvcar, ParameterTableRoundTrips) {
  const CodecEntry& e = registry().at("kvcar");
  for (const Json& given : {Json::object(), Json{{"loss", "l1"}, {"decode", "once"}, {"int8", true}, {"ratio", 0.25}}}) {
    const Json r = resolve_params(e.info.params, given, "kvcar");
    const KvcarParams p = KvcarParams::from_json(r);
    EXPECT_EQ(KvcarParams::table().to_json(p), r);
    EXPECT_EQ(p.loss == KvcarLoss::kL1, given.contains("loss"));
    EXPECT_EQ(p.decode_once, given.contains("decode"));
  }
}

}  // namespace
}  // namespace kvb::test
