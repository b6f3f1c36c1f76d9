#pragma once
/// Which layer-level metric predicts model quality: the proxy-correlation table of `kvbench e2e` results, and
/// the other figures an e2e document derives across cells, recomputed by `kvbench merge` over the merged cells
/// (a shard's own covers only its cells).
#include <vector>

#include "kvb/core/params.h"
#include "kvb/report/results.h"

namespace kvb {

/// For every layer-level metric of the registry with a value in every ok cell: Spearman over the cells
/// between the metric (its mean over all layers, and its worst layer) and the cells' mean e2e next-token KL.
/// [{"metric", "over": "mean_layer"|"worst_layer", "better", "spearman" (null when undefined), "cells"}],
/// strongest |ρ| first.
Json proxy_correlation(const std::vector<CellRecord>& cells);

/// Recomputes what an e2e results document derives across its cells (after a run, a resume or a merge):
/// e2e.proxy_correlation, and each ok cell's e2e.decode_tokens_per_s.ratio_vs_fp16 (its decode speed over the
/// fp16 cell's, when the document has an ok fp16 cell; the two were timed separately, not paired). No-op for a
/// document without e2e.
void refresh_e2e(ResultDoc& doc);

}  // namespace kvb
