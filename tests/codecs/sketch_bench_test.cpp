// Opt-in attend throughput of the one-bit sketch codecs against exact fp16 attention (README, Performance):
//   KVB_BENCH=1 ./build/tests/test_codecs --gtest_filter='SketchBench.*'
// One KV head, head_dim 128, C = 32768 cached tokens, single thread. "attend" = one query per call;
// "GQA x4" = attend_many over the 4 query heads of a group. Each figure is the median over 11 timed
// repeats of a loop lasting ~0.1 s, timed in THREAD CPU time (CLOCK_THREAD_CPUTIME_ID: the 2-core machine
// is shared, and wall time counts the periods other processes hold the core); "vs fp16" is fp16's time
// divided by the codec's (a throughput ratio: > 1 means faster than fp16). Skipped in ordinary test runs
// (a timing, not a check).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "codec_test_util.h"
#include "codecs/sketch/sketch_cpu.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

TEST(SketchBench, AttendThroughputVsFp16At32k) {
  const char* env = std::getenv("KVB_BENCH");
  if (!env || std::string(env) != "1") GTEST_SKIP() << "timing only with KVB_BENCH=1";
  constexpr int kG = 4, kD = 128;
  constexpr int64_t kC = 32768;
  SynthOptions o;
  o.tokens = kC;
  o.head_dim = kD;
  o.group = kG;
  o.queries = 1;
  o.kv_heads = 1;
  const SynthLayer L = make_layer(o);
  const std::vector<std::pair<std::string, Json>> cells{
      {"fp16", Json::object()},
      {"qjl", Json{{"m", 256}, {"m_outlier", 256}, {"outliers", 8}, {"value_bits", 2}}},  // paper, layers >= 15
      {"qjl", Json{{"m", 512}, {"m_outlier", 128}, {"outliers", 8}, {"value_bits", 2}}},  // paper, layers 0-14
      {"qjl", Json{{"m", 128}, {"m_outlier", 128}, {"outliers", 8}, {"value_bits", 2}}},
      {"h1b", Json::object()},                                                           // angle, b = 256
      {"h1b", Json{{"sketch_bits", 128}}},
      {"h1b", Json{{"sketch_bits", 256}, {"variant", "temp"}, {"temperature", 0.1}}},
  };
  auto now = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  auto median_time = [&](auto&& f) {
    f();  // warm-up
    const double w0 = now();
    f();
    const double once = now() - w0;
    const int reps = std::max(1, static_cast<int>(0.1 / std::max(once, 1e-6)));
    std::vector<double> t;
    for (int trial = 0; trial < 11; ++trial) {
      const double t0 = now();
      for (int r = 0; r < reps; ++r) f();
      t.push_back((now() - t0) / reps);
    }
    std::nth_element(t.begin(), t.begin() + 5, t.end());
    return t[5];
  };
  std::printf("[ bench ] C=%lld head_dim %d, 1 thread, sketch kernels: %s\n", static_cast<long long>(kC), kD,
              codecs::sk::sketch_kernels_name());
  double fp16_one = 0, fp16_many = 0;
  for (const auto& [name, params] : cells) {
    const CodecEntry& e = registry().at(name);
    const Json p = resolve_params(e.info.params, params, name);
    const auto enc = e.make_cpu(p, L.shape)->encode(20, L.kv, nullptr, L.ctx());
    std::vector<const float*> qs(kG);
    std::vector<std::vector<float>> o1(kG, std::vector<float>(kD));
    std::vector<float*> outs(kG);
    for (int i = 0; i < kG; ++i) qs[i] = L.query(i, 0), outs[i] = o1[i].data();
    Scratch s;
    const double one = median_time([&] { enc->attend(0, qs[0], outs[0], s); });
    const double many = median_time([&] { enc->attend_many(0, qs.data(), kG, outs.data(), s); });
    if (name == "fp16") fp16_one = one, fp16_many = many;
    std::printf("[ bench ] %-26s attend %8.1f us (%7.0f q/s, vs fp16 %.2fx)   GQA x4 %8.1f us (%7.0f q/s, vs fp16 %.2fx)\n",
                e.label(p).c_str(), one * 1e6, 1.0 / one, fp16_one / one, many * 1e6, kG / many, fp16_many / many);
    EXPECT_GT(one, 0.0);
  }
}

}  // namespace
}  // namespace kvb::test
