#include "kvb/report/merge.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"
#include "kvb/core/params.h"
#include "kvb/report/proxy.h"
#include "kvb/report/results.h"
#include "kvb/report/results_io.h"

namespace kvb {
namespace fs = std::filesystem;

namespace {

ResultDoc load_shard(const std::string& dir) {
  const fs::path p = fs::path(dir) / "results.json";
  std::error_code ec;
  if (!fs::exists(p, ec))
    throw DataError(fmt::format("{}: no such file (is {} a results directory of kvbench run?)", p.string(), dir));
  const Json j = read_json_file(p.string(), ExitCode::kData, "shard results");
  if (!j.is_object() || !j.contains("run") || !j["run"].contains("run_key") || !j["run"].contains("cell_indices") ||
      !j["run"].contains("cells_total") || !j.contains("cells") || !j["cells"].is_array() ||
      j["cells"].size() != j["run"]["cell_indices"].size())
    throw DataError(fmt::format("{}: not a results.json of a kvbench run with run.run_key, run.cell_indices and "
                                "run.cells_total (written by kvbench run of this version)",
                                p.string()));
  return ResultDoc::from_json(j, p.string());
}

std::string version_of(const ResultDoc& d) { return d.kvbench.value("version", std::string()); }

std::string ranges(const std::vector<size_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 20; ++i) s += (s.empty() ? "" : ", ") + std::to_string(v[i]);
  if (v.size() > 20) s += fmt::format(", ... ({} in all)", v.size());
  return s;
}

/// Every shard's cells by sweep index; throws UsageError for overlapping, out-of-range or missing cells.
std::map<int64_t, const CellRecord*> cells_by_index(const std::vector<ResultDoc>& docs,
                                                    const std::vector<std::string>& dirs, int64_t total) {
  std::map<int64_t, std::pair<size_t, const CellRecord*>> by_index;  // index -> (dir, cell)
  std::vector<std::string> overlaps;
  for (size_t i = 0; i < docs.size(); ++i) {
    const auto& idx = docs[i].run.cell_indices;
    for (size_t j = 0; j < idx.size(); ++j) {
      const int64_t k = idx[j];
      const auto it = by_index.find(k);
      if (it != by_index.end()) {
        overlaps.push_back(fmt::format("cell {} is in both {} and {}", k, dirs[it->second.first], dirs[i]));
        continue;
      }
      if (k < 0 || k >= total)
        throw UsageError(fmt::format("merge: {}: cell index {} is out of range (the sweep has {} cells)", dirs[i], k, total));
      by_index.emplace(k, std::make_pair(i, &docs[i].cells[j]));
    }
  }
  if (!overlaps.empty()) {
    std::string msg;
    for (size_t i = 0; i < overlaps.size() && i < 10; ++i) msg += "\n  " + overlaps[i];
    throw UsageError(fmt::format("merge: overlapping shards ({} cells twice):{}", overlaps.size(), msg));
  }
  std::vector<size_t> missing;
  for (int64_t k = 0; k < total; ++k)
    if (!by_index.count(k)) missing.push_back(static_cast<size_t>(k));
  if (!missing.empty()) {
    std::string ds;
    for (const auto& d : dirs) ds += (ds.empty() ? "" : ", ") + d;
    throw UsageError(fmt::format("merge: the shards {} miss {} of the {} cells: indices {} (a shard is missing or "
                                 "unfinished)",
                                 ds, missing.size(), total, ranges(missing)));
  }
  std::map<int64_t, const CellRecord*> out;
  for (const auto& [k, v] : by_index) out.emplace(k, v.second);
  return out;
}

void check_same_sweep(const std::vector<ResultDoc>& docs, const std::vector<std::string>& dirs) {
  const ResultDoc& first = docs[0];
  for (size_t i = 1; i < docs.size(); ++i) {
    const ResultDoc& d = docs[i];
    if (version_of(d) != version_of(first))
      throw UsageError(fmt::format("merge: {} was written by kvbench {} but {} by kvbench {}: shards must come from "
                                   "the same build",
                                   dirs[i], d.kvbench.value("version", std::string("?")), dirs[0], version_of(first)));
    if (d.run.run_key != first.run.run_key || d.run.cells_total != first.run.cells_total)
      throw UsageError(fmt::format("merge: {} (run_key {}) and {} (run_key {}) are not shards of the same sweep "
                                   "(different resolved config or kvbench git revision)",
                                   dirs[i], d.run.run_key, dirs[0], first.run.run_key));
  }
}

}  // namespace

MergeSummary merge_results(const std::vector<std::string>& dirs, const std::string& output_dir) {
  if (dirs.empty()) throw UsageError("merge: expected at least one results directory");
  std::vector<ResultDoc> docs;
  for (const auto& d : dirs) docs.push_back(load_shard(d));
  check_same_sweep(docs, dirs);
  const auto by_index = cells_by_index(docs, dirs, docs[0].run.cells_total);

  ResultDoc doc = docs[0];
  doc.cells.clear();
  doc.run.cell_indices.clear();
  doc.run.duration_s = 0;
  doc.run.resumed_cells = 0;
  for (const auto& d : docs) {
    doc.run.duration_s += d.run.duration_s;
    doc.run.resumed_cells += d.run.resumed_cells;
  }
  for (const auto& [k, c] : by_index) {
    doc.cells.push_back(*c);
    doc.run.cell_indices.push_back(k);
  }
  doc.run.shard.reset();
  Json from = Json::array();
  for (size_t i = 0; i < docs.size(); ++i) {
    const auto& r = docs[i].run;
    from.push_back({{"dir", dirs[i]},
                    {"shard", r.shard ? Json{{"k", r.shard->first}, {"n", r.shard->second}} : Json(nullptr)},
                    {"started_utc", r.started_utc},
                    {"environment", docs[i].environment}});
  }
  doc.run.merged_from = from;
  doc.summary = SummaryRecord::of(doc.cells);
  refresh_e2e(doc);  // e2e results: the proxy table and speed ratios over every shard's cells
  MergeSummary s;
  s.cells = static_cast<int>(doc.summary.cells);
  s.ok = static_cast<int>(doc.summary.ok);
  s.skipped = static_cast<int>(doc.summary.skipped);
  s.errors = static_cast<int>(doc.summary.errors);

  if (output_dir.empty()) {
    fs::path f = fs::path(dirs[0]);
    if (f.filename().empty()) f = f.parent_path();  // "dir/"
    s.output_dir = (f.parent_path() / (f.filename().string() + "-merged")).string();
  } else {
    s.output_dir = output_dir;
  }
  write_results_dir(s.output_dir, doc);
  return s;
}

}  // namespace kvb
