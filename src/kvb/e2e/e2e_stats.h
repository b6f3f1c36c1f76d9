#pragma once
/// Statistics of `kvbench e2e` over windows: percentile-bootstrap intervals (windows are the independent
/// unit: tokens of one window share its prompt and its compressed cache). The proxy-correlation table, which
/// merge recomputes too, is report/proxy.h.
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "kvb/core/params.h"

namespace kvb::e2e {

/// The 95% percentile-bootstrap interval of stat(resample) over `resamples` resamples of the W windows
/// (drawn with replacement, seeded). stat gets the resampled window indices. W == 1 or resamples == 0:
/// the interval is the point value stat(0..W-1) on both sides.
std::pair<double, double> bootstrap95(int W, int resamples, uint64_t seed,
                                      const std::function<double(const std::vector<int>&)>& stat);

/// {"mean", "median", "p95", "ci95": [lo, hi]} of per-token values given per window ([W][N]).
Json token_summary(const std::vector<std::vector<double>>& per_window, int resamples, uint64_t seed);

}  // namespace kvb::e2e
