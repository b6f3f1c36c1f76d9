#include "kvb/report/results_csv.h"

#include <cmath>
#include <functional>
#include <optional>

#include <fmt/format.h>

namespace kvb {
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

/// Numbers print with 9 significant digits; unknown (or non-finite) values print as an empty field.
std::string num(std::optional<double> v) { return v && std::isfinite(*v) ? fmt::format("{:.9g}", *v) : ""; }

using Field = std::function<std::string(const CellRecord&)>;
struct Column {
  const char* name;
  Field value;
};

/// Storage figures exist only for ok cells.
Field storage(double StorageRecord::*f) {
  return [f](const CellRecord& c) { return c.ok() ? num(c.storage.*f) : std::string(); };
}
/// One statistic of a fidelity metric's aggregate.
Field fidelity(const char* metric, double metrics::Aggregate::*stat) {
  return [metric, stat](const CellRecord& c) {
    const auto it = c.fidelity.find(metric);
    return it != c.fidelity.end() && it->second ? num((*it->second).*stat) : std::string();
  };
}
/// The median of a throughput rate.
Field rate(RateRecord ThroughputRecord::*r) {
  return [r](const CellRecord& c) { return c.throughput ? num(((*c.throughput).*r).median) : std::string(); };
}

/// A number inside an e2e cell's `e2e` block (empty for `run` cells and where it is absent).
Field e2e_number(const char* block, const char* key) {
  return [block, key](const CellRecord& c) {
    if (!c.e2e || !c.e2e->contains(block)) return std::string();
    const Json& b = c.e2e->at(block);
    return b.contains(key) && b.at(key).is_number() ? num(b.at(key).get<double>()) : std::string();
  };
}

/// docs/results.md §3: a stable contract; new columns are only appended at the end.
const std::vector<Column>& columns() {
  using A = metrics::Aggregate;
  using S = StorageRecord;
  using T = ThroughputRecord;
  static const std::vector<Column> cols = {
      {"dataset", [](const CellRecord& c) { return csv_escape(c.dataset); }},
      {"codec", [](const CellRecord& c) { return csv_escape(c.codec); }},
      {"label", [](const CellRecord& c) { return csv_escape(c.label); }},
      {"params", [](const CellRecord& c) { return csv_escape(c.params.dump()); }},
      {"bits_target", [](const CellRecord& c) { return num(c.bits_target); }},
      {"status", [](const CellRecord& c) { return std::string(to_string(c.status)); }},
      {"reason", [](const CellRecord& c) { return csv_escape(c.reason); }},
      {"device", [](const CellRecord& c) { return c.device; }},
      {"bits_per_element", storage(&S::bits_per_element)},
      {"bits_per_element_with_fixed", storage(&S::bits_per_element_with_fixed)},
      {"bytes_per_token", storage(&S::bytes_per_token)},
      {"buffer_bytes", storage(&S::buffer_bytes)},
      {"fixed_bytes", storage(&S::fixed_bytes)},
      {"compression_ratio", storage(&S::compression_ratio)},
      {"cosine_mean", fidelity("cosine", &A::mean)},
      {"cosine_p05", fidelity("cosine", &A::p05)},
      {"cosine_min", fidelity("cosine", &A::min)},
      {"rel_l2_mean", fidelity("rel_l2", &A::mean)},
      {"rel_l2_p95", fidelity("rel_l2", &A::p95)},
      {"spearman_mean", fidelity("spearman", &A::mean)},
      {"topk_recall_mean", fidelity("topk_recall", &A::mean)},
      {"kl_mean", fidelity("kl", &A::mean)},
      {"score_rel_err_mean", fidelity("score_rel_err", &A::mean)},
      {"mass_lost_mean", fidelity("mass_lost", &A::mean)},
      {"encode_tokens_per_s", rate(&T::encode_tokens_per_s)},
      {"attend_queries_per_s", rate(&T::attend_queries_per_s)},
      {"attend_bytes_per_s", rate(&T::attend_bytes_per_s)},
      // appended (not in the original contract):
      {"bits_candidate", [](const CellRecord& c) { return num(c.bits_candidate); }},
      {"attend_speedup_vs_fp16",
       [](const CellRecord& c) { return c.throughput ? num(c.throughput->attend_speedup_vs_fp16) : std::string(); }},
      // appended for kvbench e2e (empty for run cells):
      {"e2e_ppl_rel_change", e2e_number("perplexity", "rel_change")},
      {"e2e_kl_mean", e2e_number("kl", "mean")},
      {"e2e_top1_agreement_mean", e2e_number("top1_agreement", "mean")},
      {"e2e_hidden_cosine_mean", e2e_number("hidden_cosine", "mean")},
      {"e2e_decode_ratio_vs_fp16", e2e_number("decode_tokens_per_s", "ratio_vs_fp16")},
      // appended for the roofline (issue 19):
      {"roofline_fraction",
       [](const CellRecord& c) { return c.throughput ? num(c.throughput->roofline_fraction) : std::string(); }},
      {"roofline_bound",
       [](const CellRecord& c) { return c.throughput && c.throughput->roofline_bound ? *c.throughput->roofline_bound : std::string(); }},
      {"queries_per_call",
       [](const CellRecord& c) {
         return c.throughput && c.throughput->queries_per_call ? std::to_string(*c.throughput->queries_per_call) : std::string();
       }},
  };
  return cols;
}

}  // namespace

const std::vector<std::string>& csv_columns() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& c : columns()) n.push_back(c.name);
    return n;
  }();
  return names;
}

std::string results_csv(const ResultDoc& doc) {
  std::string out;
  const auto& cols = columns();
  for (size_t i = 0; i < cols.size(); ++i) {
    if (i) out += ',';
    out += cols[i].name;
  }
  out += '\n';
  for (const auto& c : doc.cells) {
    for (size_t i = 0; i < cols.size(); ++i) {
      if (i) out += ',';
      out += cols[i].value(c);
    }
    out += '\n';
  }
  return out;
}

}  // namespace kvb
