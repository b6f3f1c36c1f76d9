// `kvbench run CONFIG`: the sweep (run/runner.h), then the end-of-run summary (run/summary.h) unless -q.
#include <cstdio>

#include "kvb/cli/commands.h"
#include "kvb/cli/sweep_flags.h"
#include "kvb/core/error.h"
#include "kvb/run/config.h"
#include "kvb/run/runner.h"

namespace kvb {

void add_run_command(CLI::App& root, std::vector<Command>& out) {
  auto f = std::make_shared<SweepFlags>();
  auto* sub = root.add_subcommand(
      "run",
      "Evaluate every dataset x codec x budget cell of CONFIG.json and write results.json and results.csv\n"
      "(atomically) into results/<name>/ or --output, then print per dataset the cells on the Pareto frontier\n"
      "of bits (fixed state included) vs cosine, with KL, Spearman and attend speedup vs fp16, and the skipped\n"
      "and failed cells with their reasons. Exits 4 when a cell failed (status \"error\").");
  add_sweep_flags(sub, *f, "the run config (JSON, see README \"Config\")", "no progress line on stderr and no summary table (only the results line)", true);
  out.push_back({sub, [f]() {
                   RunOptions ro = sweep_options(*f, "run");
                   const Config cfg = load_config(f->config);
                   const RunSummary s = run_benchmark(cfg, ro);
                   if (!f->quiet) std::printf("%s", s.table.c_str());
                   return print_sweep_summary("run", cfg.name, s);
                 }});
}

}  // namespace kvb
