#include "kvb/e2e/e2e_stats.h"

#include <algorithm>
#include <cmath>

#include "kvb/core/rng.h"
#include "kvb/metrics/metrics.h"

namespace kvb::e2e {

std::pair<double, double> bootstrap95(int W, int resamples, uint64_t seed,
                                      const std::function<double(const std::vector<int>&)>& stat) {
  std::vector<int> idx(static_cast<size_t>(W));
  for (int w = 0; w < W; ++w) idx[w] = w;
  if (W <= 1 || resamples <= 0) {
    const double v = stat(idx);
    return {v, v};
  }
  Rng rng(seed);
  std::vector<double> vals;
  vals.reserve(static_cast<size_t>(resamples));
  for (int b = 0; b < resamples; ++b) {
    for (int w = 0; w < W; ++w) idx[w] = static_cast<int>(rng.next_u64() % static_cast<uint64_t>(W));
    vals.push_back(stat(idx));
  }
  std::sort(vals.begin(), vals.end());
  return {metrics::quantile_sorted(vals.data(), resamples, 0.025), metrics::quantile_sorted(vals.data(), resamples, 0.975)};
}

Json token_summary(const std::vector<std::vector<double>>& per_window, int resamples, uint64_t seed) {
  std::vector<double> all, means;
  for (const auto& w : per_window) {
    double s = 0;
    for (double v : w) s += v, all.push_back(v);
    means.push_back(w.empty() ? 0.0 : s / static_cast<double>(w.size()));
  }
  const metrics::Aggregate a = metrics::aggregate(all);
  // Every window has N tokens, so the mean of window means is the token mean.
  const auto ci = bootstrap95(static_cast<int>(means.size()), resamples, seed, [&](const std::vector<int>& idx) {
    double s = 0;
    for (int w : idx) s += means[w];
    return s / static_cast<double>(idx.size());
  });
  return Json{{"mean", a.mean}, {"median", a.median}, {"p95", a.p95}, {"ci95", Json::array({ci.first, ci.second})}};
}

}  // namespace kvb::e2e
