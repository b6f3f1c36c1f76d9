#pragma once
/// The host roofline a CPU throughput record is measured against (issue 19): read bandwidth (membw) and the
/// fp32 FMA and int8 peaks (peak.h), measured once per process the first time a run times a codec on the
/// CPU, and the fraction of that limit a measured call reached.
#include <optional>
#include <string>

#include "kvb/core/params.h"

namespace kvb {

struct HostRoofline {
  double read_bytes_per_s = 0;  ///< membw median
  double fp32_flops_per_s = 0;  ///< peak.h fp32 FMA median
  double int8_ops_per_s = 0;    ///< peak.h int8 multiply-add median
  std::string fp32_path, int8_path, simd_features;
  int threads = 0;
  double probe_s = 0;  ///< seconds the probes took
};

/// Measures the roofline on first call (threads as the run uses; each probe repeats for probe_min_time_s,
/// membw over 256 MiB, far beyond the last-level caches of the machines kvbench targets) and returns the
/// same figures afterwards. Thread-safe.
const HostRoofline& host_roofline(int threads, double probe_min_time_s);
/// The figures if host_roofline has run in this process (results.json environment.roofline), else nullopt.
std::optional<HostRoofline> measured_host_roofline();
Json roofline_json(const HostRoofline& r);

/// The time bound of one call and which limit binds: max(bytes / bandwidth, flops / fp32 peak).
struct RooflineBound {
  double limit_s = 0;
  std::string bound;  ///< "memory" or "fp32 compute"
};
RooflineBound roofline_bound(const HostRoofline& r, double bytes, double flops);

}  // namespace kvb
