// KVQuant (codecs/kvquant): RoPE un-rotation exact to float rounding for both styles (kernels/cpu/rope.h), CPU vs
// reference with RoPE and a sliding-window offset, pre-RoPE beating post-RoPE keys on rotated outlier channels,
// outlier fractions and their counted bytes, the percentile and k-means definitions, Q-Norm's moments, and the
// fisher weighting's need for observation queries. Every random test is seeded and names its configuration.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "codec_test_util.h"
#include "codecs/kvquant/kvquant_codec.h"
#include "kernels/cpu/rope.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"

namespace kvb::test {
namespace {

using codecs::KvquantParams;
using kernels::rope::Style;
constexpr double kU = 0x1p-24;

/// L with RoPE applied as a model caches it: key row t at position pos0 + t, decode query i at pos0 + C + i,
/// observation queries at their cache positions.
void apply_rope(SynthLayer& L, Style st, double theta, int64_t pos0) {
  const int d = L.shape.head_dim;
  L.kv.pos0 = pos0;
  for (int g = 0; g < L.kv.kv_heads; ++g)
    for (int64_t t = 0; t < L.kv.tokens; ++t) kernels::rope::apply(L.kv.k_head(g) + t * d, d, pos0 + t, st, theta);
  for (int h = 0; h < L.shape.n_heads; ++h)
    for (int i = 0; i < L.nq; ++i)
      kernels::rope::apply(L.q.data() + (static_cast<size_t>(h) * L.nq + i) * d, d, pos0 + L.kv.tokens + i, st, theta);
  auto& ob = L.kv.obs;
  for (int h = 0; h < ob.heads; ++h)
    for (int64_t i = 0; i < ob.n; ++i)
      kernels::rope::apply(ob.q.data() + (static_cast<size_t>(h) * ob.n + i) * d, d, pos0 + ob.positions[i], st, theta);
}

CodecContext rope_ctx(const SynthLayer& L, Style st, double theta) {
  CodecContext c = L.ctx();
  c.rope = RopeInfo{st != Style::kNone, kernels::rope::name(st), theta};
  return c;
}

std::unique_ptr<Codec> fitted(const Json& params, const SynthLayer& calib, const CodecContext& ctx, bool ref = false) {
  const CodecEntry& e = registry().at("kvquant");
  const Json p = resolve_params(e.info.params, params, "kvquant");
  auto c = ref ? e.make_ref(p, calib.shape) : e.make_cpu(p, calib.shape);
  c->fit(0, {&calib.kv}, ctx);
  return c;
}

TEST(KvquantRope, UnrotationInvertsRopeToFloatRounding) {
  for (Style st : {Style::kHalf, Style::kInterleaved})
    for (int d : {8, 96, 128, 7}) {
      Rng rng(derive_seed(31, {static_cast<uint64_t>(d), static_cast<uint64_t>(st)}));
      const int64_t pos0 = 30000, n = 2769;
      const kernels::rope::Table table(st, d, 500000.0, pos0, n);
      const kernels::rope::BlockTable blocks(st, d, 500000.0, pos0, n);
      std::vector<float> c(static_cast<size_t>(d / 2)), s(c.size());
      double worst = 0, worst_cs = 0;
      for (int64_t r = 0; r < n; r += 7) {
        std::vector<float> x(static_cast<size_t>(d)), y;
        double mx = 0;
        for (auto& v : x) mx = std::max(mx, static_cast<double>(std::fabs(v = static_cast<float>(10 * rng.normal()))));
        y = x;
        kernels::rope::apply(y.data(), d, pos0 + r, st, 500000.0);  // what the dump holds
        table.unapply(y.data(), r);
        for (int j = 0; j < d; ++j) worst = std::max(worst, std::fabs(y[j] - x[j]) / (mx * kU));
        blocks.cos_sin(r, c.data(), s.data());
        for (int i = 0; i < d / 2; ++i) {
          double ce, se;
          kernels::rope::angle_cos_sin(pos0 + r, i, d, 500000.0, &ce, &se);
          worst_cs = std::max({worst_cs, std::fabs(c[i] - ce) / kU, std::fabs(s[i] - se) / kU});
        }
      }
      SCOPED_TRACE(fmt::format("style {} d {}", kernels::rope::name(st), d));
      // apply then unapply: two float rotations, each a few roundings of |x| per element.
      EXPECT_LE(worst, 8.0) << "max |R^T R x − x| in ulps of max|x|";
      // The two-level table: two roundings of cos/sin and one complex product, ≤ 4 ulps of 1.
      EXPECT_LE(worst_cs, 4.0) << "block-table cos/sin vs float64, ulps";
    }
}

TEST(Kvquant, CpuMatchesRefWithRopeAndOffsetPositions) {
  int checked = 0;
  for (Style st : {Style::kHalf, Style::kInterleaved})
    for (int d : {64, 96, 7})
      for (int64_t C : {1, 70, 300})
        for (int64_t pos0 : {0, 1000}) {
          SynthOptions o;
          o.tokens = C;
          o.head_dim = d;
          o.group = 2;
          o.seed = derive_seed(77, {static_cast<uint64_t>(d), static_cast<uint64_t>(C), static_cast<uint64_t>(pos0)});
          SynthLayer L = make_layer(o);
          o.seed += 1;
          o.tokens = 200;
          SynthLayer calib = make_layer(o);
          apply_rope(L, st, 10000, pos0);
          apply_rope(calib, st, 10000, 0);
          const CodecContext ctx = rope_ctx(L, st, 10000);
          for (const Json& params : {Json::object(), Json{{"k_bits", 2}, {"v_bits", 4}, {"qnorm", true}},
                                     Json{{"outliers", 0.0}, {"kmeans", "plain"}}}) {
            SCOPED_TRACE(fmt::format("style {} d {} C {} pos0 {} params {}", kernels::rope::name(st), d, C, pos0,
                                     params.dump()));
            auto cpu = fitted(params, calib, ctx);
            auto ref = fitted(params, calib, ctx, true);
            ref->adopt(0, cpu->trained(0));
            const auto ec = cpu->encode(0, L.kv, nullptr, ctx), er = ref->encode(0, L.kv, nullptr, ctx);
            const Storage sc = ec->storage(), sr = er->storage();
            ASSERT_EQ(sc.items.size(), sr.items.size());
            for (size_t i = 0; i < sc.items.size(); ++i) EXPECT_EQ(sc.items[i].bytes, sr.items[i].bytes) << sc.items[i].name;
            Scratch a, b;
            std::vector<float> s1(C), s2(C), o1(d), o2(d);
            double kmax = 0;
            for (float x : L.kv.k) kmax = std::max(kmax, static_cast<double>(std::fabs(x)));
            for (int h = 0; h < L.shape.n_heads; ++h)
              for (int i = 0; i < L.nq; ++i) {
                const float* q = L.query(h, i);
                ASSERT_TRUE(ec->scores(h / 2, q, s1.data(), a));
                ASSERT_TRUE(er->scores(h / 2, q, s2.data(), b));
                double q1 = 0;
                for (int j = 0; j < d; ++j) q1 += std::fabs(q[j]);
                // As the registry test's bound, plus the RoPE re-application from the two-level table (≤ 4-ulp
                // cos/sin, one rotation: ≤ ~8 ulps of |k̂| per element) against the reference's float64 rotation.
                const double tol = (d + 16 + 8) * kU * L.attn.softmax_scale * q1 * (1.01 * kmax + 1e-3);
                for (int64_t t = 0; t < C; ++t) ASSERT_LE(std::fabs(s1[t] - s2[t]), tol) << "token " << t;
                ec->attend(h / 2, q, o1.data(), a);
                er->attend(h / 2, q, o2.data(), b);
                EXPECT_LE(rel_l2(o1.data(), o2.data(), d), 1e-4);
                ++checked;
              }
          }
        }
  EXPECT_GT(checked, 100);
}

/// Mean ‖ŝ − s‖/‖s‖ of the codec's scores over every decode query of L.
double score_error(const EncodedLayer& enc, const SynthLayer& L) {
  Scratch sc;
  const int64_t C = L.kv.tokens;
  const int d = L.shape.head_dim;
  std::vector<float> s(C);
  double sum = 0;
  int n = 0;
  for (int h = 0; h < L.shape.n_heads; ++h)
    for (int i = 0; i < L.nq; ++i) {
      const int g = h / L.shape.group();
      const float* q = L.query(h, i);
      enc.scores(g, q, s.data(), sc);
      double e = 0, x = 0;
      for (int64_t t = 0; t < C; ++t) {
        double ex = 0;
        for (int j = 0; j < d; ++j) ex += static_cast<double>(q[j]) * L.kv.k_head(g)[t * d + j];
        ex *= L.attn.softmax_scale;
        e += (s[t] - ex) * (s[t] - ex);
        x += ex * ex;
      }
      sum += std::sqrt(e / x);
      ++n;
    }
  return sum / n;
}

TEST(Kvquant, PreRopeBeatsPostRopeOnRotatedOutlierChannels) {
  // Outlier channels with a large token-consistent mean (as real keys have): after RoPE their pair rotates with
  // the position, so per channel the post-RoPE values spread over ±|μ| and a per-channel quantizer loses
  // resolution; before RoPE the channel is tight (the paper's §3.2).
  SynthOptions o;
  o.tokens = 2048;
  o.head_dim = 128;
  o.kv_heads = 2;
  o.group = 2;
  o.queries = 4;
  o.outliers = 6;
  o.seed = 4242;
  SynthLayer L = make_layer(o);
  o.seed = 4243;
  SynthLayer calib = make_layer(o);
  apply_rope(L, Style::kHalf, 10000, 0);
  apply_rope(calib, Style::kHalf, 10000, 0);
  const CodecContext ctx = rope_ctx(L, Style::kHalf, 10000);
  for (int b : {2, 3, 4}) {
    auto pre = fitted(Json{{"k_bits", b}, {"v_bits", b}}, calib, ctx);
    auto post = fitted(Json{{"k_bits", b}, {"v_bits", b}, {"pre_rope", false}}, calib, ctx);
    const double e_pre = score_error(*pre->encode(0, L.kv, nullptr, ctx), L);
    const double e_post = score_error(*post->encode(0, L.kv, nullptr, ctx), L);
    EXPECT_LT(e_pre, e_post) << fmt::format("nuq{}: score error pre-RoPE {:.4f} vs post-RoPE {:.4f}", b, e_pre, e_post);
    std::printf("[ kvquant ] nuq%d-1%% score_rel_err: pre-RoPE %.4f, post-RoPE %.4f\n", b, e_pre, e_post);
  }
}

TEST(Kvquant, OutlierFractionsAreWhatTheRulesGiveAndAreCounted) {
  EXPECT_EQ(codecs::kvquant::values_outliers_per_row(128, 0.01), 2);
  EXPECT_EQ(codecs::kvquant::values_outliers_per_row(128, 0.0), 0);
  EXPECT_EQ(codecs::kvquant::values_outliers_per_row(128, 0.1), 14);  // 7 per side: ceil(0.95·127) = 121
  // One synthetic "model" (make_layer's channel statistics follow its seed): its first 4096 tokens calibrate,
  // the next 4096 are evaluated.
  SynthOptions o;
  o.tokens = 8192;
  o.head_dim = 128;
  o.seed = 99;
  const SynthLayer all = make_layer(o);
  SynthLayer calib = all, L = all;
  const int64_t half = 4096;
  for (SynthLayer* x : {&calib, &L}) {
    const int64_t t0 = x == &calib ? 0 : half;
    x->kv.tokens = half;
    x->kv.obs = ObsQueries{};
    for (auto* dst : {&x->kv.k, &x->kv.v}) {
      const auto& src = dst == &x->kv.k ? all.kv.k : all.kv.v;
      dst->assign(static_cast<size_t>(all.kv.kv_heads) * half * 128, 0.f);
      for (int g = 0; g < all.kv.kv_heads; ++g)
        std::copy_n(&src[(static_cast<size_t>(g) * o.tokens + t0) * 128], half * 128,
                    &(*dst)[static_cast<size_t>(g) * half * 128]);
    }
  }
  for (double f : {0.01, 0.05}) {
    SCOPED_TRACE(fmt::format("f = {}", f));
    auto c = fitted(Json{{"outliers", f}, {"kmeans", "plain"}}, calib, calib.ctx());
    const auto enc = c->encode(0, L.kv, nullptr, L.ctx());
    uint64_t k_nnz = 0, v_nnz = 0;
    for (const auto& it : enc->storage().items) {
      if (it.name == "k.sp_value") k_nnz = it.bytes / 2;
      if (it.name == "v.sp_value") v_nnz = it.bytes / 2;
    }
    const double rows = static_cast<double>(L.kv.kv_heads) * L.kv.tokens;
    // Keys: thresholds calibrated on another sequence of the same distribution, so about f of the elements.
    const double kf = static_cast<double>(k_nnz) / (rows * 128);
    EXPECT_GT(kf, 0.5 * f);
    EXPECT_LT(kf, 2.0 * f);
    // Values: exactly the per-row rule (the synthetic values are distinct within a row).
    EXPECT_EQ(v_nnz, static_cast<uint64_t>(rows) * codecs::kvquant::values_outliers_per_row(128, f));
  }
}

TEST(KvquantMath, PercentileIsNumpysLinearInterpolation) {
  std::vector<float> x{4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(codecs::kvquant::percentile(x.data(), 4, 0.25), 1.75);  // numpy.percentile([1,2,3,4], 25)
  EXPECT_DOUBLE_EQ(codecs::kvquant::percentile(x.data(), 4, 1.0), 4.0);
  EXPECT_DOUBLE_EQ(codecs::kvquant::percentile(x.data(), 4, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(codecs::kvquant::percentile(x.data(), 4, 0.995), 3.985);
  std::vector<float> one{7};
  EXPECT_DOUBLE_EQ(codecs::kvquant::percentile(one.data(), 1, 0.3), 7.0);
}

TEST(KvquantMath, KmeansFindsClustersAndHonoursWeights) {
  std::vector<float> y, w;
  Rng rng(5);
  for (int i = 0; i < 200; ++i) y.push_back(static_cast<float>((i % 2 ? 0.5 : -1.0) + 0.01 * rng.normal()));
  std::vector<float> L;
  codecs::kvquant::kmeans_1d(y.data(), nullptr, static_cast<int64_t>(y.size()), 2, &L);
  EXPECT_NEAR(L[0], -1.0, 0.01);
  EXPECT_NEAR(L[1], 0.5, 0.01);
  const std::vector<float> p{0, 1, 2}, pw{1, 1, 4};
  codecs::kvquant::kmeans_1d(p.data(), pw.data(), 3, 1, &L);
  EXPECT_FLOAT_EQ(L[0], 1.5f);  // (0 + 1 + 8) / 6
  // Fewer distinct points than levels: the levels stay sorted and every point is represented exactly.
  codecs::kvquant::kmeans_1d(p.data(), nullptr, 3, 8, &L);
  const auto b = codecs::kvquant::bounds_of(L);
  for (float v : p) EXPECT_EQ(L[codecs::kvquant::nearest(b.data(), 8, v)], v);
  EXPECT_TRUE(std::is_sorted(L.begin(), L.end()));
}

TEST(Kvquant, QNormRestoresTheCalibrationMoments) {
  SynthOptions o;
  o.tokens = 1024;
  o.head_dim = 64;
  o.seed = 61;
  const SynthLayer calib = make_layer(o);
  auto c = fitted(Json{{"k_bits", 2}, {"v_bits", 2}, {"qnorm", true}}, calib, calib.ctx());
  const auto s = std::dynamic_pointer_cast<const codecs::kvquant::Trained>(c->trained(0));
  ASSERT_TRUE(s);
  double m1 = 0, q1 = 0, m2 = 0, q2 = 0, a1 = 0, a2 = 0;
  int64_t n = 0;
  for (int g = 0; g < calib.kv.kv_heads; ++g)
    for (int64_t t = 0; t < calib.kv.tokens; ++t)
      for (int j = 0; j < 64; ++j) {
        const float off = s->k_norm[(g * 64 + j) * 2], rng = s->k_norm[(g * 64 + j) * 2 + 1];
        const float y = (calib.kv.k_head(g)[t * 64 + j] - off) / rng;
        if (y > 1.f || y < -1.f) continue;
        const double a = s->k_levels[codecs::kvquant::nearest(s->k_bounds.data(), 4, y)];
        const double raw = s->k_assign[codecs::kvquant::nearest(s->k_bounds.data(), 4, y)];
        m1 += y, q1 += double(y) * y, m2 += a, q2 += a * a, a1 += raw, a2 += raw * raw;
        ++n;
      }
  auto sd = [&](double m, double q) { return std::sqrt(q / n - (m / n) * (m / n)); };
  EXPECT_NEAR(m2 / n, m1 / n, 1e-4);
  EXPECT_NEAR(sd(m2, q2), sd(m1, q1), 1e-4);
  EXPECT_GT(std::fabs(sd(a1, a2) - sd(m1, q1)), 1e-3) << "the assignment levels alone do not already match";
}

TEST(Kvquant, FisherWeightingNeedsObservationQueries) {
  SynthOptions o;
  o.obs_window = 0;
  const SynthLayer calib = make_layer(o);
  const CodecEntry& e = registry().at("kvquant");
  auto c = e.make_cpu(resolve_params(e.info.params, Json::object(), "kvquant"), calib.shape);
  try {
    c->fit(0, {&calib.kv}, calib.ctx());
    FAIL() << "fisher k-means without observation queries must be Unsupported";
  } catch (const Unsupported& ex) {
    EXPECT_NE(std::string(ex.what()).find("obs"), std::string::npos) << ex.what();
    EXPECT_NE(std::string(ex.what()).find("plain"), std::string::npos) << ex.what();
  }
  auto plain = e.make_cpu(resolve_params(e.info.params, Json{{"kmeans", "plain"}}, "kvquant"), calib.shape);
  plain->fit(0, {&calib.kv}, calib.ctx());
  EXPECT_NE(plain->encode(0, calib.kv, nullptr, calib.ctx()), nullptr);
}

TEST(Kvquant, EncodeBeforeFitIsAUsageError) {
  const SynthLayer L = make_layer(SynthOptions{});
  const CodecEntry& e = registry().at("kvquant");
  auto c = e.make_cpu(resolve_params(e.info.params, Json::object(), "kvquant"), L.shape);
  EXPECT_THROW(c->encode(0, L.kv, nullptr, L.ctx()), UsageError);
}

}  // namespace
}  // namespace kvb::test
