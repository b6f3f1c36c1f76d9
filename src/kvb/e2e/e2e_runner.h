#pragma once
/// `kvbench e2e`: every codec × budget cell of an e2e config through the prefill-compress-decode protocol
/// (decode.h) on the model's windows, into the results directory `kvbench run` writes (results.json +
/// results.csv, cells/ for --resume and --shard, atomic writes), with per-cell perplexity, next-token KL,
/// top-1 agreement, hidden-state cosine and decode speed (CellRecord::e2e), the layer-level metrics measured
/// inside the same run (fidelity, per_layer), and which layer metric predicts the e2e KL (ResultDoc::e2e).
#include <string>

#include "kvb/e2e/e2e_config.h"
#include "kvb/report/results.h"
#include "kvb/run/runner.h"

namespace kvb::e2e {

struct E2eSummary {
  RunSummary counts;
  std::string table;  ///< the cell table and the proxy-correlation table, for stdout
};

/// Runs the sweep and writes the results directory. Throws kvb::Error for config (2), data (3) and runtime (4)
/// failures of the whole run; a codec's own failure becomes a cell with status "error".
E2eSummary run_e2e(const E2eConfig& cfg, const RunOptions& opts);

/// The metrics an e2e results.json lists besides the registry's (name, description, better, applies_to).
std::vector<MetricRecord> e2e_metrics();

}  // namespace kvb::e2e
