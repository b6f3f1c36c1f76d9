// `kvbench merge DIR... [--output OUT]`: join shard results directories (kvb/report/merge.h).
#include <cstdio>

#include "kvb/cli/commands.h"
#include "kvb/report/merge.h"

namespace kvb {

void add_merge_command(CLI::App& root, std::vector<Command>& out) {
  struct Opts {
    std::vector<std::string> dirs;
    std::string output;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = root.add_subcommand(
      "merge",
      "Join the results directories of `kvbench run --shard K/N` runs into one results.json and results.csv\n"
      "(written atomically). Exit 2 when the shards come from different configs or builds (run_key, version),\n"
      "overlap, or leave cells missing; 3 when a results.json is unreadable.");
  sub->add_option("dirs", o->dirs, "the shard results directories")->required();
  sub->add_option("--output,-o", o->output, "merged results directory (default: <first dir>-merged next to it)");
  out.push_back({sub, [o]() {
                   const MergeSummary s = merge_results(o->dirs, o->output);
                   std::printf("kvbench merge: %zu shards, %d cells (%d ok, %d skipped, %d errors)\n", o->dirs.size(),
                               s.cells, s.ok, s.skipped, s.errors);
                   std::printf("results: %s/results.json and %s/results.csv\n", s.output_dir.c_str(), s.output_dir.c_str());
                   return 0;
                 }});
}

}  // namespace kvb
