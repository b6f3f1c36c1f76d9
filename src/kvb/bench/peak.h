#pragma once
/// Compute roofline probes beside membw (issue 19): the machine's fp32 FMA and int8 multiply-add peaks, from
/// register-resident loops on every thread — the arithmetic limits a CPU attend throughput is measured
/// against, as membw's read bandwidth is its memory limit. Back `kvbench peak` and results.json's
/// environment.roofline.
#include <string>

namespace kvb {

struct PeakResult {
  double ops_per_s_median = 0;  ///< operations / median repeat time (all threads together)
  double ops_per_s_p95 = 0;     ///< operations / p95 repeat time (the slow tail, <= the median figure)
  int threads = 0, repeats = 0;
  std::string path;  ///< the instruction set the loop ran: "avx512f", "avx2-fma", "portable"; int8: "avx512-vnni",
                     ///< "avx2-maddubs", "portable"
};

/// fp32 FMA peak in flop/s (one fused multiply-add = 2 flops): per thread 12 (AVX2) or 16 (AVX-512) independent
/// vector FMA chains, enough to cover the FMA latency on both ports of current x86 cores; the best instruction
/// set this CPU has (checked at run time). Repeats (each ~5 ms) until min_time_s has passed and at least 5 ran.
/// threads <= 0: OpenMP's default. Throws UsageError for a negative or non-finite min_time_s.
PeakResult measure_fp32_peak(int threads, double min_time_s);

/// int8 multiply-add peak in op/s (one u8×s8 product accumulated = 2 ops): AVX-512 VNNI vpdpbusd where present,
/// else AVX2 vpmaddubsw + vpmaddwd + vpaddd (32 products per 256-bit triple), else a portable loop.
PeakResult measure_int8_peak(int threads, double min_time_s);

/// The x86 SIMD extensions this CPU reports ("avx2 fma f16c avx512f avx512bw avx512vnni", space-separated;
/// "none" elsewhere): what runtime dispatch chooses from.
std::string cpu_simd_features();

}  // namespace kvb
