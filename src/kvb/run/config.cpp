#include "kvb/run/config.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"
#include "kvb/report/results_io.h"

namespace kvb {
namespace fs = std::filesystem;

namespace config_json {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

void check_keys(const Json& obj, const std::vector<std::string>& allowed, const std::string& where) {
  const std::set<std::string> ok(allowed.begin(), allowed.end());
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (!ok.count(it.key()))
      throw UsageError(fmt::format("{}: unknown key {}; allowed keys: {}", where.empty() ? "config" : where,
                                   excerpt(it.key()), join(allowed)));
}

std::string key_path(const std::string& where, const std::string& key) {
  return where.empty() ? key : where + "." + key;
}

[[noreturn]] void bad_type(const std::string& key, const char* expected, const Json& v) {
  throw UsageError(fmt::format("{}: expected {}, found {} ({})", key, expected, json_excerpt(v), v.type_name()));
}

const Json& require_object(const Json& v, const std::string& key) {
  if (!v.is_object()) bad_type(key, "an object", v);
  return v;
}

std::string get_string(const Json& v, const std::string& key) {
  if (!v.is_string()) bad_type(key, "a string", v);
  return v.get<std::string>();
}

// Scalars are checked by the same code as codec parameters, so config and params read alike.
int64_t get_int(const Json& v, const std::string& key, int64_t lo, int64_t hi) {
  return check_param(ParamSpec::Int("", 0, lo, hi, ""), v, key).get<int64_t>();
}

double get_number(const Json& v, const std::string& key, double lo, double hi) {
  return check_param(ParamSpec::Float("", 0, lo, hi, ""), v, key).get<double>();
}

bool get_bool(const Json& v, const std::string& key) {
  return check_param(ParamSpec::Bool("", false, ""), v, key).get<bool>();
}

}  // namespace config_json

namespace {
using namespace config_json;

DatasetSpec parse_dataset(const Json& j, const std::string& where, const std::string& dir) {
  require_object(j, where);
  check_keys(j, {"path", "sequences", "layers", "max_queries"}, where);
  DatasetSpec d;
  if (!j.contains("path")) throw UsageError(fmt::format("{}: missing required key \"path\"", where));
  d.path_as_given = get_string(j.at("path"), key_path(where, "path"));
  if (d.path_as_given.empty()) throw UsageError(fmt::format("{}.path: must not be empty", where));
  fs::path p(d.path_as_given);
  d.path = (p.is_absolute() ? p : fs::path(dir) / p).lexically_normal().string();
  if (j.contains("sequences")) {
    const Json& s = j.at("sequences");
    const std::string key = key_path(where, "sequences");
    if (s.is_string()) {
      if (s.get<std::string>() != "all")
        throw UsageError(fmt::format("{}: expected \"all\" or a list of sequence ids, found {}", key, json_excerpt(s)));
    } else if (s.is_array()) {
      for (size_t i = 0; i < s.size(); ++i) d.sequences.push_back(get_string(s[i], fmt::format("{}[{}]", key, i)));
      if (d.sequences.empty()) throw UsageError(fmt::format("{}: the list is empty; use \"all\"", key));
    } else {
      bad_type(key, "\"all\" or a list of sequence ids", s);
    }
  }
  if (j.contains("layers")) {
    const Json& l = j.at("layers");
    const std::string key = key_path(where, "layers");
    if (l.is_string()) {
      if (l.get<std::string>() != "all")
        throw UsageError(fmt::format("{}: expected \"all\" or a list of layer indices, found {}", key, json_excerpt(l)));
    } else if (l.is_array()) {
      for (size_t i = 0; i < l.size(); ++i)
        d.layers.push_back(static_cast<int>(get_int(l[i], fmt::format("{}[{}]", key, i), 0, 100000)));
      if (d.layers.empty()) throw UsageError(fmt::format("{}: the list is empty; use \"all\"", key));
    } else {
      bad_type(key, "\"all\" or a list of layer indices", l);
    }
  }
  if (j.contains("max_queries")) d.max_queries = get_int(j.at("max_queries"), key_path(where, "max_queries"), 0, 1 << 30);
  return d;
}

std::vector<double> number_list(const Json& v, const std::string& key, double lo, double hi) {
  std::vector<double> out;
  if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) out.push_back(get_number(v[i], fmt::format("{}[{}]", key, i), lo, hi));
    if (out.empty()) throw UsageError(fmt::format("{}: the list is empty", key));
  } else {
    out.push_back(get_number(v, key, lo, hi));
  }
  return out;
}

}  // namespace

CodecSpec config_json::parse_codec(const Json& j, const std::string& where) {
  require_object(j, where);
  check_keys(j, {"codec", "bits", "bytes_per_token", "ratio", "preset", "params"}, where);
  CodecSpec c;
  c.where = where;
  if (!j.contains("codec")) throw UsageError(fmt::format("{}: missing required key \"codec\"", where));
  c.codec = get_string(j.at("codec"), where + ".codec");
  const CodecEntry& entry = registry().at(c.codec);  // unknown codec -> UsageError listing the names
  if (j.contains("params")) {
    c.params = j.at("params");
    // Validate now (unknown keys, types, ranges) so errors appear before any data is read.
    resolve_params(entry.info.params, c.params, where + ".params");
  }
  int budget_kinds = 0;
  // `bits` targets bits per element (K and V together); bytes_per_token is per KV head; ratio vs fp16.
  struct Kind {
    const char* key;
    Budget::Kind kind;
    double lo, hi;
  };
  for (const Kind k : {Kind{"bits", Budget::Kind::kBits, 0.01, 64.0},
                       Kind{"bytes_per_token", Budget::Kind::kBytesPerToken, 0.01, 1e6},
                       Kind{"ratio", Budget::Kind::kRatio, 0.01, 1e4}}) {
    if (!j.contains(k.key)) continue;
    ++budget_kinds;
    for (double v : number_list(j.at(k.key), where + "." + k.key, k.lo, k.hi)) c.budgets.push_back({k.kind, v});
  }
  if (budget_kinds > 1)
    throw UsageError(fmt::format("{}: give only one of \"bits\", \"bytes_per_token\", \"ratio\"", where));
  if (j.contains("preset")) {
    if (budget_kinds) throw UsageError(fmt::format("{}: give either \"preset\" or a budget, not both", where));
    c.preset = get_string(j.at("preset"), where + ".preset");
    resolve_preset(entry, c.preset, c.params, where);  // unknown preset -> UsageError listing presets
  }
  return c;
}

using namespace config_json;

std::string config_json::config_name(const Json& j, const std::string& path) {
  const std::string name = j.contains("name") ? get_string(j.at("name"), "name") : fs::path(path).stem().string();
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    throw UsageError(fmt::format("name: expected a non-empty name without '/', found \"{}\"", name));
  return name;
}

std::vector<CodecSpec> config_json::parse_codecs(const Json& j) {
  if (!j.contains("codecs")) throw UsageError("config: missing required key \"codecs\"");
  const Json& cs = j.at("codecs");
  if (!cs.is_array() || cs.empty()) bad_type("codecs", "a non-empty list of codec objects", cs);
  std::vector<CodecSpec> out;
  for (size_t i = 0; i < cs.size(); ++i) out.push_back(parse_codec(cs[i], fmt::format("codecs[{}]", i)));
  return out;
}

Config parse_config(const Json& j, const std::string& path, const std::string& dir) {
  if (!j.is_object()) bad_type(path, "a JSON object at the top level", j);
  check_keys(j, {"name", "datasets", "calibration", "codecs", "metrics", "device", "threads", "seed", "repeats",
                 "min_time_s", "positions_per_call", "throughput"},
             "");
  Config c;
  c.raw = j;
  c.path = path;
  c.dir = dir;
  c.name = config_name(j, path);

  if (!j.contains("datasets")) throw UsageError("config: missing required key \"datasets\"");
  const Json& ds = j.at("datasets");
  if (!ds.is_array() || ds.empty()) bad_type("datasets", "a non-empty list of dataset objects", ds);
  for (size_t i = 0; i < ds.size(); ++i) c.datasets.push_back(parse_dataset(ds[i], fmt::format("datasets[{}]", i), dir));

  if (j.contains("calibration")) {
    const Json& cal = require_object(j.at("calibration"), "calibration");
    check_keys(cal, {"sequences"}, "calibration");
    if (cal.contains("sequences"))
      c.calibration_sequences = static_cast<int>(get_int(cal.at("sequences"), "calibration.sequences", 0, 1 << 20));
  }

  c.codecs = parse_codecs(j);

  if (j.contains("metrics")) {
    const Json& m = require_object(j.at("metrics"), "metrics");
    check_keys(m, {"topk", "kendall"}, "metrics");
    if (m.contains("topk")) c.topk = get_int(m.at("topk"), "metrics.topk", 1, 1 << 30);
    if (m.contains("kendall")) c.kendall = get_bool(m.at("kendall"), "metrics.kendall");
  }
  if (j.contains("device")) {
    c.device = get_string(j.at("device"), "device");
    if (c.device != "cpu" && c.device != "cuda" && c.device != "auto")
      throw UsageError(fmt::format("device: expected one of: cpu, cuda, auto; found \"{}\"", c.device));
  }
  if (j.contains("threads")) c.threads = static_cast<int>(get_int(j.at("threads"), "threads", 0, 4096));
  if (j.contains("seed")) c.seed = static_cast<uint64_t>(get_int(j.at("seed"), "seed", 0, (int64_t{1} << 53)));
  if (j.contains("repeats")) c.repeats = static_cast<int>(get_int(j.at("repeats"), "repeats", 1, 1000000));
  if (j.contains("min_time_s")) c.min_time_s = get_number(j.at("min_time_s"), "min_time_s", 0.0, 3600.0);
  if (j.contains("positions_per_call"))
    c.positions_per_call = static_cast<int>(get_int(j.at("positions_per_call"), "positions_per_call", 1, 1024));
  if (j.contains("throughput")) c.throughput = get_bool(j.at("throughput"), "throughput");
  return c;
}

Json config_json::read_config_file(const std::string& path, std::string* dir) {
  Json j = parse_config_text(read_text_file(path, ExitCode::kUsage, "config file"), path);
  *dir = fs::absolute(fs::path(path)).parent_path().string();
  return j;
}

Json config_json::parse_config_text(const std::string& text, const std::string& path) {
  return parse_json(text, path, ExitCode::kUsage);  // bounded nesting, overflowing numbers named by key
}

Config load_config(const std::string& path) {
  std::string dir;
  const Json j = read_config_file(path, &dir);
  return parse_config(j, path, dir);
}

Json Config::resolved() const {
  Json j;
  j["name"] = name;
  Json ds = Json::array();
  for (const auto& d : datasets) {
    Json dj{{"path", d.path_as_given}, {"resolved_path", d.path}, {"max_queries", d.max_queries}};
    dj["sequences"] = d.sequences.empty() ? Json("all") : Json(d.sequences);
    dj["layers"] = d.layers.empty() ? Json("all") : Json(d.layers);
    ds.push_back(dj);
  }
  j["datasets"] = ds;
  j["calibration"] = {{"sequences", calibration_sequences < 0 ? Json("default") : Json(calibration_sequences)}};
  j["codecs"] = raw.at("codecs");
  j["metrics"] = {{"topk", topk}, {"kendall", kendall}};
  j["device"] = device;
  j["threads"] = threads;
  j["seed"] = seed;
  j["repeats"] = repeats;
  j["min_time_s"] = min_time_s;
  j["positions_per_call"] = positions_per_call;
  j["throughput"] = throughput;
  return j;
}

}  // namespace kvb
