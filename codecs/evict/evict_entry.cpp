/// Registry entries of the eviction codecs (evict_codec.h): streamingllm, h2o, snapkv, pyramidkv, adakv.
#include <algorithm>
#include <atomic>
#include <cmath>

#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "codecs/evict/evict_codec.h"
#include "kvb/core/error.h"

namespace kvb::codecs {

void EvictParams::check(int head_dim) const {
  (void)head_dim;  // any head_dim: rows are copied in fp16, nothing is aligned
  KVB_CHECK(keep > 0 && keep <= 1, Unsupported, "{}: keep {} outside (0, 1]", label(), keep);
  KVB_CHECK(kernel >= 1 && kernel % 2 == 1, Unsupported, "{}: kernel {} must be odd (same-length pooling)", label(),
            kernel);
}

std::string EvictParams::label() const {
  const std::string g = gqa == EvictGqa::kMax ? "-gmax" : "";
  const std::string pool_s = pool == EvictPool::kNone ? "none" : fmt::format("{}{}", pool == EvictPool::kMax ? "max" : "avg", kernel);
  switch (policy) {
    case EvictPolicy::kStreaming: return fmt::format("streamingllm-k{:g}-s{}", keep, sink);
    case EvictPolicy::kH2O: return fmt::format("h2o-k{:g}-r{:g}{}", keep, recent, g);
    case EvictPolicy::kSnap: return fmt::format("snapkv-k{:g}-w{}-{}{}", keep, window, pool_s, g);
    case EvictPolicy::kPyramid: return fmt::format("pyramidkv-k{:g}-w{}-{}-b{:g}{}", keep, window, pool_s, beta, g);
    case EvictPolicy::kAda: return fmt::format("adakv-k{:g}-w{}-{}-a{:g}{}", keep, window, pool_s, alpha, g);
  }
  return "evict";
}

namespace {

/// A Codec over evict_encode_{cpu,ref,cuda} that validates the cache and says in results what scored it: the
/// policy's rule and how many observation queries the encodes used (they come from the dump, not the protocol).
class EvictCodec final : public Codec {
 public:
  using EncodeFn = std::unique_ptr<EncodedLayer> (*)(const EvictParams&, int, const LayerKV&, const CodecContext&);
  EvictCodec(EvictParams p, EncodeFn fn, std::string impl) : p_(p), fn_(fn), impl_(std::move(impl)) {}
  std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer*,
                                       const CodecContext& ctx) const override {
    check_layer(kv, p_.label());
    p_.check(kv.head_dim);
    auto enc = fn_(p_, layer, kv, ctx);
    if (p_.needs_obs()) {
      const int64_t used = p_.policy == EvictPolicy::kH2O ? kv.obs.n : std::min<int64_t>(kv.obs.n, p_.window);
      int64_t prev = obs_used_.load();
      while (used > prev && !obs_used_.compare_exchange_weak(prev, used)) {
      }
    }
    return enc;
  }
  Json report() const override {
    Json j{{"label", p_.label()}, {"implementation", impl_}, {"scores", scores_rule()}};
    if (p_.needs_obs()) j["observation_queries_used"] = obs_used_.load();
    return j;
  }

 private:
  std::string scores_rule() const {
    const std::string agg = p_.gqa == EvictGqa::kMax ? "max" : "mean";
    switch (p_.policy) {
      case EvictPolicy::kStreaming: return "none: sinks and the recent window";
      case EvictPolicy::kH2O:
        return "accumulated attention of every observation query (the dump's last W prompt tokens, not every prompt "
               "query), GQA " + agg;
      default:
        return fmt::format("attention of the last min(window, W) observation queries, pool1d {} (kernel {}), GQA {}",
                           p_.pool == EvictPool::kMax ? "max" : p_.pool == EvictPool::kAvg ? "avg" : "none", p_.kernel,
                           agg);
    }
  }
  EvictParams p_;
  EncodeFn fn_;
  std::string impl_;
  mutable std::atomic<int64_t> obs_used_{0};
};

using Bindings = std::vector<ParamBinding<EvictParams>>;

ParamBinding<EvictParams> keep_param() {
  return bind(ParamSpec::Float("keep", 0.25, 1e-6, 1.0,
                               "kept fraction of each KV head's C tokens (sink and windows included): K = max(1, floor(keep*C)) "
                               "rows, b_eff = 16*K/C"),
              &EvictParams::keep);
}
ParamBinding<EvictParams> gqa_param() {
  return bind_choice(ParamSpec::Choice("gqa", "mean", {"mean", "max"},
                                       "how a KV head aggregates the scores of its query heads (before pooling)"),
                     &EvictParams::gqa, {{"mean", EvictGqa::kMean}, {"max", EvictGqa::kMax}});
}
Bindings snap_params() {
  return {bind(ParamSpec::Int("window", 32, 1, 1 << 20,
                              "observation window: the last tokens, kept verbatim; the last min(window, W) observation "
                              "queries score the prefix"),
               &EvictParams::window),
          bind(ParamSpec::Int("kernel", 7, 1, 1025, "pooling kernel over tokens (odd; stride 1, padding kernel/2)"),
               &EvictParams::kernel),
          bind_choice(ParamSpec::Choice("pooling", "max", {"max", "avg", "none"},
                                        "pool1d of the window attention: max (pads -inf) or avg (pads 0, / kernel)"),
                      &EvictParams::pool, {{"max", EvictPool::kMax}, {"avg", EvictPool::kAvg}, {"none", EvictPool::kNone}}),
          gqa_param()};
}

/// Everything but name, summary, paper, presets and notes; `own` are the policy's own parameters.
void fill(CodecEntry& e, EvictPolicy policy, Bindings own) {
  const std::string name = e.info.name;
  Bindings all{keep_param()};
  all.insert(all.end(), own.begin(), own.end());
  const ParamTable<EvictParams> table(std::move(all));
  EvictParams base;
  base.policy = policy;
  e.info.params = table.specs();
  e.info.family = "token_eviction";
  e.info.selects_tokens = true;
  e.info.needs_obs_queries = base.needs_obs();
  e.info.budget_rule =
      "b_eff = 16*K/C with K = max(1, floor(keep*C)) kept fp16 rows of K and V per KV head (sink, windows and selected "
      "tokens together, all counted as compressed storage); one int32 row count per KV head is fixed state; "
      "candidates keep = j/16, j = 1..15, and 1/32, 1/64 (bits = 16*keep: 8, 4, 2, 1 bits = keep 1/2, 1/4, 1/8, 1/16)";
  e.candidates = [](int) {
    std::vector<Candidate> out;
    for (int j = 1; j < 16; ++j) out.push_back({Json{{"keep", j / 16.0}}, static_cast<double>(j)});
    out.push_back({Json{{"keep", 1 / 32.0}}, 0.5});
    out.push_back({Json{{"keep", 1 / 64.0}}, 0.25});
    return out;
  };
  e.label = codec_label(table, name, base);
  const auto factory = [&](auto fn, const char* impl) {
    return codec_factory(
        table, name, [fn, impl](EvictParams p) { return std::make_unique<EvictCodec>(p, fn, impl); }, base);
  };
  e.make_cpu = factory(evict_encode_cpu, "cpu");
  e.make_ref = factory(evict_encode_ref, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = factory(evict_encode_cuda, "cuda");
#endif
}

}  // namespace

CodecEntry streamingllm_entry() {
  CodecEntry e;
  e.info.name = "streamingllm";
  e.info.summary = "StreamingLLM: the first `sink` tokens (attention sinks) and the most recent ones, in fp16";
  e.info.paper = "StreamingLLM, arXiv 2309.17453";
  e.info.presets = {{"paper", Json{{"sink", 4}}}};
  e.info.notes = "paper preset = 4 attention sinks; the rest of the budget is the recent window. Needs no queries.";
  fill(e, EvictPolicy::kStreaming,
       {bind(ParamSpec::Int("sink", 4, 0, 1 << 20, "first tokens kept (attention sinks)"), &EvictParams::sink)});
  return e;
}

CodecEntry h2o_entry() {
  CodecEntry e;
  e.info.name = "h2o";
  e.info.summary =
      "H2O: heavy hitters by accumulated attention of the observation queries plus the recent window, in fp16";
  e.info.paper = "H2O, arXiv 2306.14048";
  e.info.presets = {{"paper", Json{{"recent", 0.5}}}};
  e.info.notes =
      "paper preset = half the budget heavy hitters, half recent tokens. H2O accumulates attention over every prompt "
      "query; kvbench accumulates over the dump's observation queries (the last W prompt tokens), as harnesses that "
      "score the prefill once do. Needs the dump's obs_queries.";
  fill(e, EvictPolicy::kH2O,
       {bind(ParamSpec::Float("recent", 0.5, 0.0, 1.0, "share of the budget for the most recent tokens"),
             &EvictParams::recent),
        gqa_param()});
  return e;
}

CodecEntry snapkv_entry() {
  CodecEntry e;
  e.info.name = "snapkv";
  e.info.summary =
      "SnapKV: the observation window plus the prefix tokens its queries attend to most (pooled), per KV head, fp16";
  e.info.paper = "SnapKV, arXiv 2404.14469";
  e.info.presets = {{"paper", Json{{"window", 32}, {"kernel", 7}, {"pooling", "max"}}},
                    {"repo", Json{{"window", 32}, {"kernel", 5}, {"pooling", "avg"}}}};
  e.info.notes =
      "paper preset = window 32, max-pooling kernel 7 (the LongBench settings); repo = the authors' class defaults "
      "(kernel 5, avg-pooling). GQA: scores averaged over the group's query heads (gqa=max as a variant). Needs the "
      "dump's obs_queries.";
  fill(e, EvictPolicy::kSnap, snap_params());
  return e;
}

CodecEntry pyramidkv_entry() {
  CodecEntry e;
  e.info.name = "pyramidkv";
  e.info.summary = "PyramidKV: SnapKV's selection with layer budgets shrinking with depth (same total over layers)";
  e.info.paper = "PyramidKV, arXiv 2406.02069";
  e.info.presets = {{"paper", Json{{"window", 32}, {"kernel", 7}, {"pooling", "max"}, {"beta", 20.0}}}};
  e.info.notes =
      "selected budget of layer l: arithmetic from 2S - S/beta (layer 0) down to S/beta (last layer), S = K - window, "
      "rounded by largest remainder so the model's layers keep exactly L*K rows per KV head; a run over a subset "
      "of layers reports those layers' share. Needs the dump's obs_queries.";
  Bindings own = snap_params();
  own.push_back(bind(ParamSpec::Float("beta", 20.0, 1.0, 1e6, "S_min = S/beta (the last layer's selected budget)"),
                     &EvictParams::beta));
  fill(e, EvictPolicy::kPyramid, own);
  return e;
}

CodecEntry adakv_entry() {
  CodecEntry e;
  e.info.name = "adakv";
  e.info.summary = "Ada-KV over SnapKV: one layer budget allocated across KV heads by pooled attention mass";
  e.info.paper = "Ada-KV, arXiv 2407.11550";
  e.info.presets = {{"paper", Json{{"window", 32}, {"kernel", 7}, {"pooling", "max"}, {"alpha", 0.2}}}};
  e.info.notes =
      "each KV head first keeps its own top floor(alpha*S) (the safeguard, alpha = 0.2), then the layer's remaining "
      "H*S - H*floor(alpha*S) rows go to the highest scores of all heads; heads keep different row counts (packed "
      "rows, one int32 count per head). Needs the dump's obs_queries.";
  Bindings own = snap_params();
  own.push_back(bind(ParamSpec::Float("alpha", 0.2, 0.0, 1.0, "safeguard: share of each head's budget it keeps by "
                                                              "its own ranking"),
                     &EvictParams::alpha));
  fill(e, EvictPolicy::kAda, own);
  return e;
}

}  // namespace kvb::codecs
