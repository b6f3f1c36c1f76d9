#pragma once
/// Record: the accumulators of an evaluated cell or dataset turned into the results records of
/// report/results.h.
#include <optional>
#include <string>

#include <vector>

#include "kvb/run/cell.h"
#include "kvb/run/plan.h"
#include "kvb/run/runner.h"

namespace kvb::run {

/// The record of one finished cell: its plan, outcome and accumulators. `dataset` is its dataset's
/// result (for the speedup against the fp16 reference row). An ok cell with no evaluated query becomes
/// an error.
CellRecord cell_record(Cell& c, const DatasetPlan& D, const std::optional<DatasetResult>& dataset, const Config& cfg);
/// The same for a cell of data named `dataset_name` with this head_dim (`kvbench e2e`: the model's text).
CellRecord cell_record(Cell& c, const std::string& dataset_name, int head_dim,
                       const std::optional<DatasetResult>& dataset, const Config& cfg);
/// A cell's identity as its record spells it (dataset, codec, label, params, preset, budget, bits_target,
/// bits_candidate, device), with nothing evaluated: what cell_record starts from and --resume checks against.
CellRecord cell_identity(const CellPlan& p, const std::string& dataset_name);
/// The ref_out check and reference rows of a dataset pass.
DatasetResult dataset_result(const DatasetAccum& acc, const std::string& orig_dtype);
/// A dataset's entry in results.json.
DatasetRecord dataset_record(const DatasetPlan& D, const DatasetResult& result);

/// A results document with what `run` and `e2e` fill alike: build info, the run record (name, config path,
/// argv, device, threads, seed, key, cells, shard), the selected cells' records in expansion order, the
/// environment and the registry's metrics. The caller adds `config`, `datasets`, its own metrics and summary.
ResultDoc results_doc(const Config& cfg, const RunOptions& opts, const DeviceChoice& dev, const std::string& key,
                      const std::string& started_utc, const std::vector<Cell>& cells, int resumed);
/// The counts a command prints after writing `doc` into `dir`.
RunSummary run_summary(const ResultDoc& doc, int resumed, const std::string& dir);

}  // namespace kvb::run
