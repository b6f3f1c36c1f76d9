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
      "(atomically) into results/<name>/ or --output. Exits 4 when a cell failed (status \"error\").");
  add_sweep_flags(sub, *f, "the run config (JSON, see README \"Config\")", "no progress line on stderr", true);
  out.push_back({sub, [f]() {
                   RunOptions ro = sweep_options(*f, "run");
                   const Config cfg = load_config(f->config);
                   return print_sweep_summary("run", cfg.name, run_benchmark(cfg, ro));
                 }});
}

}  // namespace kvb
