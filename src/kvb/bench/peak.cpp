#include "kvb/bench/peak.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define KVB_PEAK_X86 1
#endif

#include "kvb/bench/membw.h"
#include "kvb/core/error.h"
#include "kvb/metrics/metrics.h"

namespace kvb {
namespace {

/// Keeps the compiler from hoisting loop-invariant arithmetic or folding the chains: the value may have changed.
/// A macro, so the asm sits in the target-specific function itself (clang checks a vector operand's width against
/// the function's target).
#define KVB_OPAQUE(x) asm volatile("" : "+x"(x))
#define KVB_OPAQUE_ZMM(x) asm volatile("" : "+v"(x))
inline void opaque_int(int32_t& x) { asm volatile("" : "+r"(x)); }

// Each kernel runs `iters` iterations and returns a value derived from every chain (checked finite / used),
// and reports its operations per iteration through ops_per_iter().

float fma_portable(int64_t iters) {
  float a[16];
  for (int k = 0; k < 16; ++k) a[k] = 1.f + 1e-3f * k;
  const float m = 0.999999f, c = 1e-7f;
  for (int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < 16; ++k) a[k] = a[k] * m + c;
  float s = 0;
  for (float x : a) s += x;
  return s;
}
constexpr double kFmaPortableOps = 16 * 2;

int32_t int8_portable(int64_t iters) {
  int8_t b[64];
  uint8_t u[64];
  for (int k = 0; k < 64; ++k) b[k] = static_cast<int8_t>(k - 32), u[k] = static_cast<uint8_t>(k);
  int32_t acc[16] = {};
  for (int64_t i = 0; i < iters; ++i) {
    for (int k = 0; k < 64; ++k) acc[k & 15] += static_cast<int32_t>(u[k]) * b[k];
    opaque_int(acc[0]);
  }
  int32_t s = 0;
  for (int32_t x : acc) s += x;
  return s;
}
constexpr double kInt8PortableOps = 64 * 2;

#if defined(KVB_PEAK_X86)
__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iters) {
  __m256 a[12];
  for (int k = 0; k < 12; ++k) a[k] = _mm256_set1_ps(1.f + 1e-3f * k);
  __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  KVB_OPAQUE(m);
  KVB_OPAQUE(c);
  for (int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) a[k] = _mm256_fmadd_ps(a[k], m, c);
  __m256 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm256_add_ps(s, a[k]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}
constexpr double kFmaAvx2Ops = 12 * 8 * 2;

__attribute__((target("avx512f"))) float fma_avx512(int64_t iters) {
  __m512 a[16];
  for (int k = 0; k < 16; ++k) a[k] = _mm512_set1_ps(1.f + 1e-3f * k);
  __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < 16; ++k) a[k] = _mm512_fmadd_ps(a[k], m, c);
  __m512 s = a[0];
  for (int k = 1; k < 16; ++k) s = _mm512_add_ps(s, a[k]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0] + out[15];
}
constexpr double kFmaAvx512Ops = 16 * 16 * 2;

/// 12 chains of acc += madd(maddubs(u, s), 1): 32 u8×s8 products per chain and iteration.
__attribute__((target("avx2"))) int32_t int8_avx2(int64_t iters) {
  __m256i acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm256_setzero_si256();
  __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-2), one = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < iters; ++i) {
    KVB_OPAQUE(u);  // the products are "new" every iteration: nothing is hoisted out of the loop
    for (int k = 0; k < 12; ++k) acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), one));
  }
  __m256i t = acc[0];
  for (int k = 1; k < 12; ++k) t = _mm256_add_epi32(t, acc[k]);
  return _mm256_extract_epi32(t, 0);
}
constexpr double kInt8Avx2Ops = 12 * 32 * 2;

/// 16 chains of vpdpbusd (64 u8×s8 products each per iteration).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int32_t int8_vnni(int64_t iters) {
  __m512i acc[16];
  for (int k = 0; k < 16; ++k) acc[k] = _mm512_setzero_si512();
  __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
  for (int64_t i = 0; i < iters; ++i) {
    KVB_OPAQUE_ZMM(u);
    for (int k = 0; k < 16; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], u, s);
  }
  __m512i t = acc[0];
  for (int k = 1; k < 16; ++k) t = _mm512_add_epi32(t, acc[k]);
  int32_t out[16];
  _mm512_storeu_si512(out, t);
  return out[0] + out[15];
}
constexpr double kInt8VnniOps = 16 * 64 * 2;

#endif

/// Times `kernel(iters)` on every thread at once: iters calibrated so one repeat takes >= 5 ms, then repeats
/// until min_time_s and >= 5 repeats. ops: per iteration per thread.
template <class Kernel>
PeakResult run_peak(Kernel kernel, double ops, const char* path, int threads, double min_time_s) {
  const int nt = probe_threads(threads, min_time_s, "peak");
  using clk = std::chrono::steady_clock;
  volatile double sink = 0;
  auto once = [&](int64_t iters) {
    const auto t0 = clk::now();
    double s = 0;
#pragma omp parallel num_threads(nt) reduction(+ : s)
    s += static_cast<double>(kernel(iters));
    sink = sink + s;
    return std::chrono::duration<double>(clk::now() - t0).count();
  };
  int64_t iters = 1 << 12;
  once(iters);  // untimed: starts the OpenMP team, whose first fork alone can take the 5 ms calibrated for
  while (once(iters) < 0.005 && iters < (int64_t{1} << 40)) iters *= 2;
  std::vector<double> times;
  double total = 0;
  while ((total < min_time_s || times.size() < 5) && times.size() < 100000) {
    times.push_back(once(iters));
    total += times.back();
  }
  std::sort(times.begin(), times.end());
  const double work = ops * static_cast<double>(iters) * nt;
  PeakResult r;
  r.ops_per_s_median = work / metrics::quantile_sorted(times.data(), static_cast<int64_t>(times.size()), 0.5);
  r.ops_per_s_p95 = work / metrics::quantile_sorted(times.data(), static_cast<int64_t>(times.size()), 0.95);
  r.threads = nt;
  r.repeats = static_cast<int>(times.size());
  r.path = path;
  return r;
}

}  // namespace

PeakResult measure_fp32_peak(int threads, double min_time_s) {
#if defined(KVB_PEAK_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return run_peak(fma_avx512, kFmaAvx512Ops, "avx512f", threads, min_time_s);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return run_peak(fma_avx2, kFmaAvx2Ops, "avx2-fma", threads, min_time_s);
#endif
  return run_peak(fma_portable, kFmaPortableOps, "portable", threads, min_time_s);
}

PeakResult measure_int8_peak(int threads, double min_time_s) {
#if defined(KVB_PEAK_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
    return run_peak(int8_vnni, kInt8VnniOps, "avx512-vnni", threads, min_time_s);
  if (__builtin_cpu_supports("avx2")) return run_peak(int8_avx2, kInt8Avx2Ops, "avx2-maddubs", threads, min_time_s);
#endif
  return run_peak(int8_portable, kInt8PortableOps, "portable", threads, min_time_s);
}

std::string cpu_simd_features() {
#if defined(KVB_PEAK_X86)
  std::string s;
  __builtin_cpu_init();
  auto add = [&](bool on, const char* n) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += n;
  };
  add(__builtin_cpu_supports("avx2"), "avx2");
  add(__builtin_cpu_supports("fma"), "fma");
  unsigned a = 0, b = 0, c = 0, d = 0;
  add(__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0, "f16c");
  add(__builtin_cpu_supports("avx512f"), "avx512f");
  add(__builtin_cpu_supports("avx512bw"), "avx512bw");
  add(__builtin_cpu_supports("avx512vnni"), "avx512vnni");
  return s.empty() ? "none" : s;
#else
  return "none";
#endif
}

}  // namespace kvb
