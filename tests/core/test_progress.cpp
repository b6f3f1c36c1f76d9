// The progress line (kvb/core/progress.h): duration and ETA text, throttling with an injected clock, the
// final clear, nothing at all when disabled (not a terminal or -q), and counting from several threads.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>

#include <string>
#include <thread>
#include <vector>

#include "kvb/core/progress.h"

namespace {

using kvb::ProgressLine;
using kvb::ProgressStyle;

struct Fake {
  double now = 100.0;  // seconds
  std::vector<std::string> writes;
  ProgressLine::Clock clock() {
    return [this] { return now; };
  }
  ProgressLine::Sink sink() {
    return [this](const std::string& s) { writes.push_back(s); };
  }
};

TEST(Progress, Durations) {
  EXPECT_EQ(kvb::format_duration(0), "0s");
  EXPECT_EQ(kvb::format_duration(7.4), "7s");
  EXPECT_EQ(kvb::format_duration(59.4), "59s");
  EXPECT_EQ(kvb::format_duration(245), "4m05s");
  EXPECT_EQ(kvb::format_duration(7380), "2h03m");
  EXPECT_EQ(kvb::format_duration(-1), "?");
  EXPECT_EQ(kvb::format_duration(NAN), "?");
}

TEST(Progress, EtaText) {
  // 3 of 10 units in 6 s: 2 s per unit, 7 left.
  EXPECT_EQ(kvb::format_progress(3, 10, "int4-g32", 6.0), "[3/10] int4-g32  elapsed 6s  ETA 14s");
  EXPECT_EQ(kvb::format_progress(0, 10, "fp16", 1.0), "[0/10] fp16  elapsed 1s  ETA ?");
  EXPECT_EQ(kvb::format_progress(5, 0, "s0", 2.0), "[5] s0  elapsed 2s");
  EXPECT_EQ(kvb::format_progress(1, 3, "x", 30.0, ProgressStyle::kPercent), "[ 33%] x  elapsed 30s  ETA 1m00s");
  EXPECT_EQ(kvb::format_progress(3, 10, "int4-g32", 6.0, ProgressStyle::kCount, 33), "[3/10] int4-  elapsed 6s  ETA 14s");
  EXPECT_EQ(kvb::format_progress(3, 10, "int4-g32", 6.0, ProgressStyle::kCount, 12), "[3/10]   ela");
}

TEST(Progress, ThrottledAndCleared) {
  Fake f;
  {
    ProgressLine p(true, 4, ProgressStyle::kCount, f.clock(), f.sink());
    p.step("a");  // first update: drawn
    f.now += 0.05;
    p.step("b");  // 50 ms later: dropped
    f.now += 0.06;
    p.step("c");  // 110 ms after the first: drawn
    p.show("c again");  // no time passed: dropped
    p.step("d");  // the last unit: always drawn
    ASSERT_EQ(f.writes.size(), 3u);
    EXPECT_EQ(f.writes[0], "\r\033[K[1/4] a  elapsed 0s  ETA 0s");
    EXPECT_EQ(f.writes[1], "\r\033[K[3/4] c  elapsed 0s  ETA 0s");
    EXPECT_EQ(f.writes[2], "\r\033[K[4/4] d  elapsed 0s  ETA 0s");
    EXPECT_EQ(p.done(), 4);
    p.finish();
    p.finish();  // once only
  }  // the destructor does not clear again
  ASSERT_EQ(f.writes.size(), 4u);
  EXPECT_EQ(f.writes[3], "\r\033[K");
}

TEST(Progress, DisabledWritesNothing) {
  Fake f;
  {
    ProgressLine p(false, 3, ProgressStyle::kCount, f.clock(), f.sink());
    for (int i = 0; i < 3; ++i) p.step("x");
    p.show("y");
    p.finish();
  }
  EXPECT_TRUE(f.writes.empty());
  // -q turns the process-wide switch off; tests run with stderr not a terminal, where it is off anyway.
  kvb::set_progress_quiet(true);
  EXPECT_FALSE(kvb::progress_allowed());
  kvb::set_progress_quiet(false);
  if (!::isatty(2)) EXPECT_FALSE(kvb::progress_allowed());
}

TEST(Progress, NothingDrawnNothingCleared) {
  Fake f;
  { ProgressLine p(true, 3, ProgressStyle::kCount, f.clock(), f.sink()); }
  EXPECT_TRUE(f.writes.empty());
}

TEST(Progress, ThreadSafeCounts) {
  Fake f;  // the clock does not move: only the first and the last updates are drawn
  ProgressLine p(true, 8 * 500, ProgressStyle::kPercent, f.clock(), f.sink());
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&p] {
      for (int i = 0; i < 500; ++i) p.step("cell");
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(p.done(), 4000);
  ASSERT_EQ(f.writes.size(), 2u);
  EXPECT_EQ(f.writes.back(), "\r\033[K[100%] cell  elapsed 0s  ETA 0s");
}

}  // namespace
