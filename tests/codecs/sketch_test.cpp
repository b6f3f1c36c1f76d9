// The one-bit sketch codecs (codecs/sketch: qjl, h1b): estimator statistics, bit-exact popcount scores,
// storage against the paper's accounting, fidelity against sketch size, the CPU bit kernels against naive
// loops, parameter checks and the temperature fit. (cpu-vs-ref on odd shapes runs in registry_codecs_test.)
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "codec_test_util.h"
#include "kernels/cpu/row_kernels.h"
#include "codecs/sketch/sketch_cpu.h"
#include "codecs/sketch/sketch_math.h"
#include "kvb/core/error.h"
#include "kvb/core/half.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"

namespace kvb::test {
namespace {

constexpr double kU = 0x1p-24;
constexpr double kPi = 3.14159265358979323846;

/// Restores the SIMD switch on scope exit.
struct SimdGuard {
  ~SimdGuard() { kernels::set_simd_kernels(true); }
};

std::unique_ptr<Codec> make(const std::string& codec, const Json& params, int head_dim) {
  const CodecEntry& e = registry().at(codec);
  return e.make_cpu(resolve_params(e.info.params, params, codec), ModelShape{1, 1, 1, head_dim});
}

/// One KV head of `keys` [n][d] (values random), with softmax_scale 1 and the given seed.
struct OneHead {
  LayerKV kv;
  CodecContext ctx;
  OneHead(const std::vector<float>& keys, int n, int d, uint64_t seed) {
    kv.kv_heads = 1;
    kv.tokens = n;
    kv.head_dim = d;
    kv.k = keys;
    kv.v.resize(keys.size());
    Rng r(seed ^ 0x5555);
    for (auto& x : kv.v) x = static_cast<float>(r.normal());
    ctx.shape = ModelShape{1, 1, 1, d};
    ctx.attn.softmax_scale = 1.f;
    ctx.seed = seed;
  }
};

// ---- CPU bit kernels --------------------------------------------------------------------------------------

TEST(SketchKernels, MaskedSumsAndHammingMatchNaiveLoops) {
  SimdGuard guard;
  Rng rng(42);
  for (bool simd : {true, false}) {
    kernels::set_simd_kernels(simd);
    for (int nbits : {8, 16, 24, 64, 136, 256, 520, 1024}) {
      SCOPED_TRACE(fmt::format("kernels {} n {}", codecs::sk::sketch_kernels_name(), nbits));
      const int nb = nbits / 8, rows = 37;
      std::vector<uint8_t> bits(static_cast<size_t>(rows * nb)), q(static_cast<size_t>(nb));
      for (auto& b : bits) b = static_cast<uint8_t>(rng.next_u64());
      for (auto& b : q) b = static_cast<uint8_t>(rng.next_u64());
      std::vector<float> x(static_cast<size_t>(nbits));
      for (auto& v : x) v = static_cast<float>(rng.normal());
      std::vector<float> ms(rows);
      std::vector<int32_t> ham(rows);
      codecs::sk::masked_sums(bits.data(), nb, rows, x.data(), nbits, ms.data());
      codecs::sk::hamming_many(q.data(), bits.data(), nb, rows, ham.data());
      for (int r = 0; r < rows; ++r) {
        double want = 0, mag = 0;
        int h = 0;
        for (int i = 0; i < nbits; ++i) {
          const bool set = (bits[r * nb + i / 8] >> (i % 8)) & 1;
          if (set) want += x[i];
          mag += std::fabs(x[i]);
          h += set != static_cast<bool>((q[i / 8] >> (i % 8)) & 1);
        }
        // Tolerance: a float32 sum of nbits terms in any order errs by at most nbits·u·Σ|x| (Higham).
        EXPECT_NEAR(ms[r], want, nbits * kU * mag) << "row " << r;
        EXPECT_EQ(ham[r], h) << "row " << r;
        EXPECT_EQ(codecs::sk::hamming(q.data(), bits.data() + r * nb, nb), h);
        EXPECT_NEAR(codecs::sk::masked_sum(bits.data() + r * nb, x.data(), nbits), want, nbits * kU * mag);
      }
    }
  }
}

TEST(SketchKernels, OrthogonalProjectionRowsAndPrefixes) {
  for (int d : {1, 7, 32, 128}) {
    const int rows = 2 * d + 8;
    SCOPED_TRACE(fmt::format("d {} rows {}", d, rows));
    const auto P = codecs::sk::make_projection(99, rows, d, true);
    for (int i = 0; i < rows; ++i) {
      EXPECT_NEAR(P.row_norm[i], std::sqrt(static_cast<double>(d)), 1e-9 * d);
      // Rows of one block of d are mutually orthogonal (tolerance: float64 Gram-Schmidt, ~1e-13 relative).
      for (int j = (i / d) * d; j < i; ++j) {
        double dot = 0;
        for (int c = 0; c < d; ++c) dot += P.row64(i)[c] * P.row64(j)[c];
        EXPECT_NEAR(dot, 0.0, 1e-9 * d) << i << " " << j;
      }
    }
    // A smaller request is the prefix of a larger one (the cache serves it from the larger matrix).
    const auto Q = codecs::sk::make_projection(99, d, d, true);
    for (size_t i = 0; i < Q.s64.size(); ++i) ASSERT_EQ(Q.s64[i], P.s64[i]);
  }
}

// ---- QJL estimator ---------------------------------------------------------------------------------------

/// E|u_1| for u uniform on the unit sphere of R^d, times sqrt(π/2)·sqrt(d): the factor by which QJL with
/// orthogonalized rows (every row of norm exactly sqrt(d)) scales <q, k> in expectation (docs/codecs.md §7.2 note:
/// 1 + O(1/d); with Gaussian rows it would be exactly 1).
double orth_factor(int d) {
  const double e_abs = std::exp(std::lgamma(d / 2.0) - std::lgamma((d + 1) / 2.0)) / std::sqrt(kPi);
  return std::sqrt(kPi / 2) * std::sqrt(static_cast<double>(d)) * e_abs;
}

TEST(Qjl, EstimatorIsUnbiasedAndItsVarianceRespectsTheBound) {
  // 32 unit keys (fp16 stores ‖k‖ = 1 exactly), no outliers, residual 32: every key is in the quantized region.
  const int d = 32, n = 32, m = 64, N = 3000;
  Rng rng(7);
  std::vector<float> keys(static_cast<size_t>(n * d)), q(d);
  for (int t = 0; t < n; ++t) {
    double nn = 0;
    for (int j = 0; j < d; ++j) nn += std::pow(keys[t * d + j] = static_cast<float>(rng.normal()), 2);
    for (int j = 0; j < d; ++j) keys[t * d + j] = static_cast<float>(keys[t * d + j] / std::sqrt(nn));
  }
  double qn = 0;
  for (auto& x : q) qn += std::pow(x = static_cast<float>(2 * rng.normal()), 2);
  const Json params{{"m", m}, {"outliers", 0}, {"residual", 32}, {"group_size", 32}, {"value_group", 32}};
  const auto codec = make("qjl", params, d);
  std::vector<double> sum(n, 0), sum2(n, 0), exact(n, 0);
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j) exact[t] += static_cast<double>(q[j]) * keys[t * d + j];
  const double c = orth_factor(d);
  std::vector<float> s(n);
  Scratch scratch;
  for (int seed = 0; seed < N; ++seed) {
    OneHead L(keys, n, d, 1000 + seed);
    const auto enc = codec->encode(0, L.kv, nullptr, L.ctx);
    ASSERT_TRUE(enc->scores(0, q.data(), s.data(), scratch));
    for (int t = 0; t < n; ++t) {
      const double e = s[t] / c - exact[t];  // error of the factor-corrected estimate
      sum[t] += e;
      sum2[t] += e * e;
    }
  }
  // Var ≤ π/(2m)·‖q‖²‖k‖² (Gaussian rows; orthogonal rows only lower it). The sample variance of N draws has
  // relative standard error sqrt(2/(N-1)) (≈ 0.026): allow 3 of them. Corrected estimates have variance /c².
  const double bound = kPi / (2.0 * m) * qn / (c * c);
  int worst = 0;
  double worst_z = 0;
  for (int t = 0; t < n; ++t) {
    const double mean = sum[t] / N;
    const double var = (sum2[t] - N * mean * mean) / (N - 1);
    const double se = std::sqrt(var / N);
    SCOPED_TRACE(fmt::format("key {} <q,k> = {:.4f} mean error {:.3g} se {:.3g} var {:.4g} bound {:.4g}", t,
                             exact[t], mean, se, var, bound));
    EXPECT_LE(std::fabs(mean), 3 * se);
    EXPECT_LE(var, bound * (1 + 3 * std::sqrt(2.0 / (N - 1))));
    EXPECT_GT(var, 0.0);
    if (std::fabs(mean) / se > worst_z) worst_z = std::fabs(mean) / se, worst = t;
  }
  std::printf("[ qjl ] d %d m %d, %d seeds: worst |mean error| / se = %.2f (key %d); orthogonal-row factor %.5f\n", d,
              m, N, worst_z, worst, c);
}

TEST(Qjl, OutlierSketchAddsBothParts) {
  // With outliers the estimate splits into the inlier and outlier sketches; a key that lives only on its
  // outlier channels must be scored from the outlier sketch alone (and vice versa), exactly as the two-term
  // formula: here checked through an extreme key with one huge channel and a query on that channel.
  const int d = 64, n = 32;
  Rng rng(3);
  std::vector<float> keys(static_cast<size_t>(n * d));
  for (auto& x : keys) x = static_cast<float>(0.1 * rng.normal());
  for (int t = 0; t < n; ++t) keys[t * d + 5] = 30.f + static_cast<float>(rng.normal());  // channel 5 dominates
  std::vector<float> q(d, 0.f);
  q[5] = 1.f;  // <q, k_t> = k_t[5], carried entirely by the outlier part
  const auto codec = make("qjl", Json{{"m", 64}, {"m_outlier", 64}, {"outliers", 1}, {"residual", 32}}, d);
  double err = 0, mag = 0;
  Scratch scratch;
  std::vector<float> s(n);
  const int N = 200;
  for (int seed = 0; seed < N; ++seed) {
    OneHead L(keys, n, d, 50 + seed);
    const auto enc = codec->encode(0, L.kv, nullptr, L.ctx);
    const auto bufs = enc->buffers();
    for (const auto& b : bufs)
      if (b.name == "k.outlier_idx") {
        ASSERT_EQ(b.bytes.size(), 1u);
        EXPECT_EQ(b.bytes[0], 5) << "the dominant channel is the group's outlier";
      }
    enc->scores(0, q.data(), s.data(), scratch);
    for (int t = 0; t < n; ++t) err += s[t] / orth_factor(d) - keys[t * d + 5], mag += keys[t * d + 5];
  }
  // q lives on the outlier channel only, so q_in_sk = S q − q_out_sk = 0 exactly and the score is the outlier
  // term alone: sqrt(π/2)/m_o·|k_5|·q_5·Σ_i |S_i5| (σ_i = sign(S_i5·k_5)). Column 5 of an orthogonal block
  // scaled to sqrt(d) is uniform on the sphere of radius sqrt(d), so E = orth_factor(d)·<q, k>. The per-seed
  // spread of Σ_i |S_i5| / m is ~1% (64 rows); over 200 seeds the mean relative error is ~0.1%, plus fp16
  // rounding of ‖k_out‖ (2^-11): 0.01 is a loose bound, while dropping the outlier term (score 0) or
  // scoring it with the inlier sketch's m would miss by 100% / 0%-with-wrong-sign-structure.
  EXPECT_NEAR(err / mag, 0.0, 0.01);
}

// ---- H1B -----------------------------------------------------------------------------------------------

TEST(H1b, AngleEstimatorExpectationMatchesCosine) {
  // i.i.d. Gaussian rows: each bit of the two sketches disagrees independently with probability θ/π, so
  // h ~ Binomial(b, θ/π): E[h/b] = θ/π exactly and E[cos(π h/b)] = Σ_h Binom(h)·cos(π h/b) (→ cos θ as b grows).
  const int d = 64, b = 256, N = 600;
  Rng rng(11);
  std::vector<float> q(d), u(d);
  double qn = 0, un = 0, qu = 0;
  for (auto& x : q) qn += std::pow(x = static_cast<float>(rng.normal()), 2);
  for (auto& x : u) x = static_cast<float>(rng.normal());
  for (int j = 0; j < d; ++j) qu += static_cast<double>(q[j]) * u[j];
  for (int j = 0; j < d; ++j) u[j] = static_cast<float>(u[j] - qu / qn * q[j]);  // u ⟂ q
  for (float x : u) un += static_cast<double>(x) * x;
  const std::vector<double> angles{0.2, 0.7, 1.2, 1.6, 2.3, 2.9};
  const int n = static_cast<int>(angles.size());
  std::vector<float> keys(static_cast<size_t>(n * d));
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j)
      keys[t * d + j] = static_cast<float>(std::cos(angles[t]) * q[j] / std::sqrt(qn) + std::sin(angles[t]) * u[j] / std::sqrt(un));
  const auto temp = make("h1b", Json{{"variant", "temp"}, {"temperature", 1.0}, {"sketch_bits", b}}, d);
  const auto angle = make("h1b", Json{{"variant", "angle"}, {"sketch_bits", b}}, d);
  std::vector<double> sh(n, 0), sh2(n, 0), sc(n, 0), sc2(n, 0);
  std::vector<float> st(n), sa(n);
  Scratch scratch;
  for (int seed = 0; seed < N; ++seed) {
    OneHead L(keys, n, d, 500 + seed);
    temp->encode(0, L.kv, nullptr, L.ctx)->scores(0, q.data(), st.data(), scratch);
    angle->encode(0, L.kv, nullptr, L.ctx)->scores(0, q.data(), sa.data(), scratch);
    for (int t = 0; t < n; ++t) {
      const double hb = (1.0 - st[t]) / 2.0;  // temp variant with T = 1: ŝ = 1 − 2h/b
      double kn = 0;
      for (int j = 0; j < d; ++j) kn += static_cast<double>(keys[t * d + j]) * keys[t * d + j];
      const double cosv = std::cos(kPi * hb);
      // The angle score is ‖q‖·fp16(‖k‖)·cos(π h/b) for the same h (float32 evaluation: a few ulps).
      EXPECT_NEAR(sa[t], std::sqrt(qn) * round_f16(static_cast<float>(std::sqrt(kn))) * cosv, 1e-5 * std::sqrt(qn));
      sh[t] += hb, sh2[t] += hb * hb, sc[t] += cosv, sc2[t] += cosv * cosv;
    }
  }
  for (int t = 0; t < n; ++t) {
    const double p = angles[t] / kPi;
    double want_cos = 0;  // E[cos(π H/b)], H ~ Binomial(b, p)
    for (int h = 0; h <= b; ++h)
      want_cos += std::exp(std::lgamma(b + 1.0) - std::lgamma(h + 1.0) - std::lgamma(b - h + 1.0) + h * std::log(p) +
                           (b - h) * std::log1p(-p)) *
                  std::cos(kPi * h / b);
    const double mh = sh[t] / N, mc = sc[t] / N;
    const double se_h = std::sqrt((sh2[t] / N - mh * mh) / (N - 1));
    const double se_c = std::sqrt((sc2[t] / N - mc * mc) / (N - 1));
    SCOPED_TRACE(fmt::format("θ {} E[h/b] {:.5f} (θ/π {:.5f}, se {:.2g}) E[cos] {:.5f} (binomial {:.5f}, cos θ {:.5f})",
                             angles[t], mh, p, se_h, mc, want_cos, std::cos(angles[t])));
    EXPECT_LE(std::fabs(mh - p), 3 * se_h);
    EXPECT_LE(std::fabs(mc - want_cos), 3 * se_c);
    // And the binomial expectation is cos θ up to the curvature term (π²/2)·p(1−p)/b·|cos θ| <= 0.01.
    EXPECT_NEAR(want_cos, std::cos(angles[t]), 0.01);
  }
}

TEST(H1b, PopcountScoreEqualsThePlusMinusOneDotOfTheReference) {
  // Temperature variant with T = 1: ŝ_t = (σ_q·σ_k)/b exactly, in both implementations (the CPU from XOR +
  // popcount, the reference from the ±1 dot product), for every popcount path and sketch widths that do and
  // do not fill 64-bit words and 512-bit vectors.
  SimdGuard guard;
  const CodecEntry& e = registry().at("h1b");
  for (bool simd : {true, false}) {
    kernels::set_simd_kernels(simd);
    for (int b : {8, 64, 200, 256, 520, 1024}) {
      SynthOptions o;
      o.tokens = 301;
      o.head_dim = 64;
      o.seed = 900 + b;
      const SynthLayer L = make_layer(o);
      const Json p = resolve_params(e.info.params, Json{{"variant", "temp"}, {"temperature", 1.0}, {"sketch_bits", b}}, "h1b");
      SCOPED_TRACE(fmt::format("bits {} kernels {} on {}", b, codecs::sk::sketch_kernels_name(), L.describe()));
      const auto ec = e.make_cpu(p, L.shape)->encode(0, L.kv, nullptr, L.ctx());
      const auto er = e.make_ref(p, L.shape)->encode(0, L.kv, nullptr, L.ctx());
      std::vector<float> sc(o.tokens), sr(o.tokens);
      Scratch s1, s2;
      for (int h = 0; h < L.shape.n_heads; ++h)
        for (int i = 0; i < L.nq; ++i) {
          ec->scores(h, L.query(h, i), sc.data(), s1);
          er->scores(h, L.query(h, i), sr.data(), s2);
          for (int64_t t = 0; t < o.tokens; ++t) ASSERT_EQ(sc[t], sr[t]) << "token " << t;
        }
    }
  }
}

TEST(H1b, TemperatureVariantNeedsCalibrationOrAnExplicitT) {
  SynthOptions o;
  o.tokens = 300;
  const SynthLayer L = make_layer(o);
  auto c = make("h1b", Json{{"variant", "temp"}}, o.head_dim);
  EXPECT_THROW(c->encode(0, L.kv, nullptr, L.ctx()), UsageError);
  SynthOptions co = o;
  co.seed = 4242;
  const SynthLayer calib = make_layer(co);
  c->fit(0, {&calib.kv}, calib.ctx());
  const double T = c->report().at("temperature").at("0").get<double>();
  EXPECT_GT(T, 1e-3);
  EXPECT_LT(T, 1e3);
  // Deterministic: a second fit on the same data gives the same T.
  auto c2 = make("h1b", Json{{"variant", "temp"}}, o.head_dim);
  c2->fit(0, {&calib.kv}, calib.ctx());
  EXPECT_EQ(c2->report().at("temperature").at("0").get<double>(), T);
  const auto enc = c->encode(0, L.kv, nullptr, L.ctx());
  std::vector<float> s(o.tokens), out(o.head_dim);
  Scratch scratch;
  enc->scores(0, L.query(0, 0), s.data(), scratch);
  for (float x : s) EXPECT_LE(std::fabs(x), 1.0 / T * (1 + 1e-6));  // |1 − 2h/b| <= 1
  enc->attend(0, L.query(0, 0), out.data(), scratch);
  EXPECT_TRUE(all_finite(out.data(), o.head_dim));
  // The fitted T minimizes the documented objective: mean KL(exact ‖ softmax((1 − 2h/b)/T)) over the
  // pseudo-queries (up to 8 keys from the last quarter of the first 2048 tokens, each attending to the tokens
  // before it), recomputed here through encoded layers with explicit temperatures.
  auto objective = [&](double Tx) {
    const auto e2 = make("h1b", Json{{"variant", "temp"}, {"temperature", Tx}}, o.head_dim)
                        ->encode(0, calib.kv, nullptr, calib.ctx());
    const int64_t n = std::min<int64_t>(calib.kv.tokens, 2048), lo = std::max<int64_t>(1, n - n / 4);
    const int64_t count = std::min<int64_t>(8, n - lo);
    std::vector<float> sc(calib.kv.tokens);
    Scratch sw;
    double total = 0;
    int rows = 0;
    for (int g = 0; g < calib.kv.kv_heads; ++g)
      for (int64_t i = 0; i < count; ++i) {
        const int64_t tq = n - 1 - i * ((n - lo) / count);
        const float* K = calib.kv.k_head(g);
        e2->scores(g, K + tq * o.head_dim, sc.data(), sw);
        std::vector<double> ex(tq), ap(tq);
        double mx = -INFINITY, ma = -INFINITY;
        for (int64_t t = 0; t < tq; ++t) {
          double dot = 0;
          for (int j = 0; j < o.head_dim; ++j) dot += static_cast<double>(K[tq * o.head_dim + j]) * K[t * o.head_dim + j];
          mx = std::max(mx, ex[t] = calib.attn.softmax_scale * dot);
          ma = std::max(ma, ap[t] = sc[t]);
        }
        double zx = 0, za = 0;
        for (int64_t t = 0; t < tq; ++t) zx += std::exp(ex[t] - mx), za += std::exp(ap[t] - ma);
        double kl = 0;
        for (int64_t t = 0; t < tq; ++t) {
          const double lp = ex[t] - mx - std::log(zx), lq = ap[t] - ma - std::log(za);
          kl += std::exp(lp) * (lp - lq);
        }
        total += kl;
        ++rows;
      }
    return total / rows;
  };
  const double k0 = objective(T), k_hi = objective(1.5 * T), k_lo = objective(T / 1.5);
  SCOPED_TRACE(fmt::format("T {} KL {} (x1.5: {}, /1.5: {})", T, k0, k_hi, k_lo));
  // Tolerance: the table stores (1 − 2h/b)/T in float32, so the KL is recomputed to ~1e-6 relative.
  EXPECT_LE(k0, k_hi * (1 + 1e-5));
  EXPECT_LE(k0, k_lo * (1 + 1e-5));
  // An explicit T skips the fit.
  EXPECT_NO_THROW(make("h1b", Json{{"variant", "temp"}, {"temperature", 0.05}}, o.head_dim)->encode(0, L.kv, nullptr, L.ctx()));
}

// ---- storage ---------------------------------------------------------------------------------------------

/// (key bits, value bits) per quantized token per KV head from the storage items, at head_dim 128.
std::pair<double, double> measured_kv_bits(const std::string& codec, const Json& params, int layer) {
  const CodecEntry& e = registry().at(codec);
  SynthOptions o;
  o.head_dim = 128;
  o.tokens = 1000;
  const SynthLayer L = make_layer(o);
  auto c = e.make_cpu(resolve_params(e.info.params, params, codec), L.shape);
  const Storage st = c->encode(layer, L.kv, nullptr, L.ctx())->storage();
  double k = 0, v = 0;
  int fixed = 0;
  for (const auto& it : st.items) {
    if (it.kind == StorageKind::kFixed) {
      fixed += it.name == "k.projection_seed";
      EXPECT_EQ(it.name == "k.projection_seed" ? it.bytes : 8u, 8u) << "a seeded matrix costs its 8-byte seed";
    }
    if (it.kind != StorageKind::kCompressed || it.bytes == 0) continue;
    const double bits = 8.0 * static_cast<double>(it.bytes) / (st.kv_heads * static_cast<double>(it.tokens));
    (it.name.rfind("k.", 0) == 0 ? k : v) += bits;
  }
  EXPECT_EQ(fixed, 1);
  return {k, v};
}

TEST(SketchStorage, PaperAccountingAtHeadDim128) {
  const CodecEntry& q = registry().at("qjl");
  const Json paper = resolve_preset(q, "paper", Json::object(), "x");
  // docs/codecs.md §7.1: layers >= 15 (m=256, m_o=256): 546 key bits, 384 value bits; layers 0-14 (m=512, m_o=128): 674.
  EXPECT_EQ(measured_kv_bits("qjl", paper, 20), (std::pair<double, double>{546, 384}));
  EXPECT_EQ(measured_kv_bits("qjl", paper, 3), (std::pair<double, double>{674, 384}));
  // docs/codecs.md §8.1: H1B b=256 with fp16 ‖k‖ (angle): 272 key bits; 4-bit values with one fp16 (scale, min) per token: 544.
  EXPECT_EQ(measured_kv_bits("h1b", Json::object(), 0), (std::pair<double, double>{272, 544}));
  // Candidate b_eff equals the measured value.
  for (const char* codec : {"qjl", "h1b"})
    for (const auto& cand : registry().at(codec).candidates(128)) {
      SCOPED_TRACE(fmt::format("{} {}", codec, cand.params.dump()));
      const auto [k, v] = measured_kv_bits(codec, cand.params, 0);
      EXPECT_DOUBLE_EQ((k + v) / 256.0, cand.bits);
    }
  // Budgets: 3.7 bits picks the paper's QJL m=256 (3.63; tie with m=128/v4 broken by the listed order).
  const BudgetResolution r = resolve_budget(q, 3.7, Json::object(), 128, "x");
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(q.label(r.params), "qjl-m256-o8x256-v2");
  EXPECT_EQ(registry().at("h1b").label(resolve_budget(registry().at("h1b"), 3.2, Json::object(), 128, "x").params),
            "h1b-angle-b256-v4");
}

// ---- fidelity against sketch size ------------------------------------------------------------------------

double mean_score_rel_err(const std::string& codec, const Json& params, const SynthLayer& L) {
  const auto enc = make(codec, params, L.shape.head_dim)->encode(0, L.kv, nullptr, L.ctx());
  double total = 0;
  int count = 0;
  std::vector<float> s(L.kv.tokens);
  Scratch scratch;
  for (int h = 0; h < L.shape.n_heads; ++h)
    for (int i = 0; i < L.nq; ++i) {
      const float* q = L.query(h, i);
      enc->scores(h / L.shape.group(), q, s.data(), scratch);
      const float* K = L.kv.k_head(h / L.shape.group());
      double e2 = 0, x2 = 0;
      for (int64_t t = 0; t < L.kv.tokens; ++t) {
        double x = 0;
        for (int j = 0; j < L.shape.head_dim; ++j) x += static_cast<double>(q[j]) * K[t * L.shape.head_dim + j];
        x *= L.attn.softmax_scale;
        e2 += (s[t] - x) * (s[t] - x), x2 += x * x;
      }
      total += std::sqrt(e2 / x2);
      ++count;
    }
  return total / count;
}

TEST(SketchFidelity, ScoreErrorFallsAsTheSketchGrows) {
  SynthOptions o;
  o.head_dim = 128;
  o.tokens = 1024;  // residual 128: every key quantized for QJL (1024 = 8·128)
  o.kv_heads = 2;
  o.queries = 4;
  o.seed = 77;
  const SynthLayer L = make_layer(o);
  for (const char* codec : {"qjl", "h1b"}) {
    double prev = INFINITY;
    for (int m : {64, 128, 256, 512}) {
      const Json p = std::string(codec) == "qjl" ? Json{{"m", m}, {"m_outlier", m}} : Json{{"sketch_bits", m}};
      const double err = mean_score_rel_err(codec, p, L);
      SCOPED_TRACE(fmt::format("{} m {} score rel err {:.4f} (previous {:.4f})", codec, m, err, prev));
      std::printf("[ %s ] sketch %d bits: mean score relative error %.4f\n", codec, m, err);
      EXPECT_LT(err, prev);
      // Error ∝ 1/sqrt(m): doubling m should cut it by ~0.71; demand at least a 10% cut.
      if (std::isfinite(prev)) EXPECT_LT(err, 0.9 * prev);
      prev = err;
    }
  }
}

// ---- parameters --------------------------------------------------------------------------------------------

TEST(SketchParams, ImpossibleCombinationsThrowUnsupported) {
  const ModelShape s8{1, 1, 1, 8}, s128{1, 1, 1, 128};
  const CodecEntry& q = registry().at("qjl");
  const CodecEntry& h = registry().at("h1b");
  EXPECT_THROW(q.make_cpu(Json{{"m", 12}}, s128), Unsupported);
  EXPECT_THROW(q.make_ref(Json{{"m", 12}}, s128), Unsupported);
  EXPECT_THROW(q.make_cpu(Json{{"m_outlier", 20}}, s128), Unsupported);
  EXPECT_THROW(q.make_cpu(Json{{"outliers", 9}, {"value_group", 8}}, s8), Unsupported);
  EXPECT_THROW(q.make_cpu(Json{{"value_group", 48}}, s128), Unsupported);
  EXPECT_THROW(q.make_cpu(Json{{"residual", 100}}, s128), Unsupported);
  EXPECT_THROW(q.make_cpu(Json{{"outliers", 4}, {"m_outlier", 0}}, s128), Unsupported);
  EXPECT_THROW(h.make_cpu(Json{{"sketch_bits", 100}}, s128), Unsupported);
  EXPECT_THROW(h.make_cpu(Json{{"value_group", 48}}, s128), Unsupported);
  EXPECT_THROW(h.make_cpu(Json{{"variant", "learned"}}, s128), UsageError);
  EXPECT_THROW(q.make_cpu(Json{{"bits", 2}}, s128), UsageError);
  // Lifted limits of the reference kernel: head_dim 96, m = 40, all channels outliers, m_outlier > m.
  EXPECT_NO_THROW(q.make_cpu(Json{{"m", 40}, {"m_outlier", 48}, {"outliers", 8}, {"value_group", 8}}, s8));
  try {
    q.make_cpu(Json{{"m", 12}}, s128);
  } catch (const Unsupported& ex) {
    EXPECT_NE(std::string(ex.what()).find("m = 12"), std::string::npos) << ex.what();
  }
}

TEST(SketchParams, ListedWithPapersPresetsAndBudgetRules) {
  for (const char* name : {"qjl", "h1b"}) {
    const CodecEntry& e = registry().at(name);
    EXPECT_EQ(e.info.family, "one_bit_sketch");
    EXPECT_FALSE(e.info.budget_rule.empty());
    EXPECT_TRUE(e.info.defines_scores);
    EXPECT_FALSE(e.info.presets.empty());
    for (const auto& p : e.info.params) EXPECT_FALSE(p.help.empty()) << p.name;
    // Candidates fit every head_dim they are listed for, including the extremes.
    for (int d : {1, 7, 8, 64, 96, 128, 1024})
      for (const auto& c : e.candidates(d)) EXPECT_NO_THROW(e.make_cpu(c.params, ModelShape{1, 1, 1, d})) << d;
  }
  EXPECT_EQ(registry().at("qjl").info.paper, "QJL, arXiv 2406.03482");
  EXPECT_EQ(registry().at("h1b").info.paper, "H1B-KV, arXiv 2510.05529");
  EXPECT_NE(registry().at("h1b").info.notes.find("fine-tuning"), std::string::npos);
}

// ---- hostile caches --------------------------------------------------------------------------------------

/// qjl and h1b (defaults; qjl also with the paper preset's initial-layer sizes) through the shared hostile
/// driver (codec_test_util.h for_each_config: finite scores and outputs, then check).
template <class F>
void for_sketch_codecs(const SynthLayer& L, F&& check) {
  for_each_config(L,
                  {{"qjl", Json{{"outliers", 4}}},
                   {"qjl", Json{{"m", 512}, {"m_outlier", 128}, {"outliers", 4}}},
                   {"h1b", Json::object()},
                   {"h1b", Json{{"variant", "temp"}, {"temperature", 0.05}}}},
                  [&](const std::string& codec, const Json&, int h, int, const std::vector<float>& o) {
                    check(codec, h, o);
                  });
}

TEST(SketchHostile, ZeroConstantHugeAndSingleTokenCaches) {
  SynthOptions opt;
  opt.tokens = 300;
  opt.head_dim = 64;
  {
    SynthLayer L = make_layer(opt);
    std::fill(L.kv.k.begin(), L.kv.k.end(), 0.f);  // zero keys: every norm 0, every bit 0
    std::fill(L.kv.v.begin(), L.kv.v.end(), 0.f);
    for_sketch_codecs(L, [](const std::string&, int, const std::vector<float>& o) {
      for (float x : o) EXPECT_EQ(x, 0.f);
    });
  }
  {
    SynthLayer L = make_layer(opt);  // every token identical: the output is that row (4-bit or fp16 values)
    for (int g = 0; g < L.kv.kv_heads; ++g)
      for (int64_t t = 1; t < L.kv.tokens; ++t)
        for (int j = 0; j < 64; ++j) {
          L.kv.k_head(g)[t * 64 + j] = L.kv.k_head(g)[j];
          L.kv.v_head(g)[t * 64 + j] = L.kv.v_head(g)[j];
        }
    for_sketch_codecs(L, [&](const std::string& codec, int h, const std::vector<float>& o) {
      // qjl's 2-bit values hold 172 of the 300 tokens (the window the last 128): cosine >= 0.95; h1b 4-bit: 0.99.
      EXPECT_GE(cosine(o.data(), L.kv.v_head(h / L.shape.group()), 64), codec == "qjl" ? 0.95 : 0.99);
    });
  }
  for (float big : {1e5f, 1e30f}) {  // beyond fp16 (norms and windows saturate) and near float's range
    SynthLayer L = make_layer(opt);
    for (auto& x : L.kv.k) x *= big / 20;
    for (auto& x : L.kv.v) x *= big / 4;
    for_sketch_codecs(L, [](const std::string&, int, const std::vector<float>&) {});
  }
  {
    SynthOptions o1 = opt;
    o1.tokens = 1;
    const SynthLayer L = make_layer(o1);
    for_sketch_codecs(L, [&](const std::string& codec, int h, const std::vector<float>& o) {
      const float* v0 = L.kv.v_head(h / L.shape.group());
      if (codec == "qjl") {  // the only token is in the fp16 window
        for (int j = 0; j < 64; ++j) EXPECT_EQ(o[j], f16_to_f32(f32_to_f16(v0[j]))) << j;
      } else {
        EXPECT_GE(cosine(o.data(), v0, 64), 0.99);
      }
    });
  }
}

// ---- SIMD vs portable ------------------------------------------------------------------------------------

TEST(SketchSimd, QjlScoresAgreeAcrossKernelPaths) {
  SimdGuard guard;
  SynthOptions o;
  o.tokens = 700;
  o.head_dim = 96;
  o.group = 2;
  const SynthLayer L = make_layer(o);
  const auto c = make("qjl", Json{{"m", 200}, {"m_outlier", 88}, {"outliers", 6}}, 96);
  const auto enc = c->encode(0, L.kv, nullptr, L.ctx());
  std::vector<float> a(o.tokens), b(o.tokens);
  Scratch scratch;
  for (int h = 0; h < L.shape.n_heads; ++h) {
    kernels::set_simd_kernels(true);
    enc->scores(h / 2, L.query(h, 0), a.data(), scratch);
    kernels::set_simd_kernels(false);
    enc->scores(h / 2, L.query(h, 0), b.data(), scratch);
    double mx = 0;
    for (int64_t t = 0; t < o.tokens; ++t) mx = std::max(mx, std::fabs(static_cast<double>(a[t])));
    // Same bits and query sketch; the masked sums differ only by float32 reassociation over m = 200 terms
    // (bounded by 200·u·Σ|x| ≈ 200·u·(m·typical|x|)): 1e-4 of the largest logit is far above that and far
    // below any bit flip (one flip moves a logit by ~2·sqrt(π/2)/m·‖k‖·|x_i| ≈ 1% of it).
    for (int64_t t = 0; t < o.tokens; ++t) EXPECT_NEAR(a[t], b[t], 1e-4 * mx) << "token " << t;
  }
}

}  // namespace
}  // namespace kvb::test
