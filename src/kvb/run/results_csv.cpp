#include <cmath>

#include <fmt/format.h>

#include "kvb/run/runner.h"

namespace kvb {

const std::vector<std::string>& csv_columns() {
  // kvbench.md §8: a stable contract; new columns are only appended at the end.
  static const std::vector<std::string> cols = {
      "dataset", "codec", "label", "params", "bits_target", "status", "reason", "device", "bits_per_element",
      "bits_per_element_with_fixed", "bytes_per_token", "buffer_bytes", "fixed_bytes", "compression_ratio",
      "cosine_mean", "cosine_p05", "cosine_min", "rel_l2_mean", "rel_l2_p95", "spearman_mean", "topk_recall_mean",
      "kl_mean", "score_rel_err_mean", "mass_lost_mean", "encode_tokens_per_s", "attend_queries_per_s",
      "attend_bytes_per_s",
      // appended (not in the original contract):
      "bits_candidate", "attend_speedup_vs_fp16"};
  return cols;
}

namespace {

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

/// Numbers print with 9 significant digits; null / missing print as an empty field.
std::string num(const Json& v) {
  if (v.is_null()) return "";
  if (v.is_number_integer()) return fmt::format("{}", v.get<int64_t>());
  if (v.is_number()) {
    const double d = v.get<double>();
    return std::isfinite(d) ? fmt::format("{:.9g}", d) : "";
  }
  return "";
}

const Json& path(const Json& j, std::initializer_list<const char*> keys) {
  static const Json null_json = nullptr;
  const Json* cur = &j;
  for (const char* k : keys) {
    if (!cur->is_object() || !cur->contains(k)) return null_json;
    cur = &(*cur)[k];
  }
  return *cur;
}

}  // namespace

std::string results_csv(const Json& results) {
  std::string out;
  const auto& cols = csv_columns();
  for (size_t i = 0; i < cols.size(); ++i) out += (i ? "," : "") + cols[i];
  out += "\n";
  for (const auto& c : results.at("cells")) {
    std::vector<std::string> f;
    f.push_back(csv_escape(c.at("dataset").get<std::string>()));
    f.push_back(csv_escape(c.at("codec").get<std::string>()));
    f.push_back(csv_escape(c.at("label").get<std::string>()));
    f.push_back(csv_escape(c.at("params").dump()));
    f.push_back(num(c.at("bits_target")));
    f.push_back(c.at("status").get<std::string>());
    f.push_back(csv_escape(c.at("reason").get<std::string>()));
    f.push_back(c.at("device").get<std::string>());
    f.push_back(num(path(c, {"storage", "bits_per_element"})));
    f.push_back(num(path(c, {"storage", "bits_per_element_with_fixed"})));
    f.push_back(num(path(c, {"storage", "bytes_per_token"})));
    f.push_back(num(path(c, {"storage", "buffer_bytes"})));
    f.push_back(num(path(c, {"storage", "fixed_bytes"})));
    f.push_back(num(path(c, {"storage", "compression_ratio"})));
    f.push_back(num(path(c, {"fidelity", "cosine", "mean"})));
    f.push_back(num(path(c, {"fidelity", "cosine", "p05"})));
    f.push_back(num(path(c, {"fidelity", "cosine", "min"})));
    f.push_back(num(path(c, {"fidelity", "rel_l2", "mean"})));
    f.push_back(num(path(c, {"fidelity", "rel_l2", "p95"})));
    f.push_back(num(path(c, {"fidelity", "spearman", "mean"})));
    f.push_back(num(path(c, {"fidelity", "topk_recall", "mean"})));
    f.push_back(num(path(c, {"fidelity", "kl", "mean"})));
    f.push_back(num(path(c, {"fidelity", "score_rel_err", "mean"})));
    f.push_back(num(path(c, {"fidelity", "mass_lost", "mean"})));
    f.push_back(num(path(c, {"throughput", "encode_tokens_per_s", "median"})));
    f.push_back(num(path(c, {"throughput", "attend_queries_per_s", "median"})));
    f.push_back(num(path(c, {"throughput", "attend_bytes_per_s", "median"})));
    f.push_back(num(c.at("bits_candidate")));
    f.push_back(num(path(c, {"throughput", "attend_speedup_vs_fp16"})));
    for (size_t i = 0; i < f.size(); ++i) out += (i ? "," : "") + f[i];
    out += "\n";
  }
  return out;
}

}  // namespace kvb
