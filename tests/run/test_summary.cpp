// The end-of-run summary (kvb/run/summary.h) and the shared Pareto frontier (kvb/report/frontier.h): the
// frontier against a brute-force dominance check on seeded random points, and `kvbench run configs/ci.json` on
// the CI tiny dump: the table names exactly the frontier cells computed here from results.json, lists the
// skipped cell with its reason, and -q prints only the two lines it always printed (stderr not a terminal:
// no progress line either).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kvb/core/rng.h"
#include "kvb/report/frontier.h"
#include "kvb/report/results.h"
#include "kvb/run/summary.h"
#include "run/test_util.h"

namespace {

using kvb::FrontierPoint;
using kvb::metrics::Better;
using kvbtest::TempDir;
namespace fs = std::filesystem;

/// On the frontier: no other point with bits <= and metric >= (higher is better), one of them strict.
std::vector<bool> brute_force(const std::vector<FrontierPoint>& p, Better better) {
  auto good = [&](double m) { return better == Better::kHigher ? m : -m; };
  std::vector<bool> on(p.size(), false);
  for (size_t i = 0; i < p.size(); ++i) {
    if (!std::isfinite(p[i].bits) || !std::isfinite(p[i].metric)) continue;
    bool dominated = false;
    for (size_t j = 0; j < p.size() && !dominated; ++j) {
      if (j == i || !std::isfinite(p[j].bits) || !std::isfinite(p[j].metric)) continue;
      dominated = p[j].bits <= p[i].bits && good(p[j].metric) >= good(p[i].metric) &&
                  (p[j].bits < p[i].bits || good(p[j].metric) > good(p[i].metric));
    }
    on[i] = !dominated;
  }
  return on;
}

TEST(Frontier, MatchesBruteForce) {
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    kvb::Rng rng(seed);
    const int n = 1 + static_cast<int>(rng.below(30));
    std::vector<FrontierPoint> pts;
    for (int i = 0; i < n; ++i) {
      // Coarse grids so that ties in bits and in the metric are common; a few NaNs.
      const double bits = 1 + static_cast<double>(rng.below(8));
      const double m = rng.below(10) == 0 ? NAN : static_cast<double>(rng.below(6)) / 5;
      pts.push_back({bits, m});
    }
    for (Better b : {Better::kHigher, Better::kLower}) {
      std::string cfg = "seed " + std::to_string(seed) + (b == Better::kHigher ? " higher:" : " lower:");
      for (const auto& p : pts) cfg += " (" + std::to_string(p.bits) + "," + std::to_string(p.metric) + ")";
      EXPECT_EQ(kvb::pareto_frontier(pts, b), brute_force(pts, b)) << cfg;
    }
  }
}

TEST(Frontier, Cases) {
  // Equal bits: only the best of them; a cheaper point with equal quality hides a dearer one; equal points
  // are all on the frontier.
  const std::vector<FrontierPoint> p = {{16, 1.0}, {16, 0.9}, {8, 0.99}, {4, 0.5}, {5, 0.5}, {8, 0.99}, {2, NAN}};
  EXPECT_EQ(kvb::pareto_frontier(p, Better::kHigher),
            (std::vector<bool>{true, false, true, true, false, true, false}));
  EXPECT_EQ(kvb::pareto_frontier(p, Better::kLower),
            (std::vector<bool>{false, false, false, true, false, false, false}));
  EXPECT_TRUE(kvb::pareto_frontier({}, Better::kHigher).empty());
}

/// The labels of the summary's frontier rows (between the column header and the "behind the frontier" line).
std::vector<std::string> frontier_rows(const std::string& table) {
  std::vector<std::string> labels;
  std::istringstream in(table);
  std::string line;
  bool in_rows = false;
  while (std::getline(in, line)) {
    if (line.rfind("  cell ", 0) == 0) {
      in_rows = true;
      continue;
    }
    if (line.find("behind the frontier") != std::string::npos) in_rows = false;
    if (in_rows) {
      std::istringstream w(line);
      std::string label;
      w >> label;
      labels.push_back(label);
    }
  }
  return labels;
}

struct CiRun {
  TempDir tmp{"summary"};
  kvbtest::CmdResult loud, quiet;
  kvb::ResultDoc doc;
};

const CiRun& ci_run() {
  static CiRun* r = [] {
    auto* c = new CiRun;
    fs::create_directories(fs::path(KVB_SOURCE_DIR) / "data");
    auto g = kvbtest::kvbench(std::string("gen --model-like tiny --out '") + KVB_SOURCE_DIR + "/data/ci-tiny.h5'", c->tmp);
    EXPECT_EQ(g.code, 0) << kvbtest::describe(g);
    const std::string cfg = std::string("run '") + KVB_SOURCE_DIR + "/configs/ci.json' --output '";
    c->loud = kvbtest::kvbench(cfg + (c->tmp / "loud") + "'", c->tmp);
    c->quiet = kvbtest::kvbench(cfg + (c->tmp / "quiet") + "' -q", c->tmp);
    const std::string text = kvbtest::slurp(fs::path(c->tmp / "loud") / "results.json");
    c->doc = kvb::ResultDoc::from_json(nlohmann::json::parse(text), "results.json");
    return c;
  }();
  return *r;
}

TEST(Summary, CiRunNamesTheFrontier) {
  const CiRun& r = ci_run();
  ASSERT_EQ(r.loud.code, 0) << kvbtest::describe(r.loud);
  // Independently: the ok cells' (bits with fixed state, cosine mean), frontier by brute force.
  std::vector<FrontierPoint> pts;
  std::vector<std::string> labels;
  for (const auto& c : r.doc.cells) {
    if (!c.ok()) continue;
    pts.push_back({c.storage.bits_per_element_with_fixed, c.fidelity.at("cosine")->mean});
    labels.push_back(c.label);
  }
  const std::vector<bool> on = brute_force(pts, Better::kHigher);
  std::multiset<std::string> expect, got;
  size_t behind = 0;
  for (size_t i = 0; i < on.size(); ++i) on[i] ? (void)expect.insert(labels[i]) : (void)++behind;
  const std::vector<std::string> rows = frontier_rows(r.loud.out);
  got.insert(rows.begin(), rows.end());
  EXPECT_EQ(got, expect) << r.loud.out;
  EXPECT_GE(expect.size(), 2u);  // fp16 at 16 bits and something cheaper
  EXPECT_NE(r.loud.out.find(std::to_string(behind) + " ok cells behind the frontier"), std::string::npos) << r.loud.out;
  // Rows by bits, and the columns the issue names.
  for (const char* col : {"bits", "cosine", "KL", "Spearman", "attend"})
    EXPECT_NE(r.loud.out.find(col), std::string::npos) << col;
  // configs/ci.json's kivi at 1.5 bits: skipped, with its reason.
  EXPECT_NE(r.loud.out.find("skipped kivi at 1.5 bits: no kivi configuration fits 1.5 bits"), std::string::npos)
      << r.loud.out;
  EXPECT_NE(r.loud.out.find("synthetic:tiny"), std::string::npos) << r.loud.out;
  // Then the lines every run prints, last.
  EXPECT_TRUE(std::regex_search(r.loud.out, std::regex("\nkvbench run ci: \\d+ cells .*\nresults: .*results\\.csv\n$")))
      << r.loud.out;
  // The summary is built from results.json alone: the same text from the document.
  EXPECT_NE(r.loud.out.find(kvb::run::summary_table(r.doc)), std::string::npos);
  // stderr is not a terminal here: no progress line.
  EXPECT_EQ(r.loud.err.find('\r'), std::string::npos) << r.loud.err;
}

TEST(Summary, QuietPrintsNothingNew) {
  const CiRun& r = ci_run();
  ASSERT_EQ(r.quiet.code, 0) << kvbtest::describe(r.quiet);
  EXPECT_TRUE(std::regex_match(r.quiet.out, std::regex("kvbench run ci: \\d+ cells \\(\\d+ ok, 1 skipped, 0 errors; 0 "
                                                       "resumed\\) in [0-9.]+ s\nresults: \\S+/results\\.json and "
                                                       "\\S+/results\\.csv\n")))
      << r.quiet.out;
  EXPECT_EQ(r.quiet.err.find('\r'), std::string::npos) << r.quiet.err;
}

TEST(Summary, FailedCellsAndBoundedReasons) {
  kvb::ResultDoc doc = ci_run().doc;
  ASSERT_FALSE(doc.cells.empty());
  // Every ok cell failed with a long reason: no frontier, every one listed, each reason cut.
  for (auto& c : doc.cells)
    if (c.ok()) {
      c.status = kvb::CellStatus::kError;
      c.reason = "layer 0: " + std::string(1000, 'x');
    }
  const std::string s = kvb::run::summary_table(doc);
  EXPECT_EQ(s.find("Pareto frontier"), std::string::npos) << s;
  size_t failed = 0;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) {
    EXPECT_LE(line.size(), kvb::run::kReasonChars + 80) << line;
    failed += line.rfind("  failed ", 0) == 0;
  }
  EXPECT_EQ(failed, std::min(kvb::run::kListedCells, doc.cells.size() - 1)) << s;
  EXPECT_NE(s.find("0 ok, 1 skipped, " + std::to_string(doc.cells.size() - 1) + " failed"), std::string::npos) << s;
  // Many skipped cells: at most kListedCells lines, then a count.
  kvb::ResultDoc many = doc;
  many.cells.clear();
  for (size_t i = 0; i < kvb::run::kListedCells + 5; ++i) many.cells.push_back(doc.cells.front()), many.cells.back().status = kvb::CellStatus::kSkipped;
  const std::string m = kvb::run::summary_table(many);
  EXPECT_NE(m.find("... and 5 more skipped cells"), std::string::npos) << m;
}

}  // namespace
