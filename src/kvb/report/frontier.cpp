// Pareto frontier of bits vs one metric (frontier.h): sort by bits, then one sweep over groups of equal bits.
#include "kvb/report/frontier.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvb {

std::vector<bool> pareto_frontier(const std::vector<FrontierPoint>& points, metrics::Better better) {
  const bool higher = better == metrics::Better::kHigher;
  auto good = [&](double m) { return higher ? m : -m; };  // larger is better
  std::vector<size_t> idx;
  for (size_t i = 0; i < points.size(); ++i)
    if (std::isfinite(points[i].bits) && std::isfinite(points[i].metric)) idx.push_back(i);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (points[a].bits != points[b].bits) return points[a].bits < points[b].bits;
    return good(points[a].metric) > good(points[b].metric);
  });
  std::vector<bool> on(points.size(), false);
  double best_cheaper = -INFINITY;  // best metric among points with strictly fewer bits
  for (size_t g = 0; g < idx.size();) {
    size_t e = g;
    while (e < idx.size() && points[idx[e]].bits == points[idx[g]].bits) ++e;
    const double top = good(points[idx[g]].metric);  // the group's best (sorted best first)
    if (top > best_cheaper)
      for (size_t k = g; k < e && good(points[idx[k]].metric) == top; ++k) on[idx[k]] = true;
    best_cheaper = std::max(best_cheaper, top);
    g = e;
  }
  return on;
}

}  // namespace kvb
