#pragma once
/// Which layer-level metric predicts model quality: the proxy-correlation table of `kvbench e2e` results,
/// recomputed by `kvbench merge` over the merged cells (a shard's own table covers only its cells).
#include <vector>

#include "kvb/core/params.h"
#include "kvb/report/results.h"

namespace kvb {

/// For every layer-level metric of the registry with a value in every ok cell: Spearman over the cells
/// between the metric (its mean over all layers, and its worst layer) and the cells' mean e2e next-token KL.
/// [{"metric", "over": "mean_layer"|"worst_layer", "better", "spearman" (null when undefined), "cells"}],
/// strongest |ρ| first.
Json proxy_correlation(const std::vector<CellRecord>& cells);

}  // namespace kvb
