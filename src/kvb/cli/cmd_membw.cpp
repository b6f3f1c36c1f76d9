#include <cstdio>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/run/device_api.h"
#include "kvb/bench/membw.h"
#include "kvb/bench/peak.h"

namespace kvb {

void add_membw_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    int mib = 1024;
    int threads = 0;
    double min_time = 1.0;
    std::string device = "cpu";
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "membw", "Measure this machine's memory read bandwidth (streaming read of a buffer larger than the caches): "
               "the denominator of the README's bytes/s figures.");
  sub->add_option("--mib", o->mib, "buffer size in MiB (default 1024)")->check(CLI::Range(1, 1 << 20));
  sub->add_option("--threads", o->threads, "threads (0 = all hardware threads)")->check(CLI::Range(0, 4096));
  sub->add_option("--min-time", o->min_time, "seconds to repeat for (default 1)")->check(finite_range(0.0, 600.0));
  sub->add_option("--device", o->device,
                  "cpu (host read bandwidth) or cuda (GPU device-to-device copy bandwidth, read + write bytes)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  out.push_back({sub, [o]() {
                   if (o->device == "cuda") {
                     std::string err;
                     const double bw = cuda::device_copy_bandwidth(static_cast<size_t>(o->mib) << 20, &err);
                     if (bw <= 0) throw RuntimeError("membw --device cuda: " + err);
                     std::printf("device copy bandwidth: %.2f GB/s median (read + write), %d MiB copies\n", bw / 1e9, o->mib);
                     return 0;
                   }
                   const auto r = measure_read_bandwidth(static_cast<size_t>(o->mib) << 20, o->threads, o->min_time);
                   std::printf("memory read bandwidth: %.2f GB/s median (p95 %.2f GB/s) over %d repeats, %d threads, %zu MiB\n",
                               r.bytes_per_s_median / 1e9, r.bytes_per_s_p95 / 1e9, r.repeats, r.threads, r.bytes >> 20);
                   return 0;
                 }});
}

void add_peak_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    int threads = 0;
    double min_time = 1.0;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "peak", "Measure this machine's compute peaks (register-resident loops on every thread): fp32 FMA flop/s and "
              "int8 multiply-add op/s on the best instruction set the CPU has; with membw, the roofline that "
              "results.json's throughput records are compared with (environment.roofline, roofline_fraction).");
  sub->add_option("--threads", o->threads, "threads (0 = all hardware threads)")->check(CLI::Range(0, 4096));
  sub->add_option("--min-time", o->min_time, "seconds to repeat each probe for (default 1)")
      ->check(finite_range(0.0, 600.0));
  out.push_back({sub, [o]() {
                   const auto f = measure_fp32_peak(o->threads, o->min_time);
                   std::printf("fp32 FMA peak: %.1f GFLOP/s median (p95 %.1f) over %d repeats, %d threads, %s\n",
                               f.ops_per_s_median / 1e9, f.ops_per_s_p95 / 1e9, f.repeats, f.threads, f.path.c_str());
                   const auto i = measure_int8_peak(o->threads, o->min_time);
                   std::printf("int8 multiply-add peak: %.1f GOP/s median (p95 %.1f) over %d repeats, %d threads, %s\n",
                               i.ops_per_s_median / 1e9, i.ops_per_s_p95 / 1e9, i.repeats, i.threads, i.path.c_str());
                   std::printf("cpu SIMD features: %s\n", cpu_simd_features().c_str());
                   return 0;
                 }});
}

}  // namespace kvb
