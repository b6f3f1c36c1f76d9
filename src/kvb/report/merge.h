#pragma once
/// `kvbench merge DIR...`: join the results directories of `kvbench run --shard K/N` runs into one.
#include <string>
#include <vector>

namespace kvb {

struct MergeSummary {
  std::string output_dir;
  int cells = 0, ok = 0, skipped = 0, errors = 0;
};

/// Reads DIR/results.json of every shard, checks that they come from the same sweep (run_key and kvbench
/// version agree) and that their cell indices cover the whole sweep exactly once, and writes results.json
/// and results.csv atomically into `output_dir` (empty: `<first dir's parent>/<its name>-merged`).
/// Throws UsageError (exit 2) for mismatched, overlapping or incomplete shards, DataError (3) for an
/// unreadable results.json.
MergeSummary merge_results(const std::vector<std::string>& dirs, const std::string& output_dir);

}  // namespace kvb
