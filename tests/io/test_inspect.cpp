// `kvbench inspect` statistics and the CLI commands (through the kvbench binary when its dispatcher
// is wired; skipped otherwise).
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "io_test_util.h"
#include "kvb/gen/generator.h"
#include "kvb/io/inspect.h"

using namespace kvbtest;

TEST(Inspect, StatisticsOfASmallRandomDump) {
  SmallDumpSpec spec;
  spec.seed = 31;
  SCOPED_TRACE(spec.describe());
  const std::string p = scratch("inspect_small.h5");
  write_small_dump(p, spec);
  const kvb::KvDumpReader r(p);
  kvb::InspectOptions io;
  io.max_queries = 3;
  const auto st = kvb::inspect_dump(r, io);
  EXPECT_EQ(st.queries_per_head, 3);
  EXPECT_EQ(st.sequences_used, 2);
  ASSERT_EQ(st.layers.size(), 2u);
  for (const auto& l : st.layers) {
    // Random keys: no outliers, no sink; the random "ref_out" disagrees with exact attention.
    EXPECT_LT(l.top_outliers.at(0).ratio, 2.0);
    EXPECT_EQ(l.top_outliers.size(), 4u);
    EXPECT_GT(l.key_norm.min, 0);
    EXPECT_LE(l.key_norm.min, l.key_norm.median);
    EXPECT_LE(l.key_norm.median, l.key_norm.max);
    EXPECT_GT(l.entropy.min, 0);
    EXPECT_LE(l.entropy.max, std::log(32.0) + 1e-9);
    EXPECT_LE(l.entropy.min, l.entropy.mean);
    EXPECT_LE(l.sink_mass.max, 1.0);
    ASSERT_TRUE(l.ref_max_rel_err.has_value());
    EXPECT_GT(*l.ref_max_rel_err, 0.1);
  }
  kvb::InspectOptions one;
  one.max_sequences = 1;
  EXPECT_EQ(kvb::inspect_dump(r, one).sequences_used, 1);
  const kvb::Json j = kvb::to_json(st);
  for (const char* key : {"key_norm", "value_norm", "outlier_channels", "outlier_ratio", "attention_entropy_nats",
                          "sink_mass", "ref_out_max_rel_err"})
    EXPECT_TRUE(j["layers"][0].contains(key)) << key;
  const kvb::Json s = kvb::dump_summary_json(r);
  EXPECT_EQ(s["dtype"], "float16");
  EXPECT_EQ(s["attrs"]["n_kv_heads"], 2);
  EXPECT_EQ(s["sequences"][1]["context_len"], 32);
}

TEST(Inspect, SummaryShowsObservationQueries) {
  SmallDumpSpec spec;
  spec.seed = 32;
  spec.obs_window = 6;
  SCOPED_TRACE(spec.describe());
  const std::string p = scratch("inspect_obs.h5");
  write_small_dump(p, spec);
  const kvb::Json s = kvb::dump_summary_json(kvb::KvDumpReader(p));
  EXPECT_EQ(s["sequences"][0]["obs_queries"]["window"], 6);
  EXPECT_EQ(s["sequences"][1]["obs_queries"]["positions"]["min"], 26);
  EXPECT_EQ(s["sequences"][1]["obs_queries"]["positions"]["max"], 31);
  spec.obs_window = 0;
  const std::string q = scratch("inspect_no_obs.h5");
  write_small_dump(q, spec);
  EXPECT_TRUE(kvb::dump_summary_json(kvb::KvDumpReader(q))["sequences"][0]["obs_queries"].is_null());
}

TEST(Inspect, ReportsNoRefErrorWithoutRefOutAndFailsOnNaN) {
  SmallDumpSpec spec;
  spec.ref_out = false;
  const std::string p = scratch("inspect_noref.h5");
  write_small_dump(p, spec);
  {
    const auto st = kvb::inspect_dump(kvb::KvDumpReader(p));
    for (const auto& l : st.layers) EXPECT_FALSE(l.ref_max_rel_err.has_value());
    EXPECT_TRUE(kvb::to_json(st)["layers"][0]["ref_out_max_rel_err"].is_null());
  }
  {
    H5Edit e(p);
    e.poke_float("/sequences/s1/layers/1/values", {0, 2, 3}, NAN);
  }
  const kvb::KvDumpReader r(p);
  expect_data_error([&] { kvb::inspect_dump(r); }, {p, "/sequences/s1/layers/1/values", "NaN"});
}

// ---------------------------------------------------------------------------------------------------
// The CLI, through the kvbench executable.

namespace {

struct CliRun {
  int rc = -1;
  std::string out;
};

CliRun run_kvbench(const std::string& args) {
  CliRun r;
  const std::string cmd = std::string(KVB_BINARY) + " " + args + " 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
  const int st = ::pclose(f);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

/// Empty when the kvbench binary dispatches `gen` and `inspect`; otherwise why not.
std::string cli_unavailable() {
  if (!std::filesystem::exists(KVB_BINARY)) return std::string(KVB_BINARY) + " not built";
  const CliRun r = run_kvbench("gen --help");
  if (r.out.find("--model-like") == std::string::npos || r.out.find("--outlier-channels") == std::string::npos)
    return "the kvbench dispatcher does not route `gen` yet";
  return {};
}

}  // namespace

TEST(Cli, GenThenInspect) {
  const std::string why = cli_unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string p = scratch("cli_tiny.h5");
  CliRun r = run_kvbench(fmt::format("gen --out {} --model-like tiny --seed 3 --layers 3 --dtype bfloat16", p));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find(p), std::string::npos) << r.out;
  const kvb::KvDumpReader rd(p);
  EXPECT_EQ(rd.attrs().shape.n_layers, 3);
  EXPECT_EQ(rd.dtype(), kvb::DType::kBFloat16);
  EXPECT_EQ(*rd.attrs().seed, 3);

  r = run_kvbench("inspect " + p);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("valid kvdump"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sink mass"), std::string::npos) << r.out;

  r = run_kvbench("inspect --json --max-queries 4 " + p);
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["attrs"]["n_layers"], 3);
  EXPECT_EQ(j["statistics"]["queries_per_head"], 4);
  EXPECT_EQ(j["statistics"]["layers"].size(), 3u);
}

TEST(Cli, InspectShowsObservationQueries) {
  const std::string why = cli_unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  SmallDumpSpec spec;
  spec.obs_window = 4;
  const std::string p = scratch("cli_obs.h5");
  write_small_dump(p, spec);
  CliRun r = run_kvbench("inspect --no-stats " + p);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("obs (W: positions)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("4: 28..31"), std::string::npos) << r.out;
  r = run_kvbench("inspect --json --no-stats " + p);
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["sequences"][0]["obs_queries"]["window"], 4);
  EXPECT_EQ(j["sequences"][0]["obs_queries"]["positions"]["min"], 28);

  const std::string q = scratch("cli_no_obs.h5");
  write_small_dump(q, SmallDumpSpec{});
  r = run_kvbench("inspect --no-stats " + q);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find(" none "), std::string::npos) << r.out;
}

TEST(Cli, ExitCodes) {
  const std::string why = cli_unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  CliRun r = run_kvbench("inspect " + scratch("no_such_dump.h5"));
  EXPECT_EQ(r.rc, 3) << r.out;
  EXPECT_NE(r.out.find("no such file"), std::string::npos) << r.out;

  const std::string good = scratch("cli_for_trunc.h5");
  write_small_dump(good, SmallDumpSpec{});
  const std::string cut = scratch("cli_trunc.h5");
  std::filesystem::copy_file(good, cut, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(cut, std::filesystem::file_size(good) / 2);
  r = run_kvbench("inspect " + cut);
  EXPECT_EQ(r.rc, 3) << r.out;

  r = run_kvbench(fmt::format("gen --out {} --heads 5 --kv-heads 2", scratch("cli_bad.h5")));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("--kv-heads"), std::string::npos) << r.out;
  r = run_kvbench(fmt::format("gen --out {} --model-like gpt5", scratch("cli_bad.h5")));
  EXPECT_EQ(r.rc, 2) << r.out;
}
