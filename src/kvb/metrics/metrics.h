#pragma once
/// Fidelity metrics of docs/metrics.md §2–§5 (per query), their aggregates, and the metric registry.
/// All metric math runs in double.
///
/// Conventions shared by every function here (docs/metrics.md §1):
///  - Inputs must be finite. Functions that sort (ranks, spearman, kendall_tau_b, topk_recall) and
///    aggregate() check this with KVB_ASSERT, since a NaN would make the sort undefined behaviour;
///    evaluate_query() checks the codec's outputs first and throws kvb::RuntimeError instead, so a
///    broken codec becomes an error record, not an abort.
///  - No function returns NaN: an undefined value is std::nullopt, or a documented value.
///  - Ties are exact equality of doubles (-0.0 == 0.0).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvb::metrics {

enum class Better { kHigher, kLower };

struct QueryMetrics;

struct MetricInfo {
  std::string name;         ///< e.g. "cosine", "topk_recall"
  std::string description;  ///< one line
  Better better = Better::kHigher;
  std::string applies_to;   ///< "all codecs" | "codecs with logits" | "token-dropping codecs"
  bool optional = false;    ///< computed only when asked for (kendall: QueryInput::want_kendall)
  /// The metric's value for one query (evaluate_query's result); nullopt where it is not defined.
  std::optional<double> (*value)(const QueryMetrics&) = nullptr;
};

/// Every metric kvbench reports, in a fixed order (used by results, compare and plots): cosine, rel_l2,
/// spearman, kendall, topk_recall, kl, score_rel_err, mass_lost, l2_err. The runner aggregates exactly
/// these, so a new metric is one entry here plus its computation in evaluate_query.
const std::vector<MetricInfo>& all_metrics();
/// nullptr when no metric has that name.
const MetricInfo* find_metric(const std::string& name);

/// cos(a, b). Defined as 1 when both are zero vectors, 0 when exactly one is. Clamped to [-1, 1].
double cosine(const double* a, const double* b, int64_t n);
/// ‖approx − exact‖ / max(‖exact‖, 1e-8)  (docs/metrics.md §2 clamp).
double rel_l2(const double* approx, const double* exact, int64_t n);
/// ‖approx − exact‖ (unnormalized; docs/metrics.md §2 asks for it next to rel_l2).
double l2_err(const double* approx, const double* exact, int64_t n);
/// Spearman rank correlation (average ranks for ties). Returns nullopt when either input is constant
/// (the correlation is undefined; this includes n < 2) — never NaN. Clamped to [-1, 1].
std::optional<double> spearman(const double* a, const double* b, int64_t n);
/// Kendall τ-b (tie-corrected), O(n log n) by Knight's merge-sort algorithm. Returns nullopt when
/// either input is constant (this includes n < 2). Clamped to [-1, 1].
std::optional<double> kendall_tau_b(const double* a, const double* b, int64_t n);
/// |top-k(approx) ∩ top-k(exact)| / k. Ties at the k-th place broken by lower index (both sides use the
/// same rule, so approx == exact always gives 1). Requires 1 <= k <= n (throws UsageError otherwise).
/// O(n) average (nth_element).
double topk_recall(const double* approx, const double* exact, int64_t n, int64_t k);
/// KL(p ‖ p̂) from logits s (exact) and ŝ (approx) via max-shifted log-softmax. Finite logits required;
/// the result is >= 0 (tiny negative rounding is clamped to 0) and finite. n == 0 gives 0.
double kl_from_logits(const double* s_exact, const double* s_approx, int64_t n);
/// ‖ŝ − s‖ / max(‖s‖, 1e-30) over the n tokens.
double score_rel_err(const double* s_approx, const double* s_exact, int64_t n);
/// Σ p_i over tokens with held[i] == 0 (p = exact probabilities), clamped to [0, 1].
double mass_lost(const double* p_exact, const uint8_t* held, int64_t n);

/// Average ranks (1-based, ties averaged) of x[0..n). O(n log n), deterministic.
std::vector<double> ranks(const double* x, int64_t n);

struct Aggregate {
  int64_t count = 0;
  double mean = 0, median = 0, p05 = 0, p95 = 0, min = 0, max = 0;
};
/// Quantiles by linear interpolation between order statistics (numpy's default, `method="linear"`:
/// virtual index h = (count − 1)·q). count == 0 -> all zeros. Values must be finite (KVB_ASSERT).
Aggregate aggregate(std::vector<double> values);
/// One quantile q ∈ [0, 1] of already sorted (ascending) values, numpy "linear" method. n must be > 0.
double quantile_sorted(const double* sorted, int64_t n, double q);

/// One query of one head against C cached tokens (docs/protocol.md §1).
struct QueryInput {
  int64_t C = 0;
  int d = 0;
  const double* s = nullptr;      ///< exact logits [C]
  const double* p = nullptr;      ///< exact probabilities [C]
  const double* o = nullptr;      ///< exact output [d]
  const double* s_hat = nullptr;  ///< approx logits [C] or null (codec defines none)
  const double* o_hat = nullptr;  ///< approx output [d]
  const uint8_t* held = nullptr;  ///< [C] (1 = still held) or null (codec holds every token)
  int64_t topk = 32;
  bool want_kendall = false;
};

struct QueryMetrics {
  double cosine = 0, rel_l2 = 0;
  double l2_err = 0;  ///< unnormalized ‖ô − o‖ (docs/metrics.md §2)
  std::optional<double> spearman, kendall, topk_recall, kl, score_rel_err, mass_lost;
};

/// All metrics of one query.
///  - cosine, rel_l2, l2_err: always.
///  - mass_lost: only when `held` is given (token-dropping codecs); nullopt otherwise.
///  - spearman, kendall (only with want_kendall), topk_recall, kl = KL(p ‖ softmax(ŝ)), score_rel_err:
///    only when `s_hat` is given. When `held` is also given and drops some tokens, ŝ of dropped tokens is
///    ignored and (docs/metrics.md §4):
///      spearman, kendall, score_rel_err: over the held tokens only;
///      kl: KL(p_H ‖ softmax(ŝ_H)) with p_H = softmax(s_H), the exact distribution renormalized over the
///          held set H (the lost part is reported by mass_lost);
///      topk_recall: |top-k(ŝ over H) ∩ top-k(s over all C)| / k, i.e. recall of the exact top-k
///          among the tokens the codec kept (its top-min(k, |H|) held tokens);
///    and all of them are nullopt when no token is held.
///  - topk must satisfy 1 <= topk <= C, checked on every call (UsageError), whether or not ŝ exists, so
///    the same config fails the same way for every codec.
///  - Throws kvb::RuntimeError when o_hat or s_hat (on held tokens) holds NaN or Inf.
QueryMetrics evaluate_query(const QueryInput& in);

}  // namespace kvb::metrics
