#pragma once
/// Token eviction (family `token_eviction`, issue 18): keep a subset of each KV head's C cached tokens in fp16
/// and drop the rest, as the methods serving engines deploy. Keys are post-RoPE, so a kept row needs no
/// position to be attended; the kept rows of a head are stored in position order.
///
/// Budget. `keep` is the kept fraction of the C tokens per KV head; a head keeps K = max(1, ⌊keep·C⌋)
/// rows (its sink, windows and selected tokens together), so b_eff = 16·K/C ≤ 16·keep bits (one row at least: more at tiny C) per element and a
/// config's `bits` target sweeps these codecs against balancekv / uniform and the quantizers (bits 8, 4, 2, 1 =
/// keep 1/2, 1/4, 1/8, 1/16; the candidate grid is keep = j/64). `pyramidkv` and `adakv` move budget between
/// layers / heads with the same total: Σ over the model's layers (pyramidkv) or over a layer's KV heads (adakv)
/// of the kept rows equals that of the flat budget K exactly.
///
/// Policies (W_o = observation queries of the dump, LayerKV::obs; G = query heads per KV head):
///   streamingllm  StreamingLLM (arXiv 2309.17453): the first min(sink, K) tokens (attention sinks, paper: 4)
///                 and the most recent K − sink.
///   h2o           H2O (arXiv 2306.14048): the recent R = round(recent·K) tokens (paper: 50/50 heavy/recent)
///                 and the K − R heavy hitters among the others by accumulated attention
///                 A_t = agg_h Σ_i softmax_i(ŝ)_t over every observation query i of the G query heads h
///                 (causal: query i sees rows 0..pos_i). H2O accumulates over every prompt query; a dump
///                 records the last W, so this is H2O's score over the observation window (say so in results).
///   snapkv        SnapKV (arXiv 2404.14469): the last w = min(window, K) tokens (the observation window) and
///                 the K − w tokens of the prefix [0, C − w) with the highest pooled window attention:
///                 A_t = agg_h Σ_{i in window} softmax_i(ŝ)_t, then pool1d over t (kernel 7, stride 1, padding
///                 kernel/2: max-pooling pads with −inf, avg-pooling with zeros divided by the kernel, as
///                 PyTorch's max_pool1d / avg_pool1d), top-(K − w). The window's queries are the last
///                 min(window, W_o) observation queries. GQA: agg = mean (default) or max over the group's
///                 query heads, before pooling.
///   pyramidkv     PyramidKV (arXiv 2406.02069): SnapKV's scores and window, the selected budget S = K − w per
///                 head shrinking with depth: S_l = S_max − l·(S_max − S_min)/(L − 1) with S_min = S/β,
///                 S_max = 2S − S_min (β = 20), capped at C − w and redistributed, then rounded by largest
///                 remainder so Σ_l S_l = L·S exactly (the authors' integer division loses a few tokens).
///   adakv         Ada-KV (arXiv 2407.11550) over SnapKV: one layer budget H·S, allocated across the KV heads
///                 by score mass: each head first takes its own top ⌊α·S⌋ (the safeguard, α = 0.2), then the
///                 rest goes to the highest pooled scores of all heads together (scores are sums of softmax
///                 probabilities, so they compare across heads). Heads keep different row counts.
/// Ties in a top-k go to the earlier token (a strict total order, so every backend keeps the same set).
///
/// Storage (StorageItem names): k.kept, v.kept kCompressed (the fp16 rows of every head packed, head g's at
/// rows [row_off[g], row_off[g+1]); `tokens` = C, the tokens they stand for); n.kept kFixed (one int32 row
/// count per KV head). The kept positions are held for held_tokens() (mass_lost, metrics over the held set)
/// only: attention never reads them, so they are not storage.
/// Attention: exact softmax attention over the kept rows (the shared fp16-row path; weights 1), so
/// attend_lse's normalizer sums the kept rows only. scores() gives the kept tokens their logits and dropped
/// tokens 0 (ignored by the metrics through held_tokens()).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvb/core/codec.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

enum class EvictPolicy { kStreaming, kH2O, kSnap, kPyramid, kAda };
enum class EvictPool { kMax, kAvg, kNone };
enum class EvictGqa { kMean, kMax };

struct EvictParams {
  EvictPolicy policy = EvictPolicy::kSnap;
  double keep = 0.25;   ///< kept fraction of the C tokens per KV head (mean over layers / heads for pyramid / ada)
  int sink = 4;         ///< streamingllm: attention-sink tokens
  double recent = 0.5;  ///< h2o: share of the budget for the most recent tokens
  int window = 32;      ///< snapkv family: observation window (kept verbatim; its queries score the prefix)
  int kernel = 7;       ///< snapkv family: pooling kernel (odd)
  EvictPool pool = EvictPool::kMax;
  EvictGqa gqa = EvictGqa::kMean;  ///< h2o and snapkv family: how a KV head aggregates its query heads' scores
  double beta = 20.0;   ///< pyramidkv: S_min = S/β
  double alpha = 0.2;   ///< adakv: safeguard share of each head's own budget

  void check(int head_dim) const;
  std::string label() const;
  /// Whether encode reads the observation queries (all but streamingllm).
  bool needs_obs() const { return policy != EvictPolicy::kStreaming; }
  bool snap_family() const {
    return policy == EvictPolicy::kSnap || policy == EvictPolicy::kPyramid || policy == EvictPolicy::kAda;
  }
};

/// Kept rows of a head under the flat budget: max(1, ⌊keep·C⌋) (never above the budget but for that one row).
int64_t evict_head_budget(double keep, int64_t C);

/// PyramidKV's selected budget of every layer (see the header): L values, each in [0, cap], non-increasing,
/// summing to exactly L·S (requires S <= cap).
std::vector<int64_t> pyramid_budgets(int n_layers, int64_t S, int64_t cap, double beta);

/// The kept set of one layer: head g keeps cache rows pos[row_off[g] .. row_off[g+1]), increasing.
struct EvictPlan {
  std::vector<int64_t> row_off;  ///< [kv_heads + 1]
  std::vector<int32_t> pos;      ///< [row_off.back()]
  int64_t obs_used = 0;          ///< observation queries scored with (per query head)
};

/// The fast CPU planner (scores from kernels/cpu's many-query dots, softmax in float64), shared by the CPU and
/// CUDA layers so that both keep the same rows. Throws Unsupported when the policy needs observation queries
/// and kv.obs is empty, DataError when they do not fit the cache.
EvictPlan evict_plan(const EvictParams& p, int layer, const LayerKV& kv, const CodecContext& ctx);

/// The observation-window scores of KV head g over rows [0, n) (n <= C), aggregated over the group's query heads
/// and NOT pooled, from the observation queries [q0, W): A_t = agg_h Σ_i softmax_i(ŝ)_t. Exposed for tests.
std::vector<double> evict_obs_scores(const LayerKV& kv, int g, int64_t q0, int64_t n, EvictGqa gqa,
                                     const AttnConfig& attn);

std::unique_ptr<EncodedLayer> evict_encode_cpu(const EvictParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx);
std::unique_ptr<EncodedLayer> evict_encode_ref(const EvictParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx);
/// The CUDA backend (evict_gpu.cpp): rows chosen by evict_plan on the host, gathered and attended on the device.
/// Defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> evict_encode_cuda(const EvictParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx);

/// Registry entries (evict_entry.cpp).
CodecEntry streamingllm_entry();
CodecEntry h2o_entry();
CodecEntry snapkv_entry();
CodecEntry pyramidkv_entry();
CodecEntry adakv_entry();

}  // namespace kvb::codecs
