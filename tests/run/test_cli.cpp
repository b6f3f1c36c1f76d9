// End-to-end tests of the kvbench executable: the golden CI run and its results schema, determinism,
// the exit codes and messages of docs/errors.md §1–§2, and the acceptance numbers of the foundation issue.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <cmath>
#include <set>
#include <limits>

#include "kvb/core/registry.h"
#include "kvb/io/kvdump.h"
#include "kvb/report/results_io.h"
#include "kvb/report/results_csv.h"
#include "kvb/run/runner.h"
#include "test_util.h"

namespace {

using kvbtest::CmdResult;
using kvbtest::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

/// Generate the tiny dump configs/ci.json reads (deterministic, well under a second).
void make_ci_dump(const TempDir& tmp) {
  fs::create_directories(fs::path(KVB_SOURCE_DIR) / "data");
  const auto r = kvbtest::kvbench(std::string("gen --model-like tiny --out '") + KVB_SOURCE_DIR + "/data/ci-tiny.h5'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
}

json run_ci(const TempDir& tmp, const std::string& out) {
  const auto r = kvbtest::kvbench(std::string("run '") + KVB_SOURCE_DIR + "/configs/ci.json' --output '" + out + "'", tmp);
  EXPECT_EQ(r.code, 0) << kvbtest::describe(r);
  return json::parse(kvbtest::slurp(fs::path(out) / "results.json"));
}

/// Every number in a results document must be finite (nlohmann writes NaN as null, so also require
/// that the fields that must be numbers are numbers).
void expect_number(const json& j, const std::string& what) {
  ASSERT_TRUE(j.is_number()) << what << " is " << j.dump();
  EXPECT_TRUE(std::isfinite(j.get<double>())) << what;
}

TEST(Cli, VersionAndHelp) {
  TempDir tmp("version");
  auto r = kvbtest::kvbench("--version", tmp);
  EXPECT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_NE(r.out.find("kvbench"), std::string::npos);
  for (const char* sub : {"run", "list", "gen", "inspect", "membw", "peak"}) {
    r = kvbtest::kvbench(std::string(sub) + " --help", tmp);
    EXPECT_EQ(r.code, 0) << sub << "\n" << kvbtest::describe(r);
  }
  r = kvbtest::kvbench("frobnicate", tmp);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
}

// A run that times (min_time_s > 0) measures the host roofline once and gives every CPU throughput record its
// byte and dense-equivalent flop counts and the fraction of the larger bound its median call reached; the
// fraction is exactly what the recorded figures give, and a codec holding fewer rows declares fewer flops.
TEST(Cli, RooflineFractionInEveryHostThroughputRecord) {
  TempDir tmp("roofline");
  make_ci_dump(tmp);
  const fs::path cfg = tmp / "roofline.json";
  {
    std::ofstream f(cfg);
    f << json{{"name", "roofline"},
              {"datasets", {{{"path", std::string(KVB_SOURCE_DIR) + "/data/ci-tiny.h5"}, {"max_queries", 4}}}},
              {"codecs", {{{"codec", "fp16"}}, {{"codec", "int"}, {"bits", {5}}}, {{"codec", "snapkv"}, {"bits", {4}}}}},
              {"threads", 2}, {"repeats", 2}, {"min_time_s", 0.01}, {"seed", 3}}
             .dump();
  }
  const std::string out = tmp / "out";
  const auto r = kvbtest::kvbench("run '" + cfg.string() + "' -q --device cpu --output '" + out + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const json doc = json::parse(kvbtest::slurp(fs::path(out) / "results.json"));
  const json& roof = doc.at("environment").at("roofline");
  for (const char* k : {"read_bytes_per_s", "fp32_flops_per_s", "int8_ops_per_s"}) {
    expect_number(roof.at(k), k);
    EXPECT_GT(roof.at(k).get<double>(), 0) << k;
  }
  const json& shape = doc.at("datasets")[0].at("shape");
  const double d = shape.at("head_dim").get<double>();
  std::map<std::string, double> flops;
  for (const json& c : doc.at("cells")) {
    SCOPED_TRACE(c.at("label").get<std::string>());
    const json& t = c.at("throughput");
    const double bytes = t.at("attend_bytes_per_call"), fl = t.at("attend_flops_per_call");
    const double calls_per_s = t.at("attend_queries_per_s").at("median").get<double>() / t.at("queries").get<double>();
    const double limit = std::max(bytes / roof.at("read_bytes_per_s").get<double>(),
                                  fl / roof.at("fp32_flops_per_s").get<double>());
    EXPECT_NEAR(t.at("roofline_fraction").get<double>(), limit * calls_per_s, 1e-9 * limit * calls_per_s);
    EXPECT_TRUE(t.at("roofline_bound") == "memory" || t.at("roofline_bound") == "fp32 compute") << t.dump();
    // bytes per call = the bytes/s figure over the call rate
    EXPECT_NEAR(bytes * calls_per_s, t.at("attend_bytes_per_s").at("median").get<double>(), 1e-6 * bytes * calls_per_s);
    flops[c.at("codec")] = fl;
    if (c.at("codec") == "fp16")  // every query against every one of the C rows: 4·d per (query, row)
      EXPECT_DOUBLE_EQ(fl, t.at("context_len").get<double>() * t.at("queries").get<double>() * 4 * d);
  }
  EXPECT_DOUBLE_EQ(flops.at("int"), flops.at("fp16"));  // a dense quantizer does the dense work
  EXPECT_LT(flops.at("snapkv"), 0.5 * flops.at("fp16"));  // keeps a quarter of the rows
}

TEST(Cli, ListShowsEveryCodec) {
  TempDir tmp("list");
  auto r = kvbtest::kvbench("list --json", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const json j = json::parse(r.out);
  std::set<std::string> names;
  for (const auto& c : j.at("codecs")) {
    names.insert(c.at("name").get<std::string>());
    EXPECT_FALSE(c.at("summary").get<std::string>().empty());
    EXPECT_FALSE(c.at("paper").get<std::string>().empty());
    EXPECT_FALSE(c.at("budget_rule").get<std::string>().empty());
    EXPECT_TRUE(c.at("params").is_array());
    EXPECT_FALSE(c.at("budget_grid").at("candidates").empty()) << c.at("name");
  }
  for (const char* n : {"fp16", "fp8", "int", "kivi"}) EXPECT_TRUE(names.count(n)) << n;
  EXPECT_GE(j.at("metrics").size(), 7u);
  r = kvbtest::kvbench("list", tmp);
  ASSERT_EQ(r.code, 0);
  for (const char* n : {"fp16", "fp8", "int", "kivi", "paper-2", "budget"}) EXPECT_NE(r.out.find(n), std::string::npos) << n;
}

TEST(Cli, GoldenCiRunSchema) {
  TempDir tmp("golden");
  make_ci_dump(tmp);
  const json doc = run_ci(tmp, tmp / "out");
  EXPECT_EQ(doc.at("schema_version"), kvb::kResultsSchemaVersion);
  for (const char* k : {"kvbench", "run", "config", "environment", "datasets", "metrics", "cells", "summary"})
    EXPECT_TRUE(doc.contains(k)) << k;
  for (const char* k : {"version", "git_sha", "git_dirty", "build_type", "compiler"}) EXPECT_TRUE(doc["kvbench"].contains(k)) << k;
  for (const char* k : {"name", "started_utc", "duration_s", "argv", "device_requested", "threads", "seed"})
    EXPECT_TRUE(doc["run"].contains(k)) << k;
  for (const char* k : {"cpu_model", "threads", "libraries", "gpus"}) EXPECT_TRUE(doc["environment"].contains(k)) << k;
  const json& ds = doc["datasets"][0];
  for (const char* k : {"path", "model", "shape", "dtype", "checksum_fnv1a64", "evaluated_sequences", "calibration_sequences"})
    EXPECT_TRUE(ds.contains(k)) << k;
  EXPECT_EQ(ds["ref_out_check"]["status"], "passed") << ds["ref_out_check"].dump();
  expect_number(ds["reference_throughput"]["attend_queries_per_s"]["median"], "reference attend q/s");

  const json& cells = doc.at("cells");
  // configs/ci.json: fp16, fp8, int x3, kivi x2, kivi at 1.5 bits (which nothing fits), then the seed codecs.
  ASSERT_GE(cells.size(), 8u);
  ASSERT_EQ(std::count_if(cells.begin(), cells.end(), [](const json& c) { return c.at("status") == "skipped"; }), 1);
  const json& skipped = *std::find_if(cells.begin(), cells.end(), [](const json& c) { return c.at("status") == "skipped"; });
  EXPECT_EQ(skipped.at("codec"), "kivi");
  EXPECT_EQ(skipped.at("status"), "skipped");
  EXPECT_NE(skipped.at("reason").get<std::string>().find("no kivi configuration fits 1.5 bits"), std::string::npos)
      << skipped.dump();
  EXPECT_FALSE(skipped.contains("fidelity"));
  for (const auto& c : cells) {
    if (&c == &skipped) continue;
    SCOPED_TRACE(c.at("label").get<std::string>());
    EXPECT_EQ(c.at("status"), "ok") << c.at("reason");
    for (const char* k : {"bytes_per_token", "buffer_bytes", "fixed_bytes", "bits_per_element",
                          "bits_per_element_with_fixed", "compression_ratio"})
      expect_number(c["storage"][k], k);
    for (const char* m : {"cosine", "rel_l2", "spearman", "topk_recall", "kl", "score_rel_err"})
      for (const char* a : {"mean", "median", "p05", "p95", "min", "max"}) expect_number(c["fidelity"][m][a], std::string(m) + "." + a);
    if (kvb::registry().at(c.at("codec").get<std::string>()).info.selects_tokens)
      expect_number(c["fidelity"]["mass_lost"]["mean"], "mass_lost.mean");  // token selection drops tokens
    else
      EXPECT_TRUE(c["fidelity"]["mass_lost"].is_null());  // the others hold every token
    EXPECT_FALSE(c["per_layer"].empty());
    for (const char* t : {"encode_tokens_per_s", "attend_queries_per_s", "attend_bytes_per_s"})
      expect_number(c["throughput"][t]["median"], t);
    const double cos = c["fidelity"]["cosine"]["mean"].get<double>();
    EXPECT_GE(cos, -1.0 - 1e-12);  // schema test: only the range; fidelity levels are checked in Acceptance
    EXPECT_LE(cos, 1.0 + 1e-12);
  }
  // CSV: the header of docs/results.md §3 in order, one row per cell.
  const std::string csv = kvbtest::slurp(tmp.path / "out" / "results.csv");
  std::string header;
  for (size_t i = 0; i < kvb::csv_columns().size(); ++i) header += (i ? "," : "") + kvb::csv_columns()[i];
  EXPECT_EQ(csv.substr(0, csv.find('\n')), header);
  EXPECT_EQ(header.rfind("dataset,codec,label,params,bits_target,status,reason,device,bits_per_element,", 0), 0u);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), static_cast<std::ptrdiff_t>(cells.size() + 1));
  EXPECT_NE(csv.find(",skipped,"), std::string::npos);
  EXPECT_EQ(csv.find("nan"), std::string::npos);
  // No temporary files left behind.
  for (const auto& e : fs::directory_iterator(tmp.path / "out"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST(Cli, TwoRunsGiveIdenticalFidelity) {
  TempDir tmp("determinism");
  make_ci_dump(tmp);
  const json a = run_ci(tmp, tmp / "a");
  const json b = run_ci(tmp, tmp / "b");
  ASSERT_EQ(a["cells"].size(), b["cells"].size());
  for (size_t i = 0; i < a["cells"].size(); ++i) {
    const json &ca = a["cells"][i], &cb = b["cells"][i];
    SCOPED_TRACE(ca.at("label").get<std::string>());
    EXPECT_EQ(ca.at("status"), cb.at("status"));
    for (const char* k : {"fidelity", "storage", "per_layer", "params"})
      EXPECT_EQ(ca.value(k, json()), cb.value(k, json())) << k;
  }
}

/// Write `cfg` next to nothing else and run it; returns the command result.
CmdResult run_config(const TempDir& tmp, const json& cfg) {
  kvbtest::spit(tmp.path / "cfg.json", cfg.dump(2));
  return kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' --output '" + (tmp / "out") + "'", tmp);
}

json tiny_cfg(const std::string& dump) {
  return json{{"name", "t"},
              {"datasets", {{{"path", dump}, {"max_queries", 2}}}},
              {"codecs", {{{"codec", "int"}, {"bits", {5}}}}},
              {"metrics", {{"topk", 4}}},
              {"throughput", false}};
}

TEST(Cli, ConfigErrorsExit2) {
  TempDir tmp("cfgerr");
  auto cfg = tiny_cfg("x.h5");
  cfg["codecs"][0]["codec"] = "zip";
  auto r = run_config(tmp, cfg);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("registered codecs: "), std::string::npos) << r.err;
  cfg = tiny_cfg("x.h5");
  cfg["thread"] = 2;
  r = run_config(tmp, cfg);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("\"thread\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("threads"), std::string::npos) << r.err;
  kvbtest::spit(tmp.path / "bad.json", "{\"name\": ");
  r = kvbtest::kvbench("run '" + (tmp / "bad.json") + "'", tmp);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("bad.json"), std::string::npos) << r.err;
  r = kvbtest::kvbench("run --threads -3 '" + (tmp / "bad.json") + "'", tmp);
  EXPECT_EQ(r.code, 2);
}

TEST(Cli, DataErrorsExit3) {
  TempDir tmp("dataerr");
  // Missing dump.
  auto r = run_config(tmp, tiny_cfg(tmp / "missing.h5"));
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("missing.h5"), std::string::npos) << r.err;
  // Truncated dump.
  r = kvbtest::kvbench("gen --model-like tiny --out '" + (tmp / "good.h5") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const auto size = fs::file_size(tmp.path / "good.h5");
  fs::copy_file(tmp.path / "good.h5", tmp.path / "cut.h5");
  fs::resize_file(tmp.path / "cut.h5", size / 2);
  r = run_config(tmp, tiny_cfg(tmp / "cut.h5"));
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("cut.h5"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp.path / "out" / "results.json"));
  r = kvbtest::kvbench("inspect '" + (tmp / "cut.h5") + "'", tmp);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  // NaN inside a tensor: exit 3 naming the dataset path.
  kvb::DumpAttrs at;
  at.model = "nan-test";
  at.shape = {1, 2, 1, 8};
  at.softmax_scale = 1.0 / std::sqrt(8.0);
  at.rope_style = "none";
  at.rope_applied = 0;
  at.orig_dtype = "float32";
  kvb::SequenceData s;
  s.id = "s0";
  s.n_tokens = 9;
  s.context_len = 8;
  s.query_positions = {8};
  s.layers.resize(1);
  s.layers[0].keys.assign(9 * 8, 0.25f);
  s.layers[0].values.assign(9 * 8, 0.5f);
  s.layers[0].queries.assign(2 * 1 * 8, 1.0f);
  {
    kvb::WriterOptions wo;
    wo.dtype = kvb::DType::kFloat32;
    kvb::KvDumpWriter w(tmp / "nan.h5", at, wo);  // the writer itself refuses NaN, so poke it in afterwards
    w.write_sequence(s);
    w.close();
  }
  {
    const hid_t f = H5Fopen((tmp / "nan.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t d = H5Dopen2(f, "/sequences/s0/layers/0/keys", H5P_DEFAULT);
    ASSERT_GE(d, 0);
    const hid_t fs = H5Dget_space(d);
    const hsize_t start[3] = {0, 3, 2}, count[3] = {1, 1, 1};
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr);
    const hid_t ms = H5Screate_simple(3, count, nullptr);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    ASSERT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &nan), 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
  }
  r = run_config(tmp, tiny_cfg(tmp / "nan.h5"));
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("/sequences/s0/layers/0/keys"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nan.h5"), std::string::npos) << r.err;
}

TEST(Cli, TopkLargerThanContextIsAConfigError) {
  TempDir tmp("topk");
  auto r = kvbtest::kvbench("gen --model-like tiny --tokens 24 --queries 8 --out '" + (tmp / "short.h5") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  auto cfg = tiny_cfg(tmp / "short.h5");
  cfg["metrics"]["topk"] = 32;
  r = run_config(tmp, cfg);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("metrics.topk"), std::string::npos) << r.err;
}

TEST(Cli, DeviceCudaWithoutGpuExits4) {
  TempDir tmp("cuda");
  make_ci_dump(tmp);
  const auto r = kvbtest::kvbench(std::string("run '") + KVB_SOURCE_DIR + "/configs/ci.json' --device cuda --output '" +
                                      (tmp / "out") + "'",
                                  tmp);
  if (r.code == 0 || r.out.find("skipped") != std::string::npos) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(r.code, 4) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("CUDA"), std::string::npos) << r.err;
}

}  // namespace
