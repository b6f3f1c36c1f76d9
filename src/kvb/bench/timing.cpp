#include "kvb/bench/timing.h"

#include <algorithm>

#include "kvb/metrics/metrics.h"

namespace kvb {

Timing time_call(const std::function<void()>& fn, int min_repeats, double min_time_s) {
  using clock = std::chrono::steady_clock;
  fn();  // warm-up: page faults, caches, lazy allocations
  std::vector<double> samples;
  const auto start = clock::now();
  while (static_cast<int>(samples.size()) < std::max(1, min_repeats) ||
         std::chrono::duration<double>(clock::now() - start).count() < min_time_s) {
    const auto t0 = clock::now();
    fn();
    samples.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    if (samples.size() >= 100000) break;  // a no-op call cannot spin forever
  }
  const auto agg = metrics::aggregate(samples);
  Timing t;
  t.median_s = agg.median;
  t.p95_s = agg.p95;
  t.samples = static_cast<int>(samples.size());
  return t;
}

}  // namespace kvb
