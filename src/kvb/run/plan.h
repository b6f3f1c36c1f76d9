#pragma once
/// Plan of a run: the device and threads, the datasets opened and their sequences and layers, the cells
/// the config expands to (params and budgets resolved, codecs built), the shard and the batches left
/// to evaluate (what --resume reuses: resume.h).
#include <optional>
#include <string>
#include <vector>

#include "kvb/run/cell.h"
#include "kvb/run/runner.h"

namespace kvb::run {

struct DeviceChoice {
  std::string requested;  ///< cpu | cuda | auto
  std::string note;       ///< what auto decided
  bool use_gpu = false;   ///< codecs with a CUDA backend run on the GPU
  int threads = 1;
};

/// Validates --device against the machine and sets the OpenMP thread count.
DeviceChoice choose_device(const Config& cfg, const RunOptions& opts);
/// Opens every dataset (validating its schema) and selects its sequences and layers.
std::vector<DatasetPlan> open_datasets(const Config& cfg);
/// Every cell of the sweep, in expansion order (dataset, codecs[] entry, budget); cells that cannot run on
/// their dataset (skip_cells_without_obs) are skipped.
std::vector<Cell> expand_cells(const Config& cfg, const std::vector<DatasetPlan>& datasets, const DeviceChoice& dev);
/// The same for data of these shapes (one per dataset; `kvbench e2e`: the model's).
std::vector<Cell> expand_cells(const Config& cfg, const std::vector<ModelShape>& shapes, const DeviceChoice& dev);
/// Why a cell of `entry` cannot run on a dump whose evaluated sequences are `eval_seqs` of `seqs`: the codec
/// scores the cache with the prompt's observation queries (CodecInfo::needs_obs_queries) and some evaluated
/// sequence has none (docs/dump-format.md §1.2). Empty when the cell can run.
std::string missing_obs_reason(const CodecEntry& entry, const std::vector<SequenceInfo>& seqs,
                               const std::vector<size_t>& eval_seqs, const std::string& dump_path);
/// Marks the ok cells whose codec needs observation queries their dataset lacks as skipped, with
/// missing_obs_reason (the codec objects are released).
void skip_cells_without_obs(std::vector<Cell>& cells, const std::vector<DatasetPlan>& datasets);
/// Marks the cells of shard K/N (all cells when opts has no --shard).
void select_shard(std::vector<Cell>& cells, const RunOptions& opts);

/// Where a run persists its records as it goes.
struct RecordDirs {
  std::string out, cells, datasets;
};
RecordDirs make_record_dirs(const Config& cfg, const RunOptions& opts);

/// The batches still to evaluate: the pending cells of each codecs[] entry on each dataset, plus a
/// cell-less pass for a dataset whose record is missing.
std::vector<Batch> make_batches(const Config& cfg, std::vector<Cell>& cells,
                                const std::vector<std::optional<DatasetResult>>& results);

}  // namespace kvb::run
