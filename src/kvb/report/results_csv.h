#pragma once
/// results.csv (docs/results.md §3): one row per cell of a results document, a fixed set of its fields.
#include <string>
#include <vector>

#include "kvb/report/results.h"

namespace kvb {

/// The CSV header (a stable contract; columns are only ever appended).
const std::vector<std::string>& csv_columns();
/// The header line and one row per cell.
std::string results_csv(const ResultDoc& doc);

}  // namespace kvb
