// lookat's CUDA backend against its CPU path through kvbench's selftest harness (both fitted on the same
// calibration cache): stored bytes exact (codes, values, codebooks), storage exact, logits and outputs
// within kSelftestScoreTol / kSelftestAttendTol. Skips without a CUDA build or device. The CPU-vs-reference
// selftest of lookat (which exercises the harness's fit of trainable codecs) runs everywhere.
#include <gtest/gtest.h>

#include "kvb/core/registry.h"
#include "kvb/run/device_api.h"
#include "kvb/run/selftest.h"

namespace kvb {
namespace {

void expect_pass(const SelftestResult& r, int* ran) {
  if (r.skipped) return;
  ++*ran;
  for (const auto& k : r.checks) EXPECT_TRUE(k.pass) << k.name << " = " << k.value << " > " << k.tol << " " << k.detail;
}

/// The selftest matrix's lookat cases (defaults: m = 4, fp16 values) plus int4 values with m = 8.
std::vector<SelftestCase> lookat_cases(const std::string& device, int64_t max_tokens) {
  std::vector<SelftestCase> out;
  for (const auto& c : selftest_cases(device, false)) {
    if (c.codec != "lookat" || c.tokens > max_tokens) continue;
    out.push_back(c);
    SelftestCase v = c;
    v.params = Json{{"subspaces", 8}, {"values", "int4"}, {"iters", 8}};
    v.seed += 1000;
    out.push_back(v);
  }
  return out;
}

TEST(LookatGpuParity, CudaMatchesCpu) {
  const CodecEntry& e = registry().at("lookat");
  if (!e.make_cuda) GTEST_SKIP() << "this build has no CUDA backend (nvcc not found or KVB_ENABLE_CUDA=OFF)";
  std::string err;
  if (cuda::device_count(&err) == 0) GTEST_SKIP() << "no usable CUDA device: " << err;
  int ran = 0;
  for (const auto& c : lookat_cases("cuda", 1 << 30)) {
    SCOPED_TRACE(c.describe());
    expect_pass(run_selftest_case(c, "cuda"), &ran);
  }
  EXPECT_GT(ran, 10);
}

TEST(LookatGpuParity, CpuSelftestFitsAndMatchesReference) {
  int ran = 0;
  for (const auto& c : lookat_cases("cpu", 129)) {
    SCOPED_TRACE(c.describe());
    expect_pass(run_selftest_case(c, "cpu"), &ran);
  }
  EXPECT_GT(ran, 10);
}

}  // namespace
}  // namespace kvb
