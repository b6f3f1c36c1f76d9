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
