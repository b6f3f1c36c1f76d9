#pragma once
/// Host memory read-bandwidth probe: the "machine's measured memory read bandwidth" that CPU attend
/// throughput (attend_bytes_per_s) is compared with. Backs `kvbench membw`.
#include <cstddef>

namespace kvb {

struct MembwResult {
  double bytes_per_s_median = 0;  ///< bytes / median repeat time
  double bytes_per_s_p95 = 0;     ///< bytes / p95 repeat time: the slow tail, always <= the median figure
  int threads = 0;                ///< threads that actually ran the read loop
  size_t bytes = 0;               ///< bytes read per repeat (the request rounded down to whole 64-byte lines)
  int repeats = 0;                ///< timed repeats (>= 5)
};

/// Streams `bytes` of an aligned, pre-touched buffer (sum of 64-bit words, 8 independent accumulators per
/// thread, OpenMP static schedule over `threads` threads; threads <= 0 = OpenMP's default) once untimed,
/// then repeatedly until `min_time_s` of timed repeats has passed and at least 5 repeats ran (at most
/// 100000). Each repeat is timed with std::chrono::steady_clock around the whole parallel region, and its
/// sum is checked against the known fill pattern (so the compiler cannot drop the loop). Quantiles of the
/// repeat times use numpy's linear method (metrics::quantile_sorted).
/// For a DRAM figure `bytes` must far exceed the last-level cache: callers default to 1 GiB.
/// Throws UsageError when bytes < 64 or min_time_s is negative or not finite; RuntimeError when the buffer
/// cannot be allocated.
MembwResult measure_read_bandwidth(size_t bytes, int threads, double min_time_s);

/// The machine probes' common start (membw, peak.h): checks min_time_s (finite, >= 0; UsageError naming `who`)
/// and returns the threads an OpenMP region will run (threads <= 0: OpenMP's default; 1 without OpenMP).
int probe_threads(int threads, double min_time_s, const char* who);

}  // namespace kvb
