#include "kvb/cli/sweep_flags.h"

#include <cstdio>

#include "kvb/core/error.h"
#include "kvb/core/progress.h"

namespace kvb {

void add_sweep_flags(CLI::App* sub, SweepFlags& f, const std::string& config_help, const std::string& quiet_help,
                     bool with_device) {
  sub->add_option("config", f.config, config_help)->required();
  sub->add_option("--output,-o", f.output, "results directory (default: results/<config name>)");
  if (with_device)
    sub->add_option("--device", f.device, "cpu | cuda | auto (default: the config's \"device\", else auto)")
        ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  sub->add_option("--threads", f.threads, "CPU threads (0 = all hardware threads; default: the config's)")
      ->check(CLI::Range(0, 4096));
  sub->add_option("--shard", f.shard,
                  "K/N (1 <= K <= N): run only the cells whose index in the full expansion is K-1 modulo N;\n"
                  "join the shards with `kvbench merge`");
  sub->add_flag("--resume", f.resume,
                "reuse the finished cells in OUTPUT/cells/<index>.json written by an earlier run of the same\n"
                "config and build (same run_key) instead of recomputing them");
  sub->add_flag("--quiet,-q", f.quiet, quiet_help);
}

RunOptions sweep_options(const SweepFlags& f, const std::string& command) {
  RunOptions ro;
  if (!f.shard.empty()) {
    int k = 0, n = 0;
    char tail = 0;
    if (std::sscanf(f.shard.c_str(), "%d/%d%c", &k, &n, &tail) != 2 || n < 1 || k < 1 || k > n)
      throw UsageError(fmt::format("--shard: expected K/N with 1 <= K <= N (e.g. 2/8); found \"{}\"", f.shard));
    ro.shard_k = k;
    ro.shard_n = n;
  }
  ro.output_dir = f.output;
  ro.device = f.device;
  ro.threads = f.threads;
  ro.resume = f.resume;
  set_progress_quiet(f.quiet);  // also for the progress lines inside codecs (kvcar's training)
  ro.progress = progress_allowed();
  ro.argv = {"kvbench", command, f.config};
  if (!f.output.empty()) ro.argv.insert(ro.argv.end(), {"--output", f.output});
  if (!f.device.empty()) ro.argv.insert(ro.argv.end(), {"--device", f.device});
  if (f.threads >= 0) ro.argv.insert(ro.argv.end(), {"--threads", std::to_string(f.threads)});
  if (!f.shard.empty()) ro.argv.insert(ro.argv.end(), {"--shard", f.shard});
  if (f.resume) ro.argv.push_back("--resume");
  return ro;
}

int print_sweep_summary(const std::string& command, const std::string& name, const RunSummary& s) {
  std::printf("kvbench %s %s: %d cells (%d ok, %d skipped, %d errors; %d resumed) in %.1f s\n", command.c_str(),
              name.c_str(), s.cells, s.ok, s.skipped, s.errors, s.resumed, s.seconds);
  std::printf("results: %s/results.json and %s/results.csv\n", s.output_dir.c_str(), s.output_dir.c_str());
  return s.errors > 0 ? static_cast<int>(ExitCode::kRuntime) : 0;
}

}  // namespace kvb
