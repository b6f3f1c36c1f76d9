#pragma once
/// The Pareto frontier of storage vs one quality metric, shared by the end-of-run tables of `kvbench run`
/// (run/summary.h) and `kvbench e2e` (e2e/e2e_table.cpp).
///
/// A point is on the frontier when no other point is at least as cheap (bits <=) and at least as good on
/// the metric with one of the two strictly better. Equal points are all on it. A point whose bits or metric
/// is not finite is never on it and never hides another.
#include <vector>

#include "kvb/metrics/metrics.h"

namespace kvb {

struct FrontierPoint {
  double bits = 0;    ///< cost: bits per element (fixed state included, in both tables)
  double metric = 0;  ///< quality, better in the direction passed to pareto_frontier
};

/// on[i] is true when points[i] is on the frontier (O(n log n)).
std::vector<bool> pareto_frontier(const std::vector<FrontierPoint>& points, metrics::Better better);

}  // namespace kvb
