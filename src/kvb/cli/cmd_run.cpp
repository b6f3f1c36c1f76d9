#include <unistd.h>

#include <cstdio>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/run/config.h"
#include "kvb/run/runner.h"

namespace kvb {

void add_run_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    std::string config, output, device;
    std::string shard;
    int threads = -1;
    bool quiet = false, resume = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "run",
      "Evaluate every dataset x codec x budget cell of CONFIG.json and write results.json and results.csv\n"
      "(atomically) into results/<name>/ or --output. Exits 4 when a cell failed (status \"error\").");
  sub->add_option("config", o->config, "the run config (JSON, see README \"Config\")")->required();
  sub->add_option("--output,-o", o->output, "results directory (default: results/<config name>)");
  sub->add_option("--device", o->device, "cpu | cuda | auto (default: the config's \"device\", else auto)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  sub->add_option("--threads", o->threads, "CPU threads (0 = all hardware threads; default: the config's)")
      ->check(CLI::Range(0, 4096));
  sub->add_option("--shard", o->shard,
                  "K/N (1 <= K <= N): run only the cells whose index in the full expansion is K-1 modulo N;\n"
                  "join the shards with `kvbench merge`");
  sub->add_flag("--resume", o->resume,
                "reuse the finished cells in OUTPUT/cells/<index>.json written by an earlier run of the same\n"
                "config and build (same run_key) instead of recomputing them");
  sub->add_flag("--quiet,-q", o->quiet, "no progress line on stderr");
  std::vector<std::string> argv_copy;
  out.push_back({sub, [o, &root]() {
                   RunOptions ro;
                   if (!o->shard.empty()) {
                     int k = 0, n = 0;
                     char tail = 0;
                     if (std::sscanf(o->shard.c_str(), "%d/%d%c", &k, &n, &tail) != 2 || n < 1 || k < 1 || k > n)
                       throw UsageError(fmt::format("--shard: expected K/N with 1 <= K <= N (e.g. 2/8); found \"{}\"", o->shard));
                     ro.shard_k = k;
                     ro.shard_n = n;
                   }
                   const Config cfg = load_config(o->config);
                   ro.output_dir = o->output;
                   ro.device = o->device;
                   ro.threads = o->threads;
                   ro.resume = o->resume;
                   ro.progress = !o->quiet && ::isatty(2);
                   ro.argv = {"kvbench", "run", o->config};
                   if (!o->output.empty()) ro.argv.insert(ro.argv.end(), {"--output", o->output});
                   if (!o->device.empty()) ro.argv.insert(ro.argv.end(), {"--device", o->device});
                   if (o->threads >= 0) ro.argv.insert(ro.argv.end(), {"--threads", std::to_string(o->threads)});
                   if (!o->shard.empty()) ro.argv.insert(ro.argv.end(), {"--shard", o->shard});
                   if (o->resume) ro.argv.push_back("--resume");
                   (void)root;
                   const RunSummary s = run_benchmark(cfg, ro);
                   std::printf("kvbench run %s: %d cells (%d ok, %d skipped, %d errors; %d resumed) in %.1f s\n",
                               cfg.name.c_str(), s.cells, s.ok, s.skipped, s.errors, s.resumed, s.seconds);
                   std::printf("results: %s/results.json and %s/results.csv\n", s.output_dir.c_str(), s.output_dir.c_str());
                   return s.errors > 0 ? static_cast<int>(ExitCode::kRuntime) : 0;
                 }});
}

}  // namespace kvb
