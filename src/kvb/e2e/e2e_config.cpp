#include "kvb/e2e/e2e_config.h"

#include <filesystem>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"

namespace kvb::e2e {
namespace fs = std::filesystem;
using namespace config_json;

namespace {

std::string resolve_path(const std::string& given, const std::string& dir, const std::string& key) {
  if (given.empty()) throw UsageError(fmt::format("{}: must not be empty", key));
  const fs::path p(given);
  return (p.is_absolute() ? p : fs::path(dir) / p).lexically_normal().string();
}

TextSpec parse_text(const Json& t, const std::string& dir) {
  TextSpec s;
  if (t.is_string()) {
    // A bare path: token ids for *.ids, raw bytes otherwise.
    s.path_as_given = t.get<std::string>();
    s.format = fs::path(s.path_as_given).extension() == ".ids" ? "ids" : "bytes";
  } else {
    require_object(t, "model.text");
    check_keys(t, {"path", "format", "generate"}, "model.text");
    if (t.contains("generate")) {
      if (t.contains("path") || t.contains("format"))
        throw UsageError("model.text: give either \"generate\" or \"path\" (with \"format\"), not both");
      const Json& g = require_object(t.at("generate"), "model.text.generate");
      check_keys(g, {"temperature", "seed"}, "model.text.generate");
      s.format = "generate";
      if (g.contains("temperature"))
        s.temperature = get_number(g.at("temperature"), "model.text.generate.temperature", 1e-3, 100.0);
      if (g.contains("seed"))
        s.seed = static_cast<uint64_t>(get_int(g.at("seed"), "model.text.generate.seed", 0, int64_t{1} << 53));
      return s;
    }
    if (!t.contains("path")) throw UsageError("model.text: missing required key \"path\" (or \"generate\")");
    s.path_as_given = get_string(t.at("path"), "model.text.path");
    s.format = t.contains("format") ? get_string(t.at("format"), "model.text.format") : "ids";
    if (s.format != "ids" && s.format != "bytes")
      throw UsageError(fmt::format("model.text.format: expected one of: ids, bytes; found {}", excerpt(s.format)));
  }
  s.path = resolve_path(s.path_as_given, dir, "model.text");
  return s;
}

ModelSpec parse_model(const Json& m, const std::string& dir) {
  require_object(m, "model");
  check_keys(m, {"checkpoint", "text", "prompt_len", "continuation_len", "windows", "calibration_windows",
                 "first_window", "obs_window"},
             "model");
  for (const char* k : {"checkpoint", "text", "prompt_len", "continuation_len", "windows"})
    if (!m.contains(k)) throw UsageError(fmt::format("model: missing required key \"{}\"", k));
  ModelSpec s;
  s.checkpoint_as_given = get_string(m.at("checkpoint"), "model.checkpoint");
  s.checkpoint = resolve_path(s.checkpoint_as_given, dir, "model.checkpoint");
  s.text = parse_text(m.at("text"), dir);
  s.prompt_len = static_cast<int>(get_int(m.at("prompt_len"), "model.prompt_len", 1, 1 << 20));
  s.continuation_len = static_cast<int>(get_int(m.at("continuation_len"), "model.continuation_len", 1, 1 << 20));
  s.windows = static_cast<int>(get_int(m.at("windows"), "model.windows", 1, 1 << 20));
  if (m.contains("calibration_windows"))
    s.calibration_windows = static_cast<int>(get_int(m.at("calibration_windows"), "model.calibration_windows", 0, 1 << 20));
  if (m.contains("first_window"))
    s.first_window = static_cast<int>(get_int(m.at("first_window"), "model.first_window", 0, 1 << 20));
  if (m.contains("obs_window"))
    s.obs_window = static_cast<int>(get_int(m.at("obs_window"), "model.obs_window", 0, 1 << 20));
  return s;
}

}  // namespace

E2eConfig parse_e2e_config(const Json& j, const std::string& path, const std::string& dir) {
  if (!j.is_object()) bad_type(path, "a JSON object at the top level", j);
  check_keys(j, {"name", "model", "codecs", "metrics", "threads", "seed"}, "");
  E2eConfig c;
  Config& b = c.base;
  b.raw = j;
  b.path = path;
  b.dir = dir;
  b.name = config_name(j, path);
  if (!j.contains("model")) throw UsageError("config: missing required key \"model\" (kvbench e2e runs a model)");
  c.model = parse_model(j.at("model"), dir);
  b.codecs = parse_codecs(j);
  if (j.contains("metrics")) {
    const Json& m = require_object(j.at("metrics"), "metrics");
    check_keys(m, {"topk", "layer", "bootstrap"}, "metrics");
    if (m.contains("topk")) b.topk = get_int(m.at("topk"), "metrics.topk", 1, 1 << 30);
    if (m.contains("layer")) c.layer_metrics = get_bool(m.at("layer"), "metrics.layer");
    if (m.contains("bootstrap")) c.bootstrap = static_cast<int>(get_int(m.at("bootstrap"), "metrics.bootstrap", 0, 1000000));
  }
  if (b.topk > c.model.prompt_len)
    throw UsageError(fmt::format("metrics.topk: {} exceeds model.prompt_len = {} (top-k recall needs k <= C)", b.topk,
                                 c.model.prompt_len));
  if (j.contains("threads")) b.threads = static_cast<int>(get_int(j.at("threads"), "threads", 0, 4096));
  if (j.contains("seed")) b.seed = static_cast<uint64_t>(get_int(j.at("seed"), "seed", 0, (int64_t{1} << 53)));
  b.throughput = false;
  return c;
}

E2eConfig load_e2e_config(const std::string& path) {
  std::string dir;
  const Json j = read_config_file(path, &dir);
  return parse_e2e_config(j, path, dir);
}

Json E2eConfig::resolved() const {
  const ModelSpec& m = model;
  Json text;
  if (m.text.format == "generate")
    text = {{"generate", {{"temperature", m.text.temperature}, {"seed", m.text.seed}}}};
  else
    text = {{"path", m.text.path_as_given}, {"resolved_path", m.text.path}, {"format", m.text.format}};
  Json j;
  j["name"] = base.name;
  j["model"] = {{"checkpoint", m.checkpoint_as_given}, {"resolved_checkpoint", m.checkpoint}, {"text", text},
                {"prompt_len", m.prompt_len}, {"continuation_len", m.continuation_len}, {"windows", m.windows},
                {"calibration_windows", m.calibration_windows}, {"first_window", m.first_window},
                {"obs_window", m.obs_window}};
  j["codecs"] = base.raw.at("codecs");
  j["metrics"] = {{"topk", base.topk}, {"layer", layer_metrics}, {"bootstrap", bootstrap}};
  j["threads"] = base.threads;
  j["seed"] = base.seed;
  return j;
}

}  // namespace kvb::e2e
