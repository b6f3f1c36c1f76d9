// The end-of-run tables of `kvbench e2e` (stdout): every cell by bits, the Pareto frontier of bits vs
// perplexity change marked, the skipped and failed cells with their reasons, and the proxy correlations.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "kvb/e2e/e2e_table.h"
#include "kvb/report/frontier.h"
#include "kvb/report/results.h"

namespace kvb::e2e {
namespace {

double num(const Json& j, const char* a, const char* b) { return j.at(a).at(b).get<double>(); }
std::string ci(const Json& j, const char* a, const char* b, double scale, const char* f) {
  const Json& c = j.at(a).at(b);
  return fmt::format("[{}, {}]", fmt::format(fmt::runtime(f), scale * c[0].get<double>()),
                     fmt::format(fmt::runtime(f), scale * c[1].get<double>()));
}

std::string cell_rows(const std::vector<const CellRecord*>& ok) {
  std::string s = fmt::format("  {:<34} {:>6} {:>9} {:>20} {:>10} {:>22} {:>7} {:>8} {:>7} {:>7}\n", "cell", "bits",
                              "dppl %", "95% CI", "KL", "95% CI", "top-1", "hid cos", "cos(l)", "decode");
  std::vector<FrontierPoint> pts;
  for (const CellRecord* c : ok) pts.push_back({c->storage.bits_per_element_with_fixed, num(*c->e2e, "kl", "mean")});
  const std::vector<bool> on = pareto_frontier(pts, metrics::Better::kLower);
  for (size_t i = 0; i < ok.size(); ++i) {
    const CellRecord* c = ok[i];
    const Json& e = *c->e2e;
    const double dp = num(e, "perplexity", "rel_change"), kl = num(e, "kl", "mean");
    const bool front = on[i];
    const auto cos = c->mean("cosine");
    s += fmt::format("{} {:<34} {:>6.3g} {:>+9.3f} {:>20} {:>10.3g} {:>22} {:>7.4f} {:>8.5f} {:>7.4f} {:>6.2f}x\n",
                     front ? "*" : " ", c->label.substr(0, 34), c->storage.bits_per_element_with_fixed, 100 * dp,
                     ci(e, "perplexity", "rel_change_ci95", 100, "{:+.3f}"), kl,
                     ci(e, "kl", "ci95", 1, "{:.3g}"), num(e, "top1_agreement", "mean"),
                     num(e, "hidden_cosine", "mean"), cos.value_or(NAN), e["decode_tokens_per_s"].value("ratio_vs_fp16", NAN));
  }
  return s;
}

std::string proxy_rows(const Json& rows) {
  std::string s = fmt::format("  {:<14} {:>8} {:>12} {:>12} {:>6}\n", "layer metric", "better", "mean layer",
                              "worst layer", "cells");
  std::vector<std::string> names;
  for (const auto& r : rows)
    if (std::find(names.begin(), names.end(), r["metric"].get<std::string>()) == names.end())
      names.push_back(r["metric"].get<std::string>());
  for (const auto& n : names) {
    std::string vals[2] = {"-", "-"}, better, cells;
    for (const auto& r : rows) {
      if (r["metric"] != n) continue;
      const int k = r["over"] == "mean_layer" ? 0 : 1;
      vals[k] = r["spearman"].is_null() ? "undefined" : fmt::format("{:+.3f}", r["spearman"].get<double>());
      better = r["better"].get<std::string>();
      cells = std::to_string(r["cells"].get<int64_t>());
    }
    s += fmt::format("  {:<14} {:>8} {:>12} {:>12} {:>6}\n", n, better, vals[0], vals[1], cells);
  }
  return s;
}

}  // namespace

std::string summary_table(const ResultDoc& doc) {
  std::vector<const CellRecord*> ok;
  std::string bad;
  for (const auto& c : doc.cells) {
    if (c.ok() && c.e2e)
      ok.push_back(&c);
    else if (!c.ok())
      bad += fmt::format("  {} {}: {}\n", to_string(c.status), c.label, c.reason.substr(0, 300));
  }
  std::stable_sort(ok.begin(), ok.end(), [](const CellRecord* a, const CellRecord* b) {
    return a->storage.bits_per_element_with_fixed < b->storage.bits_per_element_with_fixed;
  });
  const Json& e = *doc.e2e;
  std::string s = fmt::format(
      "{}: {} evaluated windows of {} prompt + {} continuation tokens; exact perplexity {:.4f} [{:.4f}, {:.4f}]\n",
      e["model"].get<std::string>(), e["evaluated_windows"].size(), e["prompt_len"].get<int>(),
      e["continuation_len"].get<int>(), num(e, "exact", "perplexity"), e["exact"]["perplexity_ci95"][0].get<double>(),
      e["exact"]["perplexity_ci95"][1].get<double>());
  s += "cells by bits per element (fixed state included); * = on the Pareto frontier of bits vs next-token KL;\n"
       "KL = next-token KL(exact || codec) in nats; cos(l) = layer attention-output cosine inside the run;\n"
       "decode = decode tokens/s vs the fp16 cell's (one thread, whole forward pass)\n";
  s += cell_rows(ok);
  if (!bad.empty()) s += "not evaluated:\n" + bad;
  s += "which layer metric predicts the e2e next-token KL (Spearman over the cells; a good proxy has |rho| near 1,\n"
       "negative for higher-is-better metrics):\n";
  s += proxy_rows(e["proxy_correlation"]);
  return s;
}

}  // namespace kvb::e2e
