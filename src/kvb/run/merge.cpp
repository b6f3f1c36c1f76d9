#include "kvb/run/merge.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "kvb/core/error.h"
#include "kvb/core/params.h"
#include "kvb/run/results_io.h"
#include "kvb/run/runner.h"

namespace kvb {
namespace fs = std::filesystem;

namespace {

Json load_shard(const std::string& dir) {
  const fs::path p = fs::path(dir) / "results.json";
  const auto text = read_file(p.string());
  if (!text) throw DataError(fmt::format("{}: cannot open (is {} a results directory?)", p.string(), dir));
  Json j;
  try {
    j = Json::parse(*text);
  } catch (const std::exception& e) {
    throw DataError(fmt::format("{}: invalid JSON: {}", p.string(), e.what()));
  }
  if (!j.is_object() || !j.contains("run") || !j["run"].contains("run_key") || !j["run"].contains("cell_indices") ||
      !j["run"].contains("cells_total") || !j.contains("cells") || !j["cells"].is_array() ||
      j["cells"].size() != j["run"]["cell_indices"].size())
    throw DataError(fmt::format("{}: not a results.json of a kvbench run with run.run_key, run.cell_indices and "
                                "run.cells_total (written by kvbench run of this version)",
                                p.string()));
  return j;
}

std::string ranges(const std::vector<size_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 20; ++i) s += (s.empty() ? "" : ", ") + std::to_string(v[i]);
  if (v.size() > 20) s += fmt::format(", ... ({} in all)", v.size());
  return s;
}

}  // namespace

MergeSummary merge_results(const std::vector<std::string>& dirs, const std::string& output_dir) {
  if (dirs.empty()) throw UsageError("merge: expected at least one results directory");
  std::vector<Json> docs;
  for (const auto& d : dirs) docs.push_back(load_shard(d));
  const Json& first = docs[0];
  const std::string key = first["run"]["run_key"].get<std::string>();
  const std::string version = first["kvbench"].value("version", std::string());
  const size_t total = first["run"]["cells_total"].get<size_t>();
  for (size_t i = 1; i < docs.size(); ++i) {
    const Json& d = docs[i];
    if (d["kvbench"].value("version", std::string()) != version)
      throw UsageError(fmt::format("merge: {} was written by kvbench {} but {} by kvbench {}: shards must come from "
                                   "the same build",
                                   dirs[i], d["kvbench"].value("version", std::string("?")), dirs[0], version));
    if (d["run"]["run_key"].get<std::string>() != key || d["run"]["cells_total"].get<size_t>() != total)
      throw UsageError(fmt::format("merge: {} (run_key {}) and {} (run_key {}) are not shards of the same sweep "
                                   "(different resolved config or kvbench git revision)",
                                   dirs[i], d["run"]["run_key"].get<std::string>(), dirs[0], key));
  }
  std::map<size_t, std::pair<size_t, Json>> by_index;  // index -> (dir, cell)
  std::vector<std::string> overlaps;
  for (size_t i = 0; i < docs.size(); ++i) {
    const Json& idx = docs[i]["run"]["cell_indices"];
    for (size_t j = 0; j < idx.size(); ++j) {
      const size_t k = idx[j].get<size_t>();
      const auto it = by_index.find(k);
      if (it != by_index.end()) {
        overlaps.push_back(fmt::format("cell {} is in both {} and {}", k, dirs[it->second.first], dirs[i]));
        continue;
      }
      if (k >= total)
        throw UsageError(fmt::format("merge: {}: cell index {} is out of range (the sweep has {} cells)", dirs[i], k, total));
      by_index.emplace(k, std::make_pair(i, docs[i]["cells"][j]));
    }
  }
  if (!overlaps.empty()) {
    std::string msg;
    for (size_t i = 0; i < overlaps.size() && i < 10; ++i) msg += "\n  " + overlaps[i];
    throw UsageError(fmt::format("merge: overlapping shards ({} cells twice):{}", overlaps.size(), msg));
  }
  std::vector<size_t> missing;
  for (size_t k = 0; k < total; ++k)
    if (!by_index.count(k)) missing.push_back(k);
  if (!missing.empty()) {
    std::string ds;
    for (const auto& d : dirs) ds += (ds.empty() ? "" : ", ") + d;
    throw UsageError(fmt::format("merge: the shards {} miss {} of the {} cells: indices {} (a shard is missing or "
                                 "unfinished)",
                                 ds, missing.size(), total, ranges(missing)));
  }

  Json doc = first;
  Json cells = Json::array(), indices = Json::array();
  MergeSummary s;
  double duration = 0;
  int resumed = 0;
  for (const auto& d : docs) {
    duration += d["run"].value("duration_s", 0.0);
    resumed += d["run"].value("resumed_cells", 0);
  }
  for (auto& [k, v] : by_index) {
    cells.push_back(v.second);
    indices.push_back(k);
    const std::string st = v.second.value("status", std::string());
    if (st == "ok") ++s.ok;
    else if (st == "skipped") ++s.skipped;
    else ++s.errors;
  }
  s.cells = static_cast<int>(cells.size());
  doc["cells"] = cells;
  doc["run"].erase("shard");
  doc["run"]["cell_indices"] = indices;
  doc["run"]["duration_s"] = duration;
  doc["run"]["resumed_cells"] = resumed;
  Json from = Json::array();
  for (size_t i = 0; i < docs.size(); ++i)
    from.push_back({{"dir", dirs[i]}, {"shard", docs[i]["run"].value("shard", Json(nullptr))},
                    {"started_utc", docs[i]["run"].value("started_utc", std::string())},
                    {"environment", docs[i].value("environment", Json(nullptr))}});
  doc["run"]["merged_from"] = from;
  doc["summary"] = {{"cells", s.cells}, {"ok", s.ok}, {"skipped", s.skipped}, {"errors", s.errors}};

  if (output_dir.empty()) {
    fs::path f = fs::path(dirs[0]);
    if (f.filename().empty()) f = f.parent_path();  // "dir/"
    s.output_dir = (f.parent_path() / (f.filename().string() + "-merged")).string();
  } else {
    s.output_dir = output_dir;
  }
  write_results_dir(s.output_dir, doc, results_csv(doc));
  return s;
}

}  // namespace kvb
