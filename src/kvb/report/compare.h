#pragma once
/// `kvbench compare`: cell-by-cell differences between two results.json files (docs/results.md §7, docs/errors.md).
///
/// Cells are matched by (dataset as recorded, codec, compact dump of the resolved params); when that key
/// repeats within one file (e.g. several skipped cells with empty params), bits_target and then the
/// occurrence number are appended. For every matched cell that is ok on both sides:
///  - fidelity: the mean of every metric (registry order, then any other metric the files list) with an
///    absolute tolerance; the metric's better direction decides improvement vs regression;
///  - storage: bits_per_element, bits_per_element_with_fixed, bytes_per_token, buffer_bytes, fixed_bytes
///    with a relative tolerance; growth is a regression, shrinkage is reported as "changed";
///  - throughput (only when a tolerance is given): attend_queries_per_s and encode_tokens_per_s medians,
///    relative tolerance, higher is better.
/// Status ok -> skipped/error is a regression; a cell missing from NEW that was ok in BASE is a
/// regression; an added cell is reported only.
#include <optional>
#include <string>
#include <vector>

#include "kvb/core/params.h"

namespace kvb {

struct CompareOptions {
  double fidelity_tol = 1e-6;               ///< absolute, on fidelity means
  double storage_tol = 0.0;                 ///< relative, on storage figures (0 = exact)
  std::optional<double> throughput_tol;     ///< relative, on throughput medians; nullopt = not compared
};

/// One reported difference. `verdict` is one of: regression, improvement, changed, missing, added.
struct CompareRow {
  std::string cell;    ///< display label (dataset prefix only when the files hold several datasets)
  std::string key;     ///< the match key: dataset | codec | params
  std::string metric;  ///< "status", "cell", a fidelity metric, a storage or throughput field
  Json base;           ///< number, string or null
  Json now;            ///< number, string or null
  std::optional<double> delta;      ///< now - base when both are numbers
  std::optional<double> rel_delta;  ///< (now - base) / |base| for storage and throughput
  std::string verdict;
  bool regression = false;
  std::string note;
};

struct CompareReport {
  std::string base_path, new_path;
  CompareOptions options;
  int base_cells = 0, new_cells = 0, matched = 0, compared = 0;  ///< compared = ok on both sides
  int regressions = 0, improvements = 0, changes = 0, missing = 0, added = 0;
  std::vector<CompareRow> rows;
  std::vector<std::string> notes;  ///< e.g. dataset checksums that differ

  bool regressed() const { return regressions > 0; }
  Json to_json() const;
  std::string to_text() const;
};

/// Read a results.json (or DIR/results.json when `path` is a directory) and validate the parts compare
/// uses. Throws DataError naming the file and what is wrong.
Json load_results_file(const std::string& path);
/// Validate an already parsed document (`name` is used in messages). Throws DataError.
void validate_results(const Json& doc, const std::string& name);
/// Compare two validated documents.
CompareReport compare_results(const Json& base, const Json& now, const CompareOptions& opt,
                              const std::string& base_name = "BASE", const std::string& new_name = "NEW");

}  // namespace kvb
