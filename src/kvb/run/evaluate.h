#pragma once
/// Evaluation of a batch of cells on one dataset (docs/protocol.md §1): calibration of trainable codecs, then
/// per (sequence, layer) the exact float64 reference, each cell's encode, per-query metrics and storage,
/// throughput on the first layer, and on the dataset pass the ref_out self-check and the fp16 reference rows.
#include <functional>
#include <new>
#include <string>

#include "kvb/core/error.h"
#include "kvb/run/cell.h"

namespace kvb::run {

/// Measured storage of one encoded layer of C tokens, per KV head (docs/metrics.md §6), folded into the running
/// means of `acc` (keep_items: also its item breakdown, when acc has none yet).
void account_storage(const Storage& st, int64_t C, int head_dim, StorageAcc& acc, bool keep_items);

/// Runs f() for cell c: Unsupported makes the cell skipped, any other failure of the codec an error naming
/// `where`; config and data errors (UsageError, DataError) propagate, they make every cell meaningless.
template <class F>
void guarded(Cell& c, const std::string& where, F&& f) {
  try {
    f();
  } catch (const Unsupported& e) {
    c.outcome.set(CellStatus::kSkipped, e.what());
  } catch (const UsageError&) {
    throw;
  } catch (const DataError&) {
    throw;
  } catch (const std::bad_alloc&) {
    c.outcome.set(CellStatus::kError, where + ": out of memory");
  } catch (const std::exception& e) {
    c.outcome.set(CellStatus::kError, where + ": " + e.what());
  }
}

/// Tolerance of the ref_out self-check (docs/protocol.md §4): per-query ‖o_kvbench − ref_out‖/‖ref_out‖.
double ref_out_tolerance(const std::string& orig_dtype);

/// Evaluates the batch's ok cells into their accumulators; a cell's own failure becomes its Outcome.
/// With `dataset_pass` (the dataset has no result yet) also fills the dataset's accumulator. Calls
/// `step` after every (sequence, layer). Throws for config and data errors.
void evaluate_batch(const Config& cfg, const DatasetPlan& D, Batch& batch, DatasetAccum* dataset_pass,
                    const std::function<void(const std::string&)>& step);

}  // namespace kvb::run
