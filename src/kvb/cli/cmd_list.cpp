#include <cstdio>

#include <fmt/format.h>

#include "kvb/cli/commands.h"
#include "kvb/core/registry.h"
#include "kvb/metrics/metrics.h"
#include "kvb/report/results_io.h"

namespace kvb {

namespace {

std::string range_text(const ParamSpec& p) {
  if (!p.choices.empty()) {
    std::string s;
    for (const auto& c : p.choices) s += (s.empty() ? "" : "|") + c;
    return s;
  }
  if (p.min <= p.max) return fmt::format("[{}, {}]", p.min, p.max);
  return "";
}

void print_text(int head_dim) {
  for (const auto& e : registry().all()) {
    const auto& i = e.info;
    std::string backends;
    for (const auto& b : i.backends) backends += (backends.empty() ? "" : ", ") + b;
    std::printf("%s — %s\n", i.name.c_str(), i.summary.c_str());
    std::printf("  paper: %s | family: %s | backends: %s%s%s%s\n", i.paper.c_str(), i.family.c_str(), backends.c_str(),
                i.trainable ? " | needs calibration" : "", i.selects_tokens ? " | drops tokens" : "",
                i.needs_obs_queries ? " | needs the dump's observation queries" : "");
    if (i.params.empty()) std::printf("  params: (none)\n");
    for (const auto& p : i.params)
      std::printf("  param %-14s %-7s default %-8s %-14s %s\n", p.name.c_str(), to_string(p.type),
                  p.default_value.dump().c_str(), range_text(p).c_str(), p.help.c_str());
    for (const auto& [name, params] : i.presets) std::printf("  preset %s: %s\n", name.c_str(), params.dump().c_str());
    std::printf("  budget: %s\n", i.budget_rule.c_str());
    std::string grid;
    for (const auto& c : e.candidates(head_dim))
      grid += fmt::format("{}{}={:.4g}", grid.empty() ? "" : ", ",
                          e.label(resolve_params(i.params, c.params, i.name)), c.bits);
    std::printf("  budget grid at head_dim %d (label=bits per element): %s\n", head_dim, grid.c_str());
    if (!i.notes.empty()) std::printf("  note: %s\n", i.notes.c_str());
    std::printf("\n");
  }
  std::printf("metrics:\n");
  for (const auto& m : metrics::all_metrics())
    std::printf("  %-14s %-6s better  %s (%s)\n", m.name.c_str(), m.better == metrics::Better::kHigher ? "higher" : "lower",
                m.description.c_str(), m.applies_to.c_str());
}

}  // namespace

void add_list_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    bool json = false;
    int head_dim = 128;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand("list",
                                  "List every registered codec: summary, paper, parameters with defaults, presets, how "
                                  "`bits` maps to parameters (with the budget grid), backends; and the metrics.");
  sub->add_flag("--json", o->json, "machine-readable JSON on stdout");
  sub->add_option("--head-dim", o->head_dim, "head_dim at which to print the budget grid (default 128)")
      ->check(CLI::Range(1, 1024));
  out.push_back({sub, [o]() {
                   if (o->json) {
                     Json codecs = Json::array();
                     for (const auto& e : registry().all()) codecs.push_back(describe(e, o->head_dim));
                     std::printf("%s\n", Json{{"codecs", codecs}, {"metrics", metrics_json()}}.dump(2).c_str());
                   } else {
                     print_text(o->head_dim);
                   }
                   return 0;
                 }});
}

}  // namespace kvb
