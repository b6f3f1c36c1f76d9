#pragma once
/// The protocol of `kvbench e2e` (docs/e2e.md §2), the one kvpress uses: prefill the prompt exactly, encode
/// every layer's prompt K/V with the codec once, then decode the continuation teacher-forced, token by token,
/// each layer's attention reading the codec's compressed prompt (EncodedLayer::attend_lse) merged by
/// log-sum-exp with exact attention over the continuation's own K/V so far.
///
/// The exact run is the same forward code (SplitAttention with no codec: dense float32 attention over the
/// exact prompt in place of the codec's), so exact and compressed runs differ only in the prompt's cache.
#include <cstdint>
#include <memory>
#include <vector>

#include "kvb/capture/llama2.h"
#include "kvb/core/codec.h"
#include "kvb/e2e/text.h"
#include "kvb/run/cell.h"

namespace kvb::e2e {

/// A window after the exact prefill of its prompt (positions 0..C-1).
struct Prefill {
  const Window* window = nullptr;
  int C = 0;
  std::unique_ptr<Llama2Runner> runner;  ///< its cache holds the prompt's exact K/V
  /// Per layer, [kv_heads, C, head_dim]: what codecs encode; with obs_window W > 0, kv[l].obs holds the
  /// prefill's own post-RoPE queries of the prompt positions C-W..C-1 (every query head; positions relative to
  /// the cache, which starts at token 0), for the codecs that score the prompt with them (SnapKV, H2O).
  std::vector<LayerKV> kv;
};
/// The prefill of window w's first C tokens, keeping the queries of its last min(obs_window, C) positions
/// (0 = none; they are copied from inside the prefill's attention, so nothing else changes).
Prefill run_prefill(const Llama2Model& model, const Window& w, int C, int obs_window = 0);

/// The shape and attention constants of the model as codecs see them.
ModelShape model_shape(const Llama2Config& c);
AttnConfig model_attn(const Llama2Config& c);

/// One continuation token: its target's negative log-likelihood and, for a compressed run, how its
/// next-token distribution and final hidden state compare with the exact run's.
struct StepStats {
  double nll = 0;
  double kl = 0;          ///< KL(p_exact ‖ p_codec) of the next-token distributions (nats)
  double top1 = 0;        ///< 1 when both runs' argmax agree
  double hidden_cos = 0;  ///< cosine of the final hidden states (after the final RMSNorm)
};

struct DecodeResult {
  std::vector<StepStats> steps;  ///< [N]
  std::vector<float> logits;     ///< [N, vocab] and
  std::vector<float> hidden;     ///< [N, dim]: kept for the exact run, which the others compare with
  double seconds = 0;            ///< wall time of the decode steps, the layer metrics and comparisons excluded
};

/// The layer-level metrics of `kvbench run` (metrics.h), measured at every decode step on the model's own
/// queries: each query head's attention over the prompt, the codec's (ŝ, ô) against exact float64 attention
/// over the exact prompt K/V (docs/protocol.md §1's reference), into acc.values and acc.per_layer.
struct LayerProbe {
  run::CellAccum* acc = nullptr;
  int64_t topk = 32;
};

/// Decodes window P's continuation (its first max_steps tokens when max_steps >= 0). enc == nullptr: the
/// exact run (keeps logits and hidden states); otherwise enc[l] is layer l's encoded prompt and `exact` (may be
/// null: no comparison) the exact run of the same window. Throws RuntimeError naming the window, layer, head
/// and position when the codec yields a non-finite value.
DecodeResult decode_window(const Llama2Model& model, const Prefill& P,
                           const std::vector<std::unique_ptr<EncodedLayer>>* enc, const DecodeResult* exact,
                           const LayerProbe* probe, int max_steps = -1);

}  // namespace kvb::e2e
