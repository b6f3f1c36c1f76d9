#include <unistd.h>

#include <cstdio>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/e2e/e2e_config.h"
#include "kvb/e2e/e2e_runner.h"

namespace kvb {

void add_e2e_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    std::string config, output, shard;
    int threads = -1;
    bool quiet = false, resume = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "e2e",
      "Run a llama2.c model with each codec's compressed cache in the loop (prefill the prompt exactly,\n"
      "compress every layer's prompt K/V once, decode the continuation teacher-forced) and write perplexity,\n"
      "next-token KL, top-1 agreement, hidden-state cosine, decode speed, the layer-level metrics measured in\n"
      "the same run and which of them predicts the KL into results.json and results.csv (results/<name>/ or\n"
      "--output). Exits 4 when a cell failed (status \"error\").");
  sub->add_option("config", o->config, "the e2e config (JSON, see README \"Model quality: kvbench e2e\")")->required();
  sub->add_option("--output,-o", o->output, "results directory (default: results/<config name>)");
  sub->add_option("--threads", o->threads, "CPU threads (0 = all hardware threads; default: the config's)")
      ->check(CLI::Range(0, 4096));
  sub->add_option("--shard", o->shard,
                  "K/N (1 <= K <= N): run only the cells whose index in the full expansion is K-1 modulo N;\n"
                  "join the shards with `kvbench merge`");
  sub->add_flag("--resume", o->resume,
                "reuse the finished cells in OUTPUT/cells/<index>.json of an earlier run of the same config and build");
  sub->add_flag("--quiet,-q", o->quiet, "no progress line and no tables (only the results line)");
  out.push_back({sub, [o]() {
                   RunOptions ro;
                   if (!o->shard.empty()) {
                     int k = 0, n = 0;
                     char tail = 0;
                     if (std::sscanf(o->shard.c_str(), "%d/%d%c", &k, &n, &tail) != 2 || n < 1 || k < 1 || k > n)
                       throw UsageError(fmt::format("--shard: expected K/N with 1 <= K <= N (e.g. 2/8); found \"{}\"", o->shard));
                     ro.shard_k = k;
                     ro.shard_n = n;
                   }
                   const e2e::E2eConfig cfg = e2e::load_e2e_config(o->config);
                   ro.output_dir = o->output;
                   ro.threads = o->threads;
                   ro.resume = o->resume;
                   ro.progress = !o->quiet && ::isatty(2);
                   ro.argv = {"kvbench", "e2e", o->config};
                   if (!o->output.empty()) ro.argv.insert(ro.argv.end(), {"--output", o->output});
                   if (o->threads >= 0) ro.argv.insert(ro.argv.end(), {"--threads", std::to_string(o->threads)});
                   if (!o->shard.empty()) ro.argv.insert(ro.argv.end(), {"--shard", o->shard});
                   if (o->resume) ro.argv.push_back("--resume");
                   const e2e::E2eSummary s = e2e::run_e2e(cfg, ro);
                   if (!o->quiet) std::printf("%s", s.table.c_str());
                   std::printf("kvbench e2e %s: %d cells (%d ok, %d skipped, %d errors; %d resumed) in %.1f s\n",
                               cfg.base.name.c_str(), s.cells, s.ok, s.skipped, s.errors, s.resumed, s.seconds);
                   std::printf("results: %s/results.json and %s/results.csv\n", s.output_dir.c_str(), s.output_dir.c_str());
                   return s.errors > 0 ? static_cast<int>(ExitCode::kRuntime) : 0;
                 }});
}

}  // namespace kvb
