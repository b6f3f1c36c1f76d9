#include "kvb/e2e/e2e_runner.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>

#include "kvb/core/error.h"
#include "kvb/core/hash.h"
#include "kvb/core/progress.h"
#include "kvb/core/rng.h"
#include "kvb/e2e/decode.h"
#include "kvb/e2e/e2e_stats.h"
#include "kvb/e2e/e2e_table.h"
#include "kvb/e2e/text.h"
#include "kvb/report/proxy.h"
#include "kvb/report/results_io.h"
#include "kvb/run/environment.h"
#include "kvb/run/evaluate.h"
#include "kvb/run/plan.h"
#include "kvb/run/record.h"
#include "kvb/run/resume.h"

namespace kvb::e2e {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

/// The model, its windows after the exact prefill, and the exact decode of every evaluated window.
struct Sweep {
  Llama2Model model;
  std::vector<Window> windows;
  std::vector<Prefill> calib, eval;
  std::vector<DecodeResult> exact;  ///< per evaluated window
};

/// Runs f(i) for i in [0, n) on the OpenMP threads; the first exception any of them threw is rethrown after.
template <class F>
void parallel_for(int n, F&& f) {
  std::exception_ptr err;
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < n; ++i) {
    try {
      f(i);
    } catch (...) {
#pragma omp critical(kvb_e2e_error)
      if (!err) err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

Sweep prepare(const E2eConfig& cfg) {
  Sweep s{Llama2Model::load(cfg.model.checkpoint), {}, {}, {}, {}};
  s.windows = load_windows(cfg.model, s.model);
  std::vector<const Window*> cal, ev;
  for (const auto& w : s.windows) (w.calibration ? cal : ev).push_back(&w);
  s.calib.resize(cal.size());
  s.eval.resize(ev.size());
  s.exact.resize(ev.size());
  const int C = cfg.model.prompt_len, W = cfg.model.obs_window;
  const int nc = static_cast<int>(cal.size());
  parallel_for(nc + static_cast<int>(ev.size()), [&](int i) {
    if (i < nc) {
      s.calib[i] = run_prefill(s.model, *cal[i], C, W);
    } else {
      s.eval[i - nc] = run_prefill(s.model, *ev[i - nc], C, W);
      s.exact[i - nc] = decode_window(s.model, s.eval[i - nc], nullptr, nullptr, nullptr);
    }
  });
  return s;
}

/// What a cell's decodes give, per evaluated window, and its timed decode.
struct CellTrace {
  std::vector<std::vector<double>> nll, kl, top1, hidden_cos;
  double codec_s_per_token = 0, exact_s_per_token = 0;
};

/// Decode speed is timed apart from the evaluation, one cell at a time on one thread (the evaluation runs
/// cells side by side, which would make each one's clock depend on its neighbour): kTimedSteps tokens of the
/// first evaluated window, kTimedRepeats times alternating with the exact cache, medians.
constexpr int kTimedSteps = 32;
constexpr int kTimedRepeats = 3;

CodecContext context_for(const run::Cell& c, const E2eConfig& cfg, const Llama2Config& mc) {
  CodecContext ctx;
  ctx.shape = model_shape(mc);
  ctx.attn = model_attn(mc);
  ctx.seed = derive_seed(cfg.base.seed, {run::run_hash(c.plan.label)});
  // llama2.c's RoPE (Llama2Runner::rope): adjacent channel pairs, θ = 10000, the prompt at positions 0..P-1.
  ctx.rope = RopeInfo{true, "interleaved", 10000.0};
  return ctx;
}

void calibrate(run::Cell& c, const Sweep& s, const CodecContext& ctx) {
  const CodecInfo& info = c.plan.entry->info;
  if (!info.trainable) return;
  if (s.calib.empty()) {
    c.outcome.set(CellStatus::kSkipped, "the codec needs calibration and model.calibration_windows is 0 (e2e never "
                                        "fits a codec on the windows it evaluates)");
    return;
  }
  CalibrationRecord cal;
  for (const auto& P : s.calib) cal.sequences.push_back(P.window->id);
  cal.note = "fitted on the prompts of the calibration windows, which are never evaluated";
  c.acc.calibration = cal;
  for (int l = 0; l < ctx.shape.n_layers && c.outcome.ok(); ++l) {
    std::vector<const LayerKV*> ptrs;
    for (const auto& P : s.calib) ptrs.push_back(&P.kv[static_cast<size_t>(l)]);
    run::guarded(c, fmt::format("fit of layer {}", l), [&] { c.live.codec->fit(l, ptrs, ctx); });
  }
}

/// Layer l of window P's prompt encoded by the cell's codec, layers in order (cross-layer codecs get the previous).
std::vector<std::unique_ptr<EncodedLayer>> encode_prompt(const run::Cell& c, const Prefill& P, const CodecContext& ctx) {
  std::vector<std::unique_ptr<EncodedLayer>> enc(static_cast<size_t>(ctx.shape.n_layers));
  for (int l = 0; l < ctx.shape.n_layers; ++l)
    enc[l] = c.live.codec->encode(l, P.kv[l], l > 0 ? enc[l - 1].get() : nullptr, ctx);
  return enc;
}

/// Encodes window P's prompt with the cell's codec (every layer, storage accounted) and decodes it.
void evaluate_window(run::Cell& c, const Sweep& s, const Prefill& P, const DecodeResult& exact,
                     const CodecContext& ctx, const E2eConfig& cfg, CellTrace& t) {
  const int L = ctx.shape.n_layers, d = ctx.shape.head_dim;
  const auto enc = encode_prompt(c, P, ctx);
  for (int l = 0; l < L; ++l) {
    const Storage st = enc[l]->storage();
    run::account_storage(st, P.C, d, c.acc.storage, true);
    run::account_storage(st, P.C, d, c.acc.per_layer_storage[l], false);
  }
  const LayerProbe probe{&c.acc, cfg.base.topk};
  const DecodeResult r = decode_window(s.model, P, &enc, &exact, &probe);
  auto col = [&](double StepStats::*f) {
    std::vector<double> v;
    for (const auto& st : r.steps) v.push_back(st.*f);
    return v;
  };
  t.nll.push_back(col(&StepStats::nll));
  t.kl.push_back(col(&StepStats::kl));
  t.top1.push_back(col(&StepStats::top1));
  t.hidden_cos.push_back(col(&StepStats::hidden_cos));
}


double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

/// Seconds per decoded token with the cell's cache and with the exact one (medians over the repeats).
void time_decode(run::Cell& c, const Sweep& s, const CodecContext& ctx, CellTrace& t) {
  const Prefill& P = s.eval.front();
  const auto enc = encode_prompt(c, P, ctx);
  std::vector<double> te, tc;
  for (int r = 0; r < kTimedRepeats; ++r) {
    const DecodeResult e = decode_window(s.model, P, nullptr, nullptr, nullptr, kTimedSteps);
    const DecodeResult x = decode_window(s.model, P, &enc, nullptr, nullptr, kTimedSteps);
    te.push_back(e.seconds / static_cast<double>(e.steps.size()));
    tc.push_back(x.seconds / static_cast<double>(x.steps.size()));
  }
  t.exact_s_per_token = median(te);
  t.codec_s_per_token = median(tc);
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

/// Per-window mean NLLs of a trace.
std::vector<double> window_means(const std::vector<std::vector<double>>& per_window) {
  std::vector<double> m;
  for (const auto& w : per_window) m.push_back(mean_of(w));
  return m;
}

std::vector<std::vector<double>> exact_nll(const Sweep& s) {
  std::vector<std::vector<double>> out;
  for (const auto& r : s.exact) {
    std::vector<double> v;
    for (const auto& st : r.steps) v.push_back(st.nll);
    out.push_back(std::move(v));
  }
  return out;
}


std::vector<double> flatten(const std::vector<std::vector<double>>& x) {
  std::vector<double> out;
  for (const auto& w : x) out.insert(out.end(), w.begin(), w.end());
  return out;
}

/// The cell's e2e block and its e2e_* fidelity aggregates.
void add_e2e(CellRecord& r, const CellTrace& t, const Sweep& s, const E2eConfig& cfg, uint64_t seed) {
  const auto en = window_means(exact_nll(s)), cn = window_means(t.nll);
  const int W = static_cast<int>(en.size());
  auto ppl_change = [&](const std::vector<int>& idx) {
    double e = 0, c = 0;
    for (int w : idx) e += en[w], c += cn[w];
    return std::exp((c - e) / static_cast<double>(idx.size())) - 1.0;
  };
  std::vector<int> all(static_cast<size_t>(W));
  for (int w = 0; w < W; ++w) all[w] = w;
  const auto ci = bootstrap95(W, cfg.bootstrap, derive_seed(seed, {1}), ppl_change);
  const double ex_tps = 1.0 / std::max(t.exact_s_per_token, 1e-12), co_tps = 1.0 / std::max(t.codec_s_per_token, 1e-12);
  Json e;
  e["perplexity"] = {{"exact", std::exp(mean_of(en))},
                     {"codec", std::exp(mean_of(cn))},
                     {"rel_change", ppl_change(all)},
                     {"rel_change_ci95", Json::array({ci.first, ci.second})}};
  e["kl"] = token_summary(t.kl, cfg.bootstrap, derive_seed(seed, {2}));
  e["top1_agreement"] = token_summary(t.top1, cfg.bootstrap, derive_seed(seed, {3}));
  e["hidden_cosine"] = token_summary(t.hidden_cos, cfg.bootstrap, derive_seed(seed, {4}));
  e["decode_tokens_per_s"] = {
      {"codec", co_tps},
      {"exact", ex_tps},
      {"ratio", co_tps / ex_tps},
      {"note", fmt::format("one thread, the first {} continuation tokens of {} decoded with either cache, medians of {} "
                           "alternating repeats; the whole forward pass (its matmuls too) is timed",
                           kTimedSteps, s.eval.front().window->id, kTimedRepeats)}};
  e["windows"] = W;
  r.e2e = e;
  r.fidelity["e2e_kl"] = metrics::aggregate(flatten(t.kl));
  r.fidelity["e2e_top1_agreement"] = metrics::aggregate(flatten(t.top1));
  r.fidelity["e2e_hidden_cosine"] = metrics::aggregate(flatten(t.hidden_cos));
  std::vector<double> per_window;
  for (int w = 0; w < W; ++w) per_window.push_back(std::exp(cn[w] - en[w]) - 1.0);
  r.fidelity["e2e_ppl_rel_change"] = metrics::aggregate(per_window);
}

std::string text_name(const E2eConfig& cfg) {
  const TextSpec& t = cfg.model.text;
  return t.format == "generate" ? fmt::format("generated (temperature {}, seed {})", t.temperature, t.seed)
                                : t.path_as_given;
}

/// Fits the cell's codec, then encodes and decodes every evaluated window (CellTrace).
void evaluate_cell(run::Cell& c, const Sweep& s, const E2eConfig& cfg, CellTrace& t) {
  const CodecContext ctx = context_for(c, cfg, s.model.config());
  if (c.outcome.ok() && c.plan.entry->info.needs_obs_queries && cfg.model.obs_window == 0)
    c.outcome.set(CellStatus::kSkipped, "the codec scores the prompt with its observation queries and "
                                        "model.obs_window is 0 (none are kept)");
  if (c.outcome.ok()) calibrate(c, s, ctx);
  for (size_t wi = 0; wi < s.eval.size() && c.outcome.ok(); ++wi)
    run::guarded(c, s.eval[wi].window->id, [&] { evaluate_window(c, s, s.eval[wi], s.exact[wi], ctx, cfg, t); });
}

/// Times an evaluated cell's decode and turns it into its record.
CellRecord finish_cell(run::Cell& c, const Sweep& s, const E2eConfig& cfg, CellTrace& t) {
  const Llama2Config& mc = s.model.config();
  const CodecContext ctx = context_for(c, cfg, mc);
  if (c.outcome.ok()) run::guarded(c, "timed decode", [&] { time_decode(c, s, ctx, t); });
  CellRecord r = run::cell_record(c, text_name(cfg), mc.head_size(), std::nullopt, cfg.base);
  if (r.ok()) add_e2e(r, t, s, cfg, ctx.seed);
  c.live.codec.reset();
  return r;
}

std::string e2e_key(const E2eConfig& cfg) {
  Json r = cfg.resolved();
  r.erase("threads");
  return fmt::format("{:016x}", run::run_hash("e2e\n" + r.dump() + "\n" + build_info_json()["git_sha"].get<std::string>()));
}

DatasetRecord dataset_record(const E2eConfig& cfg, const Sweep& s) {
  const Llama2Config& mc = s.model.config();
  DatasetRecord d;
  d.path = cfg.model.text.format == "generate" ? text_name(cfg) : cfg.model.text.path;
  d.model = fs::path(cfg.model.checkpoint).stem().string();
  d.model_revision = cfg.model.checkpoint;
  d.source = "kvbench e2e (llama2.c forward pass)";
  d.dtype = d.orig_dtype = "float32";
  d.n_layers = mc.n_layers;
  d.n_heads = mc.n_heads;
  d.n_kv_heads = mc.n_kv_heads;
  d.head_dim = mc.head_size();
  d.rope_style = "llama2.c adjacent pairs (2i, 2i+1), theta 10000";
  d.softmax_scale = model_attn(mc).softmax_scale;
  for (int l = 0; l < mc.n_layers; ++l) d.layers.push_back(l);
  uint64_t h = kFnvOffset;
  for (const auto& w : s.windows) {
    h = fnv1a_bytes(w.tokens.data(), w.tokens.size() * sizeof(int32_t), h);
    if (w.calibration) {
      d.calibration_sequences.push_back(w.id);
    } else {
      const int64_t C = cfg.model.prompt_len, N = cfg.model.continuation_len;
      d.evaluated_sequences.push_back({w.id, C, C + N + 1, N, N});
    }
  }
  d.checksum_fnv1a64 = fmt::format("{:016x}", h);
  d.result.ref_out_check.status = "not run";
  d.result.ref_out_check.reason = "kvbench e2e: the reference is the exact model run of the same forward code";
  return d;
}

Json doc_e2e(const E2eConfig& cfg, const Sweep& s, const std::vector<CellRecord>& cells) {
  const auto en = exact_nll(s);
  const double nll = mean_of(flatten(en));
  const auto wm = window_means(en);
  const auto ci = bootstrap95(static_cast<int>(wm.size()), cfg.bootstrap, derive_seed(cfg.base.seed, {7}),
                              [&](const std::vector<int>& idx) {
                                double t = 0;
                                for (int w : idx) t += wm[w];
                                return std::exp(t / static_cast<double>(idx.size()));
                              });
  Json ev = Json::array(), cal = Json::array();
  for (const auto& w : s.windows) (w.calibration ? cal : ev).push_back(w.id);
  return Json{
      {"protocol",
       "prefill the prompt exactly; encode every layer's prompt K/V (all KV heads) with the codec once; decode the "
       "continuation teacher-forced, each layer attending to the codec's prompt merged by log-sum-exp with exact "
       "attention over the continuation's own K/V (docs/e2e.md)"},
      {"model", cfg.model.checkpoint_as_given},
      {"text", text_name(cfg)},
      {"prompt_len", cfg.model.prompt_len},
      {"continuation_len", cfg.model.continuation_len},
      {"evaluated_windows", ev},
      {"calibration_windows", cal},
      {"exact",
       {{"perplexity", std::exp(nll)},
        {"nll_per_token", nll},
        {"perplexity_ci95", Json::array({ci.first, ci.second})}}},
      {"proxy_correlation", proxy_correlation(cells)}};
}

}  // namespace

std::vector<MetricRecord> e2e_metrics() {
  return {
      {"e2e_kl", "KL(p_exact || p_codec) of the model's next-token distributions, per continuation token (nats)",
       "lower", "all codecs"},
      {"e2e_top1_agreement", "1 when the exact and compressed runs predict the same next token", "higher",
       "all codecs"},
      {"e2e_hidden_cosine", "cosine of the final hidden states of the exact and compressed runs, per token", "higher",
       "all codecs"},
      {"e2e_ppl_rel_change", "perplexity of the continuation, codec / exact - 1, per window", "lower",
       "all codecs"},
  };
}


E2eSummary run_e2e(const E2eConfig& cfg, const RunOptions& opts_in) {
  const auto t_start = Clock::now();
  const std::string started_utc = utc_now_iso8601();
  RunOptions opts = opts_in;
  opts.device = "cpu";  // e2e runs the model on the CPU (the codecs' CPU paths)
  const run::DeviceChoice dev = run::choose_device(cfg.base, opts);
  omp_set_max_active_levels(1);  // cells run in parallel; codecs' own parallel loops run inside one thread
  const Sweep s = prepare(cfg);
  const ModelShape shape = model_shape(s.model.config());
  std::vector<run::Cell> cells = run::expand_cells(cfg.base, std::vector<ModelShape>{shape}, dev);
  const run::RecordDirs dirs = run::make_record_dirs(cfg.base, opts);
  const std::string key = e2e_key(cfg);
  run::select_shard(cells, opts);
  std::vector<std::optional<DatasetResult>> no_datasets;
  run::ResumeExpect expect;
  expect.datasets.push_back({text_name(cfg), {}, std::nullopt});
  for (const auto& m : e2e_metrics()) expect.extra_metrics.push_back(m.name);
  expect.kendall = cfg.base.kendall;
  expect.throughput = false;  // e2e times the decode (the e2e block), not the codec on a layer
  expect.e2e = true;
  const int resumed = opts.resume ? run::resume(cells, no_datasets, dirs, key, expect) : 0;

  std::vector<run::Cell*> todo;
  for (auto& c : cells)
    if (c.plan.selected && !c.record) todo.push_back(&c);
  std::vector<CellTrace> traces(todo.size());
  // Progress: every cell is evaluated (in parallel), then timed (serially); both passes count, the ETA
  // takes the timed decodes as costing what an evaluation does (they are shorter).
  ProgressLine progress(opts.progress, 2 * static_cast<int64_t>(todo.size()), ProgressStyle::kPercent);
  std::atomic<int> evaluated{0};
  parallel_for(static_cast<int>(todo.size()), [&](int i) {
    evaluate_cell(*todo[i], s, cfg, traces[i]);
    progress.step(fmt::format("cells evaluated {}/{}: {}", ++evaluated, todo.size(), todo[i]->plan.label));
  });
  for (size_t i = 0; i < todo.size(); ++i) {  // serial: the timed decodes
    run::Cell& c = *todo[i];
    c.record = finish_cell(c, s, cfg, traces[i]);
    write_record_file((fs::path(dirs.cells) / fmt::format("{}.json", c.plan.index)).string(), key, c.plan.index, "cell",
                      c.record->to_json());
    progress.step(fmt::format("cells timed {}/{}: {}", i + 1, todo.size(), c.plan.label));
  }
  progress.finish();

  ResultDoc doc = run::results_doc(cfg.base, opts, dev, key, started_utc, cells, resumed);
  doc.run.device_note = "kvbench e2e runs the model and every codec on the CPU";
  doc.config = cfg.resolved();
  doc.datasets.push_back(dataset_record(cfg, s));
  for (auto& m : e2e_metrics()) doc.metrics.push_back(m);
  doc.summary = SummaryRecord::of(doc.cells);
  doc.e2e = doc_e2e(cfg, s, doc.cells);
  refresh_e2e(doc);
  doc.run.duration_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  write_results_dir(dirs.out, doc);
  return {run::run_summary(doc, resumed, dirs.out), summary_table(doc)};
}

}  // namespace kvb::e2e
