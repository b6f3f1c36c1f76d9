#include "kvb/run/resume.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"
#include "kvb/metrics/metrics.h"
#include "kvb/report/results_io.h"
#include "kvb/run/record.h"

namespace kvb::run {
namespace fs = std::filesystem;

namespace {

constexpr size_t kEcho = 48;  // characters of a value from a file echoed in a message

/// Text from a file (a key, a reason), bounded; never splits a UTF-8 character.
std::string clip(const std::string& s, size_t n = kEcho) { return truncate_utf8(s, n); }
/// A value from a file, as JSON, bounded in length and depth (kvb::json_excerpt).
std::string brief(const Json& j) { return json_excerpt(j, kEcho); }

/// The first place where `file` differs from `canon` (what this build writes for the values read from it).
std::string first_difference(const Json& file, const Json& canon, const std::string& where) {
  if (file.is_object() && canon.is_object()) {
    for (const auto& [k, v] : canon.items())
      if (!file.contains(k)) return fmt::format("{}.{}: missing", where, k);
    for (const auto& [k, v] : file.items()) {
      if (!canon.contains(k)) return fmt::format("{}.{}: unexpected field", where, clip(k));
      if (auto d = first_difference(v, canon[k], where + "." + k); !d.empty()) return d;
    }
    return {};
  }
  if (file.is_array() && canon.is_array()) {
    if (file.size() != canon.size())
      return fmt::format("{}: {} elements in the file, {} read back", where, file.size(), canon.size());
    for (size_t i = 0; i < file.size(); ++i)
      if (auto d = first_difference(file[i], canon[i], fmt::format("{}[{}]", where, i)); !d.empty()) return d;
    return {};
  }
  if (file == canon) return {};
  return fmt::format("{}: {} in the file, which reads back as {}", where, brief(file), brief(canon));
}

/// The first number that is not finite (a JSON overflow such as 1e999 parses to infinity).
std::string non_finite(const Json& j, const std::string& where) {
  if (j.is_number_float() && !std::isfinite(j.get<double>())) return where + ": not a finite number";
  if (j.is_object())
    for (const auto& [k, v] : j.items())
      if (auto d = non_finite(v, where + "." + k); !d.empty()) return d;
  if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i)
      if (auto d = non_finite(j[i], fmt::format("{}[{}]", where, i)); !d.empty()) return d;
  return {};
}

/// The envelope {"run_key", "index", kind} of a record file; the record itself in `body`.
std::string check_envelope(const Json& file, const std::string& run_key, size_t index, const char* kind,
                           const Json*& body) {
  if (!file.is_object()) return fmt::format("expected an object, found {}", file.type_name());
  for (const auto& [k, v] : file.items())
    if (k != "run_key" && k != "index" && k != kind) return fmt::format("unexpected field {}", brief(Json(k)));
  const auto rk = file.find("run_key");
  if (rk == file.end() || !rk->is_string()) return "no run_key string";
  if (rk->get<std::string>() != run_key)
    return fmt::format("run_key {} is another run's (this run's: {}; another config or build)", brief(*rk), run_key);
  const auto ix = file.find("index");
  if (ix == file.end() || !ix->is_number_unsigned()) return "no index (an integer >= 0)";
  if (ix->get<uint64_t>() != index) return fmt::format("index {} in the file, expected {}", brief(*ix), index);
  const auto b = file.find(kind);
  if (b == file.end()) return fmt::format("no {} record", kind);
  body = &*b;
  return {};
}

/// Checks of the e2e block of an ok e2e cell (docs/results.schema.json e2e_cell): the fields summary tables read.
class Shape {
 public:
  explicit Shape(std::string& err) : err_(err) {}
  /// The object field `k` of `j`, holding exactly `keys` (those after `optional_from` may be absent).
  const Json* object(const Json& j, const std::string& where, std::initializer_list<const char*> keys,
                     size_t optional_from = SIZE_MAX) {
    if (!err_.empty()) return nullptr;
    if (!j.is_object()) return fail(fmt::format("{}: expected an object, found {}", where, j.type_name()));
    size_t i = 0;
    std::set<std::string> known;
    for (const char* k : keys) {
      known.insert(k);
      if (i++ < optional_from && !j.contains(k)) return fail(fmt::format("{}.{}: missing", where, k));
    }
    for (const auto& [k, v] : j.items())
      if (!known.count(k)) return fail(fmt::format("{}.{}: unexpected field", where, clip(k)));
    return &j;
  }
  void number(const Json& j, const char* k, const std::string& where, bool positive = false) {
    if (!err_.empty() || !j.contains(k)) return;
    const Json& v = j[k];
    if (!v.is_number() || (positive && !(v.get<double>() > 0)))
      fail(fmt::format("{}.{}: expected a {}number, found {}", where, k, positive ? "positive " : "", brief(v)));
  }
  void pair(const Json& j, const char* k, const std::string& where) {
    if (!err_.empty()) return;
    const Json& v = j[k];
    if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number())
      fail(fmt::format("{}.{}: expected two numbers, found {}", where, k, brief(v)));
  }

 private:
  const Json* fail(std::string m) {
    err_ = std::move(m);
    return nullptr;
  }
  std::string& err_;
};

std::string check_e2e_block(const Json& e) {
  std::string err;
  Shape s(err);
  if (!s.object(e, "cell.e2e",
                {"perplexity", "kl", "top1_agreement", "hidden_cosine", "decode_tokens_per_s", "windows"}))
    return err;
  if (const Json* p =
          s.object(e["perplexity"], "cell.e2e.perplexity", {"exact", "codec", "rel_change", "rel_change_ci95"})) {
    s.number(*p, "exact", "cell.e2e.perplexity", true);
    s.number(*p, "codec", "cell.e2e.perplexity", true);
    s.number(*p, "rel_change", "cell.e2e.perplexity");
    s.pair(*p, "rel_change_ci95", "cell.e2e.perplexity");
  }
  for (const char* k : {"kl", "top1_agreement", "hidden_cosine"}) {
    const std::string w = std::string("cell.e2e.") + k;
    if (const Json* t = s.object(e[k], w, {"mean", "median", "p95", "ci95"})) {
      for (const char* n : {"mean", "median", "p95"}) s.number(*t, n, w);
      s.pair(*t, "ci95", w);
    }
  }
  const std::string dw = "cell.e2e.decode_tokens_per_s";
  if (const Json* d = s.object(e["decode_tokens_per_s"], dw, {"codec", "exact", "ratio", "note", "ratio_vs_fp16"}, 4)) {
    for (const char* n : {"codec", "exact", "ratio", "ratio_vs_fp16"}) s.number(*d, n, dw, true);
    if (err.empty() && !(*d)["note"].is_string()) err = dw + ".note: expected a string";
  }
  if (err.empty() && !(e["windows"].is_number_integer() && e["windows"].get<int64_t>() >= 1))
    err = fmt::format("cell.e2e.windows: expected an integer >= 1, found {}", brief(e["windows"]));
  return err;
}

/// The metrics of an ok cell: what a fresh computation reports for every registry metric (and the extra ones).
std::string check_fidelity(const CellRecord& r, const ResumeExpect& expect) {
  std::set<std::string> want(expect.extra_metrics.begin(), expect.extra_metrics.end());
  std::set<std::string> always(want);  // have a value in every ok cell
  std::set<std::string> per_query;     // one value per evaluated query: the same count
  for (const auto& m : metrics::all_metrics()) {
    if (m.optional && !expect.kendall) continue;
    want.insert(m.name);
    if (m.applies_to == "all codecs") always.insert(m.name), per_query.insert(m.name);
  }
  for (const auto& name : want)
    if (!r.fidelity.count(name))
      return fmt::format("cell.fidelity.{}: missing (an ok cell reports every metric)", name);
  std::optional<int64_t> count;
  for (const auto& [name, agg] : r.fidelity) {
    if (!want.count(name)) return fmt::format("cell.fidelity.{}: not a metric this run reports", clip(name));
    if (!agg) {
      if (always.count(name)) return fmt::format("cell.fidelity.{}: null, but an ok cell always has its values", name);
      const auto why = r.not_applicable.find(name);
      if (why == r.not_applicable.end() || why->second.empty())
        return fmt::format("cell.fidelity.{}: null, and not_applicable gives no reason", name);
      continue;
    }
    if (agg->count < 1) return fmt::format("cell.fidelity.{}.count: {}, expected >= 1", name, agg->count);
    if (!per_query.count(name)) continue;
    if (count && *count != agg->count)
      return fmt::format("cell.fidelity.{}.count: {}, but the other per-query metrics count {}", name, agg->count,
                         *count);
    count = agg->count;
  }
  return {};
}

std::string check_ok_cell(const CellRecord& r, const Cell& c, const ResumeExpect& expect) {
  if (!r.reason.empty()) return fmt::format("cell.reason: {} in an ok cell (expected empty)", brief(Json(r.reason)));
  if (auto d = check_fidelity(r, expect); !d.empty()) return d;
  const StorageRecord& s = r.storage;
  for (const auto& [name, v] : {std::pair{"bytes_per_token", s.bytes_per_token},
                                {"buffer_bytes", s.buffer_bytes},
                                {"fixed_bytes", s.fixed_bytes},
                                {"bits_per_element", s.bits_per_element},
                                {"bits_per_element_with_fixed", s.bits_per_element_with_fixed},
                                {"compression_ratio", s.compression_ratio}})
    if (v < 0) return fmt::format("cell.storage.{}: {}, expected >= 0", name, v);
  if (r.per_layer.empty()) return "cell.per_layer: empty in an ok cell";
  if (c.plan.dataset < expect.datasets.size() && !expect.datasets[c.plan.dataset].layers.empty()) {
    std::set<int64_t> want(expect.datasets[c.plan.dataset].layers.begin(),
                           expect.datasets[c.plan.dataset].layers.end());
    std::set<int64_t> got;
    for (const auto& l : r.per_layer) got.insert(l.layer);
    if (got != want || got.size() != r.per_layer.size())
      return fmt::format("cell.per_layer: layers differ from the {} layers the plan evaluates", want.size());
  }
  if (expect.throughput && r.throughput.has_value() != *expect.throughput)
    return *expect.throughput ? "cell.throughput: null, but this run measures throughput"
                              : "cell.throughput: present, but this run measures no throughput";
  if (r.e2e.has_value() != expect.e2e) return expect.e2e ? "cell.e2e: missing" : "cell.e2e: unexpected field";
  if (r.e2e) return check_e2e_block(*r.e2e);
  return {};
}

/// Where a failed read of a record is described: "not valid JSON", a DataError of from_json, ...
std::string bounded_what(const std::exception& e) { return clip(e.what(), 200); }

/// One line per recomputed record for the first few, then a count.
class RecomputeLog {
 public:
  void add(const std::string& path, const std::string& why) {
    if (++n_ <= kNamed) std::fprintf(stderr, "kvbench: %s: recomputed: %s\n", path.c_str(), why.c_str());
  }
  void finish() const {
    if (n_ > kNamed)
      std::fprintf(stderr, "kvbench: %d more records recomputed (the first %d are listed above)\n", n_ - kNamed,
                   kNamed);
  }
  int count() const { return n_; }

 private:
  static constexpr int kNamed = 5;
  int n_ = 0;
};

/// Files in `dir` that are no record of this sweep (record names are <index>.json with index < n; the
/// temporary files of writes are swept by the writes themselves): named on stderr, left alone.
void note_foreign_files(const std::string& dir, size_t n) {
  std::error_code ec;
  std::vector<std::string> foreign;
  size_t count = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const size_t dot = name.find('.');
    const std::string stem = name.substr(0, dot), rest = dot == std::string::npos ? "" : name.substr(dot);
    const bool numeric = !stem.empty() && stem.size() < 19 && stem.find_first_not_of("0123456789") == std::string::npos;
    if (numeric && rest == ".json" && std::stoull(stem) < n) continue;
    if (numeric && rest.rfind(".json.tmp", 0) == 0) continue;
    if (++count <= 3) foreign.push_back(clip(name, 40));
  }
  if (count == 0) return;
  std::string names;
  for (const auto& f : foreign) names += (names.empty() ? "" : ", ") + f;
  std::fprintf(stderr, "kvbench: %s: left alone %zu file%s that %s no record of this sweep (%s%s)\n", dir.c_str(),
               count, count == 1 ? "" : "s", count == 1 ? "is" : "are", names.c_str(), count > 3 ? ", ..." : "");
}

/// The parsed record file at `path`; nullopt (and `why` empty) when there is none.
std::optional<Json> read_json(const std::string& path, std::string& why) {
  const auto text = read_file(path);
  if (!text) return std::nullopt;
  try {  // the bounded reader: nesting and overflowing numbers stop here, before any recursive code
    return parse_json(*text, path, ExitCode::kData);
  } catch (const DataError&) {
    why = "not valid JSON (truncated or edited)";
    return std::nullopt;
  }
}

}  // namespace

std::string check_cell_file(const Json& file, const std::string& run_key, const Cell& c, const ResumeExpect& expect,
                            CellRecord& out) {
  try {
    const Json* body = nullptr;
    if (auto d = check_envelope(file, run_key, c.plan.index, "cell", body); !d.empty()) return d;
    CellRecord r = CellRecord::from_json(*body, "cell");
    if (auto d = first_difference(*body, r.to_json(), "cell"); !d.empty()) return d;
    if (auto d = non_finite(*body, "cell"); !d.empty()) return d;
    const std::string name = c.plan.dataset < expect.datasets.size() ? expect.datasets[c.plan.dataset].name : "";
    const Json want = cell_identity(c.plan, name).to_json(), got = r.to_json();
    for (const char* k : {"dataset", "codec", "label", "params", "preset", "budget", "bits_target", "bits_candidate"})
      if (got[k] != want[k])
        return fmt::format("cell.{} {} in the file, but cell {} of the plan has {}", k, brief(got[k]), c.plan.index,
                           brief(want[k]));
    if (!c.outcome.ok() && (r.status != c.outcome.status || r.reason != c.outcome.reason))
      return fmt::format("cell.status {} in the file, but the plan {} the cell ({})", to_string(r.status),
                         c.outcome.status == CellStatus::kSkipped ? "skips" : "fails", clip(c.outcome.reason, 80));
    if (!r.ok() && r.reason.empty())
      return fmt::format("cell.reason: empty, but a cell with status {} says why", to_string(r.status));
    if (r.ok())
      if (auto d = check_ok_cell(r, c, expect); !d.empty()) return d;
    out = std::move(r);
    return {};
  } catch (const std::exception& e) {
    return bounded_what(e);
  }
}

std::string check_dataset_file(const Json& file, const std::string& run_key, size_t index, const ResumeExpect& expect,
                               DatasetResult& out) {
  try {
    const Json* body = nullptr;
    if (auto d = check_envelope(file, run_key, index, "dataset", body); !d.empty()) return d;
    DatasetResult r = DatasetResult::from_json(*body, "dataset");
    if (auto d = first_difference(*body, r.to_json(), "dataset"); !d.empty()) return d;
    if (auto d = non_finite(*body, "dataset"); !d.empty()) return d;
    const RefOutCheckRecord& ck = r.ref_out_check;
    if (ck.status == "passed") {
      if (!ck.max_rel_l2 || !ck.median_rel_l2 || !ck.tolerance || ck.reason)
        return "dataset.ref_out_check: a passed check has max_rel_l2, median_rel_l2 and tolerance, and no reason";
      if (*ck.max_rel_l2 < 0 || *ck.median_rel_l2 < 0 || !(*ck.tolerance > 0))
        return "dataset.ref_out_check: negative errors or a tolerance <= 0";
      const auto& want = index < expect.datasets.size() ? expect.datasets[index].ref_out_tolerance : std::nullopt;
      if (want && *ck.tolerance != *want)
        return fmt::format("dataset.ref_out_check.tolerance: {} in the file, expected {}", *ck.tolerance, *want);
    } else if (ck.status == "not run") {
      if (!ck.reason || ck.reason->empty() || ck.max_rel_l2 || ck.median_rel_l2 || ck.tolerance)
        return "dataset.ref_out_check: a check not run has a reason and no errors";
    } else {
      return fmt::format("dataset.ref_out_check.status: {} in the file, expected \"passed\" or \"not run\"",
                         brief(Json(ck.status)));
    }
    if (expect.throughput && r.reference_throughput.has_value() != *expect.throughput)
      return *expect.throughput ? "dataset.reference_throughput: null, but this run measures throughput"
                                : "dataset.reference_throughput: present, but this run measures no throughput";
    out = std::move(r);
    return {};
  } catch (const std::exception& e) {
    return bounded_what(e);
  }
}

int resume(std::vector<Cell>& cells, std::vector<std::optional<DatasetResult>>& results, const RecordDirs& dirs,
           const std::string& run_key, const ResumeExpect& expect) {
  RecomputeLog log;
  int resumed = 0;
  for (auto& c : cells) {
    if (!c.plan.selected) continue;
    const std::string path = (fs::path(dirs.cells) / fmt::format("{}.json", c.plan.index)).string();
    std::string why;
    const auto j = read_json(path, why);
    CellRecord r;
    if (j) why = check_cell_file(*j, run_key, c, expect, r);
    if (!why.empty()) {
      log.add(path, why);
      continue;
    }
    if (!j) continue;  // never finished
    c.record = std::move(r);
    c.live.codec.reset();
    ++resumed;
  }
  for (size_t di = 0; di < results.size(); ++di) {
    const std::string path = (fs::path(dirs.datasets) / fmt::format("{}.json", di)).string();
    std::string why;
    const auto j = read_json(path, why);
    DatasetResult r;
    if (j) why = check_dataset_file(*j, run_key, di, expect, r);
    if (!why.empty()) {
      log.add(path, why);
      continue;
    }
    if (j) results[di] = std::move(r);
  }
  log.finish();
  note_foreign_files(dirs.cells, cells.size());
  note_foreign_files(dirs.datasets, results.size());
  std::fprintf(
      stderr, "kvbench: resumed %d cells from %s%s\n", resumed, dirs.cells.c_str(),
      log.count()
          ? fmt::format(" ({} record{} recomputed: see above)", log.count(), log.count() == 1 ? "" : "s").c_str()
          : "");
  return resumed;
}

}  // namespace kvb::run
