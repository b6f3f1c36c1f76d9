#pragma once
/// Writing the results directory atomically (docs/results.md §4): every file is written to a temporary name
/// in the same directory, flushed, and renamed, so an interrupted run never leaves a truncated file.
#include <optional>
#include <string>

#include "kvb/core/params.h"
#include "kvb/report/results.h"

namespace kvb {

/// Bumped whenever the shape of results.json changes (the golden test pins it).
inline constexpr int kResultsSchemaVersion = 1;

/// Write `content` to `path` atomically (temp file + fsync + rename). Throws RuntimeError on failure.
void write_file_atomic(const std::string& path, const std::string& content);
/// The whole file as bytes; std::nullopt when it cannot be opened or read.
std::optional<std::string> read_file(const std::string& path);
/// The metric registry (name, description, better direction, applies_to) as written into results.json
/// and printed by `kvbench list --json`.
Json metrics_json();
/// Create `dir` and write results.json and results.csv (results_csv.h) of `doc` into it.
void write_results_dir(const std::string& dir, const ResultDoc& doc);

/// A record persisted on its own while a run goes on (cells/<index>.json: {"run_key", "index", "cell"};
/// datasets/<index>.json: {"run_key", "index", "dataset"}), so that --resume can reuse it
/// (run/resume.h checks it first).
void write_record_file(const std::string& path, const std::string& run_key, size_t index, const char* kind,
                       const Json& record);
}  // namespace kvb
