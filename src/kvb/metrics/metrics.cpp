#include "kvb/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kvb/core/error.h"

namespace kvb::metrics {
namespace {

bool all_finite(const double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

/// Euclidean norm of f(0..n). Plain sum of squares when that cannot overflow or underflow (so results
/// are bit-identical to the textbook formula in every ordinary case); otherwise each element is scaled
/// by an exact power of two first.
template <class F>
double norm2(int64_t n, F f) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(f(i)));
  if (m == 0) return 0;
  const int e = std::ilogb(m);
  if (e > -400 && e < 400) {  // squares and their sum stay well inside the normal range
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double v = f(i);
      ss += v * v;
    }
    return std::sqrt(ss);
  }
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = std::scalbn(f(i), -e);
    ss += v * v;
  }
  return std::scalbn(std::sqrt(ss), e);
}

double max_abs(const double* x, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

double clamp_unit(double r) { return std::clamp(r, -1.0, 1.0); }

void check_k(int64_t k, int64_t n) {
  KVB_CHECK(k >= 1 && k <= n, UsageError,
            "topk_recall: k = {} is out of range: it must satisfy 1 <= k <= n = {} (the number of cached "
            "tokens C); lower the 'topk' setting or use a longer context",
            k, n);
}

/// Order for "top" selection: larger value first, ties by lower index. A strict total order for finite x.
struct TopOrder {
  const double* x;
  bool operator()(int64_t i, int64_t j) const { return x[i] > x[j] || (x[i] == x[j] && i < j); }
};

/// Moves the top-k of `idx` (by x, see TopOrder) to idx[0..k). O(|idx|) average.
void select_top(std::vector<int64_t>& idx, const double* x, int64_t k) {
  if (k < static_cast<int64_t>(idx.size())) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), TopOrder{x});
}

std::vector<int64_t> iota_idx(int64_t n) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  return idx;
}

/// Number of pairs i < j with y[i] > y[j] (strict inversions); sorts y ascending. Bottom-up merge sort.
int64_t count_inversions(std::vector<double>& y) {
  const size_t n = y.size();
  std::vector<double> buf(n);
  int64_t inv = 0;
  for (size_t width = 1; width < n; width *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * width) {
      const size_t mid = std::min(lo + width, n), hi = std::min(lo + 2 * width, n);
      size_t i = lo, j = mid, o = lo;
      while (i < mid && j < hi) {
        if (y[j] < y[i]) {  // strictly smaller: jumps over every remaining left element
          inv += static_cast<int64_t>(mid - i);
          buf[o++] = y[j++];
        } else {
          buf[o++] = y[i++];  // equal values are not inversions (ties)
        }
      }
      while (i < mid) buf[o++] = y[i++];
      while (j < hi) buf[o++] = y[j++];
    }
    y.swap(buf);
  }
  return inv;
}

/// Σ t(t−1)/2 over runs of equal values of a sorted sequence given by `eq(i, i+1)`.
template <class Eq>
int64_t tied_pairs(int64_t n, Eq eq) {
  int64_t total = 0, run = 1;
  for (int64_t i = 1; i <= n; ++i) {
    if (i < n && eq(i - 1, i)) {
      ++run;
    } else {
      total += run * (run - 1) / 2;
      run = 1;
    }
  }
  return total;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Registry

const std::vector<MetricInfo>& all_metrics() {
  using Q = QueryMetrics;
  using V = std::optional<double>;
  static const std::vector<MetricInfo> kMetrics = {
      {"cosine", "cosine similarity of the approximate and exact attention outputs, cos(ô, o)", Better::kHigher,
       "all codecs", false, [](const Q& m) -> V { return m.cosine; }},
      {"rel_l2", "relative L2 error of the attention output, ‖ô − o‖ / max(‖o‖, 1e-8)", Better::kLower,
       "all codecs", false, [](const Q& m) -> V { return m.rel_l2; }},
      {"spearman", "Spearman rank correlation of approximate vs exact logits over the cached tokens",
       Better::kHigher, "codecs with logits", false, [](const Q& m) { return m.spearman; }},
      {"kendall", "Kendall tau-b (tie-corrected) rank correlation of approximate vs exact logits",
       Better::kHigher, "codecs with logits", true, [](const Q& m) { return m.kendall; }},
      {"topk_recall", "|top-k(ŝ) ∩ top-k(s)| / k: recall of the exact top-k tokens by approximate logits",
       Better::kHigher, "codecs with logits", false, [](const Q& m) { return m.topk_recall; }},
      {"kl", "KL(p ‖ softmax(ŝ)) of the exact vs approximate attention distributions, in nats", Better::kLower,
       "codecs with logits", false, [](const Q& m) { return m.kl; }},
      {"score_rel_err", "relative L2 error of the logits, ‖ŝ − s‖ / ‖s‖ over the cached tokens", Better::kLower,
       "codecs with logits", false, [](const Q& m) { return m.score_rel_err; }},
      {"mass_lost", "exact attention probability mass of the tokens the codec no longer holds", Better::kLower,
       "token-dropping codecs", false, [](const Q& m) { return m.mass_lost; }},
      {"l2_err", "unnormalized L2 error of the attention output, ‖ô − o‖ (small-norm outputs inflate rel_l2)",
       Better::kLower, "all codecs", false, [](const Q& m) -> V { return m.l2_err; }},
  };
  return kMetrics;
}

const MetricInfo* find_metric(const std::string& name) {
  for (const auto& m : all_metrics())
    if (m.name == name) return &m;
  return nullptr;
}

// ---------------------------------------------------------------------------------------------------
// Per-query metrics

double cosine(const double* a, const double* b, int64_t n) {
  const double ma = max_abs(a, n), mb = max_abs(b, n);
  if (ma == 0 && mb == 0) return 1.0;
  if (ma == 0 || mb == 0) return 0.0;
  const int ea = std::ilogb(ma), eb = std::ilogb(mb);
  double dot = 0, ssa = 0, ssb = 0;
  if (ea > -250 && ea < 250 && eb > -250 && eb < 250) {
    for (int64_t i = 0; i < n; ++i) {
      dot += a[i] * b[i];
      ssa += a[i] * a[i];
      ssb += b[i] * b[i];
    }
  } else {  // scale each side by an exact power of two; the cosine is scale-invariant
    for (int64_t i = 0; i < n; ++i) {
      const double x = std::scalbn(a[i], -ea), y = std::scalbn(b[i], -eb);
      dot += x * y;
      ssa += x * x;
      ssb += y * y;
    }
  }
  return clamp_unit(dot / (std::sqrt(ssa) * std::sqrt(ssb)));
}

double l2_err(const double* approx, const double* exact, int64_t n) {
  return norm2(n, [&](int64_t i) { return approx[i] - exact[i]; });
}

double rel_l2(const double* approx, const double* exact, int64_t n) {
  const double den = std::max(norm2(n, [&](int64_t i) { return exact[i]; }), 1e-8);
  return l2_err(approx, exact, n) / den;
}

std::vector<double> ranks(const double* x, int64_t n) {
  KVB_ASSERT(n >= 0);
  KVB_ASSERT(all_finite(x, n));
  std::vector<int64_t> idx = iota_idx(n);
  std::sort(idx.begin(), idx.end(), [x](int64_t i, int64_t j) { return x[i] < x[j] || (x[i] == x[j] && i < j); });
  std::vector<double> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n;) {
    int64_t j = i + 1;
    while (j < n && x[idx[j]] == x[idx[i]]) ++j;
    const double avg = 0.5 * static_cast<double>(i + 1 + j);  // mean of the 1-based ranks i+1 .. j
    for (int64_t t = i; t < j; ++t) r[idx[t]] = avg;
    i = j;
  }
  return r;
}

std::optional<double> spearman(const double* a, const double* b, int64_t n) {
  if (n < 2) return std::nullopt;
  const std::vector<double> ra = ranks(a, n), rb = ranks(b, n);
  // Average ranks always sum to n(n+1)/2, so both means are exactly (n+1)/2. Deviations are multiples of
  // 1/2, so the sums below are exact for any practical n; a zero variance means a constant input.
  const double mean = 0.5 * static_cast<double>(n + 1);
  double cov = 0, va = 0, vb = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = ra[i] - mean, y = rb[i] - mean;
    cov += x * y;
    va += x * x;
    vb += y * y;
  }
  if (va == 0 || vb == 0) return std::nullopt;
  return clamp_unit(cov / std::sqrt(va * vb));
}

std::optional<double> kendall_tau_b(const double* a, const double* b, int64_t n) {
  if (n < 2) return std::nullopt;
  KVB_ASSERT(all_finite(a, n));
  KVB_ASSERT(all_finite(b, n));
  // Knight (1966), as in scipy.stats.kendalltau: sort by (a, b), count ties in a (n1) and joint ties (n3),
  // then merge-sort the b sequence counting strict inversions (= discordant pairs) and count ties in b (n2).
  std::vector<int64_t> idx = iota_idx(n);
  std::sort(idx.begin(), idx.end(), [a, b](int64_t i, int64_t j) {
    if (a[i] != a[j]) return a[i] < a[j];
    if (b[i] != b[j]) return b[i] < b[j];
    return i < j;
  });
  const int64_t n0 = n * (n - 1) / 2;
  const int64_t n1 = tied_pairs(n, [&](int64_t i, int64_t j) { return a[idx[i]] == a[idx[j]]; });
  const int64_t n3 = tied_pairs(
      n, [&](int64_t i, int64_t j) { return a[idx[i]] == a[idx[j]] && b[idx[i]] == b[idx[j]]; });
  std::vector<double> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[i] = b[idx[i]];
  const int64_t discordant = count_inversions(y);  // y is now sorted
  const int64_t n2 = tied_pairs(n, [&](int64_t i, int64_t j) { return y[i] == y[j]; });
  if (n0 == n1 || n0 == n2) return std::nullopt;
  const int64_t s = n0 - n1 - n2 + n3 - 2 * discordant;  // concordant − discordant
  const double den = std::sqrt(static_cast<double>(n0 - n1)) * std::sqrt(static_cast<double>(n0 - n2));
  return clamp_unit(static_cast<double>(s) / den);
}

double topk_recall(const double* approx, const double* exact, int64_t n, int64_t k) {
  check_k(k, n);
  KVB_ASSERT(all_finite(approx, n));
  KVB_ASSERT(all_finite(exact, n));
  std::vector<int64_t> idx = iota_idx(n);
  select_top(idx, exact, k);
  std::vector<uint8_t> in_exact(static_cast<size_t>(n), 0);
  for (int64_t t = 0; t < k; ++t) in_exact[idx[t]] = 1;
  std::iota(idx.begin(), idx.end(), int64_t{0});
  select_top(idx, approx, k);
  int64_t hit = 0;
  for (int64_t t = 0; t < k; ++t) hit += in_exact[idx[t]];
  return static_cast<double>(hit) / static_cast<double>(k);
}

double kl_from_logits(const double* s_exact, const double* s_approx, int64_t n) {
  if (n <= 0) return 0;
  double ms = -std::numeric_limits<double>::infinity(), mh = ms;
  for (int64_t i = 0; i < n; ++i) {
    ms = std::max(ms, s_exact[i]);
    mh = std::max(mh, s_approx[i]);
  }
  double zs = 0, zh = 0;
  for (int64_t i = 0; i < n; ++i) {
    zs += std::exp(s_exact[i] - ms);
    zh += std::exp(s_approx[i] - mh);
  }
  const double ls = std::log(zs), lh = std::log(zh);  // zs, zh >= 1 (the max term is exp(0))
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double logp = (s_exact[i] - ms) - ls;
    const double p = std::exp(logp);
    if (p == 0) continue;  // 0 · log(0 / q) = 0
    const double logq = (s_approx[i] - mh) - lh;
    kl += p * (logp - logq);
  }
  return kl > 0 ? kl : 0.0;  // KL >= 0; a tiny negative value is rounding
}

double score_rel_err(const double* s_approx, const double* s_exact, int64_t n) {
  const double den = std::max(norm2(n, [&](int64_t i) { return s_exact[i]; }), 1e-30);
  return l2_err(s_approx, s_exact, n) / den;
}

double mass_lost(const double* p_exact, const uint8_t* held, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i)
    if (held[i] == 0) m += p_exact[i];
  return std::clamp(m, 0.0, 1.0);
}

// ---------------------------------------------------------------------------------------------------
// Aggregates

double quantile_sorted(const double* x, int64_t n, double q) {
  KVB_ASSERT(n > 0);
  KVB_ASSERT(q >= 0 && q <= 1);
  // numpy.quantile(method="linear"): virtual index n·q + (α + q(1 − α − β)) − 1 with α = β = 1, i.e.
  // (n − 1)·q, written the way numpy evaluates it so results match bit for bit.
  const double nd = static_cast<double>(n);
  const double h = nd * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0;
  if (h >= nd - 1) return x[n - 1];
  if (h < 0) return x[0];
  const double lo_f = std::floor(h);
  const auto lo = static_cast<int64_t>(lo_f);
  const double t = h - lo_f;
  const double a = x[lo], b = x[lo + 1];
  const double diff = b - a;
  // numpy's _lerp: a + (b − a)·t, evaluated from the nearer end for t >= 0.5 (monotone and exact at t = 1).
  return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

Aggregate aggregate(std::vector<double> values) {
  Aggregate g;
  g.count = static_cast<int64_t>(values.size());
  if (g.count == 0) return g;
  for (double v : values) KVB_ASSERT(std::isfinite(v));
  std::sort(values.begin(), values.end());
  const double* x = values.data();
  const int64_t n = g.count;
  g.min = x[0];
  g.max = x[n - 1];
  // Neumaier-compensated sum: means over millions of queries stay accurate.
  double sum = 0, comp = 0;
  for (double v : values) {
    const double t = sum + v;
    comp += std::fabs(sum) >= std::fabs(v) ? (sum - t) + v : (v - t) + sum;
    sum = t;
  }
  g.mean = std::clamp((sum + comp) / static_cast<double>(n), g.min, g.max);
  g.median = quantile_sorted(x, n, 0.5);
  g.p05 = quantile_sorted(x, n, 0.05);
  g.p95 = quantile_sorted(x, n, 0.95);
  return g;
}

// ---------------------------------------------------------------------------------------------------
// One query

QueryMetrics evaluate_query(const QueryInput& in) {
  KVB_ASSERT(in.C >= 1 && in.d >= 1);
  KVB_ASSERT(in.s && in.p && in.o && in.o_hat);
  const int64_t C = in.C;
  check_k(in.topk, C);
  KVB_ASSERT(all_finite(in.s, C));
  KVB_ASSERT(all_finite(in.o, in.d));
  for (int j = 0; j < in.d; ++j)
    KVB_CHECK(std::isfinite(in.o_hat[j]), RuntimeError,
              "codec produced a non-finite attention output: ô[{}] = {} (head_dim {})", j, in.o_hat[j], in.d);

  QueryMetrics m;
  m.cosine = cosine(in.o_hat, in.o, in.d);
  m.rel_l2 = rel_l2(in.o_hat, in.o, in.d);
  m.l2_err = l2_err(in.o_hat, in.o, in.d);

  int64_t n_held = C;
  if (in.held) {
    m.mass_lost = mass_lost(in.p, in.held, C);
    n_held = 0;
    for (int64_t i = 0; i < C; ++i) n_held += in.held[i] != 0;
  }
  if (!in.s_hat) return m;
  for (int64_t i = 0; i < C; ++i)
    KVB_CHECK(!(in.held == nullptr || in.held[i]) || std::isfinite(in.s_hat[i]), RuntimeError,
              "codec produced a non-finite logit: ŝ[{}] = {} (C = {})", i, in.s_hat[i], C);

  if (n_held == C) {
    m.spearman = spearman(in.s_hat, in.s, C);
    if (in.want_kendall) m.kendall = kendall_tau_b(in.s_hat, in.s, C);
    m.topk_recall = topk_recall(in.s_hat, in.s, C, in.topk);
    m.kl = kl_from_logits(in.s, in.s_hat, C);
    m.score_rel_err = score_rel_err(in.s_hat, in.s, C);
    return m;
  }
  if (n_held == 0) return m;

  // Token-dropping codec with logits: rank, KL and score metrics over the held set H only.
  std::vector<int64_t> h_idx;
  h_idx.reserve(static_cast<size_t>(n_held));
  for (int64_t i = 0; i < C; ++i)
    if (in.held[i]) h_idx.push_back(i);
  std::vector<double> s_h(h_idx.size()), sh_h(h_idx.size());
  for (size_t t = 0; t < h_idx.size(); ++t) {
    s_h[t] = in.s[h_idx[t]];
    sh_h[t] = in.s_hat[h_idx[t]];
  }
  m.spearman = spearman(sh_h.data(), s_h.data(), n_held);
  if (in.want_kendall) m.kendall = kendall_tau_b(sh_h.data(), s_h.data(), n_held);
  m.kl = kl_from_logits(s_h.data(), sh_h.data(), n_held);
  m.score_rel_err = score_rel_err(sh_h.data(), s_h.data(), n_held);

  // Recall of the exact top-k (over all C tokens) by the codec's top-min(k, |H|) held tokens.
  std::vector<int64_t> all = iota_idx(C);
  select_top(all, in.s, in.topk);
  std::vector<uint8_t> in_exact(static_cast<size_t>(C), 0);
  for (int64_t t = 0; t < in.topk; ++t) in_exact[all[t]] = 1;
  const int64_t kk = std::min(in.topk, n_held);
  select_top(h_idx, in.s_hat, kk);
  int64_t hit = 0;
  for (int64_t t = 0; t < kk; ++t) hit += in_exact[h_idx[t]];
  m.topk_recall = static_cast<double>(hit) / static_cast<double>(in.topk);
  return m;
}

}  // namespace kvb::metrics
