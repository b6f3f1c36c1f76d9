#pragma once
/// `kvbench report` (docs/results.md §8), the numbers: what the page and its Markdown twin show, computed from
/// results.json only (read through compare.h's load_results_file and ResultDoc::from_json, the project's one
/// reader). Each input file is split into one Section per dataset (cells are matched to a dataset through the
/// path the config wrote, as scripts/plot_results.py does). Per section:
///  - rows: every cell, ok or not, with the figures the tables show (label made unique within the section);
///  - frontier: the Pareto frontier of bits_per_element_with_fixed (fewer is better) vs the cosine mean
///    (higher is better) over the ok cells, in order of bits;
///  - recommendations: per budget of kBudgets (bits with fixed state <= budget) and per metric (cosine, rel_l2,
///    kl; and e2e_kl for `kvbench e2e` results), the best ok cell within the budget by that metric's recorded
///    better direction; ties go to fewer bits, then to the earlier cell. A held-set logit metric (kl) ranks only
///    cells that hold every token: a token-dropping cell (one reporting mass_lost) has its kl over the tokens it
///    kept, blind to what it dropped (docs/metrics.md §4), so it competes on cosine, rel_l2 and e2e_kl only;
///  - sensitivity: per ok cell with per-layer cosine means, its kSensitivityLayers worst layers (lowest
///    cosine_mean) and its best one.
/// Nothing here formats text; report_render.h does.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvb/report/results.h"

namespace kvb::report {

/// The bit budgets of the recommendation table (bits per element with fixed state).
inline constexpr double kBudgets[] = {2, 3, 4, 5, 8};
/// How many worst layers the sensitivity table lists per cell.
inline constexpr size_t kSensitivityLayers = 3;

/// One results file as read: `file` is the results.json path (DIR/results.json for a directory).
struct Input {
  std::string file;
  ResultDoc doc;
};

/// Read PATH (a results directory or its results.json). Throws DataError naming the file when it is missing,
/// not JSON, or not a kvbench results file.
Input load_input(const std::string& path);

/// One cell as the report shows it.
struct Row {
  const CellRecord* cell = nullptr;
  std::string label;  ///< the cell's label, " #2" etc. appended when it repeats within the section
  size_t codec_index = 0;  ///< into Section::codecs (the plot colour)
  std::optional<double> bits, bits_fixed;
  std::optional<double> cosine, rel_l2, spearman, kl, mass_lost;
  std::optional<double> attend_qps, attend_vs_fp16;
  // `kvbench e2e` cells:
  std::optional<double> e2e_kl, e2e_ppl_change, e2e_ppl_lo, e2e_ppl_hi, e2e_top1, e2e_decode_ratio;
  bool ok() const { return cell->ok(); }
  /// The fidelity mean of `metric` (the e2e metrics included).
  std::optional<double> value(const std::string& metric) const;
};

struct Recommendation {
  double budget = 0;
  std::string metric;
  bool higher_better = true;
  int row = -1;              ///< -1: no ok cell within the budget reports the metric
  int candidates = 0;        ///< ok cells within the budget that report it
  double value = 0;
};

struct LayerValue {
  int64_t layer = 0;
  double cosine = 0;
};

struct Sensitivity {
  int row = -1;
  double mean = 0;                  ///< mean of the per-layer cosine means
  std::vector<LayerValue> worst;    ///< lowest first, at most kSensitivityLayers
  LayerValue best;
};

struct Section {
  std::string source;  ///< the results.json path
  const ResultDoc* doc = nullptr;
  const DatasetRecord* dataset = nullptr;  ///< null when the file lists no dataset for these cells
  int dataset_index = -1;
  std::string title;   ///< "<run name>: <model> (<dump file>)"
  bool e2e = false;    ///< a `kvbench e2e` results file
  std::vector<Row> rows;
  std::vector<std::string> codecs;  ///< codec names in order of first appearance
  std::vector<int> frontier;        ///< rows on the cosine-vs-bits frontier, fewest bits first
  std::vector<Recommendation> recommendations;  ///< budget-major, metrics in recommend_metrics order
  std::vector<Sensitivity> sensitivity;
  std::vector<int64_t> layers;  ///< every layer some ok cell reports, ascending
  std::optional<double> fp16_attend_qps;  ///< the dataset's fp16 reference (CPU, or CUDA when the cells ran there)
};

/// The metrics the recommendation table ranks by: cosine, rel_l2, kl, and e2e_kl for e2e results.
std::vector<std::string> recommend_metrics(bool e2e);
/// kl, spearman, kendall, score_rel_err: taken over the held tokens only for token-dropping codecs.
bool held_set_metric(const std::string& metric);
/// Whether higher is better for `metric`, as the file's metrics block records it (the registry when absent).
bool higher_is_better(const ResultDoc& doc, const std::string& metric);

/// Indices of the points (x = bits, fewer is better; y = value) that no other point beats on both, ordered by
/// x (ties: better y first). A point equal to a frontier point is on it too.
std::vector<int> pareto_front(const std::vector<std::pair<double, double>>& pts, bool higher_better);

/// The sections of every input, in input order and dataset order within a file.
std::vector<Section> analyze(const std::vector<Input>& inputs);

}  // namespace kvb::report
