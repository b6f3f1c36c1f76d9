#include <cstdio>

#include "kvb/cli/commands.h"
#include "kvb/cli/sweep_flags.h"
#include "kvb/core/error.h"
#include "kvb/e2e/e2e_config.h"
#include "kvb/e2e/e2e_runner.h"

namespace kvb {

void add_e2e_command(CLI::App& root, std::vector<Command>& out) {
  auto f = std::make_shared<SweepFlags>();
  auto* sub = root.add_subcommand(
      "e2e",
      "Run a llama2.c model with each codec's compressed cache in the loop (prefill the prompt exactly,\n"
      "compress every layer's prompt K/V once, decode the continuation teacher-forced) and write perplexity,\n"
      "next-token KL, top-1 agreement, hidden-state cosine, decode speed, the layer-level metrics measured in\n"
      "the same run and which of them predicts the KL into results.json and results.csv (results/<name>/ or\n"
      "--output). Runs on the CPU. Exits 4 when a cell failed (status \"error\").");
  add_sweep_flags(sub, *f, "the e2e config (JSON, see README \"Model quality: kvbench e2e\" and docs/e2e.md)",
                  "no progress line and no tables (only the results line)", false);
  out.push_back({sub, [f]() {
                   RunOptions ro = sweep_options(*f, "e2e");
                   const e2e::E2eConfig cfg = e2e::load_e2e_config(f->config);
                   const e2e::E2eSummary s = e2e::run_e2e(cfg, ro);
                   if (!f->quiet) std::printf("%s", s.table.c_str());
                   return print_sweep_summary("e2e", cfg.base.name, s.counts);
                 }});
}

}  // namespace kvb
