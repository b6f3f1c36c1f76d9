// `kvbench compare`: matching, tolerances and better directions, in process (compare_results) and through
// the executable (exit codes 0/1/2/3 of docs/errors.md §1). The inputs are copies of the committed CI baseline
// results/baselines/ci.json with one field edited.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "kvb/core/error.h"
#include "kvb/report/compare.h"
#include "test_util.h"

namespace {

using kvbtest::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

json baseline() {
  const fs::path p = fs::path(KVB_SOURCE_DIR) / "results" / "baselines" / "ci.json";
  return json::parse(kvbtest::slurp(p));
}

json& cell(json& doc, const std::string& label) {
  for (auto& c : doc["cells"])
    if (c["label"] == label) return c;
  ADD_FAILURE() << "no cell " << label;
  return doc["cells"][0];
}

/// Write base and new into tmp and run `kvbench compare base new EXTRA`.
kvbtest::CmdResult run_compare(const TempDir& tmp, const json& base, const json& now, const std::string& extra = "") {
  kvbtest::spit(tmp / "base.json", base.dump(1));
  kvbtest::spit(tmp / "new.json", now.dump(1));
  return kvbtest::kvbench("compare '" + (tmp / "base.json") + "' '" + (tmp / "new.json") + "' " + extra, tmp);
}

const json& cell(const json& doc, const std::string& label) { return cell(const_cast<json&>(doc), label); }

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

const kvb::CompareRow* find_row(const kvb::CompareReport& r, const std::string& cell, const std::string& metric) {
  for (const auto& x : r.rows)
    if (x.cell == cell && x.metric == metric) return &x;
  return nullptr;
}

TEST(Compare, BaselineIsAValidResultsFile) {
  const json b = baseline();
  EXPECT_NO_THROW(kvb::validate_results(b, "ci.json"));
  EXPECT_GE(b["cells"].size(), 4u);
  // The CI gate needs ok cells with every storage field.
  EXPECT_EQ(cell(b, "int4-g32")["status"], "ok");
}

TEST(Compare, IdenticalFilesHaveNoChanges) {
  const json b = baseline();
  const auto r = kvb::compare_results(b, b, {});
  EXPECT_TRUE(r.rows.empty());
  EXPECT_FALSE(r.regressed());
  EXPECT_EQ(r.matched, static_cast<int>(b["cells"].size()));
  TempDir tmp("cmp-same");
  const auto c = run_compare(tmp, b, b);
  EXPECT_EQ(c.code, 0) << kvbtest::describe(c);
  EXPECT_TRUE(has(c.out, "no changes")) << c.out;
  // A results directory works as well as the file.
  fs::create_directories(tmp.path / "dir");
  kvbtest::spit(tmp.path / "dir" / "results.json", b.dump());
  const auto d = kvbtest::kvbench("compare '" + (tmp / "dir") + "' '" + (tmp / "base.json") + "'", tmp);
  EXPECT_EQ(d.code, 0) << kvbtest::describe(d);
}

TEST(Compare, FidelityDropIsARegression) {
  const json b = baseline();
  json n = b;
  cell(n, "int4-g32")["fidelity"]["cosine"]["mean"] = cell(b, "int4-g32")["fidelity"]["cosine"]["mean"].get<double>() - 1e-3;
  const auto r = kvb::compare_results(b, n, {});
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].cell, "int4-g32");
  EXPECT_EQ(r.rows[0].metric, "cosine");
  EXPECT_EQ(r.rows[0].verdict, "regression");
  EXPECT_NEAR(*r.rows[0].delta, -1e-3, 1e-12);
  TempDir tmp("cmp-drop");
  const auto c = run_compare(tmp, b, n);
  EXPECT_EQ(c.code, 1) << kvbtest::describe(c);
  EXPECT_TRUE(has(c.out, "int4-g32") && has(c.out, "cosine") && has(c.out, "regression")) << c.out;
  // A looser tolerance accepts it.
  EXPECT_EQ(run_compare(tmp, b, n, "--fidelity-tol 2e-3").code, 0);
  // Below the default tolerance nothing is reported.
  json tiny = b;
  cell(tiny, "int4-g32")["fidelity"]["cosine"]["mean"] = cell(b, "int4-g32")["fidelity"]["cosine"]["mean"].get<double>() - 1e-9;
  EXPECT_TRUE(kvb::compare_results(b, tiny, {}).rows.empty());
}

TEST(Compare, BetterDirectionIsAnImprovement) {
  const json b = baseline();
  json n = b;
  auto& c4 = cell(n, "int4-g32");
  c4["fidelity"]["cosine"]["mean"] = c4["fidelity"]["cosine"]["mean"].get<double>() + 1e-3;
  c4["fidelity"]["rel_l2"]["mean"] = c4["fidelity"]["rel_l2"]["mean"].get<double>() - 1e-3;
  const auto r = kvb::compare_results(b, n, {});
  EXPECT_FALSE(r.regressed());
  EXPECT_EQ(r.improvements, 2);
  ASSERT_NE(find_row(r, "int4-g32", "rel_l2"), nullptr);
  EXPECT_EQ(find_row(r, "int4-g32", "rel_l2")->verdict, "improvement");
  TempDir tmp("cmp-better");
  const auto c = run_compare(tmp, b, n);
  EXPECT_EQ(c.code, 0) << kvbtest::describe(c);
  EXPECT_TRUE(has(c.out, "improvement")) << c.out;
}

TEST(Compare, KlIncreaseIsARegression) {
  const json b = baseline();
  json n = b;
  auto& c = cell(n, "kivi2-g32-r128");
  c["fidelity"]["kl"]["mean"] = c["fidelity"]["kl"]["mean"].get<double>() + 1e-3;
  const auto r = kvb::compare_results(b, n, {});
  const auto* row = find_row(r, "kivi2-g32-r128", "kl");
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->verdict, "regression");
  EXPECT_TRUE(r.regressed());
  // And a KL decrease is an improvement.
  c["fidelity"]["kl"]["mean"] = c["fidelity"]["kl"]["mean"].get<double>() - 2e-3;
  const auto r2 = kvb::compare_results(b, n, {});
  EXPECT_FALSE(r2.regressed());
  EXPECT_EQ(find_row(r2, "kivi2-g32-r128", "kl")->verdict, "improvement");
}

TEST(Compare, StorageGrowthIsARegressionShrinkIsAChange) {
  const json b = baseline();
  json n = b;
  auto& c = cell(n, "fp8-e4m3");
  c["storage"]["bytes_per_token"] = c["storage"]["bytes_per_token"].get<double>() + 2;
  TempDir tmp("cmp-storage");
  auto r = run_compare(tmp, b, n);
  EXPECT_EQ(r.code, 1) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.out, "bytes_per_token")) << r.out;
  EXPECT_EQ(run_compare(tmp, b, n, "--storage-tol 0.05").code, 0);
  c["storage"]["bytes_per_token"] = c["storage"]["bytes_per_token"].get<double>() - 4;
  const auto rep = kvb::compare_results(b, n, {});
  EXPECT_FALSE(rep.regressed());
  ASSERT_NE(find_row(rep, "fp8-e4m3", "bytes_per_token"), nullptr);
  EXPECT_EQ(find_row(rep, "fp8-e4m3", "bytes_per_token")->verdict, "changed");
}

TEST(Compare, MissingCellIsARegressionAddedCellIsReported) {
  const json b = baseline();
  json n = b;
  auto& cells = n["cells"];
  cells.erase(std::find_if(cells.begin(), cells.end(), [](const json& c) { return c["label"] == "int8-g32"; }));
  TempDir tmp("cmp-missing");
  auto r = run_compare(tmp, b, n);
  EXPECT_EQ(r.code, 1) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.out, "int8-g32") && has(r.out, "missing")) << r.out;

  json a = b;
  json extra = cell(a, "int4-g32");
  extra["params"]["code_bits"] = 6;
  extra["label"] = "int6-g32";
  a["cells"].push_back(extra);
  r = run_compare(tmp, b, a);
  EXPECT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.out, "int6-g32") && has(r.out, "added")) << r.out;
  const auto rep = kvb::compare_results(b, a, {});
  EXPECT_EQ(rep.added, 1);
  EXPECT_EQ(rep.missing, 0);
}

TEST(Compare, StatusOkToErrorIsARegression) {
  const json b = baseline();
  json n = b;
  auto& c = cell(n, "kivi4-g32-r128");
  c["status"] = "error";
  c["reason"] = "boom";
  c.erase("fidelity");
  TempDir tmp("cmp-status");
  const auto r = run_compare(tmp, b, n);
  EXPECT_EQ(r.code, 1) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.out, "kivi4-g32-r128") && has(r.out, "status") && has(r.out, "boom")) << r.out;
  // The reverse (error -> ok) is an improvement, not a failure.
  EXPECT_EQ(run_compare(tmp, n, b).code, 0);
}

TEST(Compare, ThroughputOnlyWithATolerance) {
  const json b = baseline();
  json n = b;
  auto& t = cell(n, "fp8-e4m3")["throughput"]["attend_queries_per_s"]["median"];
  t = t.get<double>() * 0.5;
  TempDir tmp("cmp-tput");
  auto r = run_compare(tmp, b, n);
  EXPECT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.out, "no changes")) << r.out;
  r = run_compare(tmp, b, n, "--throughput-tol 0.1");
  EXPECT_EQ(r.code, 1) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.out, "attend_queries_per_s")) << r.out;
  EXPECT_EQ(run_compare(tmp, b, n, "--throughput-tol 0.6").code, 0);
}

TEST(Compare, JsonReport) {
  const json b = baseline();
  json n = b;
  auto& c = cell(n, "int2-g32");
  c["fidelity"]["spearman"]["mean"] = c["fidelity"]["spearman"]["mean"].get<double>() - 0.01;
  TempDir tmp("cmp-json");
  const auto r = run_compare(tmp, b, n, "--json");
  EXPECT_EQ(r.code, 1) << kvbtest::describe(r);
  const json rep = json::parse(r.out);
  EXPECT_EQ(rep["regression"], true);
  EXPECT_EQ(rep["summary"]["regressions"], 1);
  ASSERT_EQ(rep["changes"].size(), 1u);
  EXPECT_EQ(rep["changes"][0]["metric"], "spearman");
  EXPECT_EQ(rep["changes"][0]["cell"], "int2-g32");
  EXPECT_EQ(rep["changes"][0]["verdict"], "regression");
}

TEST(Compare, UnreadableFilesExit3) {
  const json b = baseline();
  TempDir tmp("cmp-bad");
  kvbtest::spit(tmp / "base.json", b.dump());
  const std::string good = tmp / "base.json";
  // Truncated JSON.
  const std::string text = b.dump();
  kvbtest::spit(tmp / "cut.json", text.substr(0, text.size() / 2));
  auto r = kvbtest::kvbench("compare '" + good + "' '" + (tmp / "cut.json") + "'", tmp);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.err, "cut.json") && has(r.err, "not valid JSON")) << r.err;
  // Missing file.
  r = kvbtest::kvbench("compare '" + (tmp / "nope.json") + "' '" + good + "'", tmp);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.err, "nope.json")) << r.err;
  // Valid JSON of the wrong shape.
  json wrong = b;
  wrong["cells"][2]["fidelity"] = "high";
  kvbtest::spit(tmp / "wrong.json", wrong.dump());
  r = kvbtest::kvbench("compare '" + good + "' '" + (tmp / "wrong.json") + "'", tmp);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_TRUE(has(r.err, "wrong.json") && has(r.err, "cells[2]") && has(r.err, "fidelity")) << r.err;
  kvbtest::spit(tmp / "array.json", "[1, 2]");
  r = kvbtest::kvbench("compare '" + good + "' '" + (tmp / "array.json") + "'", tmp);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_THROW(kvb::validate_results(json::object(), "x"), kvb::DataError);
}

TEST(Compare, UsageErrorsExit2) {
  const json b = baseline();
  TempDir tmp("cmp-usage");
  kvbtest::spit(tmp / "base.json", b.dump());
  const std::string f = "'" + (tmp / "base.json") + "'";
  EXPECT_EQ(kvbtest::kvbench("compare " + f + " " + f + " --frobnicate", tmp).code, 2);
  EXPECT_EQ(kvbtest::kvbench("compare " + f + " " + f + " --fidelity-tol -1", tmp).code, 2);
  EXPECT_EQ(kvbtest::kvbench("compare " + f + " " + f + " --throughput-tol abc", tmp).code, 2);
  EXPECT_EQ(kvbtest::kvbench("compare " + f, tmp).code, 2);
  EXPECT_EQ(kvbtest::kvbench("compare --help", tmp).code, 0);
}

}  // namespace
