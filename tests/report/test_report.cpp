// `kvbench report` (docs/results.md §8) on the committed fixtures of tests/data/report/: a trimmed `kvbench run
// configs/ci.json` results file (ci/) and a trimmed `kvbench e2e` one on stories260K (e2e/); see
// tests/data/report/README.md. The expected frontier, recommendations and worst layers are computed here from
// the JSON, independently of the report code (a pairwise Pareto test, a plain scan per budget). Then: the HTML is
// well formed for the elements the report emits, has no script and no external reference, escapes what it
// prints; a missing or malformed results.json is exit 3 naming the file; and, when Chromium is installed, the
// page renders to a non-trivial PNG.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kvb/report/report_analysis.h"
#include "run/test_util.h"

using json = nlohmann::json;
using kvbtest::TempDir;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) {
  return std::string(KVB_SOURCE_DIR) + "/tests/data/report/" + name + "/results.json";
}
json load(const std::string& p) { return json::parse(kvbtest::slurp(p)); }

bool ok_cell(const json& c) { return c["status"] == "ok"; }
double bits_fixed(const json& c) { return c["storage"]["bits_per_element_with_fixed"].get<double>(); }
std::optional<double> mean_of(const json& c, const std::string& m) {
  if (!c.contains("fidelity") || !c["fidelity"].contains(m) || !c["fidelity"][m].is_object()) return std::nullopt;
  const json& v = c["fidelity"][m]["mean"];
  return v.is_number() ? std::optional<double>(v.get<double>()) : std::nullopt;
}
bool higher(const json& doc, const std::string& m) {
  for (const auto& x : doc["metrics"])
    if (x["name"] == m) return x["better"] == "higher";
  ADD_FAILURE() << "metric " << m << " not in the fixture's metrics block";
  return true;
}

/// Labels of the ok cells no other ok cell beats on both bits with fixed state (<=) and cosine (>=), one strictly.
std::set<std::string> expected_frontier(const json& doc) {
  std::set<std::string> out;
  for (const auto& a : doc["cells"]) {
    if (!ok_cell(a) || !mean_of(a, "cosine")) continue;
    bool dominated = false;
    for (const auto& b : doc["cells"]) {
      if (&a == &b || !ok_cell(b) || !mean_of(b, "cosine")) continue;
      const double ba = bits_fixed(a), bb = bits_fixed(b), ca = *mean_of(a, "cosine"), cb = *mean_of(b, "cosine");
      if (bb <= ba && cb >= ca && (bb < ba || cb > ca)) dominated = true;
    }
    if (!dominated) out.insert(a["label"].get<std::string>());
  }
  return out;
}

/// The label of the best ok cell within `budget` by `m` ("" when none); ties to fewer bits, then the first;
/// kl skips token-dropping cells (those with a mass_lost mean).
std::string expected_best(const json& doc, double budget, const std::string& m) {
  const bool hi = higher(doc, m);
  std::string best;
  double bv = 0, bb = 0;
  for (const auto& c : doc["cells"]) {
    if (!ok_cell(c) || bits_fixed(c) > budget + 1e-9 || !mean_of(c, m)) continue;
    if (m == "kl" && mean_of(c, "mass_lost")) continue;  // held-set kl of a token-dropping cell (metrics.md §4)
    const double v = *mean_of(c, m), b = bits_fixed(c);
    if (best.empty() || (hi ? v > bv : v < bv) || (v == bv && b < bb)) {
      best = c["label"].get<std::string>();
      bv = v;
      bb = b;
    }
  }
  return best;
}

/// (layer, value) of the lowest per-layer cosine_mean of a cell.
std::pair<int64_t, double> expected_worst_layer(const json& c) {
  std::pair<int64_t, double> w{-1, 2.0};
  for (const auto& l : c["per_layer"])
    if (l.contains("cosine_mean") && l["cosine_mean"].get<double>() < w.second)
      w = {l["layer"].get<int64_t>(), l["cosine_mean"].get<double>()};
  return w;
}

std::string fmt6(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.6f", v);
  return b;
}

/// Balanced tags for what the report emits: every non-void element closed in order; "<x .../>" self-closes.
std::string tag_balance_error(const std::string& html) {
  static const std::set<std::string> kVoid = {"meta", "br", "hr", "img", "link", "input"};
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = html.find('<', i)) != std::string::npos) {
    const size_t end = html.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    std::string tag = html.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.rfind("!DOCTYPE", 0) == 0 || tag.rfind("!--", 0) == 0) continue;
    const bool closing = !tag.empty() && tag[0] == '/';
    const bool self = !tag.empty() && tag.back() == '/';
    std::string name;
    for (size_t k = closing ? 1 : 0; k < tag.size() && (std::isalnum(static_cast<unsigned char>(tag[k])) || tag[k] == '-'); ++k)
      name += tag[k];
    if (name.empty()) return "empty tag name: <" + tag + ">";
    if (closing) {
      if (stack.empty() || stack.back() != name)
        return "</" + name + "> closes " + (stack.empty() ? std::string("nothing") : "<" + stack.back() + ">");
      stack.pop_back();
    } else if (!self && !kVoid.count(name)) {
      stack.push_back(name);
    }
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + "> (" + std::to_string(stack.size()) + " open)";
  return "";
}

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
  return n;
}

kvbtest::CmdResult report(const std::string& args, const TempDir& dir) { return kvbtest::kvbench("report " + args, dir); }

}  // namespace

TEST(ReportAnalysis, FrontierRecommendationsAndWorstLayersMatchTheJson) {
  for (const char* name : {"ci", "e2e"}) {
    SCOPED_TRACE(name);
    const std::string file = fixture(name);
    const json doc = load(file);
    const std::vector<kvb::report::Input> in = {kvb::report::load_input(file)};
    const auto secs = kvb::report::analyze(in);
    ASSERT_EQ(secs.size(), 1u);
    const auto& s = secs[0];
    EXPECT_EQ(s.e2e, doc.contains("e2e"));
    ASSERT_EQ(s.rows.size(), doc["cells"].size());
    std::set<std::string> front;
    for (int i : s.frontier) front.insert(s.rows[i].label);
    EXPECT_EQ(front, expected_frontier(doc));
    EXPECT_FALSE(front.empty());
    const std::vector<std::string> ms = doc.contains("e2e") ? std::vector<std::string>{"cosine", "rel_l2", "kl", "e2e_kl"}
                                                            : std::vector<std::string>{"cosine", "rel_l2", "kl"};
    ASSERT_EQ(s.recommendations.size(), 5 * ms.size());
    int found = 0;
    for (const auto& rec : s.recommendations) {
      SCOPED_TRACE(rec.metric + " <= " + std::to_string(rec.budget));
      const std::string want = expected_best(doc, rec.budget, rec.metric);
      EXPECT_EQ(rec.row < 0 ? std::string() : s.rows[rec.row].label, want);
      found += !want.empty();
    }
    EXPECT_GE(found, 6) << "the fixture should have cells within most budgets";
    size_t with_layers = 0;
    for (const auto& se : s.sensitivity) {
      const json& c = doc["cells"][static_cast<size_t>(se.row)];
      const auto w = expected_worst_layer(c);
      EXPECT_EQ(se.worst.front().layer, w.first) << c["label"];
      EXPECT_DOUBLE_EQ(se.worst.front().cosine, w.second) << c["label"];
      ++with_layers;
    }
    size_t ok_with_layers = 0;
    for (const auto& c : doc["cells"]) ok_with_layers += ok_cell(c) && !c["per_layer"].empty();
    EXPECT_EQ(with_layers, ok_with_layers);
  }
}

TEST(ReportAnalysis, ParetoFrontKeepsTiesAndOrdersByBits) {
  using kvb::report::pareto_front;
  const std::vector<std::pair<double, double>> pts = {{4, 0.9}, {2, 0.5}, {4, 0.9}, {3, 0.4}, {8, 0.99}, {5, 0.85}};
  EXPECT_EQ(pareto_front(pts, true), (std::vector<int>{1, 0, 2, 4}));
  EXPECT_EQ(pareto_front({{2, 0.3}, {3, 0.4}, {1, 0.5}}, false), (std::vector<int>{2, 0}));
}

TEST(ReportCli, WritesHtmlAndMarkdownWithTheRightRows) {
  TempDir dir("report-ci");
  const std::string file = fixture("ci");
  const json doc = load(file);
  const auto r = report("'" + file + "' --out '" + (dir / "out") + "'", dir);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  EXPECT_NE(r.out.find("report.html"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("file://"), std::string::npos) << r.out;
  const std::string html = kvbtest::slurp(dir / "out/report.html"), md = kvbtest::slurp(dir / "out/report.md");
  ASSERT_FALSE(html.empty());
  ASSERT_FALSE(md.empty());
  // Recommendation rows name the expected cells, in both files.
  for (double b : {2.0, 3.0, 4.0, 5.0, 8.0})
    for (const std::string m : {"cosine", "rel_l2", "kl"}) {
      const std::string want = expected_best(doc, b, m);
      char budget[16];
      std::snprintf(budget, sizeof budget, "%g", b);
      const std::string by = m + (higher(doc, m) ? " (higher)" : " (lower)");
      const std::string cell = want.empty() ? "no ok cell within the budget" : want;
      EXPECT_NE(md.find("| <= " + std::string(budget) + " | " + by + " | " + cell + " |"), std::string::npos)
          << budget << " " << m << " -> " << cell << "\n" << md;
      EXPECT_NE(html.find("<td>&lt;= " + std::string(budget) + "</td><td>" + by + "</td><td>" + cell + "</td>"),
                std::string::npos)
          << budget << " " << m << " -> " << cell;
    }
  // The sensitivity table names each cell's worst layer with its value.
  for (const auto& c : doc["cells"]) {
    if (!ok_cell(c)) continue;
    const auto w = expected_worst_layer(c);
    const std::string row = "| " + c["label"].get<std::string>() + " | " + c["codec"].get<std::string>() + " |";
    const size_t at = md.find(row, md.find("### Per-layer sensitivity"));
    ASSERT_NE(at, std::string::npos) << row;
    const std::string line = md.substr(at, md.find('\n', at) - at);
    EXPECT_NE(line.find("| L" + std::to_string(w.first) + " " + fmt6(w.second)), std::string::npos) << line;
  }
  // Frontier cells are starred in the cell table; provenance is there.
  for (const auto& l : expected_frontier(doc))
    EXPECT_NE(md.find("| * | " + l + " |"), std::string::npos) << l;
  EXPECT_NE(md.find(doc["datasets"][0]["checksum_fnv1a64"].get<std::string>()), std::string::npos);
  EXPECT_NE(html.find(doc["datasets"][0]["checksum_fnv1a64"].get<std::string>()), std::string::npos);
  EXPECT_NE(html.find(doc["kvbench"]["git_sha"].get<std::string>().substr(0, 12)), std::string::npos);
  // Skipped cells appear with their reasons.
  for (const auto& c : doc["cells"])
    if (!ok_cell(c)) EXPECT_NE(md.find(c["reason"].get<std::string>()), std::string::npos) << c["label"];
  // Well formed, self-contained, three figures.
  EXPECT_EQ(tag_balance_error(html), "");
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http:"), std::string::npos);
  EXPECT_EQ(html.find("https:"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(count_of(html, "<svg"), 3u);
  EXPECT_EQ(count_of(html, "<section "), 1u);
  // Deterministic: the same inputs give the same bytes.
  const auto r2 = report("'" + file + "' --out '" + (dir / "again") + "' --format html", dir);
  ASSERT_EQ(r2.code, 0) << kvbtest::describe(r2);
  EXPECT_EQ(kvbtest::slurp(dir / "again/report.html"), html);
  EXPECT_FALSE(fs::exists(dir / "again/report.md"));
}

TEST(ReportCli, E2eColumnsAndSeveralInputsInOnePage) {
  TempDir dir("report-e2e");
  const std::string ci = fixture("ci"), e2e = fixture("e2e");
  const json doc = load(e2e);
  const auto r = report("'" + ci + "' '" + e2e + "' -o '" + (dir / "out") + "'", dir);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const std::string html = kvbtest::slurp(dir / "out/report.html"), md = kvbtest::slurp(dir / "out/report.md");
  EXPECT_EQ(count_of(html, "<section "), 2u);
  EXPECT_EQ(tag_balance_error(html), "");
  EXPECT_NE(html.find("ppl change [95% CI]"), std::string::npos);
  EXPECT_NE(md.find("exact perplexity"), std::string::npos);
  for (double b : {2.0, 3.0, 4.0, 5.0, 8.0}) {
    const std::string want = expected_best(doc, b, "e2e_kl");
    char budget[16];
    std::snprintf(budget, sizeof budget, "%g", b);
    EXPECT_NE(md.find("| <= " + std::string(budget) + " | e2e_kl (lower) | " +
                      (want.empty() ? "no ok cell within the budget" : want) + " |"),
              std::string::npos)
        << budget << " -> " << want;
  }
  // Each section's provenance names its own results file.
  EXPECT_NE(md.find(ci), std::string::npos);
  EXPECT_NE(md.find(e2e), std::string::npos);
}

TEST(ReportCli, DefaultOutIsTheFirstResultsDirAndStringsAreEscaped) {
  TempDir dir("report-esc");
  json doc = load(fixture("ci"));
  doc["cells"][0]["label"] = "<script>alert('x')</script>&amp";
  doc["run"]["name"] = "run </title><b>";
  fs::create_directories(dir / "res");
  kvbtest::spit(dir / "res/results.json", doc.dump());
  const auto r = report("'" + (dir / "res") + "'", dir);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const std::string html = kvbtest::slurp(dir / "res/report.html");
  ASSERT_FALSE(html.empty());
  EXPECT_TRUE(fs::exists(dir / "res/report.md"));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;amp"), std::string::npos);
  EXPECT_NE(html.find("run &lt;/title&gt;&lt;b&gt;"), std::string::npos);
  EXPECT_EQ(tag_balance_error(html), "");
}

TEST(ReportCli, MissingOrMalformedResultsAreExit3NamingTheFileAndBadUsageExit2) {
  TempDir dir("report-bad");
  fs::create_directories(dir / "empty");
  auto r = report("'" + (dir / "empty") + "' -o '" + (dir / "out") + "'", dir);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_NE(r.err.find(dir / "empty/results.json"), std::string::npos) << r.err;

  fs::create_directories(dir / "trunc");
  const std::string text = kvbtest::slurp(fixture("ci"));
  kvbtest::spit(dir / "trunc/results.json", text.substr(0, text.size() / 2));
  r = report("'" + fixture("ci") + "' '" + (dir / "trunc") + "' -o '" + (dir / "out") + "'", dir);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_NE(r.err.find(dir / "trunc/results.json"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out/report.html")) << "nothing is written when an input is bad";

  fs::create_directories(dir / "notkvb");
  kvbtest::spit(dir / "notkvb/results.json", R"({"cells": 3})");
  r = report("'" + (dir / "notkvb") + "'", dir);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_NE(r.err.find(dir / "notkvb/results.json"), std::string::npos) << r.err;

  json doc = load(fixture("ci"));
  doc["cells"][0]["storage"]["bits_per_element"] = "eight";
  fs::create_directories(dir / "badtype");
  kvbtest::spit(dir / "badtype/results.json", doc.dump());
  r = report("'" + (dir / "badtype") + "'", dir);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_NE(r.err.find(dir / "badtype/results.json"), std::string::npos) << r.err;

  r = report("", dir);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
  r = report("'" + fixture("ci") + "' --format pdf", dir);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
  r = report("'" + fixture("ci") + "' --bogus", dir);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
}

// Headless Chromium (Debian package chromium) renders the page; skipped when it is not installed.
TEST(ReportBrowser, HeadlessChromiumRendersThePage) {
  std::string browser;
  for (const char* b : {"chromium", "chromium-headless-shell", "chromium-browser"}) {
    const std::string probe = std::string("command -v ") + b + " >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) {
      browser = b;
      break;
    }
  }
  if (browser.empty()) GTEST_SKIP() << "no chromium or chromium-headless-shell on PATH (Debian: apt-get install chromium)";
  TempDir dir("report-browser");
  const auto r = report("'" + fixture("ci") + "' '" + fixture("e2e") + "' -o '" + (dir / "out") + "' --format html", dir);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const std::string png = dir / "page.png";
  const std::string cmd = "cd '" + dir.path.string() + "' && timeout 120 " + browser +
                          " --headless --disable-gpu --no-sandbox --no-first-run --user-data-dir='" + (dir / "profile") +
                          "' --screenshot='" + png + "' --window-size=1400,3000 'file://" + (dir / "out/report.html") +
                          "' >'" + (dir / "chromium.log") + "' 2>&1";
  const int st = std::system(cmd.c_str());
  ASSERT_TRUE(fs::exists(png)) << browser << " exit " << st << "\n" << kvbtest::slurp(dir / "chromium.log");
  const std::string img = kvbtest::slurp(png);
  ASSERT_GE(img.size(), 24u);
  EXPECT_EQ(img.substr(1, 3), "PNG");
  auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<unsigned char>(img[at])) << 24) |
           (static_cast<uint32_t>(static_cast<unsigned char>(img[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<unsigned char>(img[at + 2])) << 8) |
           static_cast<uint32_t>(static_cast<unsigned char>(img[at + 3]));
  };
  EXPECT_EQ(be32(16), 1400u);  // IHDR width and height
  EXPECT_EQ(be32(20), 3000u);
  // A blank page compresses to a few KB; tables, text and three plots per section do not.
  EXPECT_GT(img.size(), 60000u) << "suspiciously small screenshot: " << img.size() << " bytes";
  if (const char* keep = std::getenv("KVB_REPORT_SCREENSHOT")) fs::copy_file(png, keep, fs::copy_options::overwrite_existing);
}
