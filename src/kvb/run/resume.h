#pragma once
/// --resume (docs/results.md §5): the records an earlier run with the same key persisted (cells/<index>.json,
/// datasets/<index>.json) are reused only when each is exactly what a fresh computation of its planned
/// cell would have written: the file's index and its name's agree with the plan, the cell's identity
/// (dataset, codec, label, params, preset, budget, bits) is the planned cell's, the record reads back to the
/// same JSON this build writes (every required field present, of its type, nothing extra), every number
/// is finite, and an ok cell has every metric the run reports (null only with a not_applicable reason).
/// Anything else is recomputed, and stderr says which file and why (bounded: a few lines and a count).
#include <optional>
#include <string>
#include <vector>

#include "kvb/run/cell.h"
#include "kvb/run/plan.h"

namespace kvb::run {

/// What a fresh computation writes for the cells of one planned dataset.
struct ResumeDataset {
  std::string name;                         ///< the cells' `dataset` (the path as given, or e2e's text)
  std::vector<int> layers;                  ///< the layers of an ok cell's per_layer (any order)
  std::optional<double> ref_out_tolerance;  ///< of a "passed" ref_out_check (datasets/<index>.json)
};

/// What a fresh computation writes, as far as a record can be checked against it without recomputing.
struct ResumeExpect {
  std::vector<ResumeDataset> datasets;     ///< by CellPlan::dataset
  std::vector<std::string> extra_metrics;  ///< fidelity metrics beyond the registry's, always with values (e2e)
  bool kendall = false;                    ///< metrics.kendall: the optional registry metric is reported
  std::optional<bool> throughput;  ///< ok cells and dataset records carry throughput iff true (nullopt: not checked)
  bool e2e = false;                ///< ok cells carry an `e2e` block (docs/e2e.md §5)
};

/// Why `file` (the parsed cells/<index>.json) is not the record a fresh computation of `c` writes; empty when
/// it is, and then `out` holds the record.
std::string check_cell_file(const Json& file, const std::string& run_key, const Cell& c, const ResumeExpect& expect,
                            CellRecord& out);
/// The same for datasets/<index>.json of dataset `index`.
std::string check_dataset_file(const Json& file, const std::string& run_key, size_t index, const ResumeExpect& expect,
                               DatasetResult& out);

/// --resume: reuses the selected cells' and the datasets' records that check (above); says on stderr which
/// records are recomputed and why, and which files in the record directories are no record of this sweep.
/// Returns the number of cells resumed.
int resume(std::vector<Cell>& cells, std::vector<std::optional<DatasetResult>>& results, const RecordDirs& dirs,
           const std::string& run_key, const ResumeExpect& expect);

}  // namespace kvb::run
