#include "kvb/report/proxy.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "kvb/metrics/metrics.h"

namespace kvb {
namespace {

/// The e2e KL mean of an ok e2e cell.
std::optional<double> e2e_kl(const CellRecord& c) {
  if (!c.ok() || !c.e2e || !c.e2e->contains("kl")) return std::nullopt;
  return c.e2e->at("kl").at("mean").get<double>();
}

std::optional<double> worst_layer(const CellRecord& c, const std::string& metric, metrics::Better better) {
  std::optional<double> w;
  for (const auto& l : c.per_layer) {
    const auto it = l.metric_means.find(metric);
    if (it == l.metric_means.end()) continue;
    const double v = it->second;
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

void refresh_e2e(ResultDoc& doc) {
  if (!doc.e2e) return;
  (*doc.e2e)["proxy_correlation"] = proxy_correlation(doc.cells);
  std::optional<double> fp16;
  for (const auto& c : doc.cells)
    if (c.ok() && c.codec == "fp16" && c.e2e) fp16 = c.e2e->at("decode_tokens_per_s").at("codec").get<double>();
  for (auto& c : doc.cells) {
    if (!c.ok() || !c.e2e) continue;
    Json& d = (*c.e2e)["decode_tokens_per_s"];
    d.erase("ratio_vs_fp16");
    if (fp16 && *fp16 > 0) d["ratio_vs_fp16"] = d.at("codec").get<double>() / *fp16;
  }
}

}  // namespace kvb
