#include "kvb/bench/membw.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "kvb/core/error.h"
#include "kvb/metrics/metrics.h"

namespace kvb {
namespace {

constexpr size_t kLine = 64;                    // bytes per cache line = 8 words
constexpr size_t kAlign = size_t{2} << 20;      // 2 MiB: lets the kernel back the buffer with huge pages

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

/// Σ p[0 .. 8·lines) mod 2^64. Eight independent accumulators per thread keep the adds off the critical
/// path (and let the compiler vectorize), so the loop is bound by memory bandwidth, not add latency.
uint64_t sum_lines(const uint64_t* p, int64_t lines, int threads, int* threads_used) {
  uint64_t total = 0;
  int used = 1;
  (void)threads;  // only read by the OpenMP pragma
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
#ifdef _OPENMP
#pragma omp master
    used = omp_get_num_threads();
#endif
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
#pragma omp for schedule(static) nowait
    for (int64_t l = 0; l < lines; ++l) {
      const uint64_t* q = p + 8 * l;
      a0 += q[0];
      a1 += q[1];
      a2 += q[2];
      a3 += q[3];
      a4 += q[4];
      a5 += q[5];
      a6 += q[6];
      a7 += q[7];
    }
    total += ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
  }
  if (threads_used) *threads_used = used;
  return total;
}

}  // namespace

int probe_threads(int threads, double min_time_s, const char* who) {
  KVB_CHECK(std::isfinite(min_time_s) && min_time_s >= 0, UsageError,
            "{}: min_time_s = {} must be a finite number >= 0", who, min_time_s);
#ifdef _OPENMP
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

MembwResult measure_read_bandwidth(size_t bytes, int threads, double min_time_s) {
  KVB_CHECK(bytes >= kLine, UsageError, "membw: bytes = {} is too small: it must be at least {}", bytes, kLine);
  const int nt = probe_threads(threads, min_time_s, "membw");
  const int64_t lines = static_cast<int64_t>(bytes / kLine);
  const size_t used_bytes = static_cast<size_t>(lines) * kLine;
  const size_t alloc_bytes = (used_bytes + kAlign - 1) / kAlign * kAlign;
  std::unique_ptr<uint64_t, FreeDeleter> buf(static_cast<uint64_t*>(std::aligned_alloc(kAlign, alloc_bytes)));
  KVB_CHECK(buf != nullptr, RuntimeError, "membw: cannot allocate {} bytes for the read-bandwidth buffer",
            alloc_bytes);
  uint64_t* p = buf.get();
#ifdef __linux__
  (void)madvise(p, alloc_bytes, MADV_HUGEPAGE);  // advisory; ignore failure
#endif

  // First touch with the same static schedule as the read loop, so each thread's pages are local to it.
  const int64_t words = lines * 8;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t l = 0; l < lines; ++l)
    for (int64_t j = 0; j < 8; ++j) p[8 * l + j] = static_cast<uint64_t>(8 * l + j);
  // Σ_{i<W} i mod 2^64, to check every pass (which also keeps the compiler from dropping the loop).
  const uint64_t W = static_cast<uint64_t>(words);
  const uint64_t expected = (W % 2 == 0) ? (W / 2) * (W - 1) : W * ((W - 1) / 2);

  int threads_used = 1;
  KVB_ASSERT(sum_lines(p, lines, nt, &threads_used) == expected);  // untimed warm-up pass

  using Clock = std::chrono::steady_clock;
  std::vector<double> times;
  double elapsed = 0;
  while (times.size() < 5 || elapsed < min_time_s) {
    const auto t0 = Clock::now();
    const uint64_t sum = sum_lines(p, lines, nt, nullptr);
    const auto t1 = Clock::now();
    KVB_ASSERT(sum == expected);
    const double t = std::max(std::chrono::duration<double>(t1 - t0).count(), 1e-9);
    times.push_back(t);
    elapsed += t;
    if (times.size() >= 100000) break;  // tiny buffers: bound the sample count (as bench/timing.cpp does)
  }
  std::sort(times.begin(), times.end());
  const auto n = static_cast<int64_t>(times.size());
  MembwResult r;
  r.bytes = used_bytes;
  r.threads = threads_used;
  r.repeats = static_cast<int>(n);
  const double b = static_cast<double>(used_bytes);
  r.bytes_per_s_median = b / metrics::quantile_sorted(times.data(), n, 0.5);
  r.bytes_per_s_p95 = b / metrics::quantile_sorted(times.data(), n, 0.95);
  return r;
}

}  // namespace kvb
