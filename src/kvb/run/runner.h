#pragma once
/// `kvbench run`: expand the config into cells (dataset × codec × budget), evaluate every cell on the
/// protocol of docs/protocol.md §1, and write the results directory of docs/results.md. The pieces: plan.h (device, datasets,
/// cells, shard, resume, batches), evaluate.h (the layer loop and throughput), record.h (the results
/// records of report/results.h); cell.h holds the state they share.
#include <string>
#include <vector>

#include "kvb/core/params.h"
#include "kvb/run/config.h"

namespace kvb {

struct RunOptions {
  std::string output_dir;  ///< empty = results/<name> under the current directory
  std::string device;      ///< empty = the config's
  int threads = -1;        ///< -1 = the config's; 0 = all hardware threads
  int shard_k = 0, shard_n = 0;  ///< --shard K/N: only cells with index % N == K-1 (n = 0: all cells)
  bool resume = false;           ///< reuse cells/<index>.json records carrying this run's key
  bool progress = false;   ///< progress line on stderr (the CLI sets it when stderr is a terminal)
  std::vector<std::string> argv;
};

struct RunSummary {
  int cells = 0, ok = 0, skipped = 0, errors = 0, resumed = 0;
  std::string output_dir;
  double seconds = 0;
  std::string table;  ///< `kvbench run`: the end-of-run summary (summary.h)
};

/// Runs the whole sweep and writes results.json and results.csv atomically. Throws kvb::Error for
/// config (2), data (3) and runtime (4) failures that make the whole run meaningless; per-cell failures
/// become records with status "skipped" or "error".
RunSummary run_benchmark(const Config& cfg, const RunOptions& opts);

/// Identity of a sweep: hash of the resolved config (without output/device/threads) and kvbench's git sha.
/// Persisted cell records and shards are only ever combined when their keys agree.
std::string run_key(const Config& cfg);

}  // namespace kvb
