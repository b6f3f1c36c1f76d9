// `kvbench merge DIR... [--output OUT] [-q]`: join shard results directories (kvb/report/merge.h), then print
// the merged file's end-of-run summary (run/summary.h; e2e shards: e2e/e2e_table.h) unless -q.
#include <cstdio>
#include <filesystem>

#include "kvb/cli/commands.h"
#include "kvb/core/error.h"
#include "kvb/core/json_text.h"
#include "kvb/e2e/e2e_table.h"
#include "kvb/report/merge.h"
#include "kvb/report/results_io.h"
#include "kvb/run/summary.h"

namespace kvb {

void add_merge_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    std::vector<std::string> dirs;
    std::string output;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "merge",
      "Join the results directories of `kvbench run --shard K/N` runs into one results.json and results.csv\n"
      "(written atomically) and print the merged sweep's summary table, as `kvbench run` and `kvbench e2e` do.\n"
      "Exit 2 when the shards come from different configs or builds (run_key, version), overlap, or leave\n"
      "cells missing; 3 when a results.json is unreadable.");
  sub->add_option("dirs", o->dirs, "the shard results directories")->required();
  sub->add_option("--output,-o", o->output, "merged results directory (default: <first dir>-merged next to it)");
  sub->add_flag("--quiet,-q", o->quiet, "no summary table (only the counts and the results line)");
  out.push_back({sub, [o]() {
                   const MergeSummary s = merge_results(o->dirs, o->output);
                   if (!o->quiet) {
                     const std::string path = (std::filesystem::path(s.output_dir) / "results.json").string();
                     const ResultDoc doc =
                         ResultDoc::from_json(read_json_file(path, ExitCode::kData, "the merged results"), path);
                     std::printf("%s", (doc.e2e ? e2e::summary_table(doc) : run::summary_table(doc)).c_str());
                   }
                   std::printf("kvbench merge: %zu shards, %d cells (%d ok, %d skipped, %d errors)\n", o->dirs.size(),
                               s.cells, s.ok, s.skipped, s.errors);
                   std::printf("results: %s/results.json and %s/results.csv\n", s.output_dir.c_str(), s.output_dir.c_str());
                   return 0;
                 }});
}

}  // namespace kvb
