#pragma once
/// Host-side timing of CPU calls (docs/metrics.md §7): warm up once, then repeat the call until at least
/// `min_time_s` has passed and at least `min_repeats` samples exist; report median and p95 of the samples.
/// GPU timings use CUDA events in the CUDA backend, never this.
#include <chrono>
#include <functional>
#include <vector>

namespace kvb {

struct Timing {
  double median_s = 0;
  double p95_s = 0;
  int samples = 0;
};

Timing time_call(const std::function<void()>& fn, int min_repeats, double min_time_s);

}  // namespace kvb
