#pragma once
/// The results contract (docs/results.md) as types: one CellRecord per cell and a ResultDoc for the whole
/// results.json, each with to_json/from_json. The runner, the CSV writer, compare, merge and --resume all
/// read and write results through these, so a field is spelled in one place. docs/results.schema.json
/// describes the JSON they produce, and tests validate every results.json against it.
///
/// to_json writes exactly the keys the runner always wrote (nlohmann's objects are ordered by key, so the
/// text depends only on the values). from_json reads what to_json writes; for files written by older or
/// other tools, an absent field takes its default (compare checks the fields it relies on first, see
/// validate_results), and a field of the wrong JSON type is a DataError naming it.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kvb/core/params.h"
#include "kvb/metrics/metrics.h"

namespace kvb {

/// Median and p95 of one rate over the timed repeats (null when unknown).
struct RateRecord {
  std::optional<double> median, p95;
};

/// Timing of one codec (or of the exact fp16 reference) on one layer.
struct ThroughputRecord {
  RateRecord encode_tokens_per_s, attend_queries_per_s, attend_bytes_per_s;
  int64_t encode_samples = 0, attend_samples = 0;
  int64_t layer = 0, context_len = 0, queries = 0, gqa_group = 0;
  std::string note;
  std::optional<std::string> device_name;        ///< timed with CUDA events on this device
  std::optional<std::string> codec, device;      ///< reference rows: "fp16" and where it ran
  std::optional<double> attend_speedup_vs_fp16;  ///< cells: attend q/s over the reference's, same device
  std::optional<int64_t> queries_per_call;       ///< host runs: queries one attend call takes (G · positions_per_call)
  // The roofline (issue 19; docs/metrics.md §7): what one timed call reads and computes, and how close its median
  // time came to the machine's limit for that work (host runs; environment.roofline holds the limits).
  std::optional<double> attend_bytes_per_call;   ///< bytes one call scans (every GQA group's compressed cache)
  std::optional<double> attend_flops_per_call;   ///< fp32 operations one call needs, as the codec declares them
  std::optional<std::string> attend_ops_source;  ///< how that count was made
  std::optional<double> roofline_fraction;       ///< max(bytes/bandwidth, flops/fp32 peak) / median call time
  std::optional<std::string> roofline_bound;     ///< "memory" | "fp32 compute": which limit is the larger
};

struct StorageItemRecord {
  std::string name, kind;  ///< kind: compressed | buffer | fixed
  double bytes_per_kv_head = 0;
  int64_t tokens = 0;
};

/// Measured storage per KV head, means over the evaluated (sequence, layer) pairs (docs/metrics.md §6).
struct StorageRecord {
  double bytes_per_token = 0, buffer_bytes = 0, fixed_bytes = 0;
  double bits_per_element = 0, bits_per_element_with_fixed = 0, compression_ratio = 0;
  std::string source;
  std::optional<double> bits_per_element_k, bits_per_element_v;  ///< when every item is k.* or v.*
  std::optional<std::vector<StorageItemRecord>> items;           ///< of the first evaluated layer
};

/// One layer's means: "<metric>_mean" for every metric with values, and the layer's storage.
struct LayerRecord {
  int64_t layer = 0;
  std::map<std::string, double> metric_means;  ///< metric name -> mean
  std::optional<double> bits_per_element, bits_per_element_with_fixed;
};

struct CalibrationRecord {
  std::vector<std::string> sequences;
  bool overlaps_evaluation = false;
  std::string note;
};

enum class CellStatus { kOk, kSkipped, kError };
const char* to_string(CellStatus s);

/// One cell of results.json (also persisted alone as cells/<index>.json).
struct CellRecord {
  std::string dataset;  ///< the dataset path as written in the config
  std::string codec, label;
  Json params = Json::object();  ///< resolved params (codec-defined)
  std::optional<std::string> preset;
  std::optional<std::string> budget_kind;  ///< with bits_target: the budget it was resolved from
  std::optional<double> bits_target, bits_candidate;
  std::string device = "cpu";
  CellStatus status = CellStatus::kOk;
  std::string reason;
  // Only for ok cells:
  StorageRecord storage;
  std::map<std::string, std::optional<metrics::Aggregate>> fidelity;  ///< null: not defined for this cell
  std::map<std::string, std::string> not_applicable;                 ///< metric (or note) -> reason
  std::vector<LayerRecord> per_layer;
  std::optional<ThroughputRecord> throughput;
  Json codec_report = Json::object();  ///< codec-defined
  std::optional<CalibrationRecord> calibration;
  std::optional<Json> e2e;  ///< `kvbench e2e` cells: perplexity, next-token KL, top-1, hidden cosine, decode speed

  bool ok() const { return status == CellStatus::kOk; }
  /// The mean of a fidelity metric, when reported.
  std::optional<double> mean(const std::string& metric) const;
  Json to_json() const;
  static CellRecord from_json(const Json& j, const std::string& where);
};

struct RefOutCheckRecord {
  std::string status;  ///< passed | not run
  std::optional<double> max_rel_l2, median_rel_l2, tolerance;
  std::optional<std::string> reason;
};

/// What one evaluation pass over a dataset measures (also persisted alone as datasets/<index>.json).
struct DatasetResult {
  RefOutCheckRecord ref_out_check;
  std::optional<ThroughputRecord> reference_throughput;  ///< null when throughput is off
  std::optional<ThroughputRecord> reference_throughput_cuda;
  Json to_json() const;
  static DatasetResult from_json(const Json& j, const std::string& where);
};

struct SequenceRecord {
  std::string id;
  int64_t context_len = 0, n_tokens = 0, queries = 0, queries_used = 0;
};

/// One dataset of results.json: the dump's provenance and shape, the sequences used, and its DatasetResult.
struct DatasetRecord {
  std::string path, model, model_revision, source, dtype, orig_dtype, checksum_fnv1a64, rope_style;
  int64_t n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  double softmax_scale = 0, attn_softcap = 0;
  std::vector<int64_t> layers;
  std::vector<SequenceRecord> evaluated_sequences;
  std::vector<std::string> calibration_sequences;
  DatasetResult result;
  Json to_json() const;
  static DatasetRecord from_json(const Json& j, const std::string& where);
};

struct RunRecord {
  std::string name, config_path, started_utc;
  double duration_s = 0;
  std::vector<std::string> argv;
  std::string device_requested, device_note;
  int64_t threads = 0;
  uint64_t seed = 0;
  std::string run_key;
  int64_t cells_total = 0;
  std::vector<int64_t> cell_indices;
  int64_t resumed_cells = 0;
  std::optional<std::pair<int64_t, int64_t>> shard;  ///< --shard K/N
  std::optional<Json> merged_from;                   ///< kvbench merge: [{dir, shard, started_utc, environment}]
};

/// A metric as results.json lists it (the registry of metrics.h).
struct MetricRecord {
  std::string name, description, better, applies_to;  ///< better: higher | lower
};
/// The registry's block, in registry order.
std::vector<MetricRecord> registry_metrics();

struct SummaryRecord {
  int64_t cells = 0, ok = 0, skipped = 0, errors = 0;
  /// Counts of `cells` by status.
  static SummaryRecord of(const std::vector<CellRecord>& cells);
};

/// The whole results.json.
struct ResultDoc {
  int64_t schema_version = 0;
  Json kvbench = Json::object();  ///< build info (environment.h)
  RunRecord run;
  Json config = Json::object();       ///< the resolved config (config.h)
  Json environment = Json::object();  ///< host, libraries, devices (environment.h)
  std::vector<DatasetRecord> datasets;
  std::vector<MetricRecord> metrics;
  std::vector<CellRecord> cells;
  SummaryRecord summary;
  std::optional<Json> e2e;  ///< `kvbench e2e`: the protocol, the exact model's perplexity, the proxy correlations
  Json to_json() const;
  static ResultDoc from_json(const Json& j, const std::string& where);
};

Json to_json(const std::vector<MetricRecord>& metrics);

}  // namespace kvb
