#include "kvb/report/results.h"

#include <cmath>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"

namespace kvb {
namespace {

/// Reads the fields of one JSON object; `where` names it in messages ("cells[3].storage").
/// An absent or null field gives the default (or nullopt); a field of another type is a DataError.
class In {
 public:
  In(const Json& j, std::string where) : j_(j), where_(std::move(where)) {
    KVB_CHECK(j.is_object(), DataError, "{}: expected an object, found {}", where_, j.type_name());
  }
  const Json* get(const char* k) const {
    const auto it = j_.find(k);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  std::string at(const char* k) const { return where_ + "." + k; }
  std::optional<std::string> opt_str(const char* k) const {
    const Json* v = get(k);
    if (!v) return std::nullopt;
    KVB_CHECK(v->is_string(), DataError, "{}: expected a string, found {}", at(k), v->type_name());
    return v->get<std::string>();
  }
  std::string str(const char* k) const { return opt_str(k).value_or(std::string()); }
  std::optional<double> opt_num(const char* k) const {
    const Json* v = get(k);
    if (!v) return std::nullopt;
    KVB_CHECK(v->is_number(), DataError, "{}: expected a number, found {}", at(k), v->type_name());
    return v->get<double>();
  }
  double num(const char* k) const { return opt_num(k).value_or(0.0); }
  int64_t integer(const char* k) const {
    const Json* v = get(k);
    if (!v) return 0;
    KVB_CHECK(v->is_number_integer(), DataError, "{}: expected an integer, found {}", at(k), json_excerpt(*v));
    return v->get<int64_t>();
  }
  uint64_t uinteger(const char* k) const {
    const Json* v = get(k);
    if (!v) return 0;
    KVB_CHECK(v->is_number_unsigned(), DataError, "{}: expected an integer >= 0, found {}", at(k), json_excerpt(*v));
    return v->get<uint64_t>();
  }
  bool boolean(const char* k) const {
    const Json* v = get(k);
    if (!v) return false;
    KVB_CHECK(v->is_boolean(), DataError, "{}: expected true or false, found {}", at(k), v->type_name());
    return v->get<bool>();
  }
  /// An object or array field as is (null when absent).
  Json raw(const char* k) const {
    const Json* v = get(k);
    return v ? *v : Json(nullptr);
  }
  /// Calls f(element, "where.k[i]") for every element of an array field (none when absent).
  template <class F>
  void each(const char* k, F&& f) const {
    const Json* v = get(k);
    if (!v) return;
    KVB_CHECK(v->is_array(), DataError, "{}: expected an array, found {}", at(k), v->type_name());
    for (size_t i = 0; i < v->size(); ++i) f((*v)[i], fmt::format("{}[{}]", at(k), i));
  }
  std::vector<std::string> strings(const char* k) const {
    std::vector<std::string> out;
    each(k, [&](const Json& e, const std::string& w) {
      KVB_CHECK(e.is_string(), DataError, "{}: expected a string, found {}", w, e.type_name());
      out.push_back(e.get<std::string>());
    });
    return out;
  }
  std::vector<int64_t> integers(const char* k) const {
    std::vector<int64_t> out;
    each(k, [&](const Json& e, const std::string& w) {
      KVB_CHECK(e.is_number_integer(), DataError, "{}: expected an integer, found {}", w, json_excerpt(e));
      out.push_back(e.get<int64_t>());
    });
    return out;
  }

 private:
  const Json& j_;
  std::string where_;
};

Json opt_json(const std::optional<double>& v) { return v ? Json(*v) : Json(nullptr); }
Json opt_json(const std::optional<std::string>& v) { return v ? Json(*v) : Json(nullptr); }

Json rate_json(const RateRecord& r) { return Json{{"median", opt_json(r.median)}, {"p95", opt_json(r.p95)}}; }
RateRecord rate_from(const In& in, const char* k) {
  RateRecord r;
  if (const Json* v = in.get(k)) {
    const In x(*v, in.at(k));
    r.median = x.opt_num("median");
    r.p95 = x.opt_num("p95");
  }
  return r;
}

Json throughput_json(const ThroughputRecord& t) {
  Json j{{"encode_tokens_per_s", rate_json(t.encode_tokens_per_s)},
         {"attend_queries_per_s", rate_json(t.attend_queries_per_s)},
         {"attend_bytes_per_s", rate_json(t.attend_bytes_per_s)},
         {"encode_samples", t.encode_samples},
         {"attend_samples", t.attend_samples},
         {"layer", t.layer},
         {"context_len", t.context_len},
         {"queries", t.queries},
         {"gqa_group", t.gqa_group},
         {"note", t.note}};
  if (t.device_name) j["device_name"] = *t.device_name;
  if (t.codec) j["codec"] = *t.codec;
  if (t.device) j["device"] = *t.device;
  if (t.attend_speedup_vs_fp16) j["attend_speedup_vs_fp16"] = *t.attend_speedup_vs_fp16;
  if (t.queries_per_call) j["queries_per_call"] = *t.queries_per_call;
  if (t.attend_bytes_per_call) j["attend_bytes_per_call"] = *t.attend_bytes_per_call;
  if (t.attend_flops_per_call) j["attend_flops_per_call"] = *t.attend_flops_per_call;
  if (t.attend_ops_source) j["attend_ops_source"] = *t.attend_ops_source;
  if (t.roofline_fraction) j["roofline_fraction"] = *t.roofline_fraction;
  if (t.roofline_bound) j["roofline_bound"] = *t.roofline_bound;
  return j;
}
Json throughput_json(const std::optional<ThroughputRecord>& t) { return t ? throughput_json(*t) : Json(nullptr); }

std::optional<ThroughputRecord> throughput_from(const In& parent, const char* k) {
  const Json* v = parent.get(k);
  if (!v) return std::nullopt;
  const In in(*v, parent.at(k));
  ThroughputRecord t;
  t.encode_tokens_per_s = rate_from(in, "encode_tokens_per_s");
  t.attend_queries_per_s = rate_from(in, "attend_queries_per_s");
  t.attend_bytes_per_s = rate_from(in, "attend_bytes_per_s");
  t.encode_samples = in.integer("encode_samples");
  t.attend_samples = in.integer("attend_samples");
  t.layer = in.integer("layer");
  t.context_len = in.integer("context_len");
  t.queries = in.integer("queries");
  t.gqa_group = in.integer("gqa_group");
  t.note = in.str("note");
  t.device_name = in.opt_str("device_name");
  t.codec = in.opt_str("codec");
  t.device = in.opt_str("device");
  t.attend_speedup_vs_fp16 = in.opt_num("attend_speedup_vs_fp16");
  if (in.get("queries_per_call")) t.queries_per_call = in.integer("queries_per_call");
  t.attend_bytes_per_call = in.opt_num("attend_bytes_per_call");
  t.attend_flops_per_call = in.opt_num("attend_flops_per_call");
  t.attend_ops_source = in.opt_str("attend_ops_source");
  t.roofline_fraction = in.opt_num("roofline_fraction");
  t.roofline_bound = in.opt_str("roofline_bound");
  return t;
}

Json storage_json(const StorageRecord& s) {
  Json j{{"bytes_per_token", s.bytes_per_token},
         {"buffer_bytes", s.buffer_bytes},
         {"fixed_bytes", s.fixed_bytes},
         {"bits_per_element", s.bits_per_element},
         {"bits_per_element_with_fixed", s.bits_per_element_with_fixed},
         {"compression_ratio", s.compression_ratio},
         {"source", s.source}};
  if (s.bits_per_element_k) j["bits_per_element_k"] = *s.bits_per_element_k;
  if (s.bits_per_element_v) j["bits_per_element_v"] = *s.bits_per_element_v;
  if (s.items) {
    Json items = Json::array();
    for (const auto& it : *s.items)
      items.push_back(
          {{"name", it.name}, {"kind", it.kind}, {"bytes_per_kv_head", it.bytes_per_kv_head}, {"tokens", it.tokens}});
    j["items"] = items;
  }
  return j;
}

StorageRecord storage_from(const In& in) {
  StorageRecord s;
  s.bytes_per_token = in.num("bytes_per_token");
  s.buffer_bytes = in.num("buffer_bytes");
  s.fixed_bytes = in.num("fixed_bytes");
  s.bits_per_element = in.num("bits_per_element");
  s.bits_per_element_with_fixed = in.num("bits_per_element_with_fixed");
  s.compression_ratio = in.num("compression_ratio");
  s.source = in.str("source");
  s.bits_per_element_k = in.opt_num("bits_per_element_k");
  s.bits_per_element_v = in.opt_num("bits_per_element_v");
  if (in.get("items")) {
    s.items.emplace();
    in.each("items", [&](const Json& e, const std::string& w) {
      const In x(e, w);
      s.items->push_back({x.str("name"), x.str("kind"), x.num("bytes_per_kv_head"), x.integer("tokens")});
    });
  }
  return s;
}

Json aggregate_json(const metrics::Aggregate& a) {
  return Json{{"mean", a.mean}, {"median", a.median}, {"p05", a.p05}, {"p95", a.p95},
              {"min", a.min},   {"max", a.max},       {"count", a.count}};
}

/// A metric's aggregate; an aggregate without a numeric mean counts as not reported (as compare reads it).
std::optional<metrics::Aggregate> aggregate_from(const Json& j, const std::string& where) {
  if (j.is_null()) return std::nullopt;
  const In in(j, where);
  if (!in.opt_num("mean")) return std::nullopt;
  metrics::Aggregate a;
  a.mean = in.num("mean");
  a.median = in.num("median");
  a.p05 = in.num("p05");
  a.p95 = in.num("p95");
  a.min = in.num("min");
  a.max = in.num("max");
  a.count = in.integer("count");
  return a;
}

Json layer_json(const LayerRecord& l) {
  Json j{{"layer", l.layer}};
  for (const auto& [name, mean] : l.metric_means) j[name + "_mean"] = mean;
  if (l.bits_per_element) j["bits_per_element"] = *l.bits_per_element;
  if (l.bits_per_element_with_fixed) j["bits_per_element_with_fixed"] = *l.bits_per_element_with_fixed;
  return j;
}

LayerRecord layer_from(const Json& j, const std::string& where) {
  const In in(j, where);
  LayerRecord l;
  l.layer = in.integer("layer");
  l.bits_per_element = in.opt_num("bits_per_element");
  l.bits_per_element_with_fixed = in.opt_num("bits_per_element_with_fixed");
  constexpr std::string_view kSuffix = "_mean";
  for (const auto& [k, v] : j.items()) {
    if (k.size() <= kSuffix.size() || k.compare(k.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) continue;
    if (const auto m = in.opt_num(k.c_str())) l.metric_means[k.substr(0, k.size() - kSuffix.size())] = *m;
  }
  return l;
}

CellStatus status_from(const std::string& s, const std::string& where) {
  if (s == "ok") return CellStatus::kOk;
  if (s == "skipped") return CellStatus::kSkipped;
  KVB_CHECK(s == "error", DataError, "{}: expected ok, skipped or error, found \"{}\"", where, s);
  return CellStatus::kError;
}

void ok_cell_from(const In& in, CellRecord& c) {
  if (const Json* s = in.get("storage")) c.storage = storage_from(In(*s, in.at("storage")));
  if (const Json* f = in.get("fidelity")) {
    const In fin(*f, in.at("fidelity"));
    for (const auto& [name, agg] : f->items()) c.fidelity[name] = aggregate_from(agg, fin.at(name.c_str()));
  }
  if (const Json* na = in.get("not_applicable")) {
    const In nin(*na, in.at("not_applicable"));
    for (const auto& [k, v] : na->items()) c.not_applicable[k] = nin.str(k.c_str());
  }
  in.each("per_layer", [&](const Json& e, const std::string& w) { c.per_layer.push_back(layer_from(e, w)); });
  c.throughput = throughput_from(in, "throughput");
  if (const Json* r = in.get("codec_report")) c.codec_report = *r;
  if (const Json* cal = in.get("calibration")) {
    const In x(*cal, in.at("calibration"));
    c.calibration = CalibrationRecord{x.strings("sequences"), x.boolean("overlaps_evaluation"), x.str("note")};
  }
  if (const Json* e = in.get("e2e")) {
    KVB_CHECK(e->is_object(), DataError, "{}: expected an object, found {}", in.at("e2e"), e->type_name());
    c.e2e = *e;
  }
}

Json sequence_json(const SequenceRecord& s) {
  return Json{{"id", s.id},
              {"context_len", s.context_len},
              {"n_tokens", s.n_tokens},
              {"queries", s.queries},
              {"queries_used", s.queries_used}};
}

}  // namespace

const char* to_string(CellStatus s) {
  switch (s) {
    case CellStatus::kOk: return "ok";
    case CellStatus::kSkipped: return "skipped";
    case CellStatus::kError: return "error";
  }
  return "error";
}

std::optional<double> CellRecord::mean(const std::string& metric) const {
  const auto it = fidelity.find(metric);
  if (it == fidelity.end() || !it->second) return std::nullopt;
  return it->second->mean;
}

Json CellRecord::to_json() const {
  Json j;
  j["dataset"] = dataset;
  j["codec"] = codec;
  j["label"] = label;
  j["params"] = params;
  j["preset"] = opt_json(preset);
  j["budget"] = budget_kind ? Json{{"kind", *budget_kind}, {"target_bits", opt_json(bits_target)}} : Json(nullptr);
  j["bits_target"] = opt_json(bits_target);
  j["bits_candidate"] = opt_json(bits_candidate);
  j["device"] = device;
  j["status"] = to_string(status);
  j["reason"] = reason;
  if (!ok()) return j;
  j["storage"] = storage_json(storage);
  Json fid = Json::object();
  for (const auto& [name, agg] : fidelity) fid[name] = agg ? aggregate_json(*agg) : Json(nullptr);
  j["fidelity"] = fid;
  Json na = Json::object();
  for (const auto& [k, v] : not_applicable) na[k] = v;
  j["not_applicable"] = na;
  Json pl = Json::array();
  for (const auto& l : per_layer) pl.push_back(layer_json(l));
  j["per_layer"] = pl;
  j["throughput"] = throughput_json(throughput);
  j["codec_report"] = codec_report;
  if (calibration)
    j["calibration"] = {{"sequences", calibration->sequences},
                        {"overlaps_evaluation", calibration->overlaps_evaluation},
                        {"note", calibration->note}};
  if (e2e) j["e2e"] = *e2e;
  return j;
}

CellRecord CellRecord::from_json(const Json& j, const std::string& where) {
  const In in(j, where);
  CellRecord c;
  c.dataset = in.str("dataset");
  c.codec = in.str("codec");
  c.label = in.str("label");
  if (const Json* p = in.get("params")) c.params = *p;
  c.preset = in.opt_str("preset");
  if (const Json* b = in.get("budget")) c.budget_kind = In(*b, in.at("budget")).str("kind");
  c.bits_target = in.opt_num("bits_target");
  c.bits_candidate = in.opt_num("bits_candidate");
  c.device = in.opt_str("device").value_or("cpu");
  c.status = status_from(in.str("status"), in.at("status"));
  c.reason = in.str("reason");
  if (c.ok()) ok_cell_from(in, c);
  return c;
}

Json DatasetResult::to_json() const {
  Json check{{"status", ref_out_check.status}};
  if (ref_out_check.max_rel_l2) check["max_rel_l2"] = *ref_out_check.max_rel_l2;
  if (ref_out_check.median_rel_l2) check["median_rel_l2"] = *ref_out_check.median_rel_l2;
  if (ref_out_check.tolerance) check["tolerance"] = *ref_out_check.tolerance;
  if (ref_out_check.reason) check["reason"] = *ref_out_check.reason;
  Json j{{"ref_out_check", check}, {"reference_throughput", throughput_json(reference_throughput)}};
  if (reference_throughput_cuda) j["reference_throughput_cuda"] = throughput_json(*reference_throughput_cuda);
  return j;
}

DatasetResult DatasetResult::from_json(const Json& j, const std::string& where) {
  const In in(j, where);
  DatasetResult d;
  if (const Json* c = in.get("ref_out_check")) {
    const In x(*c, in.at("ref_out_check"));
    d.ref_out_check = {x.str("status"), x.opt_num("max_rel_l2"), x.opt_num("median_rel_l2"), x.opt_num("tolerance"),
                       x.opt_str("reason")};
  }
  d.reference_throughput = throughput_from(in, "reference_throughput");
  d.reference_throughput_cuda = throughput_from(in, "reference_throughput_cuda");
  return d;
}

Json DatasetRecord::to_json() const {
  Json j{{"path", path},
         {"model", model},
         {"model_revision", model_revision},
         {"source", source},
         {"dtype", dtype},
         {"orig_dtype", orig_dtype},
         {"checksum_fnv1a64", checksum_fnv1a64},
         {"shape", {{"n_layers", n_layers}, {"n_heads", n_heads}, {"n_kv_heads", n_kv_heads}, {"head_dim", head_dim}}},
         {"rope_style", rope_style},
         {"softmax_scale", softmax_scale},
         {"attn_softcap", attn_softcap},
         {"layers", layers}};
  Json ev = Json::array();
  for (const auto& s : evaluated_sequences) ev.push_back(sequence_json(s));
  j["evaluated_sequences"] = ev;
  j["calibration_sequences"] = calibration_sequences;
  const Json r = result.to_json();
  for (const auto& [k, v] : r.items()) j[k] = v;
  return j;
}

DatasetRecord DatasetRecord::from_json(const Json& j, const std::string& where) {
  const In in(j, where);
  DatasetRecord d;
  d.path = in.str("path");
  d.model = in.str("model");
  d.model_revision = in.str("model_revision");
  d.source = in.str("source");
  d.dtype = in.str("dtype");
  d.orig_dtype = in.str("orig_dtype");
  d.checksum_fnv1a64 = in.str("checksum_fnv1a64");
  d.rope_style = in.str("rope_style");
  if (const Json* s = in.get("shape")) {
    const In x(*s, in.at("shape"));
    d.n_layers = x.integer("n_layers");
    d.n_heads = x.integer("n_heads");
    d.n_kv_heads = x.integer("n_kv_heads");
    d.head_dim = x.integer("head_dim");
  }
  d.softmax_scale = in.num("softmax_scale");
  d.attn_softcap = in.num("attn_softcap");
  d.layers = in.integers("layers");
  in.each("evaluated_sequences", [&](const Json& e, const std::string& w) {
    const In x(e, w);
    d.evaluated_sequences.push_back(
        {x.str("id"), x.integer("context_len"), x.integer("n_tokens"), x.integer("queries"), x.integer("queries_used")});
  });
  d.calibration_sequences = in.strings("calibration_sequences");
  d.result = DatasetResult::from_json(j, where);
  return d;
}

std::vector<MetricRecord> registry_metrics() {
  std::vector<MetricRecord> out;
  for (const auto& m : metrics::all_metrics())
    out.push_back({m.name, m.description, m.better == metrics::Better::kHigher ? "higher" : "lower", m.applies_to});
  return out;
}

Json to_json(const std::vector<MetricRecord>& metrics) {
  Json out = Json::array();
  for (const auto& m : metrics)
    out.push_back({{"name", m.name}, {"description", m.description}, {"better", m.better}, {"applies_to", m.applies_to}});
  return out;
}

SummaryRecord SummaryRecord::of(const std::vector<CellRecord>& cells) {
  SummaryRecord s;
  s.cells = static_cast<int64_t>(cells.size());
  for (const auto& c : cells) ++(c.status == CellStatus::kOk ? s.ok : c.status == CellStatus::kSkipped ? s.skipped : s.errors);
  return s;
}

namespace {

Json run_json(const RunRecord& r) {
  Json j{{"name", r.name},
         {"config_path", r.config_path},
         {"started_utc", r.started_utc},
         {"duration_s", r.duration_s},
         {"argv", r.argv},
         {"device_requested", r.device_requested},
         {"device_note", r.device_note},
         {"threads", r.threads},
         {"seed", r.seed},
         {"run_key", r.run_key},
         {"cells_total", r.cells_total},
         {"cell_indices", r.cell_indices},
         {"resumed_cells", r.resumed_cells}};
  if (r.shard) j["shard"] = {{"k", r.shard->first}, {"n", r.shard->second}};
  if (r.merged_from) j["merged_from"] = *r.merged_from;
  return j;
}

RunRecord run_from(const In& in) {
  RunRecord r;
  r.name = in.str("name");
  r.config_path = in.str("config_path");
  r.started_utc = in.str("started_utc");
  r.duration_s = in.num("duration_s");
  r.argv = in.strings("argv");
  r.device_requested = in.str("device_requested");
  r.device_note = in.str("device_note");
  r.threads = in.integer("threads");
  r.seed = in.uinteger("seed");
  r.run_key = in.str("run_key");
  r.cells_total = in.integer("cells_total");
  r.cell_indices = in.integers("cell_indices");
  r.resumed_cells = in.integer("resumed_cells");
  if (const Json* s = in.get("shard")) {
    const In x(*s, in.at("shard"));
    r.shard = std::make_pair(x.integer("k"), x.integer("n"));
  }
  if (const Json* m = in.get("merged_from")) r.merged_from = *m;
  return r;
}

}  // namespace

Json ResultDoc::to_json() const {
  Json j;
  j["schema_version"] = schema_version;
  j["kvbench"] = kvbench;
  j["run"] = run_json(run);
  j["config"] = config;
  j["environment"] = environment;
  Json ds = Json::array();
  for (const auto& d : datasets) ds.push_back(d.to_json());
  j["datasets"] = ds;
  j["metrics"] = kvb::to_json(metrics);
  Json cs = Json::array();
  for (const auto& c : cells) cs.push_back(c.to_json());
  j["cells"] = cs;
  j["summary"] = {{"cells", summary.cells}, {"ok", summary.ok}, {"skipped", summary.skipped}, {"errors", summary.errors}};
  if (e2e) j["e2e"] = *e2e;
  return j;
}

ResultDoc ResultDoc::from_json(const Json& j, const std::string& where) {
  const In in(j, where);
  ResultDoc d;
  d.schema_version = in.integer("schema_version");
  if (const Json* k = in.get("kvbench")) d.kvbench = *k;
  if (const Json* r = in.get("run")) d.run = run_from(In(*r, in.at("run")));
  if (const Json* c = in.get("config")) d.config = *c;
  if (const Json* e = in.get("environment")) d.environment = *e;
  in.each("datasets", [&](const Json& e, const std::string& w) { d.datasets.push_back(DatasetRecord::from_json(e, w)); });
  in.each("metrics", [&](const Json& e, const std::string& w) {
    const In x(e, w);
    d.metrics.push_back({x.str("name"), x.str("description"), x.str("better"), x.str("applies_to")});
  });
  in.each("cells", [&](const Json& e, const std::string& w) { d.cells.push_back(CellRecord::from_json(e, w)); });
  if (const Json* s = in.get("summary")) {
    const In x(*s, in.at("summary"));
    d.summary = {x.integer("cells"), x.integer("ok"), x.integer("skipped"), x.integer("errors")};
  }
  if (const Json* e = in.get("e2e")) {
    KVB_CHECK(e->is_object(), DataError, "{}: expected an object, found {}", in.at("e2e"), e->type_name());
    d.e2e = *e;
  }
  return d;
}

}  // namespace kvb
