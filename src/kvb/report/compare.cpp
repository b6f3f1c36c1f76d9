#include "kvb/report/compare.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"
#include "kvb/metrics/metrics.h"
#include "kvb/report/results.h"
#include "kvb/report/results_io.h"

namespace kvb {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStorageFields[] = {"bits_per_element", "bits_per_element_with_fixed", "bytes_per_token",
                                          "buffer_bytes", "fixed_bytes"};
constexpr const char* kThroughputFields[] = {"attend_queries_per_s", "encode_tokens_per_s"};
/// The same fields in the typed records (kStorageFields / kThroughputFields order).
constexpr double StorageRecord::*kStorageMembers[] = {&StorageRecord::bits_per_element,
                                                      &StorageRecord::bits_per_element_with_fixed,
                                                      &StorageRecord::bytes_per_token, &StorageRecord::buffer_bytes,
                                                      &StorageRecord::fixed_bytes};
constexpr RateRecord ThroughputRecord::*kThroughputMembers[] = {&ThroughputRecord::attend_queries_per_s,
                                                                &ThroughputRecord::encode_tokens_per_s};

std::string type_name(const Json& j) { return j.type_name(); }

std::string cell_where(const std::string& name, size_t i, const Json& c) {
  std::string lbl;
  if (c.is_object() && c.contains("label") && c["label"].is_string()) lbl = " (" + c["label"].get<std::string>() + ")";
  return fmt::format("{}: cells[{}]{}", name, i, lbl);
}

/// A number or null at `obj[key]` (absent counts as null); anything else is a data error.
void check_number_or_null(const Json& obj, const char* key, const std::string& where) {
  if (!obj.contains(key)) return;
  const Json& v = obj[key];
  KVB_CHECK(v.is_null() || v.is_number(), DataError, "{}.{}: expected a number or null, found {}", where, key,
            type_name(v));
}

struct Cell {
  const CellRecord* rec = nullptr;
  std::string key, label;
  std::string status() const { return to_string(rec->status); }
};

std::string base_key(const CellRecord& c) { return c.dataset + " | " + c.codec + " | " + c.params.dump(); }

std::string fmt_bits(const CellRecord& c) {
  return c.bits_target ? fmt::format("{:g}", *c.bits_target) : std::string("none");
}

/// Cells of one document keyed as described in compare.h, in file order.
std::vector<Cell> keyed_cells(const ResultDoc& doc) {
  std::map<std::string, int> base_count;
  for (const auto& c : doc.cells) ++base_count[base_key(c)];
  std::map<std::string, int> seen;
  std::vector<Cell> out;
  for (const auto& c : doc.cells) {
    Cell x;
    x.rec = &c;
    x.key = base_key(c);
    if (base_count[x.key] > 1) x.key += " | bits=" + fmt_bits(c);
    if (const int n = seen[x.key]++; n > 0) x.key += fmt::format(" | #{}", n + 1);
    x.label = c.label.empty() ? c.codec : c.label;
    out.push_back(std::move(x));
  }
  return out;
}

std::optional<double> median_of(const CellRecord& c, RateRecord ThroughputRecord::*r) {
  return c.throughput ? ((*c.throughput).*r).median : std::nullopt;
}

std::string fmt_value(const Json& v) {
  if (v.is_null()) return "-";
  if (v.is_number()) return fmt::format("{:.9g}", v.get<double>());
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

Json num_json(std::optional<double> v) { return v ? Json(*v) : Json(); }

}  // namespace

void validate_results(const Json& doc, const std::string& name) {
  KVB_CHECK(doc.is_object(), DataError, "{}: expected a kvbench results.json (a JSON object), found {}", name,
            type_name(doc));
  KVB_CHECK(doc.contains("schema_version"), DataError,
            "{}: no \"schema_version\": not a kvbench results.json (expected schema_version {})", name,
            kResultsSchemaVersion);
  const Json& sv = doc["schema_version"];
  KVB_CHECK(sv.is_number_integer() && sv.get<int64_t>() == kResultsSchemaVersion, DataError,
            "{}: schema_version: expected {}, found {}", name, kResultsSchemaVersion, json_excerpt(sv));
  KVB_CHECK(doc.contains("cells") && doc["cells"].is_array(), DataError, "{}: \"cells\": expected an array, found {}",
            name, doc.contains("cells") ? type_name(doc["cells"]) : std::string("nothing"));
  if (doc.contains("metrics")) {
    const Json& ms = doc["metrics"];
    KVB_CHECK(ms.is_array(), DataError, "{}: \"metrics\": expected an array, found {}", name, type_name(ms));
    for (size_t i = 0; i < ms.size(); ++i) {
      const Json& m = ms[i];
      KVB_CHECK(m.is_object() && m.contains("name") && m["name"].is_string() && m.contains("better") &&
                    m["better"].is_string() && (m["better"] == "higher" || m["better"] == "lower"),
                DataError, "{}: metrics[{}]: expected {{\"name\": string, \"better\": \"higher\"|\"lower\"}}, found {}",
                name, i, json_excerpt(m));
    }
  }
  const Json& cells = doc["cells"];
  for (size_t i = 0; i < cells.size(); ++i) {
    const Json& c = cells[i];
    const std::string where = cell_where(name, i, c);
    KVB_CHECK(c.is_object(), DataError, "{}: expected an object, found {}", where, type_name(c));
    for (const char* k : {"dataset", "codec", "status"})
      KVB_CHECK(c.contains(k) && c[k].is_string(), DataError, "{}: \"{}\": expected a string, found {}", where, k,
                c.contains(k) ? type_name(c[k]) : std::string("nothing"));
    KVB_CHECK(c.contains("params") && c["params"].is_object(), DataError, "{}: \"params\": expected an object, found {}",
              where, c.contains("params") ? type_name(c["params"]) : std::string("nothing"));
    const std::string st = c["status"].get<std::string>();
    KVB_CHECK(st == "ok" || st == "skipped" || st == "error", DataError,
              "{}: \"status\": expected ok, skipped or error, found \"{}\"", where, st);
    if (st != "ok") continue;
    KVB_CHECK(c.contains("fidelity") && c["fidelity"].is_object(), DataError,
              "{}: \"fidelity\": expected an object for an ok cell, found {}", where,
              c.contains("fidelity") ? type_name(c["fidelity"]) : std::string("nothing"));
    for (const auto& [m, agg] : c["fidelity"].items()) {
      KVB_CHECK(agg.is_null() || agg.is_object(), DataError, "{}: fidelity.{}: expected an object or null, found {}",
                where, m, type_name(agg));
      if (agg.is_object()) check_number_or_null(agg, "mean", where + ": fidelity." + m);
    }
    KVB_CHECK(c.contains("storage") && c["storage"].is_object(), DataError,
              "{}: \"storage\": expected an object for an ok cell, found {}", where,
              c.contains("storage") ? type_name(c["storage"]) : std::string("nothing"));
    for (const char* f : kStorageFields) {
      const Json& s = c["storage"];
      KVB_CHECK(s.contains(f) && s[f].is_number(), DataError, "{}: storage.{}: expected a number, found {}", where, f,
                s.contains(f) ? type_name(s[f]) : std::string("nothing"));
    }
    if (c.contains("throughput") && !c["throughput"].is_null()) {
      const Json& t = c["throughput"];
      KVB_CHECK(t.is_object(), DataError, "{}: \"throughput\": expected an object or null, found {}", where,
                type_name(t));
      for (const char* f : kThroughputFields)
        if (t.contains(f) && !t[f].is_null()) {
          KVB_CHECK(t[f].is_object(), DataError, "{}: throughput.{}: expected an object or null, found {}", where, f,
                    type_name(t[f]));
          check_number_or_null(t[f], "median", where + ": throughput." + f);
        }
    }
  }
}

Json load_results_file(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) file = (fs::path(path) / "results.json").string();
  KVB_CHECK(fs::exists(file, ec), DataError, "{}: no such file (expected a kvbench results.json or results directory)",
            file);
  KVB_CHECK(!fs::is_directory(file, ec), DataError, "{}: is a directory, expected a results.json file", file);
  Json doc = read_json_file(file, ExitCode::kData, "results file");
  validate_results(doc, file);
  return doc;
}

namespace {

/// Metric directions: the registry, then any metric only the files know (their recorded direction).
std::vector<std::pair<std::string, metrics::Better>> metric_directions(const ResultDoc& base, const ResultDoc& now) {
  std::vector<std::pair<std::string, metrics::Better>> out;
  std::set<std::string> known;
  for (const auto& m : metrics::all_metrics()) {
    out.emplace_back(m.name, m.better);
    known.insert(m.name);
  }
  for (const ResultDoc* d : {&base, &now})
    for (const auto& m : d->metrics)
      if (known.insert(m.name).second)
        out.emplace_back(m.name, m.better == "lower" ? metrics::Better::kLower : metrics::Better::kHigher);
  return out;
}

/// Adds the rows of one compared pair of cells to a report.
class Rows {
 public:
  Rows(CompareReport& r, bool multi_ds) : r_(r), multi_ds_(multi_ds) {}

  void add(const Cell& c, std::string metric, Json b, Json n, const std::string& verdict, std::string note = {},
           std::optional<double> rel = std::nullopt) {
    CompareRow row;
    row.cell = multi_ds_ ? c.rec->dataset + ": " + c.label : c.label;
    row.key = c.key;
    row.metric = std::move(metric);
    if (b.is_number() && n.is_number()) row.delta = n.get<double>() - b.get<double>();
    row.rel_delta = rel;
    row.base = std::move(b);
    row.now = std::move(n);
    row.verdict = verdict;
    row.note = std::move(note);
    if (verdict == "regression") {
      row.regression = true;
      ++r_.regressions;
    } else if (verdict == "improvement") {
      ++r_.improvements;
    } else if (verdict == "changed") {
      ++r_.changes;
    }
    r_.rows.push_back(std::move(row));
  }

  void status(const Cell& b, const Cell& n) {
    if (b.rec->status == n.rec->status) return;
    const std::string& reason = n.rec->reason;
    if (b.rec->ok())
      add(b, "status", b.status(), n.status(), "regression", reason);
    else if (n.rec->ok())
      add(b, "status", b.status(), n.status(), "improvement");
    else
      add(b, "status", b.status(), n.status(), "changed", reason);
  }

  /// Fidelity means, absolute tolerance, direction from the registry.
  void fidelity(const Cell& b, const Cell& n, const std::vector<std::pair<std::string, metrics::Better>>& metric_list,
                double tol) {
    for (const auto& [m, better] : metric_list) {
      const auto bv = b.rec->mean(m), nv = n.rec->mean(m);
      if (!bv && !nv) continue;
      if (bv && !nv) {
        add(b, m, *bv, Json(), "regression", "no longer reported in NEW");
        continue;
      }
      if (!bv && nv) {
        add(b, m, Json(), *nv, "changed", "newly reported in NEW");
        continue;
      }
      const double d = *nv - *bv;
      const double worse = better == metrics::Better::kHigher ? -d : d;
      if (worse > tol)
        add(b, m, *bv, *nv, "regression", better == metrics::Better::kHigher ? "higher is better" : "lower is better");
      else if (-worse > tol)
        add(b, m, *bv, *nv, "improvement");
    }
  }

  /// Storage: relative tolerance; growth is a regression, shrinkage a change.
  void storage(const Cell& b, const Cell& n, double tol) {
    for (size_t i = 0; i < std::size(kStorageFields); ++i) {
      const double bv = b.rec->storage.*kStorageMembers[i], nv = n.rec->storage.*kStorageMembers[i];
      const double d = nv - bv, lim = tol * std::fabs(bv);
      const std::optional<double> rel = bv != 0 ? std::optional<double>(d / std::fabs(bv)) : std::nullopt;
      if (d > lim)
        add(b, kStorageFields[i], bv, nv, "regression", "storage grew", rel);
      else if (-d > lim)
        add(b, kStorageFields[i], bv, nv, "changed", "storage shrank", rel);
    }
  }

  /// Throughput medians: relative tolerance; higher is better.
  void throughput(const Cell& b, const Cell& n, double tol) {
    for (size_t i = 0; i < std::size(kThroughputFields); ++i) {
      const auto bv = median_of(*b.rec, kThroughputMembers[i]), nv = median_of(*n.rec, kThroughputMembers[i]);
      if (!bv || !nv || *bv <= 0) continue;
      const double rel = (*nv - *bv) / *bv;
      if (rel < -tol)
        add(b, kThroughputFields[i], *bv, *nv, "regression", "slower", rel);
      else if (rel > tol)
        add(b, kThroughputFields[i], *bv, *nv, "improvement", "faster", rel);
    }
  }

 private:
  CompareReport& r_;
  bool multi_ds_;
};

/// Different data under the same dataset path makes the comparison meaningless: one note per such dataset.
std::vector<std::string> checksum_notes(const ResultDoc& base, const ResultDoc& now) {
  auto checksums = [](const ResultDoc& d) {
    std::map<std::string, std::string> m;
    for (const auto& ds : d.datasets)
      if (!ds.path.empty() && !ds.checksum_fnv1a64.empty()) m[ds.path] = ds.checksum_fnv1a64;
    return m;
  };
  std::vector<std::string> notes;
  const auto bs = checksums(base), ns = checksums(now);
  for (const auto& [p, c] : bs)
    if (const auto it = ns.find(p); it != ns.end() && it->second != c)
      notes.push_back(fmt::format("dataset {} has checksum {} in BASE but {} in NEW: the data differ", p, c, it->second));
  return notes;
}

}  // namespace

CompareReport compare_results(const Json& base_json, const Json& now_json, const CompareOptions& opt,
                              const std::string& base_name, const std::string& new_name) {
  const ResultDoc base = ResultDoc::from_json(base_json, base_name), now = ResultDoc::from_json(now_json, new_name);
  CompareReport r;
  r.base_path = base_name;
  r.new_path = new_name;
  r.options = opt;
  const std::vector<Cell> bc = keyed_cells(base), nc = keyed_cells(now);
  r.base_cells = static_cast<int>(bc.size());
  r.new_cells = static_cast<int>(nc.size());
  const auto metric_list = metric_directions(base, now);

  std::set<std::string> datasets;
  for (const auto* v : {&bc, &nc})
    for (const auto& c : *v) datasets.insert(c.rec->dataset);
  Rows rows(r, datasets.size() > 1);

  std::map<std::string, const Cell*> new_by_key;
  for (const auto& c : nc) new_by_key[c.key] = &c;
  std::set<std::string> base_keys;
  for (const auto& b : bc) {
    base_keys.insert(b.key);
    const auto it = new_by_key.find(b.key);
    if (it == new_by_key.end()) {
      ++r.missing;
      const bool was_ok = b.rec->ok();
      rows.add(b, "cell", b.status(), Json(), was_ok ? "regression" : "missing",
               was_ok ? "missing from NEW; was ok in BASE" : "missing from NEW; was " + b.status() + " in BASE");
      continue;
    }
    const Cell& n = *it->second;
    ++r.matched;
    rows.status(b, n);
    if (!b.rec->ok() || !n.rec->ok()) continue;
    ++r.compared;
    rows.fidelity(b, n, metric_list, opt.fidelity_tol);
    rows.storage(b, n, opt.storage_tol);
    if (opt.throughput_tol) rows.throughput(b, n, *opt.throughput_tol);
  }
  for (const auto& n : nc) {
    if (base_keys.count(n.key)) continue;
    ++r.added;
    rows.add(n, "cell", Json(), n.status(), "added", "cell only in NEW");
  }
  r.notes = checksum_notes(base, now);
  return r;
}

Json CompareReport::to_json() const {
  Json j;
  j["base"] = base_path;
  j["new"] = new_path;
  j["tolerances"] = {{"fidelity_abs", options.fidelity_tol},
                     {"storage_rel", options.storage_tol},
                     {"throughput_rel", num_json(options.throughput_tol)}};
  j["summary"] = {{"base_cells", base_cells},   {"new_cells", new_cells},       {"matched", matched},
                  {"compared", compared},       {"regressions", regressions},   {"improvements", improvements},
                  {"changed", changes},         {"missing", missing},           {"added", added}};
  j["regression"] = regressed();
  Json rows = Json::array();
  for (const auto& x : this->rows) {
    rows.push_back({{"cell", x.cell},
                    {"key", x.key},
                    {"metric", x.metric},
                    {"base", x.base},
                    {"new", x.now},
                    {"delta", num_json(x.delta)},
                    {"rel_delta", num_json(x.rel_delta)},
                    {"verdict", x.verdict},
                    {"note", x.note}});
  }
  j["changes"] = std::move(rows);
  j["notes"] = notes;
  return j;
}

std::string CompareReport::to_text() const {
  std::string s = fmt::format("compare {} (BASE) -> {} (NEW)\n", base_path, new_path);
  for (const auto& n : notes) s += "note: " + n + "\n";
  if (!rows.empty()) {
    size_t wc = 4, wm = 6;
    for (const auto& x : rows) {
      wc = std::max(wc, x.cell.size());
      wm = std::max(wm, x.metric.size());
    }
    s += fmt::format("{:<{}}  {:<{}}  {:>16}  {:>16}  {:>22}  {}\n", "cell", wc, "metric", wm, "base", "new", "delta",
                     "verdict");
    for (const auto& x : rows) {
      std::string d = "-";
      if (x.delta) {
        d = fmt::format("{:+.3g}", *x.delta);
        if (x.rel_delta) d += fmt::format(" ({:+.2f}%)", 100.0 * *x.rel_delta);
      }
      std::string v = x.verdict;
      if (!x.note.empty()) v += " (" + x.note + ")";
      s += fmt::format("{:<{}}  {:<{}}  {:>16}  {:>16}  {:>22}  {}\n", x.cell, wc, x.metric, wm, fmt_value(x.base),
                       fmt_value(x.now), d, v);
    }
  }
  const std::string tput = options.throughput_tol ? fmt::format("throughput within {:g}", *options.throughput_tol)
                                                  : std::string("throughput not compared");
  const std::string tol = fmt::format("fidelity within {:g} (absolute), storage within {:g} (relative), {}",
                                      options.fidelity_tol, options.storage_tol, tput);
  if (rows.empty()) {
    s += fmt::format("no changes: {} cells matched ({} ok on both sides); {}\n", matched, compared, tol);
  } else {
    s += fmt::format("{}: {} cells matched ({} ok on both sides), {} regression(s), {} improvement(s), {} other change(s), "
                     "{} missing, {} added; {}\n",
                     regressed() ? "REGRESSION" : "ok", matched, compared, regressions, improvements, changes, missing,
                     added, tol);
  }
  return s;
}

}  // namespace kvb
