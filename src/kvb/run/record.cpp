#include "kvb/run/record.h"

#include <algorithm>

#include "kvb/metrics/metrics.h"
#include "kvb/report/results_io.h"
#include "kvb/bench/roofline.h"
#include "kvb/run/environment.h"
#include "kvb/run/evaluate.h"

namespace kvb::run {
namespace {

double bits_per_element(const StorageAcc& s, int head_dim) { return 8.0 * s.bytes_per_token / (2.0 * head_dim); }

StorageRecord storage_record(const StorageAcc& s, int head_dim) {
  StorageRecord r;
  r.bytes_per_token = s.bytes_per_token;
  r.buffer_bytes = s.buffer_bytes;
  r.fixed_bytes = s.fixed_bytes;
  r.bits_per_element = bits_per_element(s, head_dim);
  r.bits_per_element_with_fixed = s.bits_with_fixed;
  r.compression_ratio = s.bits_with_fixed > 0 ? 16.0 / s.bits_with_fixed : 0.0;
  r.source = s.nominal_used ? "nominal: no token reached a compressed region in some layer" : "measured";
  if (s.split_known) {
    r.bits_per_element_k = s.bits_k;
    r.bits_per_element_v = s.bits_v;
  }
  r.items = s.items;
  return r;
}

/// Why a metric has no value for any query of a cell (empty: no reason is recorded).
std::string not_applicable_reason(const metrics::MetricInfo& m, const CodecInfo& codec) {
  if (m.applies_to == "token-dropping codecs") return "the codec holds every token";
  if (m.applies_to == "codecs with logits")
    return codec.defines_scores ? "undefined for every query (constant logits)" : "the codec defines no logits";
  return {};
}

/// Aggregates of every registry metric (optional ones only when configured), and why any is missing.
void fidelity(const Cell& c, const Config& cfg, CellRecord& r) {
  for (const auto& m : metrics::all_metrics()) {
    if (m.optional && !cfg.kendall) continue;  // metrics.kendall switches the optional metric on
    const auto it = c.acc.values.find(m.name);
    if (it == c.acc.values.end() || it->second.empty()) {
      r.fidelity[m.name] = std::nullopt;
      if (auto why = not_applicable_reason(m, c.plan.entry->info); !why.empty()) r.not_applicable[m.name] = why;
      continue;
    }
    r.fidelity[m.name] = metrics::aggregate(it->second);
  }
  for (const auto& [k, v] : c.acc.not_applicable) r.not_applicable[k] = v;
}

std::vector<LayerRecord> per_layer(const Cell& c, int head_dim) {
  std::vector<LayerRecord> out;
  for (const auto& [layer, vals] : c.acc.per_layer) {
    LayerRecord l;
    l.layer = layer;
    for (const auto& [name, v] : vals)
      if (!v.empty()) l.metric_means[name] = metrics::aggregate(v).mean;
    if (const auto sit = c.acc.per_layer_storage.find(layer); sit != c.acc.per_layer_storage.end()) {
      l.bits_per_element = bits_per_element(sit->second, head_dim);
      l.bits_per_element_with_fixed = sit->second.bits_with_fixed;
    }
    out.push_back(std::move(l));
  }
  return out;
}

/// The cell's throughput with its speedup over the exact fp16 reference row of the device it ran on.
std::optional<ThroughputRecord> throughput(const Cell& c, const std::optional<DatasetResult>& dataset) {
  if (!c.acc.throughput) return std::nullopt;
  ThroughputRecord tp = *c.acc.throughput;
  if (dataset) {
    const auto& ref = c.plan.device == "cuda" ? dataset->reference_throughput_cuda : dataset->reference_throughput;
    if (ref) {
      const double r = ref->attend_queries_per_s.median.value_or(0.0);
      tp.attend_speedup_vs_fp16 = r > 0 ? tp.attend_queries_per_s.median.value_or(0.0) / r : 0.0;
    }
  }
  return tp;
}

}  // namespace

CellRecord cell_record(Cell& c, const DatasetPlan& D, const std::optional<DatasetResult>& dataset, const Config& cfg) {
  return cell_record(c, D.spec->path_as_given, D.reader->attrs().shape.head_dim, dataset, cfg);
}

CellRecord cell_identity(const CellPlan& p, const std::string& dataset_name) {
  CellRecord r;
  r.dataset = dataset_name;
  r.codec = p.entry->info.name;
  r.label = p.label;
  r.params = p.params;
  if (!p.spec->preset.empty()) r.preset = p.spec->preset;
  if (p.budget) {
    r.budget_kind = p.budget->describe();
    r.bits_target = p.bits_target;
  }
  if (std::isfinite(p.candidate_bits)) r.bits_candidate = p.candidate_bits;
  r.device = p.device;
  return r;
}

CellRecord cell_record(Cell& c, const std::string& dataset_name, int head_dim,
                       const std::optional<DatasetResult>& dataset, const Config& cfg) {
  CellRecord r = cell_identity(c.plan, dataset_name);
  if (c.outcome.ok() && c.acc.values["cosine"].empty()) c.outcome.set(CellStatus::kError, "no query was evaluated");
  r.status = c.outcome.status;
  r.reason = c.outcome.reason;
  if (!r.ok()) return r;
  r.storage = storage_record(c.acc.storage, head_dim);
  fidelity(c, cfg, r);
  r.per_layer = per_layer(c, head_dim);
  r.throughput = throughput(c, dataset);
  r.codec_report = c.live.codec ? c.live.codec->report() : Json::object();
  r.calibration = c.acc.calibration;
  return r;
}

DatasetResult dataset_result(const DatasetAccum& acc, const std::string& orig_dtype) {
  DatasetResult d;
  if (acc.ref_checked) {
    d.ref_out_check = {"passed", acc.ref_max_err, metrics::aggregate(acc.ref_errs).median, ref_out_tolerance(orig_dtype),
                       std::nullopt};
  } else {
    d.ref_out_check.status = "not run";
    d.ref_out_check.reason =
        acc.ref_skipped_sliding > 0 ? "only sliding-window layers carry ref_out" : "the dump has no ref_out";
  }
  d.reference_throughput = acc.reference_throughput;
  d.reference_throughput_cuda = acc.reference_throughput_cuda;
  return d;
}

DatasetRecord dataset_record(const DatasetPlan& D, const DatasetResult& result) {
  const auto& at = D.reader->attrs();
  DatasetRecord d;
  d.path = D.spec->path;
  d.model = at.model;
  d.model_revision = at.model_revision;
  d.source = at.source;
  d.dtype = to_string(D.reader->dtype());
  d.orig_dtype = at.orig_dtype;
  d.checksum_fnv1a64 = D.reader->checksum();
  d.n_layers = at.shape.n_layers;
  d.n_heads = at.shape.n_heads;
  d.n_kv_heads = at.shape.n_kv_heads;
  d.head_dim = at.shape.head_dim;
  d.rope_style = at.rope_style;
  d.softmax_scale = at.softmax_scale;
  d.attn_softcap = at.attn_softcap;
  d.layers.assign(D.layers.begin(), D.layers.end());
  const auto& seqs = D.reader->sequences();
  for (size_t si : D.eval_seqs) {
    const auto& s = seqs[si];
    const int64_t used = D.spec->max_queries > 0 ? std::min<int64_t>(D.spec->max_queries, s.n_queries) : s.n_queries;
    d.evaluated_sequences.push_back({s.id, s.context_len, s.n_tokens, s.n_queries, used});
  }
  for (size_t si : D.calib_seqs) d.calibration_sequences.push_back(seqs[si].id);
  d.result = result;
  return d;
}

ResultDoc results_doc(const Config& cfg, const RunOptions& opts, const DeviceChoice& dev, const std::string& key,
                      const std::string& started_utc, const std::vector<Cell>& cells, int resumed) {
  ResultDoc doc;
  doc.schema_version = kResultsSchemaVersion;
  doc.kvbench = build_info_json();
  RunRecord& r = doc.run;
  r.name = cfg.name;
  r.config_path = cfg.path;
  r.started_utc = started_utc;
  r.argv = opts.argv;
  r.device_requested = dev.requested;
  r.device_note = dev.note;
  r.threads = dev.threads;
  r.seed = cfg.seed;
  r.run_key = key;
  r.cells_total = static_cast<int64_t>(cells.size());
  r.resumed_cells = resumed;
  if (opts.shard_n > 0) r.shard = std::make_pair(int64_t{opts.shard_k}, int64_t{opts.shard_n});
  for (const auto& c : cells) {
    if (!c.plan.selected) continue;
    KVB_ASSERT(c.record.has_value());
    doc.cells.push_back(*c.record);
    r.cell_indices.push_back(static_cast<int64_t>(c.plan.index));
  }
  doc.environment = environment_json(dev.threads);
  if (const auto roof = measured_host_roofline()) doc.environment["roofline"] = roofline_json(*roof);
  doc.metrics = registry_metrics();
  return doc;
}

RunSummary run_summary(const ResultDoc& doc, int resumed, const std::string& dir) {
  RunSummary s;
  s.cells = static_cast<int>(doc.summary.cells);
  s.ok = static_cast<int>(doc.summary.ok);
  s.skipped = static_cast<int>(doc.summary.skipped);
  s.errors = static_cast<int>(doc.summary.errors);
  s.resumed = resumed;
  s.output_dir = dir;
  s.seconds = doc.run.duration_s;
  return s;
}

}  // namespace kvb::run
