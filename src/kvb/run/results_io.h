#pragma once
/// Writing the results directory atomically (kvbench.md §8): every file is written to a temporary name
/// in the same directory, flushed, and renamed, so an interrupted run never leaves a truncated file.
#include <string>

#include "kvb/core/params.h"

namespace kvb {

/// Bumped whenever the shape of results.json changes (the golden test pins it).
inline constexpr int kResultsSchemaVersion = 1;

/// Write `content` to `path` atomically (temp file + fsync + rename). Throws RuntimeError on failure.
void write_file_atomic(const std::string& path, const std::string& content);
/// Create `dir` and write results.json and results.csv into it.
void write_results_dir(const std::string& dir, const Json& doc, const std::string& csv);

}  // namespace kvb
