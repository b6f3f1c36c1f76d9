#include "kvb/run/evaluate.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <filesystem>

#include "kvb/attention/exact_batch.h"
#include "kvb/bench/roofline.h"
#include "kvb/bench/timing.h"
#include "kvb/core/error.h"
#include "kvb/core/rng.h"
#include "kvb/metrics/metrics.h"

namespace kvb::run {
namespace {

bool all_finite(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

const char* kind_name(StorageKind k) {
  return k == StorageKind::kCompressed ? "compressed" : k == StorageKind::kBuffer ? "buffer" : "fixed";
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

/// Per-pair results of one encoded layer: the metrics, and which pairs failed or had logits.
struct PairResults {
  std::vector<metrics::QueryMetrics> out;
  std::vector<uint8_t> bad;  ///< 1: non-finite output, 2: the codec threw
  std::vector<uint8_t> has_scores;
  std::string first_error;
};

PairResults score_pairs(const EncodedLayer& enc, const LayerData& L, const ModelShape& shape, int64_t topk,
                        bool kendall) {
  const int64_t C = L.kv.tokens;
  const int d = shape.head_dim;
  const int64_t P = static_cast<int64_t>(L.pairs.size());
  PairResults r{std::vector<metrics::QueryMetrics>(static_cast<size_t>(P)), std::vector<uint8_t>(static_cast<size_t>(P), 0),
                std::vector<uint8_t>(static_cast<size_t>(P), 0), {}};
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
        if (r.first_error.empty()) r.first_error = e.what();
        r.bad[i] = 2;
        continue;
      }
      if (!all_finite(of.data(), of.size()) || (hs && !all_finite(sf.data(), sf.size()))) {
        r.bad[i] = 1;
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
      r.out[i] = metrics::evaluate_query(in);
      r.has_scores[i] = hs;
    }
  }
  return r;
}

/// Evaluate one encoded layer on every (head, query) pair of the layer; returns false (with a reason)
/// when the codec produced a non-finite value.
bool evaluate_layer(const EncodedLayer& enc, const LayerData& L, const ModelShape& shape, const Config& cfg,
                    CellAccum& acc, std::string* why) {
  const PairResults r = score_pairs(enc, L, shape, cfg.topk, cfg.kendall);
  if (!r.first_error.empty()) throw RuntimeError(r.first_error);
  for (size_t i = 0; i < r.bad.size(); ++i) {
    if (r.bad[i]) {
      *why = fmt::format("codec produced a non-finite logit or output at layer {}, query head {}, query {}", L.layer,
                         L.pairs[i].first, L.pairs[i].second);
      return false;
    }
  }
  auto& layer_vals = acc.per_layer[L.layer];
  for (size_t i = 0; i < r.out.size(); ++i) {
    for (const auto& m : metrics::all_metrics()) {
      if (const auto v = m.value(r.out[i])) {
        acc.values[m.name].push_back(*v);
        layer_vals[m.name].push_back(*v);
      }
    }
    if (r.has_scores[i] && !r.out[i].spearman)
      acc.not_applicable.emplace("spearman_undefined_queries",
                                 "some queries had constant exact or approximate logits; Spearman is undefined there "
                                 "and those queries are left out");
  }
  return true;
}

ThroughputRecord throughput_record(const LayerData& L, const ModelShape& shape, const StorageAcc& layer_storage,
                                   const EncodedLayer& enc, const Timing& te, const Timing& ta, std::string note,
                                   int positions_per_call = 0) {
  const int64_t C = L.kv.tokens;
  const int64_t P = static_cast<int64_t>(L.pairs.size());
  // Calls that each scan one KV head's cache: one per (KV head, block of positions_per_call query positions); the
  // device path (positions_per_call 0) attends every query in one launch, each KV head's cache read once per group.
  const int64_t blocks = positions_per_call > 0 ? (L.q.n + positions_per_call - 1) / positions_per_call : L.q.n;
  const int64_t n_groups = static_cast<int64_t>(shape.n_kv_heads) * blocks;
  const double tokens = static_cast<double>(C) * shape.n_kv_heads;
  // Bytes one GQA group scans per call: its KV head's compressed tokens plus its verbatim buffers.
  const double bytes_per_group = static_cast<double>(C) * layer_storage.bytes_per_token + layer_storage.buffer_bytes;
  const double bytes = static_cast<double>(n_groups) * bytes_per_group;
  auto rate = [](double n, double t) { return t > 0 ? n / t : 0.0; };
  ThroughputRecord t;
  t.encode_tokens_per_s = {rate(tokens, te.median_s), rate(tokens, te.p95_s)};
  t.attend_queries_per_s = {rate(static_cast<double>(P), ta.median_s), rate(static_cast<double>(P), ta.p95_s)};
  t.attend_bytes_per_s = {rate(bytes, ta.median_s), rate(bytes, ta.p95_s)};
  t.encode_samples = te.samples;
  t.attend_samples = ta.samples;
  t.layer = L.layer;
  t.context_len = C;
  t.queries = P;
  t.gqa_group = shape.group();
  t.note = std::move(note);
  if (positions_per_call > 0) t.queries_per_call = static_cast<int64_t>(shape.group()) * std::min<int64_t>(positions_per_call, L.q.n);
  // The operation count of one call (docs/metrics.md §7): attention over the rows each KV head holds, 2·d flops
  // for q·k and 2·d for p·v per (query, row) — what exact attention over the held rows costs in fp32, the
  // arithmetic every codec here performs after decoding (codecs that score from tables or integers do other
  // work per row; the count is the dense-equivalent one for all of them, and says so).
  double rows = 0;
  for (int g = 0; g < shape.n_kv_heads; ++g) {
    const std::vector<uint8_t> held = enc.held_tokens(g);
    rows += held.empty() ? static_cast<double>(C) : static_cast<double>(std::count(held.begin(), held.end(), 1));
  }
  t.attend_bytes_per_call = bytes;
  t.attend_flops_per_call = rows * static_cast<double>(L.q.n) * shape.group() * 4.0 * shape.head_dim;
  t.attend_ops_source = "dense-equivalent: 4·head_dim fp32 operations per (query, held row)";
  return t;
}

/// Time encode and attend of one cell on one layer (docs/metrics.md §7 throughput).
ThroughputRecord measure_throughput(const Codec& codec, const LayerData& L, const CodecContext& ctx, const Config& cfg,
                                    const EncodedLayer& enc, const StorageAcc& layer_storage) {
  const ModelShape& shape = ctx.shape;
  const int G = shape.group();
  const int H = shape.n_kv_heads;
  const int64_t pos = std::max<int64_t>(1, std::min<int64_t>(cfg.positions_per_call, L.q.n));  // positions per call
  const int64_t blocks = (L.q.n + pos - 1) / pos;
  const int64_t n_calls = static_cast<int64_t>(H) * blocks;
  // Device-resident layers time themselves with CUDA events, the data already on the GPU.
  DeviceTimes dt;
  if (enc.device_timing(L.kv, L.q, cfg.repeats, cfg.min_time_s, &dt)) {
    ThroughputRecord t = throughput_record(
        L, shape, layer_storage, enc, Timing{dt.encode_median_s, dt.encode_p95_s, dt.encode_samples},
        Timing{dt.attend_median_s, dt.attend_p95_s, dt.attend_samples},
        "median and p95 over timed repeats; CUDA events on " + dt.device +
            "; encode of the layer's cache already on the device; one launch attends every query of every "
            "query head (split-context kernel); bytes count each KV head's compressed cache once per GQA group");
    t.device_name = dt.device;
    return t;
  }
  const Timing te = time_call([&] { auto e = codec.encode(L.layer, L.kv, nullptr, ctx); }, cfg.repeats, cfg.min_time_s);
  // A decode step attends the G query heads of a GQA group against their shared KV head at once
  // (attend_many), so a codec reads and unpacks its compressed rows once per group, as a serving
  // kernel does; positions_per_call > 1 adds more query positions to each call (batched decode). Work items
  // are (KV head, block of positions), KV head fastest: threads running at once attend different KV heads.
  const Timing ta = time_call(
      [&] {
#pragma omp parallel
        {
          Scratch scratch;
          const size_t nq_max = static_cast<size_t>(G) * static_cast<size_t>(pos);
          std::vector<float> of(nq_max * shape.head_dim);
          std::vector<const float*> qs(nq_max);
          std::vector<float*> outs(nq_max);
          for (size_t j = 0; j < nq_max; ++j) outs[j] = of.data() + j * shape.head_dim;
#pragma omp for schedule(dynamic, 1)
          for (int64_t w = 0; w < n_calls; ++w) {
            const int g = static_cast<int>(w % H);
            const int64_t q0 = (w / H) * pos, q1 = std::min<int64_t>(q0 + pos, L.q.n);
            int nq = 0;
            for (int64_t qi = q0; qi < q1; ++qi)
              for (int j = 0; j < G; ++j) qs[nq++] = L.q.query(g * G + j, qi);
            enc.attend_many(g, qs.data(), nq, outs.data(), scratch);
          }
        }
      },
      cfg.repeats, cfg.min_time_s);
  ThroughputRecord t = throughput_record(
      L, shape, layer_storage, enc, te, ta,
      "median and p95 over timed repeats (p95 of rates is the slow tail); host clock, CPU; each call attends the G "
      "query heads of a KV head together (attend_many) at positions_per_call query positions (queries_per_call); "
      "bytes count each KV head's compressed cache once per call",
      static_cast<int>(pos));
  // The host roofline, measured once per run before it is first needed (runs with min_time_s = 0 skip it: their
  // timings are single samples, no figure to compare).
  if (cfg.min_time_s > 0 && ta.median_s > 0) {
    const HostRoofline& R = host_roofline(cfg.threads, std::min(0.5, std::max(0.05, 0.5 * cfg.min_time_s)));
    const RooflineBound b = roofline_bound(R, *t.attend_bytes_per_call, *t.attend_flops_per_call);
    t.roofline_fraction = b.limit_s / ta.median_s;
    t.roofline_bound = b.bound;
  }
  return t;
}

/// Runs one step of a cell. A codec's own failure becomes the cell's status ("skipped" when it cannot
/// run this configuration, "error" otherwise) and the sweep goes on; config and data errors abort the
/// run, since they make every cell meaningless.

/// One batch's pass over its dataset.
class Pass {
 public:
  Pass(const Config& cfg, const DatasetPlan& D, Batch& batch, DatasetAccum* dataset)
      : cfg_(cfg), D_(D), batch_(batch), dataset_(dataset), at_(D.reader->attrs()), shape_(at_.shape) {
    attn_.softmax_scale = static_cast<float>(at_.softmax_scale);
    attn_.softcap = static_cast<float>(at_.attn_softcap);
    rope_ = RopeInfo{at_.rope_applied != 0, at_.rope_style, at_.rope_theta};
  }
  void calibrate();
  void run(const std::function<void(const std::string&)>& step);

 private:
  CodecContext ctx_for(const Cell& c) const {
    CodecContext ctx;
    ctx.shape = shape_;
    ctx.attn = attn_;
    ctx.seed = derive_seed(cfg_.seed, {run_hash(c.plan.label)});
    ctx.rope = rope_;
    return ctx;
  }
  LayerData read_layer(const SequenceInfo& S, size_t si, int l, bool* sliding) const;
  void check_ref_out(const LayerData& L, const SequenceInfo& S);
  void check_logit_range(const LayerData& L, const SequenceInfo& S) const;
  void evaluate_cell(Cell& c, const LayerData& L, bool first_layer);
  void reference_rows(const LayerData& L);

  const Config& cfg_;
  const DatasetPlan& D_;
  Batch& batch_;
  DatasetAccum* dataset_;  ///< non-null on the dataset pass
  const DumpAttrs& at_;
  const ModelShape shape_;
  AttnConfig attn_;
  RopeInfo rope_;
};

// Calibration: trainable codecs fit each layer on the calibration sequences only.
void Pass::calibrate() {
  bool any_trainable = false;
  for (Cell* c : batch_.cells)
    if (c->outcome.ok() && c->plan.entry->info.trainable) any_trainable = true;
  if (!any_trainable) return;
  const auto& seqs = D_.reader->sequences();
  const bool overlap = D_.calib_seqs.empty();
  const std::vector<size_t>& fit_seqs = overlap ? D_.eval_seqs : D_.calib_seqs;
  for (int l : D_.layers) {
    std::vector<LayerKV> calib;
    for (size_t si : fit_seqs) {
      calib.push_back(D_.reader->read_kv(si, l, 0, seqs[si].context_len));
      // The calibration prompt's own observation queries (empty when the dump has none): kvquant weights its
      // k-means by the attention-output sensitivity they give. Never the evaluated sequences' queries.
      calib.back().obs = D_.reader->read_obs(si, l, 0);
    }
    std::vector<const LayerKV*> ptrs;
    for (auto& kv : calib) ptrs.push_back(&kv);
    for (Cell* c : batch_.cells) {
      if (!c->outcome.ok() || !c->plan.entry->info.trainable) continue;
      guarded(*c, fmt::format("fit of layer {}", l), [&] { c->live.codec->fit(l, ptrs, ctx_for(*c)); });
    }
  }
  CalibrationRecord cal;
  for (size_t si : fit_seqs) cal.sequences.push_back(seqs[si].id);
  cal.overlaps_evaluation = overlap;
  cal.note = overlap ? "the dataset has a single selected sequence: this codec was fitted on its own evaluation data"
                     : "fitted on sequences that are never evaluated";
  for (Cell* c : batch_.cells)
    if (c->plan.entry->info.trainable) c->acc.calibration = cal;
}

LayerData Pass::read_layer(const SequenceInfo& S, size_t si, int l, bool* sliding) const {
  LayerData L;
  L.layer = l;
  const int64_t w = S.sliding_window.empty() ? 0 : S.sliding_window[l];
  *sliding = w > 0 && w < S.context_len;
  // Sliding-window layers: the cache is the last `w` context tokens (what the first decode query sees).
  const int64_t t0 = *sliding ? S.context_len - w : 0;
  L.kv = D_.reader->read_kv(si, l, t0, S.context_len);
  // The prompt's observation queries (docs/dump-format.md §1.2), cache-relative: what observation-window
  // codecs score the cache with at encode time. Empty when the dump has none.
  L.kv.obs = D_.reader->read_obs(si, l, t0);
  L.q = D_.reader->read_queries(si, l, D_.spec->max_queries);
  for (int h = 0; h < shape_.n_heads; ++h)
    for (int64_t i = 0; i < L.q.n; ++i) L.pairs.emplace_back(h, i);
  compute_exact(L, shape_, attn_);
  check_logit_range(L, S);
  return L;
}

void Pass::check_logit_range(const LayerData& L, const SequenceInfo& S) const {
  // Every codec scores in float32: a logit beyond float32's range becomes inf there (and NaN after the
  // softmax), which would blame every codec for the dump's softmax_scale. A data error instead.
  double worst = 0;
  bool finite = true;
  for (const double x : L.s) {
    finite = finite && std::isfinite(x);
    worst = std::max(worst, std::abs(x));
  }
  for (const double x : L.o) finite = finite && std::isfinite(x);
  if (finite && worst <= std::numeric_limits<float>::max()) return;
  throw DataError(fmt::format(
      "{}: /sequences/{}/layers/{}: the exact logits softmax_scale * q.k {} (max |logit| {:.3g}, float32 max "
      "{:.3g}) with / (attribute 'softmax_scale') = {:.6g} (expected about 1/sqrt(head_dim) = {:.6g}): every "
      "codec scores in float32, so no cell could be measured",
      D_.spec->path, S.id, L.layer, finite ? "exceed float32's range" : "are not finite", worst,
      static_cast<double>(std::numeric_limits<float>::max()), at_.softmax_scale,
      1.0 / std::sqrt(static_cast<double>(shape_.head_dim))));
}

void Pass::check_ref_out(const LayerData& L, const SequenceInfo& S) {
  dataset_->ref_checked = true;
  const double tol = ref_out_tolerance(at_.orig_dtype);
  for (size_t i = 0; i < L.pairs.size(); ++i) {
    const auto [h, qi] = L.pairs[i];
    const float* r = L.q.ref(h, qi);
    std::vector<double> rd(r, r + shape_.head_dim);
    const double err = metrics::rel_l2(&L.o[i * shape_.head_dim], rd.data(), shape_.head_dim);
    dataset_->ref_errs.push_back(err);
    dataset_->ref_max_err = std::max(dataset_->ref_max_err, err);
    if (err > tol)
      throw DataError(fmt::format(
          "{}: /sequences/{}/layers/{}/ref_out: kvbench's exact attention differs from the recorded ref_out "
          "by rel_l2 {:.3g} (> {:.3g}) at query head {}, query {}: check softmax_scale, rope_applied/rope_style "
          "and the GQA mapping (query head h reads KV head h / (n_heads / n_kv_heads))",
          D_.spec->path, S.id, L.layer, err, tol, h, qi));
  }
}

void Pass::evaluate_cell(Cell& c, const LayerData& L, bool first_layer) {
  const CodecContext ctx = ctx_for(c);
  guarded(c, fmt::format("layer {}", L.layer), [&] {
    auto enc = c.live.codec->encode(L.layer, L.kv, c.live.prev.get(), ctx);
    const Storage st = enc->storage();
    StorageAcc layer_acc;
    account_storage(st, L.kv.tokens, shape_.head_dim, layer_acc, false);
    account_storage(st, L.kv.tokens, shape_.head_dim, c.acc.storage, true);
    account_storage(st, L.kv.tokens, shape_.head_dim, c.acc.per_layer_storage[L.layer], false);
    std::string why;
    if (!evaluate_layer(*enc, L, shape_, cfg_, c.acc, &why)) {
      c.outcome.set(CellStatus::kError, why);
      return;
    }
    if (first_layer && cfg_.throughput) c.acc.throughput = measure_throughput(*c.live.codec, L, ctx, cfg_, *enc, layer_acc);
    c.live.prev = std::move(enc);
  });
}

// The exact fp16 attention on the same device is the reference row of the throughput table.
void Pass::reference_rows(const LayerData& L) {
  const CodecEntry& fp16 = registry().at("fp16");
  CodecContext ctx;
  ctx.shape = shape_;
  ctx.attn = attn_;
  ctx.seed = cfg_.seed;
  ctx.rope = rope_;
  auto reference = [&](bool gpu) {
    const Json p = resolve_params(fp16.info.params, Json::object(), "fp16");
    auto ref = gpu ? fp16.make_cuda(p, shape_) : fp16.make_cpu(p, shape_);
    auto enc = ref->encode(L.layer, L.kv, nullptr, ctx);
    StorageAcc acc;
    account_storage(enc->storage(), L.kv.tokens, shape_.head_dim, acc, false);
    ThroughputRecord t = measure_throughput(*ref, L, ctx, cfg_, *enc, acc);
    t.codec = "fp16";
    t.device = gpu ? "cuda" : "cpu";
    return t;
  };
  bool any_cpu = false, any_gpu = false;
  for (const Cell* c : batch_.cells) (c->plan.device == "cuda" ? any_gpu : any_cpu) = true;
  if (any_cpu || !any_gpu) dataset_->reference_throughput = reference(false);
  if (any_gpu && fp16.make_cuda) dataset_->reference_throughput_cuda = reference(true);
}

void Pass::run(const std::function<void(const std::string&)>& step) {
  const auto& seqs = D_.reader->sequences();
  const std::string file = std::filesystem::path(D_.spec->path).filename().string();
  bool first_layer = true;
  for (size_t si : D_.eval_seqs) {
    const auto& S = seqs[si];
    for (Cell* c : batch_.cells) c->live.prev.reset();
    for (int l : D_.layers) {
      bool sliding = false;
      const LayerData L = read_layer(S, si, l, &sliding);
      // ref_out self-check (skipped on sliding-window layers, where the recorder's window moves per query).
      if (dataset_ && !L.q.ref_out.empty()) {
        if (sliding) dataset_->ref_skipped_sliding += 1;
        else check_ref_out(L, S);
      }
      for (Cell* c : batch_.cells)
        if (c->outcome.ok()) evaluate_cell(*c, L, first_layer);
      if (dataset_ && first_layer && cfg_.throughput) reference_rows(L);
      first_layer = false;
      step(fmt::format("{} {} layer {}", file, S.id, l));
    }
  }
  for (Cell* c : batch_.cells) c->live.prev.reset();
}

}  // namespace

void account_storage(const Storage& st, int64_t C, int head_dim, StorageAcc& acc, bool keep_items) {
  KVB_ASSERT(st.kv_heads > 0);
  const double H = st.kv_heads;
  double bpt = 0, bk = 0, bv = 0, buffer = 0, fixed = 0;
  bool missing_region = false, split = true;
  std::vector<StorageItemRecord> items;
  for (const auto& it : st.items) {
    const double per_head = static_cast<double>(it.bytes) / H;
    if (keep_items) items.push_back({it.name, kind_name(it.kind), per_head, it.tokens});
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
  if (keep_items && !acc.items) acc.items = std::move(items);
}

/// A recorder that computed attention in float32 agrees to ~1e-6; one that ran the model in 16-bit
/// (HF bf16/fp16 attention, softmax in reduced precision) to ~1e-2. Scale, RoPE or GQA-mapping bugs
/// give errors of order 1, so these bounds separate "same math" from "different math" with margin.
double ref_out_tolerance(const std::string& orig_dtype) { return orig_dtype == "float32" ? 1e-3 : 3e-2; }

void evaluate_batch(const Config& cfg, const DatasetPlan& D, Batch& batch, DatasetAccum* dataset_pass,
                    const std::function<void(const std::string&)>& step) {
  Pass pass(cfg, D, batch, dataset_pass);
  pass.calibrate();
  pass.run(step);
}

}  // namespace kvb::run
