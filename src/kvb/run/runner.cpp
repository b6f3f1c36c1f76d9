#include "kvb/run/runner.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <fstream>
#include <optional>
#include <sstream>

#include "kvb/attention/exact.h"
#include "kvb/attention/exact_batch.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"
#include "kvb/io/kvdump.h"
#include "kvb/metrics/metrics.h"
#include "kvb/run/device_api.h"
#include "kvb/run/environment.h"
#include "kvb/run/results_io.h"
#include "kvb/run/timing.h"

namespace kvb {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

/// Tolerance of the ref_out self-check (kvbench.md §3.1): per-query ‖o_kvbench − ref_out‖/‖ref_out‖.
/// A recorder that computed attention in float32 agrees to ~1e-6; one that ran the model in 16-bit
/// (HF bf16/fp16 attention, softmax in reduced precision) to ~1e-2. Scale, RoPE or GQA-mapping bugs
/// give errors of order 1, so these bounds separate "same math" from "different math" with margin.
double ref_out_tolerance(const std::string& orig_dtype) { return orig_dtype == "float32" ? 1e-3 : 3e-2; }

/// Per-query metric names in results order (kendall only when configured).
const std::vector<std::string> kMetricNames = {"cosine", "rel_l2", "spearman", "kendall", "topk_recall",
                                               "kl", "score_rel_err", "mass_lost", "l2_err"};

struct StorageAcc {
  // Means over the evaluated (sequence, layer) pairs, per KV head.
  double bytes_per_token = 0, buffer_bytes = 0, fixed_bytes = 0, bits_with_fixed = 0;
  double bits_k = 0, bits_v = 0;
  bool split_known = true;  ///< every compressed item is named "k.*" or "v.*"
  bool nominal_used = false;
  int64_t n = 0;
  Json items;  ///< breakdown of the first evaluated (sequence, layer)
};

struct Cell {
  size_t dataset = 0;
  size_t index = 0;     ///< position in the full expansion (cells/<index>.json, --shard)
  size_t spec_idx = 0;  ///< the codecs[] entry it came from (one batch per entry and dataset)
  bool selected = true;  ///< in this run's shard
  Json record = nullptr;  ///< the finished results.json record (computed or resumed)
  const CodecEntry* entry = nullptr;
  const CodecSpec* spec = nullptr;
  std::optional<Budget> budget;
  double bits_target = std::nan("");
  double candidate_bits = std::nan("");
  Json params;
  std::string label;
  std::string status = "ok";
  std::string reason;
  std::string device = "cpu";
  std::unique_ptr<Codec> codec;
  std::unique_ptr<EncodedLayer> prev;  ///< previous layer of the current sequence (cross-layer codecs)
  // Per-query metrics, tagged by layer.
  std::map<std::string, std::vector<double>> values;
  std::map<int, std::map<std::string, std::vector<double>>> per_layer;
  std::map<int, StorageAcc> per_layer_storage;
  std::map<std::string, std::string> not_applicable;  ///< metric -> reason
  StorageAcc storage;
  Json throughput = nullptr;
  Json calibration = nullptr;
};

struct DatasetRun {
  const DatasetSpec* spec = nullptr;
  std::unique_ptr<KvDumpReader> reader;
  std::vector<size_t> eval_seqs;
  std::vector<size_t> calib_seqs;
  std::vector<int> layers;
  double ref_max_err = 0;
  std::vector<double> ref_errs;
  bool ref_checked = false;
  int64_t ref_skipped_sliding = 0;
  Json reference_throughput = nullptr;       ///< exact fp16 attention on the CPU
  Json reference_throughput_cuda = nullptr;  ///< and on the GPU, when cells of this dataset ran there
  Json record = nullptr;  ///< {ref_out_check, reference_throughput[, reference_throughput_cuda]} once computed (or resumed)
};

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) return fmt::format("{:.0f}s", s);
  return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60.0));
}

class Progress {
 public:
  Progress(bool on, int64_t total) : on_(on), total_(std::max<int64_t>(total, 1)), start_(Clock::now()) {}
  void step(const std::string& what) {
    ++done_;
    if (!on_) return;
    const double el = std::chrono::duration<double>(Clock::now() - start_).count();
    const double eta = done_ > 0 ? el / done_ * (total_ - done_) : NAN;
    std::fprintf(stderr, "\r\033[K[%lld/%lld] %s  elapsed %s  ETA %s", static_cast<long long>(done_),
                 static_cast<long long>(total_), what.c_str(), fmt_duration(el).c_str(), fmt_duration(eta).c_str());
    std::fflush(stderr);
  }
  void finish() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  int64_t total_, done_ = 0;
  Clock::time_point start_;
};

Json aggregate_json(const std::vector<double>& v) {
  const auto a = metrics::aggregate(v);
  return Json{{"mean", a.mean}, {"median", a.median}, {"p05", a.p05}, {"p95", a.p95},
              {"min", a.min},   {"max", a.max},       {"count", a.count}};
}

bool all_finite(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

/// Measured storage of one encoded layer, per KV head (kvbench.md §5).
void account_storage(const Storage& st, int64_t C, int head_dim, StorageAcc& acc, bool keep_items) {
  KVB_ASSERT(st.kv_heads > 0);
  const double H = st.kv_heads;
  double bpt = 0, bk = 0, bv = 0, buffer = 0, fixed = 0;
  bool missing_region = false, split = true;
  Json items = Json::array();
  for (const auto& it : st.items) {
    const double per_head = static_cast<double>(it.bytes) / H;
    const char* kind = it.kind == StorageKind::kCompressed ? "compressed"
                       : it.kind == StorageKind::kBuffer   ? "buffer"
                                                           : "fixed";
    if (keep_items)
      items.push_back({{"name", it.name}, {"kind", kind}, {"bytes_per_kv_head", per_head}, {"tokens", it.tokens}});
    switch (it.kind) {
      case StorageKind::kCompressed: {
        if (it.tokens <= 0) {
          missing_region = true;
          break;
        }
        const double b = per_head / static_cast<double>(it.tokens);
        bpt += b;
        if (it.name.rfind("k.", 0) == 0) bk += b;
        else if (it.name.rfind("v.", 0) == 0) bv += b;
        else split = false;
        break;
      }
      case StorageKind::kBuffer: buffer += per_head; break;
      case StorageKind::kFixed: fixed += per_head; break;
    }
  }
  if (missing_region) {
    // No token reached some compressed region (e.g. C shorter than a fp16 window): the steady-state
    // per-token cost cannot be measured from this layer, so the codec's own formula stands in.
    bpt = st.nominal_bytes_per_token;
    split = false;
    acc.nominal_used = true;
  }
  const double n = static_cast<double>(acc.n);
  auto upd = [&](double& mean, double x) { mean = (mean * n + x) / (n + 1); };
  upd(acc.bytes_per_token, bpt);
  upd(acc.buffer_bytes, buffer);
  upd(acc.fixed_bytes, fixed);
  upd(acc.bits_with_fixed, 8.0 * (static_cast<double>(C) * bpt + buffer + fixed) / (static_cast<double>(C) * 2.0 * head_dim));
  upd(acc.bits_k, 8.0 * bk / head_dim);
  upd(acc.bits_v, 8.0 * bv / head_dim);
  acc.split_known = acc.split_known && split;
  acc.n += 1;
  if (keep_items && acc.items.is_null()) acc.items = items;
}

Json storage_json(const StorageAcc& s, int head_dim) {
  const double bits = 8.0 * s.bytes_per_token / (2.0 * head_dim);
  Json j{{"bytes_per_token", s.bytes_per_token},
         {"buffer_bytes", s.buffer_bytes},
         {"fixed_bytes", s.fixed_bytes},
         {"bits_per_element", bits},
         {"bits_per_element_with_fixed", s.bits_with_fixed},
         {"compression_ratio", s.bits_with_fixed > 0 ? 16.0 / s.bits_with_fixed : 0.0},
         {"source", s.nominal_used ? "nominal: no token reached a compressed region in some layer" : "measured"}};
  if (s.split_known) {
    j["bits_per_element_k"] = s.bits_k;
    j["bits_per_element_v"] = s.bits_v;
  }
  if (!s.items.is_null()) j["items"] = s.items;
  return j;
}

/// Everything needed to evaluate one (sequence, layer): the cache, the queries and the exact reference.
struct LayerData {
  int layer = 0;
  LayerKV kv;
  LayerQueries q;
  std::vector<std::pair<int, int64_t>> pairs;  ///< (query head, query index)
  std::vector<double> s, p, o;                  ///< exact [pairs, C], [pairs, C], [pairs, d]
};

void compute_exact(LayerData& L, const ModelShape& shape, const AttnConfig& attn) {
  const int64_t C = L.kv.tokens;
  const int d = shape.head_dim;
  const int64_t P = static_cast<int64_t>(L.pairs.size());
  L.s.assign(static_cast<size_t>(P * C), 0.0);
  L.p.assign(static_cast<size_t>(P * C), 0.0);
  L.o.assign(static_cast<size_t>(P * d), 0.0);
  // Pairs are (query head, query) in head-major order, so each head's queries are one contiguous batch:
  // the tiled float64 kernels compute exactly exact_attention_f64's numbers (tests/io/test_attn_batch.cpp).
  const int64_t nq = L.q.n;
  KVB_ASSERT(P == static_cast<int64_t>(shape.n_heads) * nq);
#pragma omp parallel for schedule(dynamic, 1)
  for (int h = 0; h < shape.n_heads; ++h) {
    const int g = h / shape.group();
    const size_t row = static_cast<size_t>(h) * nq;
    exact_logits_batch_f64(L.kv.k_head(g), C, d, L.q.query(h, 0), nq, attn.softmax_scale, attn.softcap,
                           &L.s[row * C]);
    exact_attention_batch_f64(L.kv.k_head(g), L.kv.v_head(g), C, d, L.q.query(h, 0), nq, attn.softmax_scale,
                              attn.softcap, &L.o[row * d], &L.p[row * C]);
  }
}

/// Evaluate one encoded layer on every (head, query) pair of the layer; returns false (with a reason)
/// when the codec produced a non-finite value.
bool evaluate_layer(const EncodedLayer& enc, const LayerData& L, const ModelShape& shape, int64_t topk, bool kendall,
                    Cell& cell, std::string* why) {
  const int64_t C = L.kv.tokens;
  const int d = shape.head_dim;
  const int64_t P = static_cast<int64_t>(L.pairs.size());
  std::vector<metrics::QueryMetrics> out(static_cast<size_t>(P));
  std::vector<uint8_t> bad(static_cast<size_t>(P), 0);
  std::vector<uint8_t> has_scores(static_cast<size_t>(P), 0);
  std::string first_error;
  // held_tokens is per KV head and may be costly; fetch once per head.
  std::vector<std::vector<uint8_t>> held(static_cast<size_t>(shape.n_kv_heads));
  for (int g = 0; g < shape.n_kv_heads; ++g) held[g] = enc.held_tokens(g);
#pragma omp parallel
  {
    Scratch scratch;
    std::vector<float> sf(static_cast<size_t>(C)), of(static_cast<size_t>(d));
    std::vector<double> sd(static_cast<size_t>(C)), od(static_cast<size_t>(d));
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < P; ++i) {
      const auto [h, qi] = L.pairs[i];
      const int g = h / shape.group();
      const float* q = L.q.query(h, qi);
      // No exception may leave an OpenMP region: codec failures are recorded per pair and rethrown below.
      bool hs = false;
      try {
        hs = enc.scores(g, q, sf.data(), scratch);
        enc.attend(g, q, of.data(), scratch);
      } catch (const std::exception& e) {
#pragma omp critical(kvb_eval_error)
        if (first_error.empty()) first_error = e.what();
        bad[i] = 2;
        continue;
      }
      if (!all_finite(of.data(), of.size()) || (hs && !all_finite(sf.data(), sf.size()))) {
        bad[i] = 1;
        continue;
      }
      for (int64_t t = 0; t < C; ++t) sd[t] = sf[t];
      for (int j = 0; j < d; ++j) od[j] = of[j];
      metrics::QueryInput in;
      in.C = C;
      in.d = d;
      in.s = &L.s[i * C];
      in.p = &L.p[i * C];
      in.o = &L.o[i * d];
      in.s_hat = hs ? sd.data() : nullptr;
      in.o_hat = od.data();
      in.held = held[g].empty() ? nullptr : held[g].data();
      in.topk = topk;
      in.want_kendall = kendall;
      out[i] = metrics::evaluate_query(in);
      has_scores[i] = hs;
    }
  }
  if (!first_error.empty()) throw RuntimeError(first_error);
  for (int64_t i = 0; i < P; ++i) {
    if (bad[i]) {
      *why = fmt::format("codec produced a non-finite logit or output at layer {}, query head {}, query {}", L.layer,
                         L.pairs[i].first, L.pairs[i].second);
      return false;
    }
  }
  auto& layer_vals = cell.per_layer[L.layer];
  auto push = [&](const std::string& name, double v) {
    cell.values[name].push_back(v);
    layer_vals[name].push_back(v);
  };
  for (int64_t i = 0; i < P; ++i) {
    const auto& m = out[i];
    push("cosine", m.cosine);
    push("rel_l2", m.rel_l2);
    push("l2_err", m.l2_err);
    if (m.spearman) push("spearman", *m.spearman);
    if (m.kendall) push("kendall", *m.kendall);
    if (m.topk_recall) push("topk_recall", *m.topk_recall);
    if (m.kl) push("kl", *m.kl);
    if (m.score_rel_err) push("score_rel_err", *m.score_rel_err);
    if (m.mass_lost) push("mass_lost", *m.mass_lost);
    if (has_scores[i] && !m.spearman) cell.not_applicable.emplace("spearman_undefined_queries", "some queries had constant exact or approximate logits; Spearman is undefined there and those queries are left out");
  }
  return true;
}

/// Time encode and attend of one cell on one layer (kvbench.md §5 throughput).
Json measure_throughput(const Codec& codec, const LayerData& L, const CodecContext& ctx, const Config& cfg,
                        const EncodedLayer& enc, const StorageAcc& layer_storage) {
  const ModelShape& shape = ctx.shape;
  const int64_t C = L.kv.tokens;
  const int64_t P = static_cast<int64_t>(L.pairs.size());
  const int G = shape.group();
  const int64_t n_groups = static_cast<int64_t>(shape.n_kv_heads) * L.q.n;
  const double tokens = static_cast<double>(C) * shape.n_kv_heads;
  // Bytes one GQA group scans per call: its KV head's compressed tokens plus its verbatim buffers.
  const double bytes_per_group = static_cast<double>(C) * layer_storage.bytes_per_token + layer_storage.buffer_bytes;
  auto rate = [](double n, double t) { return t > 0 ? n / t : 0.0; };
  auto record = [&](double enc_med, double enc_p95, int enc_n, double att_med, double att_p95, int att_n,
                    const std::string& note) {
    return Json{{"encode_tokens_per_s", {{"median", rate(tokens, enc_med)}, {"p95", rate(tokens, enc_p95)}}},
                {"attend_queries_per_s",
                 {{"median", rate(static_cast<double>(P), att_med)}, {"p95", rate(static_cast<double>(P), att_p95)}}},
                {"attend_bytes_per_s",
                 {{"median", rate(static_cast<double>(n_groups) * bytes_per_group, att_med)},
                  {"p95", rate(static_cast<double>(n_groups) * bytes_per_group, att_p95)}}},
                {"encode_samples", enc_n},
                {"attend_samples", att_n},
                {"layer", L.layer},
                {"context_len", C},
                {"queries", P},
                {"gqa_group", G},
                {"note", note}};
  };
  // Device-resident layers time themselves with CUDA events, the data already on the GPU.
  DeviceTimes dt;
  if (enc.device_timing(L.kv, L.q, cfg.repeats, cfg.min_time_s, &dt)) {
    Json j = record(dt.encode_median_s, dt.encode_p95_s, dt.encode_samples, dt.attend_median_s, dt.attend_p95_s,
                    dt.attend_samples,
                    "median and p95 over timed repeats; CUDA events on " + dt.device +
                        "; encode of the layer's cache already on the device; one launch attends every query of every "
                        "query head (split-context kernel); bytes count each KV head's compressed cache once per GQA group");
    j["device_name"] = dt.device;
    return j;
  }
  const Timing te = time_call([&] { auto e = codec.encode(L.layer, L.kv, nullptr, ctx); }, cfg.repeats, cfg.min_time_s);
  // A decode step attends the G query heads of a GQA group against their shared KV head at once
  // (attend_many), so a codec reads and unpacks its compressed rows once per group, as a serving
  // kernel does. Work items are (KV head, query index) groups.
  const Timing ta = time_call(
      [&] {
#pragma omp parallel
        {
          Scratch scratch;
          std::vector<float> of(static_cast<size_t>(G) * shape.head_dim);
          std::vector<const float*> qs(static_cast<size_t>(G));
          std::vector<float*> outs(static_cast<size_t>(G));
          for (int j = 0; j < G; ++j) outs[j] = of.data() + static_cast<size_t>(j) * shape.head_dim;
#pragma omp for schedule(dynamic, 2)
          for (int64_t w = 0; w < n_groups; ++w) {
            const int g = static_cast<int>(w / L.q.n);
            const int64_t qi = w % L.q.n;
            for (int j = 0; j < G; ++j) qs[j] = L.q.query(g * G + j, qi);
            enc.attend_many(g, qs.data(), G, outs.data(), scratch);
          }
        }
      },
      cfg.repeats, cfg.min_time_s);
  return record(te.median_s, te.p95_s, te.samples, ta.median_s, ta.p95_s, ta.samples,
                "median and p95 over timed repeats (p95 of rates is the slow tail); host clock, CPU; each call attends "
                "the G query heads of a KV head together (attend_many); bytes count each KV head's compressed cache "
                "once per group");
}

/// Runs one step of a cell. A codec's own failure becomes the cell's status ("skipped" when it cannot
/// run this configuration, "error" otherwise) and the sweep goes on; config and data errors abort the
/// run, since they make every cell meaningless.
template <class F>
void guarded(Cell& c, const std::string& where, F&& f) {
  try {
    f();
  } catch (const Unsupported& e) {
    c.status = "skipped";
    c.reason = e.what();
  } catch (const UsageError&) {
    throw;
  } catch (const DataError&) {
    throw;
  } catch (const std::bad_alloc&) {
    c.status = "error";
    c.reason = where + ": out of memory";
  } catch (const std::exception& e) {
    c.status = "error";
    c.reason = where + ": " + e.what();
  }
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

std::string run_key(const Config& cfg) {
  Json r = cfg.resolved();
  for (const char* k : {"output", "device", "threads"}) r.erase(k);
  const Json b = build_info_json();
  return fmt::format("{:016x}", fnv1a(r.dump() + "\n" + b["git_sha"].get<std::string>()));
}

namespace {

/// The results.json record of one finished cell (also persisted as cells/<index>.json).
Json cell_record(Cell& c, const DatasetRun& D, const Config& cfg) {
  const ModelShape& shape = D.reader->attrs().shape;
  Json j;
  j["dataset"] = D.spec->path_as_given;
  j["codec"] = c.entry->info.name;
  j["label"] = c.label;
  j["params"] = c.params;
  j["preset"] = c.spec->preset.empty() ? Json(nullptr) : Json(c.spec->preset);
  if (c.budget) {
    j["budget"] = {{"kind", c.budget->describe()}, {"target_bits", c.bits_target}};
    j["bits_target"] = c.bits_target;
  } else {
    j["budget"] = nullptr;
    j["bits_target"] = nullptr;
  }
  j["bits_candidate"] = std::isfinite(c.candidate_bits) ? Json(c.candidate_bits) : Json(nullptr);
  j["device"] = c.device;
  if (c.status == "ok" && c.values["cosine"].empty()) {
    c.status = "error";
    c.reason = "no query was evaluated";
  }
  j["status"] = c.status;
  j["reason"] = c.reason;
  if (c.status == "ok") {
    j["storage"] = storage_json(c.storage, shape.head_dim);
    Json fid = Json::object();
    Json na = Json::object();
    for (const auto& name : kMetricNames) {
      if (name == "kendall" && !cfg.kendall) continue;
      const auto it = c.values.find(name);
      if (it == c.values.end() || it->second.empty()) {
        fid[name] = nullptr;
        if (name == "mass_lost")
          na[name] = "the codec holds every token";
        else if (name == "spearman" || name == "kendall" || name == "topk_recall" || name == "kl" || name == "score_rel_err")
          na[name] = c.entry->info.defines_scores ? "undefined for every query (constant logits)" : "the codec defines no logits";
        continue;
      }
      fid[name] = aggregate_json(it->second);
    }
    for (const auto& [k, v] : c.not_applicable) na[k] = v;
    j["fidelity"] = fid;
    j["not_applicable"] = na;
    Json pl = Json::array();
    for (const auto& [layer, vals] : c.per_layer) {
      Json lj{{"layer", layer}};
      for (const auto& [name, v] : vals)
        if (!v.empty()) lj[name + "_mean"] = metrics::aggregate(v).mean;
      const auto sit = c.per_layer_storage.find(layer);
      if (sit != c.per_layer_storage.end()) {
        lj["bits_per_element"] = 8.0 * sit->second.bytes_per_token / (2.0 * shape.head_dim);
        lj["bits_per_element_with_fixed"] = sit->second.bits_with_fixed;
      }
      pl.push_back(lj);
    }
    j["per_layer"] = pl;
    if (!c.throughput.is_null()) {
      Json tp = c.throughput;
      // The reference row of the device the cell ran on (exact fp16 attention there).
      const char* ref_key = c.device == "cuda" ? "reference_throughput_cuda" : "reference_throughput";
      const Json ref = !D.record.is_null() ? D.record.value(ref_key, Json())
                       : c.device == "cuda" ? D.reference_throughput_cuda
                                            : D.reference_throughput;
      if (!ref.is_null()) {
        const double r = ref["attend_queries_per_s"]["median"].get<double>();
        tp["attend_speedup_vs_fp16"] = r > 0 ? tp["attend_queries_per_s"]["median"].get<double>() / r : 0.0;
      }
      j["throughput"] = tp;
    } else {
      j["throughput"] = nullptr;
    }
    j["codec_report"] = c.codec ? c.codec->report() : Json::object();
    if (!c.calibration.is_null()) j["calibration"] = c.calibration;
  }
  return j;
}

}  // namespace

RunSummary run_benchmark(const Config& cfg, const RunOptions& opts) {
  const auto t_start = Clock::now();
  const std::string started_utc = utc_now_iso8601();
  RunSummary summary;

  // ---- device and threads ----
  const std::string device_req = opts.device.empty() ? cfg.device : opts.device;
  if (device_req != "cpu" && device_req != "cuda" && device_req != "auto")
    throw UsageError(fmt::format("--device: expected one of: cpu, cuda, auto; found \"{}\"", device_req));
  std::string cuda_err;
  const int n_gpus = cuda::device_count(&cuda_err);
  std::string device_note;
  if (device_req == "cuda" && n_gpus == 0)
    throw RuntimeError(fmt::format("--device cuda: no usable CUDA device ({})", cuda_err));
  if (device_req == "auto")
    device_note = n_gpus > 0 ? "auto: a CUDA device is present; codecs with a CUDA backend run there, the rest on the CPU"
                             : fmt::format("auto: no usable CUDA device ({}); running on the CPU", cuda_err);
  // cuda, or auto with a usable device: codecs with a CUDA backend run on the GPU (the rest on the CPU).
  const bool use_gpu = n_gpus > 0 && device_req != "cpu";
  const int threads_req = opts.threads >= 0 ? opts.threads : cfg.threads;
  const int threads = threads_req > 0 ? threads_req : omp_get_num_procs();
  omp_set_num_threads(threads);

  // ---- open every dataset (validates its schema) ----
  std::vector<DatasetRun> dsr(cfg.datasets.size());
  for (size_t di = 0; di < cfg.datasets.size(); ++di) {
    auto& D = dsr[di];
    D.spec = &cfg.datasets[di];
    D.reader = std::make_unique<KvDumpReader>(D.spec->path);
    const auto& seqs = D.reader->sequences();
    const auto& at = D.reader->attrs();
    std::vector<size_t> chosen;
    if (D.spec->sequences.empty()) {
      for (size_t i = 0; i < seqs.size(); ++i) chosen.push_back(i);
    } else {
      for (const auto& id : D.spec->sequences) {
        size_t found = seqs.size();
        for (size_t i = 0; i < seqs.size(); ++i)
          if (seqs[i].id == id) found = i;
        if (found == seqs.size()) {
          std::string ids;
          for (const auto& s : seqs) ids += (ids.empty() ? "" : ", ") + s.id;
          throw UsageError(fmt::format("datasets[{}].sequences: {} has no sequence \"{}\"; it has: {}", di, D.spec->path, id, ids));
        }
        chosen.push_back(found);
      }
    }
    int ncal = cfg.calibration_sequences;
    if (ncal < 0) ncal = chosen.size() >= 2 ? 1 : 0;
    if (ncal > 0 && static_cast<size_t>(ncal) >= chosen.size())
      throw UsageError(fmt::format("calibration.sequences: {} leaves no sequence of {} to evaluate (it selects {})", ncal,
                                   D.spec->path, chosen.size()));
    D.calib_seqs.assign(chosen.begin(), chosen.begin() + ncal);
    D.eval_seqs.assign(chosen.begin() + ncal, chosen.end());
    if (D.spec->layers.empty()) {
      for (int l = 0; l < at.shape.n_layers; ++l) D.layers.push_back(l);
    } else {
      for (int l : D.spec->layers) {
        if (l >= at.shape.n_layers)
          throw UsageError(fmt::format("datasets[{}].layers: layer {} does not exist in {} (n_layers = {})", di, l,
                                       D.spec->path, at.shape.n_layers));
        D.layers.push_back(l);
      }
    }
    for (size_t si : D.eval_seqs) {
      for (int l : D.layers) {
        const auto& s = seqs[si];
        const int64_t w = s.sliding_window.empty() ? 0 : s.sliding_window[l];
        const int64_t C = (w > 0 && w < s.context_len) ? w : s.context_len;
        if (cfg.topk > C)
          throw UsageError(fmt::format("metrics.topk: {} exceeds the {} cached tokens of sequence \"{}\" layer {} in {} "
                                       "(top-k recall needs k <= C); set metrics.topk <= {}",
                                       cfg.topk, C, s.id, l, D.spec->path, C));
      }
    }
  }

  // ---- expand cells ----
  std::vector<Cell> cells;
  for (size_t di = 0; di < dsr.size(); ++di) {
    const ModelShape& shape = dsr[di].reader->attrs().shape;
    for (size_t ci = 0; ci < cfg.codecs.size(); ++ci) {
      const auto& spec = cfg.codecs[ci];
      const CodecEntry& entry = registry().at(spec.codec);
      auto add_cell = [&](std::optional<Budget> budget) {
        Cell c;
        c.dataset = di;
        c.spec_idx = ci;
        c.index = cells.size();
        c.entry = &entry;
        c.spec = &spec;
        c.budget = budget;
        try {
          if (budget) {
            c.bits_target = budget->target_bits(shape.head_dim);
            auto r = resolve_budget(entry, c.bits_target, spec.params, shape.head_dim, spec.where + ".params");
            if (!r.ok) {
              c.status = "skipped";
              c.reason = r.reason;
              c.params = spec.params;
              c.label = entry.info.name;
            } else {
              c.params = r.params;
              c.candidate_bits = r.candidate_bits;
            }
          } else if (!spec.preset.empty()) {
            c.params = resolve_preset(entry, spec.preset, spec.params, spec.where);
          } else {
            c.params = resolve_params(entry.info.params, spec.params, spec.where + ".params");
          }
          if (c.status == "ok") {
            c.label = entry.label(c.params);
            const bool on_gpu = use_gpu && static_cast<bool>(entry.make_cuda);
            c.codec = on_gpu ? entry.make_cuda(c.params, shape) : entry.make_cpu(c.params, shape);
            c.device = on_gpu ? "cuda" : "cpu";
          }
        } catch (const Unsupported& e) {
          c.status = "skipped";
          c.reason = e.what();
          if (c.label.empty()) c.label = entry.info.name;
        }
        if (c.status == "ok") {
          const bool has_cuda = std::find(entry.info.backends.begin(), entry.info.backends.end(), "cuda") !=
                                entry.info.backends.end();
          if (device_req == "cuda" && !has_cuda) {
            c.status = "skipped";
            c.reason = fmt::format("--device cuda: codec \"{}\" has no CUDA implementation yet (backends: cpu)", entry.info.name);
            c.codec.reset();
          }
        }
        cells.push_back(std::move(c));
      };
      if (spec.budgets.empty()) {
        add_cell(std::nullopt);
      } else {
        for (const auto& b : spec.budgets) add_cell(b);
      }
    }
  }
  // ---- shard, run key, resume ----
  const std::string out_dir = opts.output_dir.empty() ? (fs::path("results") / cfg.name).string() : opts.output_dir;
  const fs::path cells_dir = fs::path(out_dir) / "cells", datasets_dir = fs::path(out_dir) / "datasets";
  {
    std::error_code ec;
    fs::create_directories(cells_dir, ec);
    if (!ec) fs::create_directories(datasets_dir, ec);
    if (ec) throw RuntimeError(fmt::format("{}: cannot create the results directory: {}", out_dir, ec.message()));
  }
  const std::string key = run_key(cfg);
  const bool sharded = opts.shard_n > 0;
  for (auto& c : cells) c.selected = !sharded || static_cast<int>(c.index % opts.shard_n) == opts.shard_k - 1;
  // A record file is reused only when it parses and carries this run's key (same resolved config and build).
  auto load_record = [&](const fs::path& p) -> Json {
    const auto text = read_file(p.string());  // nullopt when absent
    if (!text) return nullptr;
    const Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    return j.is_object() && j.value("run_key", std::string()) == key ? j : Json(nullptr);
  };
  int resumed = 0;
  if (opts.resume) {
    for (auto& c : cells) {
      if (!c.selected) continue;
      Json j = load_record(cells_dir / fmt::format("{}.json", c.index));
      if (j.is_null() || !j.contains("cell")) continue;
      c.record = j["cell"];
      c.codec.reset();
      ++resumed;
    }
    for (size_t di = 0; di < dsr.size(); ++di) {
      Json j = load_record(datasets_dir / fmt::format("{}.json", di));
      if (!j.is_null() && j.contains("dataset")) dsr[di].record = j["dataset"];
    }
    std::fprintf(stderr, "kvbench run: resumed %d cells from %s\n", resumed, cells_dir.string().c_str());
  }

  // ---- batches: the pending cells of one codecs[] entry on one dataset ----
  // Each batch streams the dataset's (sequence, layer) pairs on its own, so its cells are finished (and
  // persisted) as soon as the batch ends. The data is re-read and the exact reference recomputed per batch:
  // that costs a few extra reads and float64 attentions, which is acceptable next to the codecs' own work,
  // and keeps every cell's numbers identical to a single pass (cells never depend on each other).
  struct Batch {
    size_t dataset = 0;
    std::vector<Cell*> cells;
    bool streams = false;  ///< evaluates data (has an ok cell or must compute the dataset record)
  };
  std::vector<Batch> batches;
  for (size_t di = 0; di < dsr.size(); ++di) {
    bool need_dataset = dsr[di].record.is_null();
    for (size_t ci = 0; ci < cfg.codecs.size(); ++ci) {
      Batch b;
      b.dataset = di;
      for (auto& c : cells)
        if (c.dataset == di && c.spec_idx == ci && c.selected && c.record.is_null()) b.cells.push_back(&c);
      if (b.cells.empty()) continue;
      for (Cell* c : b.cells) b.streams = b.streams || c->status == "ok";
      if (need_dataset) b.streams = true;
      need_dataset = false;
      batches.push_back(std::move(b));
    }
    if (need_dataset) batches.push_back(Batch{di, {}, true});
  }
  int64_t steps = 0;
  for (const auto& b : batches)
    if (b.streams) steps += static_cast<int64_t>(dsr[b.dataset].eval_seqs.size() * dsr[b.dataset].layers.size());
  Progress progress(opts.progress, steps);

  auto evaluate_batch = [&](Batch& batch) {
    const size_t di = batch.dataset;
    auto& D = dsr[di];
    const bool dataset_pass = D.record.is_null();  // this pass computes the ref_out check and fp16 reference
    const auto& at = D.reader->attrs();
    const ModelShape shape = at.shape;
    AttnConfig attn;
    attn.softmax_scale = static_cast<float>(at.softmax_scale);
    attn.softcap = static_cast<float>(at.attn_softcap);
    const auto& seqs = D.reader->sequences();
    auto ctx_for = [&](const Cell& c) {
      CodecContext ctx;
      ctx.shape = shape;
      ctx.attn = attn;
      ctx.seed = derive_seed(cfg.seed, {fnv1a(c.label)});
      return ctx;
    };

    // Calibration: trainable codecs fit each layer on the calibration sequences only.
    bool any_trainable = false;
    for (Cell* c : batch.cells)
      if (c->status == "ok" && c->entry->info.trainable) any_trainable = true;
    if (any_trainable) {
      const bool overlap = D.calib_seqs.empty();
      const std::vector<size_t>& fit_seqs = overlap ? D.eval_seqs : D.calib_seqs;
      for (int l : D.layers) {
        std::vector<LayerKV> calib;
        for (size_t si : fit_seqs) calib.push_back(D.reader->read_kv(si, l, 0, seqs[si].context_len));
        std::vector<const LayerKV*> ptrs;
        for (auto& kv : calib) ptrs.push_back(&kv);
        for (Cell* c : batch.cells) {
          if (c->status != "ok" || !c->entry->info.trainable) continue;
          guarded(*c, fmt::format("fit of layer {}", l), [&] { c->codec->fit(l, ptrs, ctx_for(*c)); });
        }
      }
      Json ids = Json::array();
      for (size_t si : fit_seqs) ids.push_back(seqs[si].id);
      for (Cell* c : batch.cells)
        if (c->entry->info.trainable)
          c->calibration = {{"sequences", ids},
                            {"overlaps_evaluation", overlap},
                            {"note", overlap ? "the dataset has a single selected sequence: this codec was fitted on "
                                               "its own evaluation data"
                                             : "fitted on sequences that are never evaluated"}};
    }

    bool first_layer = true;
    for (size_t si : D.eval_seqs) {
      const auto& S = seqs[si];
      for (Cell* c : batch.cells) c->prev.reset();
      for (int l : D.layers) {
        LayerData L;
        L.layer = l;
        const int64_t w = S.sliding_window.empty() ? 0 : S.sliding_window[l];
        const bool sliding = w > 0 && w < S.context_len;
        // Sliding-window layers: the cache is the last `w` context tokens (what the first decode query sees).
        const int64_t t0 = sliding ? S.context_len - w : 0;
        L.kv = D.reader->read_kv(si, l, t0, S.context_len);
        L.q = D.reader->read_queries(si, l, D.spec->max_queries);
        for (int h = 0; h < shape.n_heads; ++h)
          for (int64_t i = 0; i < L.q.n; ++i) L.pairs.emplace_back(h, i);
        compute_exact(L, shape, attn);

        // ref_out self-check (skipped on sliding-window layers, where the recorder's window moves per query).
        if (dataset_pass && !L.q.ref_out.empty()) {
          if (sliding) {
            D.ref_skipped_sliding += 1;
          } else {
            D.ref_checked = true;
            const double tol = ref_out_tolerance(at.orig_dtype);
            for (size_t i = 0; i < L.pairs.size(); ++i) {
              const auto [h, qi] = L.pairs[i];
              const float* r = L.q.ref(h, qi);
              std::vector<double> rd(r, r + shape.head_dim);
              const double err = metrics::rel_l2(&L.o[i * shape.head_dim], rd.data(), shape.head_dim);
              D.ref_errs.push_back(err);
              D.ref_max_err = std::max(D.ref_max_err, err);
              if (err > tol)
                throw DataError(fmt::format(
                    "{}: /sequences/{}/layers/{}/ref_out: kvbench's exact attention differs from the recorded ref_out "
                    "by rel_l2 {:.3g} (> {:.3g}) at query head {}, query {}: check softmax_scale, rope_applied/rope_style "
                    "and the GQA mapping (query head h reads KV head h / (n_heads / n_kv_heads))",
                    D.spec->path, S.id, l, err, tol, h, qi));
            }
          }
        }

        for (Cell* cp : batch.cells) {
          Cell& c = *cp;
          if (c.status != "ok") continue;
          const CodecContext ctx = ctx_for(c);
          guarded(c, fmt::format("layer {}", l), [&] {
            auto enc = c.codec->encode(l, L.kv, c.prev.get(), ctx);
            const Storage st = enc->storage();
            StorageAcc layer_acc;
            account_storage(st, L.kv.tokens, shape.head_dim, layer_acc, false);
            account_storage(st, L.kv.tokens, shape.head_dim, c.storage, true);
            account_storage(st, L.kv.tokens, shape.head_dim, c.per_layer_storage[l], false);
            std::string why;
            if (!evaluate_layer(*enc, L, shape, cfg.topk, cfg.kendall, c, &why)) {
              c.status = "error";
              c.reason = why;
              return;
            }
            if (first_layer && cfg.throughput) c.throughput = measure_throughput(*c.codec, L, ctx, cfg, *enc, layer_acc);
            c.prev = std::move(enc);
          });
        }
        // The exact fp16 attention on the same device is the reference row of the throughput table.
        if (dataset_pass && first_layer && cfg.throughput) {
          const CodecEntry& fp16 = registry().at("fp16");
          CodecContext ctx;
          ctx.shape = shape;
          ctx.attn = attn;
          ctx.seed = cfg.seed;
          auto reference = [&](bool gpu) {
            const Json p = resolve_params(fp16.info.params, Json::object(), "fp16");
            auto ref = gpu ? fp16.make_cuda(p, shape) : fp16.make_cpu(p, shape);
            auto enc = ref->encode(l, L.kv, nullptr, ctx);
            StorageAcc acc;
            account_storage(enc->storage(), L.kv.tokens, shape.head_dim, acc, false);
            Json t = measure_throughput(*ref, L, ctx, cfg, *enc, acc);
            t["codec"] = "fp16";
            t["device"] = gpu ? "cuda" : "cpu";
            return t;
          };
          bool any_cpu = false, any_gpu = false;
          for (const Cell* c : batch.cells) (c->device == "cuda" ? any_gpu : any_cpu) = true;
          if (any_cpu || !any_gpu) D.reference_throughput = reference(false);
          if (any_gpu && fp16.make_cuda) D.reference_throughput_cuda = reference(true);
        }
        first_layer = false;
        progress.step(fmt::format("{} seq {} layer {}", fs::path(D.spec->path).filename().string(), S.id, l));
      }
    }
    for (Cell* c : batch.cells) c->prev.reset();
    if (dataset_pass) {
      Json check;
      if (D.ref_checked) {
        check = {{"status", "passed"},
                 {"max_rel_l2", D.ref_max_err},
                 {"median_rel_l2", metrics::aggregate(D.ref_errs).median},
                 {"tolerance", ref_out_tolerance(at.orig_dtype)}};
      } else {
        check = {{"status", "not run"},
                 {"reason", D.ref_skipped_sliding > 0 ? "only sliding-window layers carry ref_out"
                                                      : "the dump has no ref_out"}};
      }
      D.record = {{"ref_out_check", check}, {"reference_throughput", D.reference_throughput}};
      if (!D.reference_throughput_cuda.is_null()) D.record["reference_throughput_cuda"] = D.reference_throughput_cuda;
      write_file_atomic((datasets_dir / fmt::format("{}.json", di)).string(),
                        Json{{"run_key", key}, {"index", di}, {"dataset", D.record}}.dump(2, ' ', false,
                                                                                         Json::error_handler_t::replace) +
                            "\n");
    }
  };

  for (auto& b : batches) {
    if (b.streams) evaluate_batch(b);
    for (Cell* c : b.cells) {
      c->record = cell_record(*c, dsr[c->dataset], cfg);
      c->codec.reset();
      write_file_atomic((cells_dir / fmt::format("{}.json", c->index)).string(),
                        Json{{"run_key", key}, {"index", c->index}, {"cell", c->record}}.dump(
                            2, ' ', false, Json::error_handler_t::replace) +
                            "\n");
    }
  }
  progress.finish();

  // ---- assemble results ----
  Json jcells = Json::array();
  Json indices = Json::array();
  int n_selected = 0;
  for (auto& c : cells) {
    if (!c.selected) continue;
    ++n_selected;
    KVB_ASSERT(!c.record.is_null());
    const std::string st = c.record.value("status", std::string());
    if (st == "ok") ++summary.ok;
    else if (st == "skipped") ++summary.skipped;
    else ++summary.errors;
    jcells.push_back(c.record);
    indices.push_back(c.index);
  }
  summary.cells = n_selected;
  Json doc;
  doc["schema_version"] = kResultsSchemaVersion;
  doc["kvbench"] = build_info_json();
  const double seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  doc["run"] = {{"name", cfg.name},
                {"config_path", cfg.path},
                {"started_utc", started_utc},
                {"duration_s", seconds},
                {"argv", opts.argv},
                {"device_requested", device_req},
                {"device_note", device_note},
                {"threads", threads},
                {"seed", cfg.seed},
                {"run_key", key},
                {"cells_total", cells.size()},
                {"cell_indices", indices},
                {"resumed_cells", resumed}};
  if (sharded) doc["run"]["shard"] = {{"k", opts.shard_k}, {"n", opts.shard_n}};
  doc["config"] = cfg.resolved();
  doc["environment"] = environment_json(threads);
  Json datasets = Json::array();
  for (const auto& D : dsr) {
    const auto& at = D.reader->attrs();
    Json dj{{"path", D.spec->path},
            {"model", at.model},
            {"model_revision", at.model_revision},
            {"source", at.source},
            {"dtype", to_string(D.reader->dtype())},
            {"orig_dtype", at.orig_dtype},
            {"checksum_fnv1a64", D.reader->checksum()},
            {"shape",
             {{"n_layers", at.shape.n_layers},
              {"n_heads", at.shape.n_heads},
              {"n_kv_heads", at.shape.n_kv_heads},
              {"head_dim", at.shape.head_dim}}},
            {"rope_style", at.rope_style},
            {"softmax_scale", at.softmax_scale},
            {"attn_softcap", at.attn_softcap},
            {"layers", D.layers}};
    Json ev = Json::array(), cal = Json::array();
    for (size_t si : D.eval_seqs) {
      const auto& s = D.reader->sequences()[si];
      ev.push_back({{"id", s.id}, {"context_len", s.context_len}, {"n_tokens", s.n_tokens}, {"queries", s.n_queries},
                    {"queries_used", D.spec->max_queries > 0 ? std::min<int64_t>(D.spec->max_queries, s.n_queries) : s.n_queries}});
    }
    for (size_t si : D.calib_seqs) cal.push_back(D.reader->sequences()[si].id);
    dj["evaluated_sequences"] = ev;
    dj["calibration_sequences"] = cal;
    KVB_ASSERT(!D.record.is_null());
    dj["ref_out_check"] = D.record["ref_out_check"];
    dj["reference_throughput"] = D.record["reference_throughput"];
    if (D.record.contains("reference_throughput_cuda")) dj["reference_throughput_cuda"] = D.record["reference_throughput_cuda"];
    datasets.push_back(dj);
  }
  doc["datasets"] = datasets;
  doc["metrics"] = metrics_json();

  doc["cells"] = jcells;
  doc["summary"] = {{"cells", summary.cells}, {"ok", summary.ok}, {"skipped", summary.skipped}, {"errors", summary.errors}};
  doc["run"]["duration_s"] = std::chrono::duration<double>(Clock::now() - t_start).count();

  summary.output_dir = out_dir;
  summary.resumed = resumed;
  write_results_dir(summary.output_dir, doc, results_csv(doc));
  summary.seconds = doc["run"]["duration_s"].get<double>();
  return summary;
}

}  // namespace kvb
