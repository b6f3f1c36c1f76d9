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

namespace {

/// The e2e KL mean of an ok e2e cell.
std::optional<double> e2e_kl(const CellRecord& c) {
  if (!c.ok() || !c.e2e || !c.e2e->contains("kl")) return std::nullopt;
  return c.e2e->at("kl").at("mean").get<double>();
}

std::optional<double> worst_layer(const CellRecord& c, const std::string& metric, metrics::Better better) {
  std::optional<double> w;
  for (const auto& l : c.per_layer) {
    const auto it = l.metric_means.find(metric + "_mean");
    const auto it2 = it != l.metric_means.end() ? it : l.metric_means.find(metric);
    if (it2 == l.metric_means.end()) continue;
    const double v = it2->second;
    if (!w || (better == metrics::Better::kHigher ? v < *w : v > *w)) w = v;
  }
  return w;
}

}  // namespace

Json proxy_correlation(const std::vector<CellRecord>& cells) {
  Json rows = Json::array();
  for (const auto& m : metrics::all_metrics()) {
    if (m.optional) continue;
    for (const char* over : {"mean_layer", "worst_layer"}) {
      std::vector<double> x, y;
      for (const auto& c : cells) {
        const auto kl = e2e_kl(c);
        if (!kl) continue;
        const auto v = std::string(over) == "mean_layer" ? c.mean(m.name) : worst_layer(c, m.name, m.better);
        if (!v) continue;
        x.push_back(*v), y.push_back(*kl);
      }
      if (x.empty()) continue;
      const auto rho = metrics::spearman(x.data(), y.data(), static_cast<int64_t>(x.size()));
      rows.push_back({{"metric", m.name},
                      {"over", over},
                      {"better", m.better == metrics::Better::kHigher ? "higher" : "lower"},
                      {"spearman", rho ? Json(*rho) : Json(nullptr)},
                      {"cells", static_cast<int64_t>(x.size())}});
    }
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Json& a, const Json& b) {
    const double ra = a["spearman"].is_null() ? -1 : std::fabs(a["spearman"].get<double>());
    const double rb = b["spearman"].is_null() ? -1 : std::fabs(b["spearman"].get<double>());
    return ra > rb;
  });
  return rows;
}

}  // namespace kvb::e2e
