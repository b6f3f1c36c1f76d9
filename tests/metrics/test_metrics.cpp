// Hand-computed and brute-force checks of kvb/metrics (docs/metrics.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kvb/core/error.h"
#include "kvb/metrics/metrics.h"

namespace km = kvb::metrics;

namespace {

std::string show(const std::vector<double>& v) {
  std::ostringstream os;
  os.precision(17);
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << "]";
  return os.str();
}

/// O(n²) average ranks straight from the definition.
std::vector<double> brute_ranks(const std::vector<double>& x) {
  std::vector<double> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double less = 0, eq = 0;
    for (size_t j = 0; j < x.size(); ++j) {
      less += x[j] < x[i];
      eq += x[j] == x[i];
    }
    r[i] = 1 + less + (eq - 1) / 2;
  }
  return r;
}

/// O(n²) Kendall τ-b from the definition (pairs, ties counted per side).
std::optional<double> brute_kendall(const std::vector<double>& a, const std::vector<double>& b) {
  const size_t n = a.size();
  double s = 0, n0 = 0, n1 = 0, n2 = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      n0 += 1;
      const int sa = (a[i] > a[j]) - (a[i] < a[j]), sb = (b[i] > b[j]) - (b[i] < b[j]);
      n1 += sa == 0;
      n2 += sb == 0;
      s += sa * sb;
    }
  if (n0 == n1 || n0 == n2) return std::nullopt;
  return s / std::sqrt((n0 - n1) * (n0 - n2));
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double c = 0, vx = 0, vy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    c += (x[i] - mx) * (y[i] - my);
    vx += (x[i] - mx) * (x[i] - mx);
    vy += (y[i] - my) * (y[i] - my);
  }
  return c / std::sqrt(vx * vy);
}

}  // namespace

// ------------------------------------------------------------------------------------------ registry

TEST(MetricRegistry, FixedOrderAndDirections) {
  const auto& ms = km::all_metrics();
  const std::vector<std::string> names = {"cosine", "rel_l2",        "spearman", "kendall",
                                          "topk_recall", "kl", "score_rel_err", "mass_lost", "l2_err"};
  ASSERT_EQ(ms.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(ms[i].name, names[i]);
    EXPECT_FALSE(ms[i].description.empty());
    EXPECT_TRUE(ms[i].applies_to == "all codecs" || ms[i].applies_to == "codecs with logits" ||
                ms[i].applies_to == "token-dropping codecs");
    EXPECT_EQ(km::find_metric(names[i]), &ms[i]);
  }
  EXPECT_EQ(km::find_metric("cosine")->better, km::Better::kHigher);
  EXPECT_EQ(km::find_metric("rel_l2")->better, km::Better::kLower);
  EXPECT_EQ(km::find_metric("spearman")->better, km::Better::kHigher);
  EXPECT_EQ(km::find_metric("kendall")->better, km::Better::kHigher);
  EXPECT_TRUE(km::find_metric("kendall")->optional);
  EXPECT_EQ(km::find_metric("topk_recall")->better, km::Better::kHigher);
  EXPECT_EQ(km::find_metric("kl")->better, km::Better::kLower);
  EXPECT_EQ(km::find_metric("score_rel_err")->better, km::Better::kLower);
  EXPECT_EQ(km::find_metric("mass_lost")->better, km::Better::kLower);
  EXPECT_EQ(km::find_metric("mass_lost")->applies_to, "token-dropping codecs");
  EXPECT_EQ(km::find_metric("nope"), nullptr);
}

// ------------------------------------------------------------------------------------------ cosine / l2

TEST(Cosine, HandCases) {
  const std::vector<double> a = {1, 2, 3}, neg = {-1, -2, -3}, x = {1, 0}, y = {0, 1};
  EXPECT_DOUBLE_EQ(km::cosine(a.data(), a.data(), 3), 1.0);
  EXPECT_DOUBLE_EQ(km::cosine(a.data(), neg.data(), 3), -1.0);
  EXPECT_EQ(km::cosine(x.data(), y.data(), 2), 0.0);
  // [1,1] vs [1,0]: 1/√2.
  const std::vector<double> u = {1, 1};
  EXPECT_NEAR(km::cosine(u.data(), x.data(), 2), 1 / std::sqrt(2.0), 1e-15);
}

TEST(Cosine, ZeroVectorConventions) {
  const std::vector<double> z = {0, 0, 0}, a = {1, -2, 3};
  EXPECT_EQ(km::cosine(z.data(), z.data(), 3), 1.0);  // both zero: identical
  EXPECT_EQ(km::cosine(z.data(), a.data(), 3), 0.0);  // exactly one zero
  EXPECT_EQ(km::cosine(a.data(), z.data(), 3), 0.0);
  EXPECT_EQ(km::cosine(z.data(), z.data(), 0), 1.0);  // empty = zero vectors
}

TEST(Cosine, ExtremeScalesStayExact) {
  const std::vector<double> big = {3e300, 4e300}, big2 = {6e300, 8e300}, tiny = {3e-300, 4e-300};
  EXPECT_DOUBLE_EQ(km::cosine(big.data(), big2.data(), 2), 1.0);
  EXPECT_DOUBLE_EQ(km::cosine(big.data(), tiny.data(), 2), 1.0);
  EXPECT_TRUE(std::isfinite(km::cosine(big.data(), tiny.data(), 2)));
}

TEST(RelL2, HandCases) {
  // o = [3, 4] (‖o‖ = 5), ô − o = [0.3, −0.4] (norm 0.5) -> 0.1.
  const std::vector<double> o = {3, 4}, oh = {3.3, 3.6};
  EXPECT_NEAR(km::rel_l2(oh.data(), o.data(), 2), 0.1, 1e-15);
  EXPECT_NEAR(km::l2_err(oh.data(), o.data(), 2), 0.5, 1e-15);
  EXPECT_EQ(km::rel_l2(o.data(), o.data(), 2), 0.0);
  // ‖o‖ = 0 is clamped to 1e-8: ‖ô‖ = 1e-9 -> 0.1.
  const std::vector<double> z = {0, 0}, e = {1e-9, 0};
  EXPECT_NEAR(km::rel_l2(e.data(), z.data(), 2), 0.1, 1e-15);
  // Huge values: no overflow in the sum of squares.
  const std::vector<double> hb = {3e200, 4e200}, hb2 = {3e200, 4.5e200};
  EXPECT_NEAR(km::rel_l2(hb2.data(), hb.data(), 2), 0.1, 1e-15);
}

// ------------------------------------------------------------------------------------------ ranks

TEST(Ranks, TiesAveragedAndDeterministic) {
  const std::vector<double> x = {3, 1, 3, 2};
  EXPECT_EQ(km::ranks(x.data(), 4), (std::vector<double>{3.5, 1, 3.5, 2}));
  const std::vector<double> z = {0.0, -0.0, 5};  // -0 == +0 is a tie
  EXPECT_EQ(km::ranks(z.data(), 3), (std::vector<double>{1.5, 1.5, 3}));
  const std::vector<double> c = {7, 7, 7, 7, 7};
  EXPECT_EQ(km::ranks(c.data(), 5), (std::vector<double>(5, 3.0)));
  EXPECT_TRUE(km::ranks(x.data(), 0).empty());
}

TEST(Ranks, MatchBruteForceOnRandomDataWithTies) {
  std::mt19937_64 rng(20240611);
  for (int trial = 0; trial < 50; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 200);
    std::vector<double> x(n);
    for (auto& v : x) v = static_cast<double>(rng() % 17) - 8;
    SCOPED_TRACE("trial " + std::to_string(trial) + " x = " + show(x));
    EXPECT_EQ(km::ranks(x.data(), n), brute_ranks(x));
  }
}

// ------------------------------------------------------------------------------------------ spearman

TEST(Spearman, HandCaseWithTies) {
  // a = [1,2,2,3] -> ranks [1, 2.5, 2.5, 4]; b = [1,3,2,4] -> ranks [1, 3, 2, 4]; both means 2.5.
  // deviations: da = [-1.5, 0, 0, 1.5], db = [-1.5, 0.5, -0.5, 1.5]
  // cov = 2.25 + 0 + 0 + 2.25 = 4.5; Σda² = 4.5; Σdb² = 2.25 + 0.25 + 0.25 + 2.25 = 5
  // ρ = 4.5 / √(4.5 · 5) = √(4.5 / 5) = √0.9 = 0.9486832980505138
  const std::vector<double> a = {1, 2, 2, 3}, b = {1, 3, 2, 4};
  SCOPED_TRACE("a = " + show(a) + " b = " + show(b));
  const auto r = km::spearman(a.data(), b.data(), 4);
  ASSERT_TRUE(r.has_value());
  EXPECT_NEAR(*r, std::sqrt(0.9), 1e-15);
  EXPECT_NEAR(*km::spearman(b.data(), a.data(), 4), std::sqrt(0.9), 1e-15);  // symmetric
}

TEST(Spearman, MonotoneReversedConstant) {
  std::vector<double> a(50), up(50), down(50), c(50, 2.5);
  for (int i = 0; i < 50; ++i) {
    a[i] = std::sin(0.7 * i);
    up[i] = std::exp(a[i]) * 3 - 1;  // strictly increasing transform
    down[i] = -a[i] * a[i] * a[i];   // strictly decreasing transform
  }
  EXPECT_DOUBLE_EQ(*km::spearman(a.data(), up.data(), 50), 1.0);
  EXPECT_DOUBLE_EQ(*km::spearman(a.data(), down.data(), 50), -1.0);
  EXPECT_FALSE(km::spearman(a.data(), c.data(), 50).has_value());
  EXPECT_FALSE(km::spearman(c.data(), a.data(), 50).has_value());
  EXPECT_FALSE(km::spearman(a.data(), a.data(), 1).has_value());  // n < 2
  EXPECT_FALSE(km::spearman(a.data(), a.data(), 0).has_value());
}

TEST(Spearman, MatchesPearsonOfBruteRanks) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 2 + static_cast<int>(rng() % 150);
    std::vector<double> a(n), b(n);
    for (int i = 0; i < n; ++i) {
      a[i] = static_cast<double>(rng() % 9);
      b[i] = a[i] + static_cast<double>(rng() % 5);
    }
    SCOPED_TRACE("trial " + std::to_string(trial) + " a = " + show(a) + " b = " + show(b));
    const auto r = km::spearman(a.data(), b.data(), n);
    const auto ra = brute_ranks(a), rb = brute_ranks(b);
    const bool const_a = std::all_of(a.begin(), a.end(), [&](double v) { return v == a[0]; });
    const bool const_b = std::all_of(b.begin(), b.end(), [&](double v) { return v == b[0]; });
    if (const_a || const_b) {
      EXPECT_FALSE(r.has_value());
    } else {
      ASSERT_TRUE(r.has_value());
      EXPECT_NEAR(*r, pearson(ra, rb), 1e-12);
    }
  }
}

// ------------------------------------------------------------------------------------------ kendall

TEST(Kendall, HandCases) {
  {
    // a = [1,2,2,3], b = [1,3,2,4]: 6 pairs; (1,2) tied in a; the other 5 concordant.
    // n0 = 6, n1 = 1, n2 = 0, S = 5 -> τb = 5 / √(5·6) = 0.9128709291752769
    const std::vector<double> a = {1, 2, 2, 3}, b = {1, 3, 2, 4};
    EXPECT_NEAR(*km::kendall_tau_b(a.data(), b.data(), 4), 5 / std::sqrt(30.0), 1e-15);
  }
  {
    // a = [1,1,2,2], b = [1,2,1,2]: one concordant (0,3), one discordant (1,2), the rest tied -> 0.
    const std::vector<double> a = {1, 1, 2, 2}, b = {1, 2, 1, 2};
    EXPECT_NEAR(*km::kendall_tau_b(a.data(), b.data(), 4), 0.0, 1e-15);
  }
  {
    // a = [1,2,2,3,3], b = [1,1,2,2,3]: C = 6, D = 0, a-ties (1,2),(3,4), b-ties (0,1),(2,3), n0 = 10
    // -> τb = 6 / √(8·8) = 0.75
    const std::vector<double> a = {1, 2, 2, 3, 3}, b = {1, 1, 2, 2, 3};
    EXPECT_NEAR(*km::kendall_tau_b(a.data(), b.data(), 5), 0.75, 1e-15);
  }
  {
    // a = [1,1,2,3], b = [2,2,3,1]: (0,1) tied on both; C = (0,2),(1,2); D = (0,3),(1,3),(2,3)
    // n0 = 6, n1 = n2 = 1 -> τb = (2 − 3) / √(5·5) = −0.2
    const std::vector<double> a = {1, 1, 2, 3}, b = {2, 2, 3, 1};
    EXPECT_NEAR(*km::kendall_tau_b(a.data(), b.data(), 4), -0.2, 1e-15);
  }
  {
    const std::vector<double> a = {5, 4, 3, 2, 1}, b = {1, 2, 3, 4, 5}, c = {2, 2, 2, 2, 2};
    EXPECT_DOUBLE_EQ(*km::kendall_tau_b(a.data(), b.data(), 5), -1.0);
    EXPECT_DOUBLE_EQ(*km::kendall_tau_b(b.data(), b.data(), 5), 1.0);
    EXPECT_FALSE(km::kendall_tau_b(a.data(), c.data(), 5).has_value());
    EXPECT_FALSE(km::kendall_tau_b(c.data(), a.data(), 5).has_value());
    EXPECT_FALSE(km::kendall_tau_b(a.data(), b.data(), 1).has_value());
  }
}

TEST(Kendall, MatchesBruteForceOnRandomDataWithTies) {
  std::mt19937_64 rng(424242);
  for (int trial = 0; trial < 60; ++trial) {
    const int n = 2 + static_cast<int>(rng() % 300);
    const int levels = 1 + static_cast<int>(rng() % 12);  // few levels -> many ties (1 level = constant)
    std::vector<double> a(n), b(n);
    for (int i = 0; i < n; ++i) {
      a[i] = static_cast<double>(rng() % levels);
      b[i] = (rng() % 3 == 0) ? static_cast<double>(rng() % levels) : a[i] + static_cast<double>(rng() % 2);
    }
    SCOPED_TRACE("trial " + std::to_string(trial) + " a = " + show(a) + " b = " + show(b));
    const auto got = km::kendall_tau_b(a.data(), b.data(), n);
    const auto want = brute_kendall(a, b);
    ASSERT_EQ(got.has_value(), want.has_value());
    if (want) {
      EXPECT_NEAR(*got, *want, 1e-12);
    }
  }
}

// ------------------------------------------------------------------------------------------ top-k

TEST(TopkRecall, HandCases) {
  const std::vector<double> desc = {5, 4, 3, 2, 1}, asc = {1, 2, 3, 4, 5};
  EXPECT_EQ(km::topk_recall(desc.data(), asc.data(), 5, 2), 0.0);  // {0,1} vs {4,3}
  EXPECT_EQ(km::topk_recall(desc.data(), asc.data(), 5, 3), 1.0 / 3);  // {0,1,2} vs {4,3,2}
  EXPECT_EQ(km::topk_recall(desc.data(), asc.data(), 5, 5), 1.0);  // k = n: everything
  const std::vector<double> ah = {0, 9, 8, 1, 0}, ex = {0, 9, 1, 8, 0};
  EXPECT_EQ(km::topk_recall(ah.data(), ex.data(), 5, 2), 0.5);  // {1,2} vs {1,3}
  EXPECT_EQ(km::topk_recall(ex.data(), ex.data(), 5, 1), 1.0);
}

TEST(TopkRecall, TiesBrokenByLowerIndex) {
  const std::vector<double> flat = {1, 1, 1, 1}, shifted = {0, 1, 1, 1};
  // Exact top-2 of a flat vector is {0, 1} (lower index first); same input -> recall 1.
  EXPECT_EQ(km::topk_recall(flat.data(), flat.data(), 4, 2), 1.0);
  // approx top-2 = {1, 2} vs exact {0, 1} -> 0.5.
  EXPECT_EQ(km::topk_recall(shifted.data(), flat.data(), 4, 2), 0.5);
}

TEST(TopkRecall, KOutOfRangeThrowsUsageError) {
  const std::vector<double> x = {1, 2, 3, 4, 5};
  EXPECT_THROW(km::topk_recall(x.data(), x.data(), 5, 0), kvb::UsageError);
  try {
    km::topk_recall(x.data(), x.data(), 5, 6);
    FAIL() << "expected UsageError";
  } catch (const kvb::UsageError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("k = 6"), std::string::npos) << msg;
    EXPECT_NE(msg.find("n = 5"), std::string::npos) << msg;
    EXPECT_EQ(e.code(), kvb::ExitCode::kUsage);
  }
}

TEST(TopkRecall, MatchesFullSortOnRandomData) {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 400);
    const int k = 1 + static_cast<int>(rng() % n);
    std::vector<double> a(n), e(n);
    for (int i = 0; i < n; ++i) {
      e[i] = static_cast<double>(rng() % 20);
      a[i] = e[i] + static_cast<double>(rng() % 4);
    }
    SCOPED_TRACE("trial " + std::to_string(trial) + " k = " + std::to_string(k) + " a = " + show(a) +
                 " e = " + show(e));
    auto top = [&](const std::vector<double>& x) {
      std::vector<int> idx(n);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int i, int j) { return x[i] > x[j]; });
      idx.resize(k);
      std::sort(idx.begin(), idx.end());
      return idx;
    };
    const auto ta = top(a), te = top(e);
    std::vector<int> inter;
    std::set_intersection(ta.begin(), ta.end(), te.begin(), te.end(), std::back_inserter(inter));
    EXPECT_DOUBLE_EQ(km::topk_recall(a.data(), e.data(), n, k), static_cast<double>(inter.size()) / k);
  }
}

// ------------------------------------------------------------------------------------------ KL

TEST(Kl, IdenticalIsZero) {
  const std::vector<double> s = {0.3, -1.2, 4.0, 2.2};
  EXPECT_EQ(km::kl_from_logits(s.data(), s.data(), 4), 0.0);
  EXPECT_EQ(km::kl_from_logits(s.data(), s.data(), 0), 0.0);
}

TEST(Kl, TwoTokenHandCase) {
  // s = [0, 0] -> p = [1/2, 1/2]; ŝ = [0, ln 3] -> p̂ = [1/4, 3/4].
  // KL = ½ ln(½ / ¼) + ½ ln(½ / ¾) = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3) = 0.14384103622589045
  const std::vector<double> s = {0, 0}, sh = {0, std::log(3.0)};
  EXPECT_NEAR(km::kl_from_logits(s.data(), sh.data(), 2), 0.5 * std::log(4.0 / 3.0), 1e-15);
}

TEST(Kl, ShiftInvariant) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(0, 2);
  const int n = 300;
  std::vector<double> s(n), sh(n), sh_c(n), s_c(n);
  for (int i = 0; i < n; ++i) {
    s[i] = nd(rng);
    sh[i] = s[i] + 0.3 * nd(rng);
    sh_c[i] = sh[i] + 123.456;
    s_c[i] = s[i] - 77.7;
  }
  const double base = km::kl_from_logits(s.data(), sh.data(), n);
  SCOPED_TRACE("KL = " + std::to_string(base));
  EXPECT_GT(base, 0);
  EXPECT_NEAR(km::kl_from_logits(s.data(), sh_c.data(), n), base, 1e-12);
  EXPECT_NEAR(km::kl_from_logits(s_c.data(), sh.data(), n), base, 1e-12);
}

TEST(Kl, LargeLogitsStayFinite) {
  // p ≈ [1, 0, 0], p̂ ≈ [0, 1, 0]: KL ≈ log p0 − log p̂0 = 0 − (−2000) = 2000.
  const std::vector<double> s = {1e3, -1e3, 0}, sh = {-1e3, 1e3, 0};
  const double kl = km::kl_from_logits(s.data(), sh.data(), 3);
  EXPECT_TRUE(std::isfinite(kl));
  EXPECT_NEAR(kl, 2000.0, 1e-9);
  const std::vector<double> S = {1e30, -1e30}, Sh = {-1e30, 1e30};
  const double kl2 = km::kl_from_logits(S.data(), Sh.data(), 2);
  EXPECT_TRUE(std::isfinite(kl2));
  EXPECT_GE(kl2, 0.0);
}

TEST(Kl, NeverNegative) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> nd(0, 1);
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<double> s(64), sh(64);
    for (int i = 0; i < 64; ++i) {
      s[i] = nd(rng);
      sh[i] = s[i] + 1e-12 * nd(rng);  // rounding-level differences
    }
    EXPECT_GE(km::kl_from_logits(s.data(), sh.data(), 64), 0.0);
  }
}

// ------------------------------------------------------------------------------------------ others

TEST(ScoreRelErr, HandCase) {
  // s = [3, 4] (‖s‖ = 5), ŝ − s = [0, 1] -> 0.2
  const std::vector<double> s = {3, 4}, sh = {3, 5};
  EXPECT_NEAR(km::score_rel_err(sh.data(), s.data(), 2), 0.2, 1e-15);
  EXPECT_EQ(km::score_rel_err(s.data(), s.data(), 2), 0.0);
  const std::vector<double> z = {0}, e = {1e-31};  // ‖s‖ clamped to 1e-30
  EXPECT_NEAR(km::score_rel_err(e.data(), z.data(), 1), 0.1, 1e-15);
}

TEST(MassLost, HandCase) {
  const std::vector<double> p = {0.1, 0.2, 0.3, 0.4};
  const std::vector<uint8_t> held = {1, 0, 1, 0}, all = {1, 1, 1, 1}, none = {0, 0, 0, 0};
  EXPECT_NEAR(km::mass_lost(p.data(), held.data(), 4), 0.6, 1e-15);
  EXPECT_EQ(km::mass_lost(p.data(), all.data(), 4), 0.0);
  EXPECT_NEAR(km::mass_lost(p.data(), none.data(), 4), 1.0, 1e-15);
}

// ------------------------------------------------------------------------------------------ aggregate

TEST(Aggregate, NumpyLinearQuantiles) {
  // numpy: x = np.arange(1, 21); np.quantile(x, [0.05, 0.5, 0.95]) = [1.95, 10.5, 19.05]
  std::vector<double> v(20);
  std::iota(v.begin(), v.end(), 1.0);
  std::mt19937_64 rng(5);
  std::shuffle(v.begin(), v.end(), rng);
  const auto g = km::aggregate(v);
  EXPECT_EQ(g.count, 20);
  EXPECT_DOUBLE_EQ(g.p05, 1.95);
  EXPECT_DOUBLE_EQ(g.p95, 19.05);
  EXPECT_DOUBLE_EQ(g.median, 10.5);
  EXPECT_DOUBLE_EQ(g.mean, 10.5);
  EXPECT_EQ(g.min, 1.0);
  EXPECT_EQ(g.max, 20.0);
  // x = [1, 2, 3, 4]: h = 3q -> p05 = 1 + 0.15 = 1.15, median 2.5, p95 = 3 + 0.85 = 3.85
  const auto h = km::aggregate({4, 2, 3, 1});
  EXPECT_DOUBLE_EQ(h.p05, 1.15);
  EXPECT_DOUBLE_EQ(h.median, 2.5);
  EXPECT_DOUBLE_EQ(h.p95, 3.85);
  EXPECT_DOUBLE_EQ(h.mean, 2.5);
  // Odd count: median is the middle order statistic.
  EXPECT_EQ(km::aggregate({5, 1, 3}).median, 3.0);
}

TEST(Aggregate, CountZeroAndOne) {
  const auto z = km::aggregate({});
  EXPECT_EQ(z.count, 0);
  EXPECT_EQ(z.mean, 0);
  EXPECT_EQ(z.median, 0);
  EXPECT_EQ(z.p05, 0);
  EXPECT_EQ(z.p95, 0);
  EXPECT_EQ(z.min, 0);
  EXPECT_EQ(z.max, 0);
  const auto o = km::aggregate({0.25});
  EXPECT_EQ(o.count, 1);
  EXPECT_EQ(o.mean, 0.25);
  EXPECT_EQ(o.median, 0.25);
  EXPECT_EQ(o.p05, 0.25);
  EXPECT_EQ(o.p95, 0.25);
  EXPECT_EQ(o.min, 0.25);
  EXPECT_EQ(o.max, 0.25);
}

TEST(Aggregate, ConstantValuesGiveThatValue) {
  const auto g = km::aggregate(std::vector<double>(1001, 0.1));
  EXPECT_EQ(g.mean, 0.1);
  EXPECT_EQ(g.p05, 0.1);
  EXPECT_EQ(g.p95, 0.1);
}

TEST(AggregateDeathTest, NanAsserts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(km::aggregate({1.0, std::numeric_limits<double>::quiet_NaN()}), "assertion failed");
}

// ------------------------------------------------------------------------------------------ evaluate_query

namespace {
struct Query {
  std::vector<double> s, p, o;
};
Query make_query(int64_t C, int d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0, 1);
  Query q;
  q.s.resize(C);
  q.p.resize(C);
  q.o.assign(d, 0);
  double m = -1e300;
  for (auto& v : q.s) m = std::max(m, v = 2 * nd(rng));
  double z = 0;
  for (int64_t i = 0; i < C; ++i) z += (q.p[i] = std::exp(q.s[i] - m));
  for (auto& v : q.p) v /= z;
  for (int64_t i = 0; i < C; ++i)
    for (int j = 0; j < d; ++j) q.o[j] += q.p[i] * nd(rng);
  return q;
}
}  // namespace

TEST(EvaluateQuery, ExactInputIsPerfect) {
  const int64_t C = 100;
  const int d = 16;
  const Query q = make_query(C, d, 1234);
  km::QueryInput in;
  in.C = C;
  in.d = d;
  in.s = q.s.data();
  in.p = q.p.data();
  in.o = q.o.data();
  in.s_hat = q.s.data();
  in.o_hat = q.o.data();
  in.topk = 32;
  in.want_kendall = true;
  const auto m = km::evaluate_query(in);
  EXPECT_DOUBLE_EQ(m.cosine, 1.0);
  EXPECT_EQ(m.rel_l2, 0.0);
  EXPECT_EQ(m.l2_err, 0.0);
  ASSERT_TRUE(m.spearman && m.kendall && m.topk_recall && m.kl && m.score_rel_err);
  EXPECT_DOUBLE_EQ(*m.spearman, 1.0);
  EXPECT_DOUBLE_EQ(*m.kendall, 1.0);
  EXPECT_EQ(*m.topk_recall, 1.0);
  EXPECT_EQ(*m.kl, 0.0);
  EXPECT_EQ(*m.score_rel_err, 0.0);
  EXPECT_FALSE(m.mass_lost.has_value());  // held == null: the metric does not apply

  in.want_kendall = false;
  EXPECT_FALSE(km::evaluate_query(in).kendall.has_value());
}

TEST(EvaluateQuery, NoLogitsGivesNullLogitMetrics) {
  const Query q = make_query(10, 4, 5);
  std::vector<double> oh = q.o;
  oh[0] += 0.1;
  km::QueryInput in;
  in.C = 10;
  in.d = 4;
  in.s = q.s.data();
  in.p = q.p.data();
  in.o = q.o.data();
  in.o_hat = oh.data();
  in.topk = 4;
  in.want_kendall = true;
  const auto m = km::evaluate_query(in);
  EXPECT_LT(m.cosine, 1.0);
  EXPECT_GT(m.rel_l2, 0.0);
  EXPECT_NEAR(m.l2_err, 0.1, 1e-15);
  EXPECT_FALSE(m.spearman || m.kendall || m.topk_recall || m.kl || m.score_rel_err || m.mass_lost);
}

TEST(EvaluateQuery, HeldTokensRestrictLogitMetrics) {
  // s = [4, 3, 2, 1], token 1 dropped; ŝ equals s on held tokens (NaN on the dropped one is ignored).
  const std::vector<double> s = {4, 3, 2, 1};
  std::vector<double> p(4);
  double z = 0;
  for (int i = 0; i < 4; ++i) z += (p[i] = std::exp(s[i]));
  for (auto& v : p) v /= z;
  const std::vector<double> sh = {4, std::numeric_limits<double>::quiet_NaN(), 2, 1};
  const std::vector<double> o = {1, 2}, oh = {1, 2};
  const std::vector<uint8_t> held = {1, 0, 1, 1};
  km::QueryInput in;
  in.C = 4;
  in.d = 2;
  in.s = s.data();
  in.p = p.data();
  in.o = o.data();
  in.s_hat = sh.data();
  in.o_hat = oh.data();
  in.held = held.data();
  in.topk = 2;
  in.want_kendall = true;
  const auto m = km::evaluate_query(in);
  ASSERT_TRUE(m.mass_lost && m.spearman && m.kendall && m.topk_recall && m.kl && m.score_rel_err);
  EXPECT_NEAR(*m.mass_lost, p[1], 1e-15);
  EXPECT_DOUBLE_EQ(*m.spearman, 1.0);
  EXPECT_DOUBLE_EQ(*m.kendall, 1.0);
  EXPECT_EQ(*m.kl, 0.0);
  EXPECT_EQ(*m.score_rel_err, 0.0);
  // exact top-2 over all tokens = {0, 1}; the codec's top-2 held = {0, 2} -> 1/2.
  EXPECT_EQ(*m.topk_recall, 0.5);

  // No token held: logit metrics are undefined; all mass is lost.
  const std::vector<uint8_t> none = {0, 0, 0, 0};
  in.held = none.data();
  const auto m0 = km::evaluate_query(in);
  EXPECT_NEAR(*m0.mass_lost, 1.0, 1e-15);
  EXPECT_FALSE(m0.spearman || m0.kendall || m0.topk_recall || m0.kl || m0.score_rel_err);

  // Everything held: same as no mask, but mass_lost = 0.
  const std::vector<uint8_t> all = {1, 1, 1, 1};
  in.held = all.data();
  in.s_hat = s.data();
  const auto m1 = km::evaluate_query(in);
  EXPECT_EQ(*m1.mass_lost, 0.0);
  EXPECT_EQ(*m1.topk_recall, 1.0);
}

TEST(EvaluateQuery, ErrorsAreTyped) {
  const Query q = make_query(8, 4, 9);
  km::QueryInput in;
  in.C = 8;
  in.d = 4;
  in.s = q.s.data();
  in.p = q.p.data();
  in.o = q.o.data();
  in.o_hat = q.o.data();
  in.topk = 9;  // > C: a config error even for a codec without logits
  EXPECT_THROW(km::evaluate_query(in), kvb::UsageError);
  in.topk = 8;
  std::vector<double> bad = q.o;
  bad[2] = std::numeric_limits<double>::infinity();
  in.o_hat = bad.data();
  EXPECT_THROW(km::evaluate_query(in), kvb::RuntimeError);
  in.o_hat = q.o.data();
  std::vector<double> bad_s = q.s;
  bad_s[3] = std::numeric_limits<double>::quiet_NaN();
  in.s_hat = bad_s.data();
  EXPECT_THROW(km::evaluate_query(in), kvb::RuntimeError);
}
