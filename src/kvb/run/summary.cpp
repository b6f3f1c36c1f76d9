// The end-of-run summary of `kvbench run` and `kvbench merge` (summary.h).
#include "kvb/run/summary.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "kvb/report/frontier.h"

namespace kvb::run {
namespace {

constexpr size_t kLabelChars = 40;

std::string cut(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n - 3) + "..."; }
std::string num(const std::optional<double>& v, const char* f) {
  return v && std::isfinite(*v) ? fmt::format(fmt::runtime(f), *v) : "-";
}

/// What the summary calls a cell that did not run: its label and, for a budget that nothing fits, the budget.
std::string name_of(const CellRecord& c) {
  if (c.bits_target && c.label == c.codec) return fmt::format("{} at {:g} bits", c.label, *c.bits_target);
  return c.label;
}

/// "  skipped NAME: REASON" lines for the cells of `status`, at most kListedCells of them.
std::string status_lines(const std::vector<const CellRecord*>& cells, CellStatus status, const char* word) {
  std::string s;
  size_t n = 0;
  for (const CellRecord* c : cells) {
    if (c->status != status) continue;
    if (n++ < kListedCells) s += fmt::format("  {} {}: {}\n", word, name_of(*c), cut(c->reason, kReasonChars));
  }
  if (n > kListedCells) s += fmt::format("  ... and {} more {} cells (results.json has every reason)\n", n - kListedCells, word);
  return s;
}

std::string model_of(const ResultDoc& doc, const std::string& dataset) {
  const Json& ds = doc.config.contains("datasets") ? doc.config["datasets"] : Json::array();
  for (size_t k = 0; k < ds.size() && k < doc.datasets.size(); ++k)
    if (ds[k].is_object() && ds[k].value("path", std::string()) == dataset) return doc.datasets[k].model;
  return "";
}

std::string dataset_block(const ResultDoc& doc, const std::string& dataset, const std::vector<const CellRecord*>& cells) {
  std::vector<const CellRecord*> ok;
  int skipped = 0, failed = 0;
  for (const CellRecord* c : cells) {
    if (c->ok()) ok.push_back(c);
    skipped += c->status == CellStatus::kSkipped;
    failed += c->status == CellStatus::kError;
  }
  const std::string model = model_of(doc, dataset);
  std::string s = fmt::format("{}{}: {} cells ({} ok, {} skipped, {} failed)\n", dataset,
                              model.empty() ? "" : " (" + model + ")", cells.size(), ok.size(), skipped, failed);
  std::vector<FrontierPoint> pts;
  for (const CellRecord* c : ok) pts.push_back({c->storage.bits_per_element_with_fixed, c->mean("cosine").value_or(NAN)});
  const std::vector<bool> on = pareto_frontier(pts, metrics::Better::kHigher);
  std::vector<const CellRecord*> front;
  for (size_t i = 0; i < ok.size(); ++i)
    if (on[i]) front.push_back(ok[i]);
  std::stable_sort(front.begin(), front.end(), [](const CellRecord* a, const CellRecord* b) {
    return a->storage.bits_per_element_with_fixed < b->storage.bits_per_element_with_fixed;
  });
  if (!front.empty()) {
    size_t w = 4;
    for (const CellRecord* c : front) w = std::max(w, std::min(c->label.size(), kLabelChars));
    s += "  Pareto frontier of bits per element (fixed state included) vs attention-output cosine (higher is better);\n"
         "  cosine, KL, Spearman: means over queries, heads and layers; attend: attend queries/s vs the fp16 reference\n";
    s += fmt::format("  {:<{}} {:>7} {:>9} {:>10} {:>9} {:>8}\n", "cell", w, "bits", "cosine", "KL", "Spearman", "attend");
    for (const CellRecord* c : front) {
      const std::optional<double> sp = c->throughput ? c->throughput->attend_speedup_vs_fp16 : std::nullopt;
      s += fmt::format("  {:<{}} {:>7.3f} {:>9} {:>10} {:>9} {:>8}\n", cut(c->label, kLabelChars), w,
                       c->storage.bits_per_element_with_fixed, num(c->mean("cosine"), "{:.5f}"),
                       num(c->mean("kl"), "{:.3g}"), num(c->mean("spearman"), "{:.4f}"), num(sp, "{:.2f}x"));
    }
  }
  const size_t behind = ok.size() - front.size();
  size_t no_cosine = 0;
  for (const auto& p : pts) no_cosine += !std::isfinite(p.metric) || !std::isfinite(p.bits);
  if (!ok.empty())
    s += fmt::format("  {} ok cell{} behind the frontier{}\n", behind, behind == 1 ? "" : "s",
                     no_cosine ? fmt::format(" ({} without a cosine or bits)", no_cosine) : "");
  s += status_lines(cells, CellStatus::kSkipped, "skipped");
  s += status_lines(cells, CellStatus::kError, "failed");
  return s;
}

}  // namespace

std::string summary_table(const ResultDoc& doc) {
  std::vector<std::string> order;  // datasets in the order of their first cell
  for (const auto& c : doc.cells)
    if (std::find(order.begin(), order.end(), c.dataset) == order.end()) order.push_back(c.dataset);
  std::string s;
  for (const auto& d : order) {
    std::vector<const CellRecord*> cells;
    for (const auto& c : doc.cells)
      if (c.dataset == d) cells.push_back(&c);
    s += dataset_block(doc, d, cells);
  }
  return s;
}

}  // namespace kvb::run
