#pragma once
/// The codec interface (docs/design.md §2, adapted to docs/protocol.md §1, docs/metrics.md, docs/codecs.md §1).
///
/// A `Codec` is built by the registry from resolved parameters for one cell. The runner then, per layer:
///   fit(layer, calibration caches)         -- only when info().trainable; never sees evaluation queries
///                                             (adopt(layer, state) instead takes another implementation's fit)
///   encode(layer, cache, previous layer)   -- returns an EncodedLayer that owns every byte it stores
///   EncodedLayer::scores / attend          -- straight from the compressed form (no dense copy of the cache)
///   EncodedLayer::storage                  -- measured from the buffers actually allocated
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kvb/core/error.h"
#include "kvb/core/params.h"
#include "kvb/core/tensor.h"

namespace kvb {

/// What a storage item is, for docs/metrics.md §6's memory split.
enum class StorageKind {
  kCompressed,  ///< grows with compressed tokens: codes, per-token scales/norms, per-group metadata
  kBuffer,      ///< full-precision windows and sink tokens kept verbatim
  kFixed,       ///< does not grow with tokens: codebooks, projections, weights (a seeded matrix costs its seed)
};

/// One allocation of an encoded layer. `bytes` is the size of the real buffer (summed over the layer's
/// KV heads); for kCompressed items `tokens` is how many tokens of each KV head that buffer covers.
struct StorageItem {
  std::string name;  ///< e.g. "k.codes", "k.scale_min", "v.window"
  StorageKind kind = StorageKind::kCompressed;
  uint64_t bytes = 0;
  int64_t tokens = 0;
};

/// The storage of one encoded layer (all its KV heads).
struct Storage {
  int kv_heads = 0;
  std::vector<StorageItem> items;
  /// The codec's own steady-state cost per compressed token per KV head (K and V together), from its
  /// formula. Used only when no token reached a compressed region (e.g. C smaller than a fp16 window),
  /// and compared with the measured value by tests.
  double nominal_bytes_per_token = 0;
};

/// The raw bytes of one buffer of an encoded layer (tests and `kvbench selftest` compare CPU and GPU
/// encodes byte for byte through this).
struct NamedBuffer {
  std::string name;  ///< the StorageItem name it backs, e.g. "k.codes"
  std::vector<uint8_t> bytes;
};

/// Device-side timings of a layer that lives on a GPU (CUDA events; docs/metrics.md §7).
struct DeviceTimes {
  double encode_median_s = 0, encode_p95_s = 0;
  double attend_median_s = 0, attend_p95_s = 0;  ///< one launch attending every query of every query head
  int encode_samples = 0, attend_samples = 0;
  std::string device;  ///< e.g. "cuda:0 NVIDIA H100 80GB HBM3"
};

/// Per-thread scratch memory for attend/scores, so the hot loop never allocates.
struct Scratch {
  std::vector<float> f;
  std::vector<float> f2;
  std::vector<double> d;
  float* floats(size_t n) {
    if (f.size() < n) f.resize(n);
    return f.data();
  }
  float* floats2(size_t n) {
    if (f2.size() < n) f2.resize(n);
    return f2.data();
  }
};

/// A layer's compressed cache.
class EncodedLayer {
 public:
  virtual ~EncodedLayer() = default;
  EncodedLayer() = default;
  EncodedLayer(const EncodedLayer&) = delete;
  EncodedLayer& operator=(const EncodedLayer&) = delete;

  /// Number of cached tokens C this layer was encoded from.
  virtual int64_t tokens() const = 0;
  virtual Storage storage() const = 0;

  /// Approximate logits ŝ[C] (softmax_scale and softcap applied) of query q[head_dim] against KV head g.
  /// Returns false when the codec defines no logits (then s_out is untouched).
  virtual bool scores(int g, const float* q, float* s_out, Scratch& scratch) const {
    (void)g, (void)q, (void)s_out, (void)scratch;
    return false;
  }
  /// Approximate attention output ô[head_dim] of q against KV head g, from the compressed form.
  virtual void attend(int g, const float* q, float* o_out, Scratch& scratch) const = 0;
  /// Attention outputs of nq queries against KV head g in one call: outs[i][0..head_dim) for qs[i].
  /// Must equal attend() per query up to float reassociation. The default loops over attend();
  /// codecs override it to read and unpack each compressed row once for all nq queries (GQA groups).
  virtual void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const {
    for (int i = 0; i < nq; ++i) attend(g, qs[i], outs[i], scratch);
  }
  /// attend() plus, beside the output, lse = ln Σ_t w_t·exp(ŝ_t): the log of the normalizer the codec divided
  /// its output by (w_t = 1 for codecs that weight every cached token alike; the selection family's estimator
  /// weights kept tokens). With it a caller merges this attention with exact attention over other tokens
  /// (kvbench e2e: the compressed prompt and the exact continuation) with no error of its own:
  ///   o = (e^lse·ô + e^lse'·o') / (e^lse + e^lse')   (merge_attention below).
  /// The default, for codecs whose output is Σ softmax(ŝ)_t v̂_t over all C tokens, is attend() and the
  /// log-sum-exp of scores() (logsumexp_logits); a codec whose softmax weights are not exp(ŝ_t) must override
  /// it. Throws RuntimeError for a codec that defines no logits and does not override it.
  virtual void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const;
  /// For token-dropping codecs: mask[C], 1 where the token is still held. Empty = every token is held.
  virtual std::vector<uint8_t> held_tokens(int g) const {
    (void)g;
    return {};
  }
  /// The stored buffers, byte for byte, under their StorageItem names (empty when a codec does not expose
  /// them). Used to check GPU encodes against CPU encodes exactly.
  virtual std::vector<NamedBuffer> buffers() const { return {}; }
  /// Layers resident on a GPU: time the encode of this layer's cache `kv` and one batched attend of every
  /// query in `q` (query head h reads KV head h / group) with CUDA events, the data already on the device.
  /// Returns false for host layers (the runner then times attend_many with the host clock).
  virtual bool device_timing(const LayerKV& kv, const LayerQueries& q, int min_repeats, double min_time_s,
                             DeviceTimes* out) const {
    (void)kv, (void)q, (void)min_repeats, (void)min_time_s, (void)out;
    return false;
  }
};

/// s[0, C) logits -> unnormalised softmax weights exp(s - max), in place; returns their sum l (double, >= 1),
/// the normalizer the caller divides its output by. With lse, also *lse = max + ln l = ln Σ_t exp(s_t), that
/// normalizer in logit units (EncodedLayer::attend_lse), at no extra pass. Logits that overflowed to +Inf
/// share the mass equally (lse = +Inf), and so do logits that are all −Inf (lse = −Inf): never NaN.
double softmax_weights(float* s, int64_t C, double* lse = nullptr);

/// ln Σ_t exp(s[t]) of n logits, max-shifted, summed in double. -inf for n == 0; +inf when a logit is +inf.
double logsumexp_logits(const float* s, int64_t n);

/// Merges two attentions over disjoint token sets, each given as (output [d], log-sum-exp of its weights):
/// out = (e^la·a + e^lb·b) / (e^la + e^lb), computed max-shifted. Returns ln(e^la + e^lb). `out` may alias a.
/// Either side may be empty (lse = -inf: the other side is returned unchanged); a side whose lse is +inf (its
/// logits overflowed) takes all the mass, both +inf share it equally, so the result is never NaN.
double merge_attention(const float* a, double la, const float* b, double lb, float* out, int d);

/// How the cached keys (and the queries) carry RoPE: the dump's rope_applied, rope_style and rope_theta
/// (docs/dump-format.md). Codecs that quantize keys before RoPE (kvquant) undo it with each cached row's
/// position (LayerKV::pos0 + row) and re-apply it when scoring.
struct RopeInfo {
  bool applied = false;        ///< keys and queries are post-RoPE
  std::string style = "none";  ///< "half" | "interleaved" | "none"
  double theta = 10000.0;
};

/// Everything a codec may know about the run, besides its parameters.
struct CodecContext {
  ModelShape shape;
  AttnConfig attn;
  uint64_t seed = 0;  ///< derive every random stream from this (kvb/core/rng.h)
  RopeInfo rope;      ///< default: no RoPE on the keys
};

/// What fit() learned for one layer, immutable once made; each trainable codec derives its own (codebooks,
/// autoencoder weights, a temperature). The ref, CPU and CUDA implementations of a codec encode from the
/// same state, so one of them fits and the others adopt its state, as faiss builds a GPU index from the
/// trained CPU one: nothing is trained twice, and the implementations compare on identical models.
struct TrainedLayer {
  virtual ~TrainedLayer() = default;
};

class Codec {
 public:
  virtual ~Codec() = default;
  Codec() = default;
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  /// Fit layer `layer` on calibration caches (other sequences than the evaluated one). Called once per
  /// layer before any encode of that layer, only for trainable codecs.
  virtual void fit(int layer, const std::vector<const LayerKV*>& calib, const CodecContext& ctx) {
    (void)layer, (void)calib, (void)ctx;
  }
  /// The state fit(layer, ...) or adopt(layer, ...) gave layer `layer`; nullptr when it has none (not fitted,
  /// or a codec that learns nothing).
  virtual std::shared_ptr<const TrainedLayer> trained(int layer) const {
    (void)layer;
    return nullptr;
  }
  /// Instead of fit(layer, ...): take `state`, the trained(layer) of another implementation of this codec
  /// whose parameters train the same model; encode then runs on that model. Throws UsageError for a state of
  /// another codec, layer or training parameters (here: for any state, a codec that learns nothing takes none).
  virtual void adopt(int layer, std::shared_ptr<const TrainedLayer> state) {
    if (state) throw UsageError(fmt::format("adopt of layer {}: this codec learns nothing", layer));
  }
  /// Encode one layer's cache. `prev` is the same sequence's previous layer as this codec encoded it
  /// (nullptr for layer 0), for cross-layer codecs.
  virtual std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer* prev,
                                               const CodecContext& ctx) const = 0;
  /// Extra facts for results.json (training time, losses, variant that ran, ...).
  virtual Json report() const { return Json::object(); }
};

/// Fit layer `layer` of `to` as `from` was fitted: adopt from.trained(layer) when there is one, else
/// to.fit(layer, calib, ctx). For callers that build several implementations of one codec (tests,
/// `kvbench selftest`): only `from` trains.
inline void fit_like(Codec& to, const Codec& from, int layer, const std::vector<const LayerKV*>& calib,
                     const CodecContext& ctx) {
  if (auto s = from.trained(layer))
    to.adopt(layer, std::move(s));
  else
    to.fit(layer, calib, ctx);
}

}  // namespace kvb
