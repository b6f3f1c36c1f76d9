// `rotate: hadamard` (kernels/cpu/hadamard.h, codecs/common/rotation.h): the blocked randomized Hadamard
// rotation is orthogonal and equals its dense matrix; int and kivi with it keep exact attention's
// invariance (logits of R q against R k), and on keys with outlier channels int with rotation beats int
// without at the same bits.
#include <gtest/gtest.h>

#include <cmath>

#include "codecs/common/rotation.h"
#include "kernels/cpu/hadamard.h"
#include "codec_test_util.h"
#include "kvb/attention/exact.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"
#include "kvb/metrics/metrics.h"

namespace {

namespace hd = kvb::kernels::hadamard;

TEST(Hadamard, BlockIsTheLargestPowerOfTwoDividingD) {
  EXPECT_EQ(hd::block_size(128), 128);
  EXPECT_EQ(hd::block_size(96), 32);
  EXPECT_EQ(hd::block_size(40), 8);
  EXPECT_EQ(hd::block_size(7), 1);
  EXPECT_EQ(hd::block_size(1), 1);
}

TEST(Hadamard, OrthogonalAndEqualToTheDenseMatrix) {
  for (int d : {1, 7, 8, 40, 64, 96, 128, 256}) {
    SCOPED_TRACE("d=" + std::to_string(d));
    const auto s = hd::signs(d, 1234 + d);
    const auto R = kvb::codecs::dense_rotation(d, s.data());
    // R R^T = I (to float64 rounding).
    double worst = 0;
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) {
        double acc = 0;
        for (int k = 0; k < d; ++k) acc += R[size_t(i) * d + k] * R[size_t(j) * d + k];
        worst = std::max(worst, std::abs(acc - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_LT(worst, 1e-12);
    // Butterflies == dense matrix, ||Rx|| = ||x||, R^T R x = x.
    kvb::Rng rng(7);
    std::vector<float> x(size_t(3) * d), y(x.size()), back(x.size());
    for (auto& v : x) v = static_cast<float>(rng.normal() * 5);
    hd::rotate_rows(x.data(), y.data(), 3, d, s.data());
    hd::unrotate_rows(y.data(), back.data(), 3, d, s.data());
    for (int r = 0; r < 3; ++r) {
      double nx = 0, ny = 0;
      for (int i = 0; i < d; ++i) {
        double dense = 0;
        for (int j = 0; j < d; ++j) dense += R[size_t(i) * d + j] * x[size_t(r) * d + j];
        EXPECT_NEAR(y[size_t(r) * d + i], dense, 1e-5 * (1 + std::abs(dense))) << "row " << r << " i " << i;
        EXPECT_NEAR(back[size_t(r) * d + i], x[size_t(r) * d + i], 1e-5 * (1 + std::abs(x[size_t(r) * d + i])));
        nx += double(x[size_t(r) * d + i]) * x[size_t(r) * d + i];
        ny += double(y[size_t(r) * d + i]) * y[size_t(r) * d + i];
      }
      EXPECT_NEAR(std::sqrt(ny), std::sqrt(nx), 1e-5 * std::sqrt(nx));
    }
  }
}

struct Err {
  double rel_l2 = 0, logit_err = 0, mean_logit_err = 0;
};

/// Mean relative L2 error of the attention output and the largest logit error of `codec` with `params`
/// over every query of L (CPU path).
Err codec_error(const std::string& codec, const kvb::Json& params, const kvb::test::SynthLayer& L) {
  const auto& e = kvb::registry().at(codec);
  auto c = e.make_cpu(kvb::resolve_params(e.info.params, params, codec), L.shape);
  auto layer = c->encode(0, L.kv, nullptr, L.ctx());
  kvb::Scratch sc;
  Err err;
  const int d = L.shape.head_dim;
  std::vector<float> o(static_cast<size_t>(d)), s(static_cast<size_t>(L.kv.tokens));
  std::vector<double> exs(static_cast<size_t>(L.kv.tokens));
  int n = 0;
  for (int h = 0; h < L.shape.n_heads; ++h)
    for (int i = 0; i < L.nq; ++i, ++n) {
      const int g = h / L.shape.group();
      layer->attend(g, L.query(h, i), o.data(), sc);
      const auto ex = kvb::test::exact_output(L, h, L.query(h, i));
      err.rel_l2 += kvb::test::rel_l2(o.data(), ex.data(), d);
      EXPECT_TRUE(layer->scores(g, L.query(h, i), s.data(), sc));
      kvb::exact_attention_f64(L.kv.k_head(g), L.kv.v_head(g), L.kv.tokens, d, L.query(h, i), L.attn.softmax_scale,
                               L.attn.softcap, exs.data(), nullptr, nullptr);
      for (int64_t t = 0; t < L.kv.tokens; ++t) {
        const double e = std::abs(s[static_cast<size_t>(t)] - exs[static_cast<size_t>(t)]);
        err.logit_err = std::max(err.logit_err, e);
        err.mean_logit_err += e / static_cast<double>(L.kv.tokens);
      }
    }
  err.rel_l2 /= n;
  err.mean_logit_err /= n;
  return err;
}

TEST(Rotation, Int8WithRotationStaysNearExact) {
  for (int d : {128, 96, 40}) {
    kvb::test::SynthOptions o;
    o.head_dim = d, o.tokens = 300, o.queries = 4, o.seed = 5;
    const auto L = kvb::test::make_layer(o);
    SCOPED_TRACE(L.describe());
    const int G = d % 32 == 0 ? 32 : 8;
    const Err plain = codec_error("int", {{"code_bits", 8}, {"group_size", G}}, L);
    const Err rot = codec_error("int", {{"code_bits", 8}, {"group_size", G}, {"rotate", "hadamard"}}, L);
    std::printf("d=%d int8: rel_l2 %.5f plain, %.5f rotated; max logit error %.4f plain, %.4f rotated\n", d,
                plain.rel_l2, rot.rel_l2, plain.logit_err, rot.logit_err);
    // INT8 is near lossless either way: a broken rotation (q and k rotated differently, an output not
    // un-rotated) gives errors of order 1.
    EXPECT_LT(rot.rel_l2, 0.02);
    EXPECT_LT(rot.logit_err, 0.2);
  }
}

TEST(Rotation, IntWithRotationBeatsIntWithoutOnOutlierKeys) {
  kvb::test::SynthOptions o;
  o.head_dim = 128, o.tokens = 512, o.queries = 8, o.seed = 11, o.outliers = 4;
  const auto L = kvb::test::make_layer(o);
  SCOPED_TRACE(L.describe());
  for (int b : {2, 3, 4}) {
    SCOPED_TRACE("code_bits=" + std::to_string(b));
    const Err plain = codec_error("int", {{"code_bits", b}, {"group_size", 32}}, L);
    const Err rot = codec_error("int", {{"code_bits", b}, {"group_size", 32}, {"rotate", "hadamard"}}, L);
    std::printf("int%d-g32: mean |logit error| %.4f plain, %.4f rotated (max %.3f, %.3f); output rel_l2 %.4f plain, "
                "%.4f rotated\n",
                b, plain.mean_logit_err, rot.mean_logit_err, plain.logit_err, rot.logit_err, plain.rel_l2, rot.rel_l2);
    // The keys carry the outlier channels: rotation must shrink the logit error (the values, Gaussian per
    // token with a log-normal scale, gain nothing from it, so the output error is printed, not asserted).
    EXPECT_LT(rot.mean_logit_err, 0.9 * plain.mean_logit_err);
    EXPECT_LT(rot.logit_err, plain.logit_err);
  }
}

}  // namespace
