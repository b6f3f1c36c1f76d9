// Smoke test of the memory read-bandwidth probe (kvb_run, built with OpenMP). No timing assertions.
#include <gtest/gtest.h>

#include <cmath>

#include "kvb/core/error.h"
#include "kvb/bench/membw.h"

TEST(Membw, SmallBufferGivesPositiveFiniteBandwidth) {
  const kvb::MembwResult r = kvb::measure_read_bandwidth(size_t{1} << 20, 2, 0.0);
  SCOPED_TRACE("median " + std::to_string(r.bytes_per_s_median) + " p95 " + std::to_string(r.bytes_per_s_p95) +
               " threads " + std::to_string(r.threads) + " repeats " + std::to_string(r.repeats));
  EXPECT_TRUE(std::isfinite(r.bytes_per_s_median));
  EXPECT_GT(r.bytes_per_s_median, 0);
  EXPECT_TRUE(std::isfinite(r.bytes_per_s_p95));
  EXPECT_GT(r.bytes_per_s_p95, 0);
  EXPECT_LE(r.bytes_per_s_p95, r.bytes_per_s_median);  // p95 time is the slow tail
  EXPECT_GE(r.repeats, 5);
  EXPECT_GE(r.threads, 1);
  EXPECT_EQ(r.bytes, size_t{1} << 20);
}

TEST(Membw, RoundsToWholeLinesAndValidates) {
  EXPECT_EQ(kvb::measure_read_bandwidth(1000, 1, 0.0).bytes, 960u);
  EXPECT_THROW(kvb::measure_read_bandwidth(10, 1, 0.0), kvb::UsageError);
  EXPECT_THROW(kvb::measure_read_bandwidth(4096, 1, -1.0), kvb::UsageError);
}

// ---- the compute peaks (peak.h) and the roofline bound (roofline.h) ----
#include "kvb/bench/peak.h"
#include "kvb/bench/roofline.h"

namespace {
bool has_feature(const std::string& features, const std::string& f) {
  return (" " + features + " ").find(" " + f + " ") != std::string::npos;
}
}  // namespace

// The loops run the best instruction set the CPU reports, and their rates are physically possible: an operation
// total overcounted by a vector width, or a loop the compiler dropped, lands above 2000 G per thread (no lower
// bound: on a shared machine a preempted thread makes any rate possible — speed is benchmarked, not tested).
TEST(Peak, Fp32AndInt8RunTheBestPathAtPlausibleRates) {
  const std::string feat = kvb::cpu_simd_features();
  const kvb::PeakResult f = kvb::measure_fp32_peak(2, 0.0);
  const kvb::PeakResult i = kvb::measure_int8_peak(2, 0.0);
  SCOPED_TRACE("features '" + feat + "' fp32 " + f.path + " " + std::to_string(f.ops_per_s_median) + " int8 " + i.path +
               " " + std::to_string(i.ops_per_s_median) + " threads " + std::to_string(f.threads));
  const std::string want_f = has_feature(feat, "avx512f") ? "avx512f"
                             : has_feature(feat, "avx2") && has_feature(feat, "fma") ? "avx2-fma" : "portable";
  const std::string want_i = has_feature(feat, "avx512vnni") && has_feature(feat, "avx512bw") ? "avx512-vnni"
                             : has_feature(feat, "avx2") ? "avx2-maddubs" : "portable";
  EXPECT_EQ(f.path, want_f);
  EXPECT_EQ(i.path, want_i);
  for (const kvb::PeakResult* r : {&f, &i}) {
    EXPECT_GE(r->repeats, 5);
    EXPECT_GE(r->threads, 1);
    EXPECT_TRUE(std::isfinite(r->ops_per_s_median));
    EXPECT_LE(r->ops_per_s_p95, r->ops_per_s_median);
    const double per_thread = r->ops_per_s_median / r->threads;
    EXPECT_GT(per_thread, 0);
    EXPECT_LT(per_thread, 2000e9);
  }
  EXPECT_THROW(kvb::measure_fp32_peak(1, -1.0), kvb::UsageError);
  EXPECT_THROW(kvb::measure_int8_peak(1, std::nan("")), kvb::UsageError);
}

TEST(Roofline, BoundIsTheLargerOfTheTwoTimes) {
  kvb::HostRoofline r;
  r.read_bytes_per_s = 50e9;
  r.fp32_flops_per_s = 400e9;
  kvb::RooflineBound b = kvb::roofline_bound(r, 100e6, 100e9);  // 2 ms of bytes, 250 ms of flops
  EXPECT_EQ(b.bound, "fp32 compute");
  EXPECT_DOUBLE_EQ(b.limit_s, 0.25);
  b = kvb::roofline_bound(r, 100e9, 100e6);  // 2 s of bytes
  EXPECT_EQ(b.bound, "memory");
  EXPECT_DOUBLE_EQ(b.limit_s, 2.0);
}
