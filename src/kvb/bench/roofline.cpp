#include "kvb/bench/roofline.h"

#include <chrono>
#include <mutex>

#include "kvb/bench/membw.h"
#include "kvb/bench/peak.h"

namespace kvb {
namespace {

std::mutex g_mu;
std::optional<HostRoofline> g_roofline;

}  // namespace

const HostRoofline& host_roofline(int threads, double probe_min_time_s) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_roofline) {
    const auto t0 = std::chrono::steady_clock::now();
    HostRoofline r;
    const MembwResult bw = measure_read_bandwidth(size_t{256} << 20, threads, probe_min_time_s);
    const PeakResult f = measure_fp32_peak(threads, probe_min_time_s);
    const PeakResult i = measure_int8_peak(threads, probe_min_time_s);
    r.read_bytes_per_s = bw.bytes_per_s_median;
    r.fp32_flops_per_s = f.ops_per_s_median;
    r.int8_ops_per_s = i.ops_per_s_median;
    r.fp32_path = f.path;
    r.int8_path = i.path;
    r.simd_features = cpu_simd_features();
    r.threads = f.threads;
    r.probe_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    g_roofline = r;
  }
  return *g_roofline;
}

std::optional<HostRoofline> measured_host_roofline() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_roofline;
}

Json roofline_json(const HostRoofline& r) {
  return Json{{"read_bytes_per_s", r.read_bytes_per_s},
              {"fp32_flops_per_s", r.fp32_flops_per_s},
              {"fp32_path", r.fp32_path},
              {"int8_ops_per_s", r.int8_ops_per_s},
              {"int8_path", r.int8_path},
              {"simd_features", r.simd_features},
              {"threads", r.threads},
              {"probe_s", r.probe_s},
              {"note", "measured once by this run, right after its first CPU timing: streaming read of 256 MiB (kvbench membw) "
                       "and register-resident FMA / int8 multiply-add loops on every thread (kvbench peak); a "
                       "throughput record's roofline_fraction is max(bytes/read bandwidth, flops/fp32 peak) over "
                       "its median call time"}};
}

RooflineBound roofline_bound(const HostRoofline& r, double bytes, double flops) {
  RooflineBound b;
  const double tm = r.read_bytes_per_s > 0 ? bytes / r.read_bytes_per_s : 0;
  const double tc = r.fp32_flops_per_s > 0 ? flops / r.fp32_flops_per_s : 0;
  b.limit_s = tm >= tc ? tm : tc;
  b.bound = tm >= tc ? "memory" : "fp32 compute";
  return b;
}

}  // namespace kvb
