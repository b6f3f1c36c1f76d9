#pragma once
/// `kvbench gen`: synthetic dumps with LLM-like statistics (docs/dump-format.md §3). Every knob is documented
/// here and in `kvbench gen --help`; presets fix the shapes of known models.
#include <cstdint>
#include <string>
#include <vector>

#include "kvb/core/tensor.h"
#include "kvb/io/kvdump.h"

namespace kvb {

struct GenOptions {
  std::string model_like = "tiny";  ///< preset the shapes came from (recorded as the dump's model name)
  ModelShape shape;                 ///< layers, heads, kv heads, head_dim
  int64_t tokens = 0;               ///< T per sequence (context + queries)
  int64_t queries = 0;              ///< Q recorded decode queries per sequence (the last Q tokens)
  int sequences = 2;                ///< >= 2 so one can calibrate and another evaluate
  uint64_t seed = 0;
  DType dtype = DType::kFloat16;
  std::string rope_style = "half";  ///< "half" | "interleaved" | "none"
  double rope_theta = 10000.0;
  // --- statistics knobs (docs/dump-format.md §3; each is a `kvbench gen` flag of the same name) ---------
  /// Per KV head: key channels whose RMS is 10-50x the median channel's, consistent across tokens and
  /// with a large nonzero per-channel mean. Allocated in whole RoPE pairs (rounded up to even) among the
  /// slowest quarter of the pairs, as in real post-RoPE keys; at most head_dim/2 - 1 pairs (one pair at
  /// least carries the sink). 0 = none.
  int outlier_channels = 4;
  /// Outlier channel RMS / median channel RMS, drawn log-uniformly per outlier pair in [min, max].
  double outlier_scale_min = 10, outlier_scale_max = 50;
  /// ln(channel scale of the slowest RoPE pair / of the fastest): real keys are larger on the
  /// low-frequency pairs. Each pair's scale is log-normal (sigma 0.3) around this trend. In [0, 5].
  double key_scale_tilt = 1.0;
  /// Std of the per-channel mean of pre-RoPE keys, in units of the channel's std (real keys are biased).
  double channel_mean = 0.4;
  /// Per query head, the target share of attention that the first ("sink") token draws, drawn
  /// uniformly in [min, max]; each query varies around it (sink_share_jitter).
  double sink_share_min = 0.1, sink_share_max = 0.6;
  /// Per-query std of logit(sink share) around the head's target.
  double sink_share_jitter = 0.3;
  /// Key norm of the sink token / typical key norm. The extra norm is spread over the sink pairs (the
  /// non-outlier pairs of the slowest half) and capped so that no sink-key channel exceeds 1.5x the
  /// largest outlier channel's mean: with outliers, the achieved ratio can be below this (~3-4 by default).
  double sink_key_scale = 4.0;
  /// Weight of the sink pairs in the queries' content (varying) part, relative to the other pairs: on
  /// those slow pairs what queries share is the sink component (a "key bias"), and their
  /// token-to-token variation lives mostly on the other pairs. In [0, 1].
  double sink_content = 0.2;
  /// Value norm of the sink token / typical value norm (real sinks carry little value: a "no-op").
  double sink_value_scale = 0.1;
  /// Per query head focus, uniform in [min, max]: 0 = broad (queries follow the head's generic
  /// projection of the current token), 1 = peaked (queries aligned with a few earlier tokens' keys).
  double focus_min = 0.0, focus_max = 1.0;
  /// Target entropy of a head's non-sink attention, as a fraction of ln(C), for focus 0 and focus 1
  /// (linear in between): at C = 4096, 0.9 -> 7.5 nats and 0.25 -> 2.1 nats; with the sink's share the
  /// heads then span about 1.5-7 nats. Each head's temperature is fitted on a calibration draw.
  double entropy_broad = 0.9, entropy_peaked = 0.25;
  /// Sigma of the log-normal per-token value scale (token-to-token value norm spread).
  double value_scale_spread = 0.5;
  /// Dimension of the latent per-token state ("topics") that keys, values and queries project from:
  /// the low-rank structure of real K/V.
  int rank = 32;
  /// Std of the isotropic noise in keys' / values' per-channel variation (the rest, sqrt(1 - noise^2),
  /// is the rank-`rank` projection). In [0, 1).
  double key_noise = 0.5, value_noise = 0.5;
  /// AR(1) coefficient of the sequence's topic state: how slowly content drifts (local correlation).
  double topic_persistence = 0.98;
  /// Per-token probability of starting to copy an earlier span of 4-32 tokens (repeats give peaked
  /// heads real targets, like induction heads).
  double copy_prob = 0.02;
  /// Queries per head of the calibration draw that fits each head's temperature and sink logit.
  int calib_queries = 16;
  /// W observation queries per sequence (kvdump's optional `obs_queries` / `obs_positions`,
  /// docs/dump-format.md §1.2): the queries of the last W prompt positions C-W..C-1, made by the same per-head
  /// query model as the decode queries (each attends causally to tokens 0..p, its targets among 1..p, its
  /// sink logit fitted over 0..p), from random streams of their own, so every other tensor is the same with
  /// or without them. Clamped to C; 0 = none.
  int64_t obs_window = 32;
  // --- file layout ---
  int64_t chunk_tokens = 1024;  ///< HDF5 chunk = (1 head, chunk_tokens, head_dim)
  int deflate = 0;              ///< 0 = uncompressed, 1..9 deflate level
  bool write_ref_out = true;    ///< store ref_out (exact float64 attention over the C context tokens)
};

/// Names of the presets: "tiny", "llama2-7b", "llama3-8b", ...
std::vector<std::string> gen_presets();
/// A preset's options (throws UsageError listing the presets when unknown).
GenOptions gen_preset(const std::string& name);
/// Throws UsageError naming the `kvbench gen` flag when an option is out of range.
void validate_gen_options(const GenOptions& opts);
/// Write the dump (with ref_out) to `path`, atomically. Deterministic for a given options+seed: the
/// same options give bitwise-identical tensors. Queries are the last Q positions (C = T - Q).
void generate_dump(const std::string& path, const GenOptions& opts);
/// The same sequences in memory (for tests, small shapes): every tensor exactly as generate_dump hands it to
/// the writer (already rounded to the file dtype).
std::vector<SequenceData> generate_sequences(const GenOptions& opts);

/// Rotate x[head_dim] in place by RoPE at position `pos` (a negative position rotates back).
/// style "half": channel pairs (i, i + d/2) (rotate_half, Hugging Face Llama); "interleaved": pairs
/// (2i, 2i+1) (Meta / GPT-J); "none": no-op. Pair i turns by pos * theta^(-2i/d).
void apply_rope(float* x, int head_dim, int64_t pos, const std::string& style, double theta);

}  // namespace kvb
