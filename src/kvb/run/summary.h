#pragma once
/// The end-of-run summary of `kvbench run` and `kvbench merge` (stdout, before the results line; nothing with
/// -q). Per dataset, in the order of the cells: the cells on the Pareto frontier (report/frontier.h) of bits
/// per element with fixed state vs the mean attention-output cosine (higher is better), by bits, with their
/// cosine, KL, Spearman and attend speedup vs the same run's fp16 reference; the number of ok cells behind
/// the frontier; the skipped and failed cells with their reasons (each reason cut to kReasonChars, at most
/// kListedCells of each listed). Built from the results document only, so a merged file gets the same table.
#include <string>

#include "kvb/report/results.h"

namespace kvb::run {

inline constexpr size_t kReasonChars = 160;
inline constexpr size_t kListedCells = 20;

/// The summary text ("" for a document without cells).
std::string summary_table(const ResultDoc& doc);

}  // namespace kvb::run
