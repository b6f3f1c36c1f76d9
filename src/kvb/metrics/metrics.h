#pragma once
/// Fidelity metrics of kvbench.md §5 (per query), their aggregates, and the metric registry.
/// All metric math runs in double.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvb::metrics {

enum class Better { kHigher, kLower };

struct MetricInfo {
  std::string name;         ///< e.g. "cosine", "topk_recall"
  std::string description;  ///< one line
  Better better = Better::kHigher;
  std::string applies_to;   ///< "all codecs" | "codecs with logits" | "token-dropping codecs"
};

/// Every metric kvbench reports, in a fixed order (used by results, compare and plots).
const std::vector<MetricInfo>& all_metrics();
const MetricInfo* find_metric(const std::string& name);

/// cos(a, b). Defined as 1 when both are zero vectors, 0 when exactly one is.
double cosine(const double* a, const double* b, int64_t n);
/// ‖approx − exact‖ / max(‖exact‖, 1e-8)  (codecs.md §9.1 clamp).
double rel_l2(const double* approx, const double* exact, int64_t n);
/// Spearman rank correlation (average ranks for ties). Returns nullopt when either input is constant
/// (the correlation is undefined) — never NaN.
std::optional<double> spearman(const double* a, const double* b, int64_t n);
/// |top-k(approx) ∩ top-k(exact)| / k. Ties at the k-th place broken by lower index. Requires 1 <= k <= n
/// (throws UsageError otherwise).
double topk_recall(const double* approx, const double* exact, int64_t n, int64_t k);
/// KL(p ‖ p̂) from logits s (exact) and ŝ (approx) via log-softmax. >= 0, finite.
double kl_from_logits(const double* s_exact, const double* s_approx, int64_t n);
/// ‖ŝ − s‖ / max(‖s‖, 1e-30) over the n tokens.
double score_rel_err(const double* s_approx, const double* s_exact, int64_t n);
/// Σ p_i over tokens with held[i] == 0 (p = exact probabilities).
double mass_lost(const double* p_exact, const uint8_t* held, int64_t n);

/// Average ranks (1-based, ties averaged) of x[0..n).
std::vector<double> ranks(const double* x, int64_t n);

struct Aggregate {
  int64_t count = 0;
  double mean = 0, median = 0, p05 = 0, p95 = 0, min = 0, max = 0;
};
/// Quantiles by linear interpolation between order statistics (numpy's default). count == 0 -> all zeros.
Aggregate aggregate(std::vector<double> values);

}  // namespace kvb::metrics
