// The exact float64 reference attention (docs/protocol.md §1) on hand-computed cases.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kvb/attention/exact.h"

TEST(ExactAttention, ThreeTokenHandCase) {
  // d = 2, K = [[1,0],[0,1],[1,1]], V = [[1,0],[0,1],[2,2]], q = [2, 0], scale 0.5
  // s = 0.5·K q = [1, 0, 1]; p = [e, 1, e] / (2e + 1)
  // o = p0·[1,0] + p1·[0,1] + p2·[2,2] = [3e, 1 + 2e] / (2e + 1) = [3e / (2e + 1), 1]
  const std::vector<float> K = {1, 0, 0, 1, 1, 1}, V = {1, 0, 0, 1, 2, 2}, q = {2, 0};
  std::vector<double> s(3), p(3), o(2);
  kvb::exact_attention_f64(K.data(), V.data(), 3, 2, q.data(), 0.5, 0.0, s.data(), p.data(), o.data());
  const double e = std::exp(1.0), z = 2 * e + 1;
  EXPECT_DOUBLE_EQ(s[0], 1.0);
  EXPECT_DOUBLE_EQ(s[1], 0.0);
  EXPECT_DOUBLE_EQ(s[2], 1.0);
  EXPECT_NEAR(p[0], e / z, 1e-15);
  EXPECT_NEAR(p[1], 1 / z, 1e-15);
  EXPECT_NEAR(p[2], e / z, 1e-15);
  EXPECT_NEAR(o[0], 3 * e / z, 1e-15);
  EXPECT_NEAR(o[1], 1.0, 1e-15);
  // H = −Σ p ln p = −2 (e/z) ln(e/z) − (1/z) ln(1/z) = ln z − 2e/z
  EXPECT_NEAR(kvb::entropy(p.data(), 3), std::log(z) - 2 * e / z, 1e-14);
  // Null outputs are allowed.
  std::vector<double> o2(2);
  kvb::exact_attention_f64(K.data(), V.data(), 3, 2, q.data(), 0.5, 0.0, nullptr, nullptr, o2.data());
  EXPECT_EQ(o2, o);
}

TEST(ExactAttention, Softcap) {
  // Same case with softcap 2: s = 2·tanh([1, 0, 1] / 2) = [2 tanh ½, 0, 2 tanh ½].
  const std::vector<float> K = {1, 0, 0, 1, 1, 1}, V = {1, 0, 0, 1, 2, 2}, q = {2, 0};
  std::vector<double> s(3), p(3), o(2);
  kvb::exact_attention_f64(K.data(), V.data(), 3, 2, q.data(), 0.5, 2.0, s.data(), p.data(), o.data());
  const double c = 2 * std::tanh(0.5), ec = std::exp(c), z = 2 * ec + 1;
  EXPECT_NEAR(s[0], c, 1e-15);
  EXPECT_EQ(s[1], 0.0);
  EXPECT_NEAR(s[2], c, 1e-15);
  EXPECT_NEAR(p[1], 1 / z, 1e-15);
  EXPECT_NEAR(o[0], 3 * ec / z, 1e-15);
  EXPECT_NEAR(o[1], 1.0, 1e-15);
  EXPECT_EQ(kvb::softcap_logit(3.5, 0.0), 3.5);
  EXPECT_NEAR(kvb::softcap_logit(100.0, 30.0), 30 * std::tanh(100.0 / 30), 1e-13);
}

TEST(ExactAttention, EntropyOfUniformAndPoint) {
  const std::vector<double> u(8, 0.125), pt = {0, 1, 0};
  EXPECT_NEAR(kvb::entropy(u.data(), 8), std::log(8.0), 1e-15);
  EXPECT_EQ(kvb::entropy(pt.data(), 3), 0.0);
}
