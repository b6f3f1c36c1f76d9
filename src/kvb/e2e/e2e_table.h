#pragma once
/// The end-of-run tables of `kvbench e2e` (e2e_table.cpp), also printed by `kvbench merge` for e2e shards.
#include <string>

#include "kvb/report/results.h"

namespace kvb::e2e {

/// Every ok cell by bits with the Pareto frontier of bits vs next-token KL marked, the cells not evaluated
/// with their reasons, and the proxy correlations. `doc` must carry the e2e block.
std::string summary_table(const ResultDoc& doc);

}  // namespace kvb::e2e
