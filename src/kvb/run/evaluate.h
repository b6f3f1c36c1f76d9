#pragma once
/// Evaluation of a batch of cells on one dataset (docs/protocol.md §1): calibration of trainable codecs, then
/// per (sequence, layer) the exact float64 reference, each cell's encode, per-query metrics and storage,
/// throughput on the first layer, and on the dataset pass the ref_out self-check and the fp16 reference rows.
#include <functional>
#include <string>

#include "kvb/run/cell.h"

namespace kvb::run {

/// Tolerance of the ref_out self-check (docs/protocol.md §4): per-query ‖o_kvbench − ref_out‖/‖ref_out‖.
double ref_out_tolerance(const std::string& orig_dtype);

/// Evaluates the batch's ok cells into their accumulators; a cell's own failure becomes its Outcome.
/// With `dataset_pass` (the dataset has no result yet) also fills the dataset's accumulator. Calls
/// `step` after every (sequence, layer). Throws for config and data errors.
void evaluate_batch(const Config& cfg, const DatasetPlan& D, Batch& batch, DatasetAccum* dataset_pass,
                    const std::function<void(const std::string&)>& step);

}  // namespace kvb::run
