// `kvbench gen`: determinism, shapes, GQA, ref_out, RoPE, and the LLM-like statistics of docs/dump-format.md §3.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "io_test_util.h"
#include "kvb/attention/exact.h"
#include "kvb/gen/generator.h"
#include "kvb/io/inspect.h"

using namespace kvbtest;

namespace {

std::string describe(const kvb::GenOptions& o) {
  return fmt::format("model_like={} layers={} heads={} kv_heads={} head_dim={} tokens={} queries={} sequences={} "
                     "seed={} dtype={} rope={} theta={}",
                     o.model_like, o.shape.n_layers, o.shape.n_heads, o.shape.n_kv_heads, o.shape.head_dim, o.tokens,
                     o.queries, o.sequences, o.seed, kvb::to_string(o.dtype), o.rope_style, o.rope_theta);
}

kvb::GenOptions small_gen(uint64_t seed = 1) {
  kvb::GenOptions o = kvb::gen_preset("tiny");
  o.tokens = 256 + 8;
  o.queries = 8;
  o.seed = seed;
  return o;
}


/// Max over queries of ‖exact − ref_out‖ / ‖exact‖, recomputing exact attention with exact_attention_f64
/// from the tensors as read, with query head h reading KV head kv_of(h).
template <class KvOf>
double ref_out_error(const kvb::KvDumpReader& r, size_t s, int l, KvOf kv_of) {
  const auto& a = r.attrs();
  const int D = a.shape.head_dim;
  const int64_t C = r.sequences()[s].context_len;
  const auto kv = r.read_kv(s, l, 0, C);
  const auto lq = r.read_queries(s, l, 0);
  double worst = 0;
  std::vector<double> o(static_cast<size_t>(D));
  for (int h = 0; h < a.shape.n_heads; ++h)
    for (int64_t i = 0; i < lq.n; ++i) {
      const int g = kv_of(h);
      kvb::exact_attention_f64(kv.k_head(g), kv.v_head(g), C, D, lq.query(h, i), a.softmax_scale, 0, nullptr, nullptr,
                               o.data());
      double num = 0, den = 0;
      for (int j = 0; j < D; ++j) {
        num += (o[j] - lq.ref(h, i)[j]) * (o[j] - lq.ref(h, i)[j]);
        den += o[j] * o[j];
      }
      worst = std::max(worst, std::sqrt(num / std::max(den, 1e-300)));
    }
  return worst;
}

}  // namespace

TEST(GenPresets, KnownShapes) {
  const auto names = kvb::gen_presets();
  for (const char* n : {"tiny", "llama2-7b", "llama3-8b"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  const auto l3 = kvb::gen_preset("llama3-8b");
  EXPECT_EQ(l3.shape.n_layers, 32);
  EXPECT_EQ(l3.shape.n_heads, 32);
  EXPECT_EQ(l3.shape.n_kv_heads, 8);
  EXPECT_EQ(l3.shape.head_dim, 128);
  EXPECT_EQ(l3.rope_theta, 500000);
  EXPECT_EQ(l3.rope_style, "half");
  EXPECT_EQ(l3.tokens, 4096 + 64);
  EXPECT_EQ(l3.queries, 64);
  EXPECT_EQ(l3.sequences, 2);
  const auto l2 = kvb::gen_preset("llama2-7b");
  EXPECT_EQ(l2.shape.n_kv_heads, 32);
  EXPECT_EQ(l2.rope_theta, 10000);
  const auto t = kvb::gen_preset("tiny");
  EXPECT_EQ(t.shape.n_layers, 2);
  EXPECT_EQ(t.shape.n_heads, 4);
  EXPECT_EQ(t.shape.n_kv_heads, 2);
  EXPECT_EQ(t.shape.head_dim, 64);
  EXPECT_EQ(t.tokens, 512 + 16);
  for (const auto& n : names) EXPECT_NO_THROW(kvb::validate_gen_options(kvb::gen_preset(n))) << n;
  try {
    kvb::gen_preset("gpt5");
    FAIL();
  } catch (const kvb::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("llama3-8b"), std::string::npos) << e.what();
  }
}

TEST(GenOptionsValidation, NamesTheFlag) {
  struct Case {
    const char* flag;
    std::function<void(kvb::GenOptions&)> spoil;
  };
  const std::vector<Case> cases = {
      {"--kv-heads", [](kvb::GenOptions& o) { o.shape.n_kv_heads = 3; }},
      {"--head-dim", [](kvb::GenOptions& o) { o.shape.head_dim = 63; }},
      {"--head-dim", [](kvb::GenOptions& o) { o.shape.head_dim = 2048; }},
      {"--queries", [](kvb::GenOptions& o) { o.queries = 0; }},
      {"--tokens", [](kvb::GenOptions& o) { o.tokens = o.queries + 1; }},
      {"--rope-style", [](kvb::GenOptions& o) { o.rope_style = "diagonal"; }},
      {"--sink-share-min/max", [](kvb::GenOptions& o) { o.sink_share_max = 1.0; }},
      {"--focus-min/max", [](kvb::GenOptions& o) { o.focus_min = 0.8, o.focus_max = 0.2; }},
      {"--outlier-channels", [](kvb::GenOptions& o) { o.outlier_channels = 1000; }},
      {"--key-noise", [](kvb::GenOptions& o) { o.key_noise = 1.0; }},
      {"--sequences", [](kvb::GenOptions& o) { o.sequences = 0; }},
      {"--obs-window", [](kvb::GenOptions& o) { o.obs_window = -1; }},
  };
  for (const auto& c : cases) {
    kvb::GenOptions o = small_gen();
    c.spoil(o);
    SCOPED_TRACE(describe(o));
    try {
      kvb::generate_dump(scratch("never.h5"), o);
      ADD_FAILURE() << "accepted bad " << c.flag;
    } catch (const kvb::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(c.flag), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(scratch("never.h5")));
  }
}

TEST(Generator, DeterministicPerSeed) {
  const kvb::GenOptions o = small_gen(5);
  SCOPED_TRACE(describe(o));
  const std::string a = scratch("det_a.h5"), b = scratch("det_b.h5"), c = scratch("det_c.h5");
  kvb::generate_dump(a, o);
  kvb::generate_dump(b, o);
  kvb::GenOptions o2 = o;
  o2.seed = 6;
  kvb::generate_dump(c, o2);
  const kvb::KvDumpReader ra(a), rb(b), rc(c);
  EXPECT_EQ(ra.checksum(), rb.checksum()) << "same options and seed must give a byte-identical file";
  for (size_t s = 0; s < 2; ++s)
    for (int l = 0; l < o.shape.n_layers; ++l) {
      const auto ka = ra.read_kv(s, l, 0, o.tokens), kb = rb.read_kv(s, l, 0, o.tokens), kc = rc.read_kv(s, l, 0, o.tokens);
      EXPECT_EQ(ka.k, kb.k);
      EXPECT_EQ(ka.v, kb.v);
      EXPECT_EQ(ra.read_queries(s, l, 0).q, rb.read_queries(s, l, 0).q);
      EXPECT_NE(ka.k, kc.k) << "a different seed must give different keys";
      EXPECT_NE(ka.v, kc.v);
    }
  // Sequences differ in content; the per-head "weights" (e.g. outlier channels) do not.
  const auto s0 = ra.read_kv(0, 0, 0, o.tokens), s1 = ra.read_kv(1, 0, 0, o.tokens);
  EXPECT_NE(s0.k, s1.k);
  EXPECT_NE(ra.read_tokens(0), ra.read_tokens(1));
}

TEST(Generator, ShapesAndAttributes) {
  kvb::GenOptions o = small_gen(2);
  o.model_like = "custom";
  o.shape = kvb::ModelShape{3, 6, 3, 32};
  o.tokens = 300;
  o.queries = 20;
  o.sequences = 3;
  o.dtype = kvb::DType::kBFloat16;
  o.rope_style = "interleaved";
  o.rope_theta = 123456;
  SCOPED_TRACE(describe(o));
  const std::string p = scratch("shapes.h5");
  kvb::generate_dump(p, o);
  const kvb::KvDumpReader r(p);
  const auto& a = r.attrs();
  EXPECT_EQ(a.model, "synthetic:custom");
  EXPECT_EQ(a.source.rfind("kvbench gen", 0), 0u) << a.source;
  EXPECT_EQ(a.shape.n_layers, 3);
  EXPECT_EQ(a.shape.n_heads, 6);
  EXPECT_EQ(a.shape.n_kv_heads, 3);
  EXPECT_EQ(a.shape.head_dim, 32);
  EXPECT_EQ(a.rope_style, "interleaved");
  EXPECT_EQ(a.rope_applied, 1);
  EXPECT_DOUBLE_EQ(a.rope_theta, 123456);
  EXPECT_DOUBLE_EQ(a.softmax_scale, 1.0 / std::sqrt(32.0));
  EXPECT_EQ(a.orig_dtype, "bfloat16");
  ASSERT_TRUE(a.seed.has_value());
  EXPECT_EQ(*a.seed, 2);
  EXPECT_EQ(r.dtype(), kvb::DType::kBFloat16);
  ASSERT_EQ(r.sequences().size(), 3u);
  for (const auto& s : r.sequences()) {
    EXPECT_EQ(s.n_tokens, 300);
    EXPECT_EQ(s.context_len, 280);
    EXPECT_EQ(s.n_queries, 20);
    for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(s.query_positions[static_cast<size_t>(i)], 280 + i);
    EXPECT_TRUE(s.has_ref_out);
    EXPECT_TRUE(s.has_tokens);
  }
  const auto toks = r.read_tokens(0);
  ASSERT_EQ(toks.size(), 300u);
  EXPECT_EQ(toks[0], 1) << "the sequence starts with BOS";
}

TEST(Generator, RefOutIsExactAttentionOverTheStoredTensors) {
  for (kvb::DType dt : {kvb::DType::kFloat16, kvb::DType::kBFloat16, kvb::DType::kFloat32}) {
    kvb::GenOptions o = small_gen(9);
    o.dtype = dt;
    SCOPED_TRACE(describe(o));
    const std::string p = scratch(fmt::format("ref_{}.h5", kvb::to_string(dt)));
    kvb::generate_dump(p, o);
    const kvb::KvDumpReader r(p);
    const int gs = o.shape.group();
    for (size_t s = 0; s < 2; ++s)
      for (int l = 0; l < o.shape.n_layers; ++l)
        EXPECT_LT(ref_out_error(r, s, l, [&](int h) { return h / gs; }), 1e-6) << "seq " << s << " layer " << l;
  }
}

TEST(Generator, GroupedQueryAttention) {
  kvb::GenOptions o = small_gen(4);
  o.shape = kvb::ModelShape{1, 8, 2, 64};
  SCOPED_TRACE(describe(o));
  const std::string p = scratch("gqa.h5");
  kvb::generate_dump(p, o);
  const kvb::KvDumpReader r(p);
  // The four query heads that share a KV head ask different questions.
  const auto lq = r.read_queries(0, 0, 0);
  const int D = 64;
  for (int h = 0; h < 8; ++h)
    for (int h2 = h + 1; h2 < 8; ++h2) {
      double diff = 0, norm = 0;
      for (int j = 0; j < D; ++j) {
        diff += std::abs(lq.query(h, 0)[j] - lq.query(h2, 0)[j]);
        norm += std::abs(lq.query(h, 0)[j]);
      }
      EXPECT_GT(diff, 0.05 * norm) << "heads " << h << " and " << h2;
    }
  // ref_out was computed with query head h reading KV head h / 4; the interleaved mapping h % 2 is wrong.
  EXPECT_LT(ref_out_error(r, 0, 0, [](int h) { return h / 4; }), 1e-6);
  EXPECT_GT(ref_out_error(r, 0, 0, [](int h) { return h % 2; }), 1e-2);
  // K/V are stored once per KV head.
  EXPECT_EQ(r.read_kv(0, 0, 0, 10).k.size(), static_cast<size_t>(2 * 10 * D));
}

TEST(Generator, RopePairingDeterministicCase) {
  const int D = 8;
  const double theta = 10000;
  {  // half: pair (i, i + D/2) turns by pos * theta^(-2i/D)
    std::vector<float> x(D, 0.f);
    x[1] = 1.f;
    kvb::apply_rope(x.data(), D, 3, "half", theta);
    const double ang = 3 * std::pow(theta, -2.0 / D);
    for (int c = 0; c < D; ++c) {
      const double want = c == 1 ? std::cos(ang) : c == 5 ? std::sin(ang) : 0.0;
      EXPECT_NEAR(x[c], want, 1e-6) << "half, channel " << c;
    }
  }
  {  // interleaved: pair (2i, 2i + 1)
    std::vector<float> x(D, 0.f);
    x[2] = 1.f;
    kvb::apply_rope(x.data(), D, 3, "interleaved", theta);
    const double ang = 3 * std::pow(theta, -2.0 / D);
    for (int c = 0; c < D; ++c) {
      const double want = c == 2 ? std::cos(ang) : c == 3 ? std::sin(ang) : 0.0;
      EXPECT_NEAR(x[c], want, 1e-6) << "interleaved, channel " << c;
    }
  }
  {  // a negative position rotates back; "none" is the identity
    kvb::Rng rng(3);
    std::vector<float> x(D), y;
    for (auto& v : x) v = static_cast<float>(rng.normal());
    for (const char* style : {"half", "interleaved", "none"}) {
      y = x;
      kvb::apply_rope(y.data(), D, 1234, style, theta);
      if (std::string(style) != "none") {
        EXPECT_GT(std::abs(y[0] - x[0]) + std::abs(y[1] - x[1]), 1e-3) << style;
      }
      kvb::apply_rope(y.data(), D, -1234, style, theta);
      for (int c = 0; c < D; ++c) EXPECT_NEAR(y[c], x[c], 1e-5) << style << " channel " << c;
    }
  }
}

TEST(Generator, KeysAreRotatedByPosition) {
  // Un-rotating the stored keys by each token's position with the dump's own RoPE style recovers the
  // position-independent per-channel mean of the pre-RoPE keys on the fast-rotating pairs; the stored
  // keys (or keys un-rotated with the other pairing) average out there.
  for (const char* style : {"half", "interleaved"}) {
    kvb::GenOptions o = small_gen(12);
    o.dtype = kvb::DType::kFloat32;
    o.rope_style = style;
    o.rope_theta = 10000;
    o.tokens = 1024 + 8;
    o.shape.n_layers = 1;
    o.outlier_channels = 0;  // their huge static means would leak into any un-rotation, right or wrong
    o.key_scale_tilt = 0;    // likewise the larger means of the slow pairs (the wrong pairing's partners)
    SCOPED_TRACE(describe(o));
    const std::string p = scratch(fmt::format("rope_{}.h5", style));
    kvb::generate_dump(p, o);
    const kvb::KvDumpReader r(p);
    EXPECT_EQ(r.attrs().rope_style, style);
    const int D = o.shape.head_dim, P = D / 2;
    const int64_t C = o.tokens - o.queries;
    const auto kv = r.read_kv(0, 0, 0, C);
    const std::string other = std::string(style) == "half" ? "interleaved" : "half";
    // Channels of the fastest quarter of pairs under this style, except pair 0 (it turns by 1 rad per
    // token under both pairings, so a wrong pairing would still half-recover it).
    std::vector<int> chans;
    for (int i = 1; i < P / 4; ++i) {
      chans.push_back(std::string(style) == "half" ? i : 2 * i);
      chans.push_back(std::string(style) == "half" ? i + P : 2 * i + 1);
    }
    for (int g = 0; g < o.shape.n_kv_heads; ++g) {
      std::vector<double> m_stored(D, 0), m_right(D, 0), m_wrong(D, 0);
      std::vector<float> x(D);
      for (int64_t t = 1; t < C; ++t) {
        const float* k = kv.k_head(g) + t * D;
        for (int c = 0; c < D; ++c) m_stored[c] += k[c];
        std::copy(k, k + D, x.begin());
        kvb::apply_rope(x.data(), D, -t, style, o.rope_theta);
        for (int c = 0; c < D; ++c) m_right[c] += x[c];
        std::copy(k, k + D, x.begin());
        kvb::apply_rope(x.data(), D, -t, other, o.rope_theta);
        for (int c = 0; c < D; ++c) m_wrong[c] += x[c];
      }
      auto norm_on = [&](const std::vector<double>& m, const std::vector<int>& cs) {
        double s = 0;
        for (int c : cs) s += (m[c] / (C - 1)) * (m[c] / (C - 1));
        return std::sqrt(s);
      };
      const double stored = norm_on(m_stored, chans), right = norm_on(m_right, chans), wrong = norm_on(m_wrong, chans);
      SCOPED_TRACE(fmt::format("kv head {}: |mean| stored {:.3f}, un-rotated {:.3f}, wrong pairing {:.3f}", g, stored,
                               right, wrong));
      EXPECT_GT(right, 4 * stored);
      EXPECT_GT(right, 2.0 * wrong);
    }
  }
  kvb::GenOptions o = small_gen(12);
  o.rope_style = "none";
  const std::string p = scratch("rope_none.h5");
  kvb::generate_dump(p, o);
  EXPECT_EQ(kvb::KvDumpReader(p).attrs().rope_applied, 0);
}

TEST(Generator, LlamaLikeStatistics) {
  // docs/dump-format.md §3 on a llama-like config: head_dim 128, ~2k tokens, GQA 4:1, two layers.
  kvb::GenOptions o = kvb::gen_preset("llama3-8b");
  o.shape.n_layers = 2;
  o.tokens = 2048 + 32;
  o.queries = 32;
  o.seed = 42;
  SCOPED_TRACE(describe(o));
  const std::string p = scratch("llama_like.h5");
  kvb::generate_dump(p, o);
  const kvb::KvDumpReader r(p);
  const kvb::DumpStats st = kvb::inspect_dump(r, {32, 0});
  const double lnC = std::log(2048.0);
  double ent_min = 1e9, ent_max = 0;
  for (const auto& l : st.layers) {
    SCOPED_TRACE(fmt::format("layer {}: {}", l.layer, kvb::to_json(st)["layers"][static_cast<size_t>(l.layer)].dump()));
    // Sink: a per-head share of the attention in ~10-60% (jittered per query).
    EXPECT_GE(l.sink_mass.min, 0.06);
    EXPECT_LE(l.sink_mass.max, 0.7);
    EXPECT_GT(l.sink_mass.mean, 0.2);
    EXPECT_LT(l.sink_mass.mean, 0.5);
    EXPECT_GT(l.sink_mass.max - l.sink_mass.min, 0.2) << "heads should differ in their sink share";
    // Peaked to broad heads.
    ent_min = std::min(ent_min, l.entropy.min);
    ent_max = std::max(ent_max, l.entropy.max);
    EXPECT_GT(l.entropy.min, 0.5);
    EXPECT_LT(l.entropy.max, lnC);
    // Outlier channels 10-50x the median channel, in every KV head.
    ASSERT_FALSE(l.top_outliers.empty());
    EXPECT_GE(l.top_outliers[0].ratio, 10.0);
    EXPECT_LE(l.top_outliers[0].ratio, 60.0);
    EXPECT_GE(l.outlier_ratio.min, 8.0);
    // The sink key stands out; values have a per-token scale spread.
    EXPECT_GE(l.key_norm.ratio.min, 3.0);
    EXPECT_GE(l.value_norm.ratio.mean, 2.0);
    ASSERT_TRUE(l.ref_max_rel_err.has_value());
    EXPECT_LT(*l.ref_max_rel_err, 1e-6);
  }
  EXPECT_LT(ent_min, 3.0) << "some heads should be peaked";
  EXPECT_GT(ent_max, 5.0) << "some heads should be broad";

  // Outlier channels are consistent across tokens: a large mean relative to their RMS, and the same
  // channels in every sequence (they are "weights").
  const int D = 128;
  const auto kv0 = r.read_kv(0, 0, 1, 2048), kv1 = r.read_kv(1, 0, 1, 2048);
  for (int g = 0; g < 8; ++g) {
    auto top_channel = [&](const kvb::LayerKV& kv, double* mean_over_rms) {
      int best = 0;
      double best_rms = 0, best_mean = 0;
      for (int c = 0; c < D; ++c) {
        double s = 0, s2 = 0;
        for (int64_t t = 0; t < kv.tokens; ++t) {
          const double x = kv.k_head(g)[t * D + c];
          s += x;
          s2 += x * x;
        }
        const double rms = std::sqrt(s2 / kv.tokens);
        if (rms > best_rms) best = c, best_rms = rms, best_mean = s / kv.tokens;
      }
      *mean_over_rms = std::abs(best_mean) / best_rms;
      return best;
    };
    double m0 = 0, m1 = 0;
    const int c0 = top_channel(kv0, &m0), c1 = top_channel(kv1, &m1);
    EXPECT_GT(m0, 0.5) << "kv head " << g << " channel " << c0;
    EXPECT_GT(m1, 0.5) << "kv head " << g << " channel " << c1;
    // The same outlier channels (RMS > 5x the median channel) in both sequences.
    auto outliers = [&](const kvb::LayerKV& kv) {
      std::vector<double> rms(D);
      for (int c = 0; c < D; ++c) {
        for (int64_t t = 0; t < kv.tokens; ++t) rms[c] += kv.k_head(g)[t * D + c] * kv.k_head(g)[t * D + c];
        rms[c] = std::sqrt(rms[c] / kv.tokens);
      }
      std::vector<double> sorted = rms;
      std::nth_element(sorted.begin(), sorted.begin() + D / 2, sorted.end());
      std::vector<int> out;
      for (int c = 0; c < D; ++c)
        if (rms[c] > 5 * sorted[D / 2]) out.push_back(c);
      return out;
    };
    const auto o0 = outliers(kv0);
    EXPECT_EQ(o0.size(), 4u) << "kv head " << g;
    EXPECT_EQ(o0, outliers(kv1)) << "kv head " << g;
  }
  // The sink token's key norm is large and its value small.
  const auto kvs = r.read_kv(0, 1, 0, 2048);
  for (int g = 0; g < 8; ++g) {
    std::vector<double> kn, vn;
    for (int64_t t = 0; t < 2048; ++t) {
      double k2 = 0, v2 = 0;
      for (int j = 0; j < D; ++j) {
        k2 += kvs.k_head(g)[t * D + j] * kvs.k_head(g)[t * D + j];
        v2 += kvs.v_head(g)[t * D + j] * kvs.v_head(g)[t * D + j];
      }
      kn.push_back(std::sqrt(k2));
      vn.push_back(std::sqrt(v2));
    }
    std::vector<double> ks(kn.begin() + 1, kn.end()), vs(vn.begin() + 1, vn.end());
    std::nth_element(ks.begin(), ks.begin() + ks.size() / 2, ks.end());
    std::nth_element(vs.begin(), vs.begin() + vs.size() / 2, vs.end());
    EXPECT_GT(kn[0], 3.0 * ks[ks.size() / 2]) << "kv head " << g;
    EXPECT_LT(vn[0], 0.5 * vs[vs.size() / 2]) << "kv head " << g;
  }
}

TEST(Generator, SinkKeyIsSpreadAndAlignedLikeRealSinks) {
  // A real attention sink's logit comes from alignment with a component the queries share, on slowly
  // rotating pairs; its key may be large but no channel is extreme: no sink-key channel exceeds the
  // outlier channels' peaks, its energy is spread over many channels, and per-token quantization (int8,
  // 32-channel groups, asymmetric min-max) gets its logit about as right as any other token's.
  kvb::GenOptions o = kvb::gen_preset("llama3-8b");
  o.shape.n_layers = 1;
  o.tokens = 2048 + 16;
  o.queries = 16;
  o.sequences = 1;
  o.seed = 7;
  SCOPED_TRACE(describe(o));
  const std::string p = scratch("sink_spread.h5");
  kvb::generate_dump(p, o);
  const kvb::KvDumpReader r(p);
  const int D = o.shape.head_dim, gs = o.shape.group();
  const int64_t C = o.tokens - o.queries;
  const double scale = r.attrs().softmax_scale;
  const auto kv = r.read_kv(0, 0, 0, C);
  const auto lq = r.read_queries(0, 0, 0);
  // Per-token asymmetric min-max quantization in groups of 32 channels, as the int baseline does.
  auto qdq = [&](const float* x, std::vector<double>& out, int bits) {
    out.assign(x, x + D);
    for (int j0 = 0; j0 < D; j0 += 32) {
      const int n = std::min(32, D - j0);
      const double mn = *std::min_element(x + j0, x + j0 + n), mx = *std::max_element(x + j0, x + j0 + n);
      const double step = (mx - mn) / ((1 << bits) - 1);
      if (step > 0)
        for (int j = j0; j < j0 + n; ++j) out[j] = mn + std::floor((x[j] - mn) / step + 0.5) * step;
    }
  };
  for (int g = 0; g < o.shape.n_kv_heads; ++g) {
    const float* K = kv.k_head(g);
    std::vector<double> rms(D, 0.0);
    for (int64_t t = 1; t < C; ++t)
      for (int c = 0; c < D; ++c) rms[c] += static_cast<double>(K[t * D + c]) * K[t * D + c];
    for (double& x : rms) x = std::sqrt(x / (C - 1));
    std::vector<double> sorted = rms;
    std::nth_element(sorted.begin(), sorted.begin() + D / 2, sorted.end());
    const double med = sorted[D / 2];
    double outlier_peak = 0, sink_peak = 0, s2 = 0, s4 = 0;
    for (int c = 0; c < D; ++c) {
      if (rms[c] > 5 * med)
        for (int64_t t = 1; t < C; ++t) outlier_peak = std::max(outlier_peak, std::abs(static_cast<double>(K[t * D + c])));
      const double k0 = K[c];
      sink_peak = std::max(sink_peak, std::abs(k0));
      s2 += k0 * k0;
      s4 += k0 * k0 * k0 * k0;
    }
    const double participation = s2 * s2 / s4;  // ~ number of channels carrying the sink key's energy
    // Quantization error of each token's logit, RMS over the queries of this KV head's group.
    std::vector<double> kq(static_cast<size_t>(C) * D), tmp;
    for (int64_t t = 0; t < C; ++t) {
      qdq(K + t * D, tmp, 8);
      std::copy(tmp.begin(), tmp.end(), kq.begin() + t * D);
    }
    std::vector<double> err2(static_cast<size_t>(C), 0.0), s(static_cast<size_t>(C));
    int nq = 0, aligned = 0;
    for (int hh = 0; hh < gs; ++hh)
      for (int64_t i = 0; i < lq.n; ++i, ++nq) {
        const float* q = lq.query(g * gs + hh, i);
        for (int64_t t = 0; t < C; ++t) {
          double e = 0, st = 0;
          for (int c = 0; c < D; ++c) {
            e += (kq[t * D + c] - K[t * D + c]) * q[c];
            st += static_cast<double>(K[t * D + c]) * q[c];
          }
          err2[t] += (e * scale) * (e * scale);
          s[t] = st * scale;
        }
        // The sink's logit stands above every other token's for most queries.
        if (s[0] > *std::max_element(s.begin() + 1, s.end())) ++aligned;
      }
    double ord = 0;
    for (int64_t t = 1; t < C; ++t) ord += err2[t];
    const double sink_err = std::sqrt(err2[0] / nq), ord_err = std::sqrt(ord / ((C - 1) * nq));
    SCOPED_TRACE(fmt::format("kv head {}: sink peak {:.1f}, outlier peak {:.1f}, participation {:.1f} channels, "
                             "int8 logit error sink {:.4f} vs ordinary {:.4f}, sink logit on top for {}/{} queries",
                             g, sink_peak, outlier_peak, participation, sink_err, ord_err, aligned, nq));
    EXPECT_GT(outlier_peak, 0.0) << "no outlier channels found";
    EXPECT_LE(sink_peak, outlier_peak);
    EXPECT_GE(participation, 16.0) << "the sink key's norm piles up in a few channels";
    EXPECT_LE(sink_err, 3.0 * ord_err) << "per-token int8 gets the sink's logit much worse than other tokens'";
    EXPECT_GE(aligned, nq / 2);
  }
}

TEST(Generator, KnobsChangeTheStatistics) {
  kvb::GenOptions o = small_gen(8);
  o.outlier_channels = 0;
  o.sink_share_min = 0.01;
  o.sink_share_max = 0.02;
  SCOPED_TRACE(describe(o));
  const std::string p = scratch("knobs.h5");
  kvb::generate_dump(p, o);
  const kvb::KvDumpReader r(p);
  const auto st = kvb::inspect_dump(r, {0, 0});
  for (const auto& l : st.layers) {
    EXPECT_LT(l.top_outliers[0].ratio, 6.0) << "no outlier channels asked for";
    EXPECT_LT(l.sink_mass.max, 0.06) << "a tiny sink share asked for";
  }
}

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

/// Attention of q over keys K[0..n) (one KV head, [n][D]) in double: the sink's share and the entropy of the rest.
void sink_and_entropy(const float* K, int64_t n, int D, const float* q, double* sink, double* rest_entropy) {
  std::vector<double> s(static_cast<size_t>(n));
  double m = -INFINITY;
  for (int64_t t = 0; t < n; ++t) {
    double d = 0;
    for (int j = 0; j < D; ++j) d += static_cast<double>(q[j]) * K[t * D + j];
    s[t] = d / std::sqrt(static_cast<double>(D));
    m = std::max(m, s[t]);
  }
  double z = 0, zr = 0;
  for (int64_t t = 0; t < n; ++t) z += std::exp(s[t] - m), zr += t > 0 ? std::exp(s[t] - m) : 0.0;
  *sink = std::exp(s[0] - m) / z;
  double h = 0;
  for (int64_t t = 1; t < n; ++t) {
    const double p = std::exp(s[t] - m) / zr;
    if (p > 0) h -= p * std::log(p);
  }
  *rest_entropy = h;
}

}  // namespace

// --obs-window adds the queries of the last W prompt positions and changes nothing else: tokens, keys, values,
// queries and ref_out are bit-identical with W = 0, 8 and W > C (clamped to C, position 0 included), in float16
// and bfloat16 with GQA; the positions are C-W..C-1; a query at position p is the same whatever W is.
TEST(GeneratorObs, OtherTensorsBitIdenticalAndQueriesKeyedByPosition) {
  for (kvb::DType dt : {kvb::DType::kFloat16, kvb::DType::kBFloat16}) {
    kvb::GenOptions o = small_gen(13);
    o.dtype = dt;
    if (dt == kvb::DType::kBFloat16) o.shape = kvb::ModelShape{2, 8, 2, 32};
    o.tokens = 96 + 8;
    const int64_t C = o.tokens - o.queries;
    const int H = o.shape.n_heads, D = o.shape.head_dim;
    o.obs_window = 0;
    SCOPED_TRACE(describe(o));
    const auto none = kvb::generate_sequences(o);
    o.obs_window = 8;
    const auto w8 = kvb::generate_sequences(o);
    o.obs_window = 1000;
    const auto all = kvb::generate_sequences(o);
    ASSERT_EQ(none.size(), 2u);
    for (size_t s = 0; s < none.size(); ++s) {
      SCOPED_TRACE(testing::Message() << "sequence " << s);
      EXPECT_TRUE(none[s].obs_positions.empty());
      ASSERT_EQ(w8[s].obs_positions.size(), 8u);
      ASSERT_EQ(all[s].obs_positions.size(), static_cast<size_t>(C));
      for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(w8[s].obs_positions[i], C - 8 + i);
      for (int64_t i = 0; i < C; ++i) EXPECT_EQ(all[s].obs_positions[i], i);
      for (const auto* x : {&w8[s], &all[s]}) {
        EXPECT_EQ(x->tokens, none[s].tokens);
        EXPECT_EQ(x->query_positions, none[s].query_positions);
        EXPECT_EQ(x->context_len, C);
      }
      for (int l = 0; l < o.shape.n_layers; ++l) {
        SCOPED_TRACE(testing::Message() << "layer " << l);
        const auto &a = none[s].layers[l], &b = w8[s].layers[l], &c = all[s].layers[l];
        for (const auto* x : {&b, &c}) {
          EXPECT_TRUE(same_bits(x->keys, a.keys));
          EXPECT_TRUE(same_bits(x->values, a.values));
          EXPECT_TRUE(same_bits(x->queries, a.queries));
          EXPECT_TRUE(same_bits(x->ref_out, a.ref_out));
        }
        EXPECT_TRUE(a.obs_queries.empty());
        ASSERT_EQ(b.obs_queries.size(), static_cast<size_t>(H) * 8 * D);
        ASSERT_EQ(c.obs_queries.size(), static_cast<size_t>(H) * C * D);
        for (float v : c.obs_queries) ASSERT_TRUE(std::isfinite(v));
        for (int h = 0; h < H; ++h)
          for (int64_t i = 0; i < 8; ++i)
            ASSERT_EQ(std::memcmp(b.obs_queries.data() + (h * 8 + i) * D,
                                  c.obs_queries.data() + (h * C + C - 8 + i) * D, D * sizeof(float)),
                      0)
                << "head " << h << " position " << C - 8 + i;
        // rounded to the file dtype like the decode queries
        for (float v : b.obs_queries) ASSERT_EQ(v, dt == kvb::DType::kFloat16 ? kvb::round_f16(v)
                                                                                : kvb::bf16_to_f32(kvb::f32_to_bf16(v)));
      }
    }
  }
}

// The observation queries come from the decode queries' model: over the tokens they attend to (0..p), each head
// puts about the same share on the sink and spreads the rest with about the same entropy as its decode queries
// (per head, means over 32 queries of each kind: the sink share within 0.08, seen <= 0.03; the entropy within
// 20 %, seen <= 13 %), and
// they are not copies of one another or of the decode queries.
TEST(GeneratorObs, LikeTheDecodeQueries) {
  kvb::GenOptions o = small_gen(21);
  o.shape = kvb::ModelShape{2, 8, 2, 64};
  o.tokens = 384 + 32;
  o.queries = 32;
  o.obs_window = 32;
  o.sequences = 1;
  SCOPED_TRACE(describe(o));
  const auto seqs = kvb::generate_sequences(o);
  const int64_t C = o.tokens - o.queries, T = o.tokens, Q = o.queries, W = o.obs_window;
  const int H = o.shape.n_heads, D = o.shape.head_dim, gs = o.shape.group();
  for (int l = 0; l < o.shape.n_layers; ++l)
    for (int h = 0; h < H; ++h) {
      const auto& ly = seqs[0].layers[l];
      const float* K = ly.keys.data() + static_cast<size_t>(h / gs) * T * D;
      double ds = 0, de = 0, os = 0, oe = 0, sk, en;
      for (int64_t i = 0; i < Q; ++i) {
        sink_and_entropy(K, C, D, ly.queries.data() + (h * Q + i) * D, &sk, &en);
        ds += sk / Q, de += en / Q;
      }
      for (int64_t i = 0; i < W; ++i) {
        sink_and_entropy(K, C - W + i + 1, D, ly.obs_queries.data() + (h * W + i) * D, &sk, &en);
        os += sk / W, oe += en / W;
      }
      SCOPED_TRACE(testing::Message() << "layer " << l << " head " << h << ": sink share decode " << ds << " obs " << os
                                      << ", rest entropy decode " << de << " obs " << oe);
      EXPECT_NEAR(os, ds, 0.08);
      EXPECT_NEAR(oe, de, 0.2 * de);
      const float* a = ly.obs_queries.data() + (h * W + W - 1) * D;
      const float* b = ly.obs_queries.data() + (h * W + W - 2) * D;
      const float* q0 = ly.queries.data() + (h * Q) * D;
      EXPECT_NE(std::memcmp(a, b, D * sizeof(float)), 0);
      EXPECT_NE(std::memcmp(a, q0, D * sizeof(float)), 0);
    }
}

// Through the file: generate_dump writes the observation queries of generate_sequences (already rounded to the
// dtype, so stored exactly) and the reader gives them back with their positions; W = 0 writes none.
TEST(GeneratorObs, WrittenAndReadBack) {
  for (kvb::DType dt : {kvb::DType::kFloat16, kvb::DType::kBFloat16}) {
    kvb::GenOptions o = small_gen(17);
    o.dtype = dt;
    o.obs_window = 12;
    SCOPED_TRACE(describe(o));
    const std::string p = scratch(fmt::format("obs_{}.h5", kvb::to_string(dt)));
    kvb::generate_dump(p, o);
    const auto mem = kvb::generate_sequences(o);
    const kvb::KvDumpReader r(p);
    const int64_t C = o.tokens - o.queries;
    for (size_t s = 0; s < mem.size(); ++s) {
      const auto& si = r.sequences()[s];
      ASSERT_TRUE(si.has_obs());
      EXPECT_EQ(si.obs_positions, mem[s].obs_positions);
      EXPECT_EQ(si.obs_positions.front(), C - 12);
      for (int l = 0; l < o.shape.n_layers; ++l) {
        const kvb::ObsQueries ob = r.read_obs(s, l, 0);
        ASSERT_EQ(ob.n, 12);
        EXPECT_EQ(ob.heads, o.shape.n_heads);
        EXPECT_EQ(ob.positions, mem[s].obs_positions);
        EXPECT_TRUE(same_bits(ob.q, mem[s].layers[l].obs_queries)) << "seq " << s << " layer " << l;
        EXPECT_TRUE(same_bits(r.read_queries(s, l, 0).q, mem[s].layers[l].queries));
      }
    }
    o.obs_window = 0;
    kvb::generate_dump(p, o);
    const kvb::KvDumpReader r0(p);
    EXPECT_FALSE(r0.sequences()[0].has_obs());
    EXPECT_TRUE(r0.read_obs(0, 0, 0).empty());
  }
}
