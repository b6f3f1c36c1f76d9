/// Registry entry of `kvcar` (KV-CAR-proxy, docs/codecs.md §10; kvcar_codec.h).
#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "codecs/kvcar/kvcar_codec.h"
#include "kvb/core/error.h"

namespace kvb::codecs {

const ParamTable<KvcarParams>& KvcarParams::table() {
  using P = KvcarParams;
  static const ParamTable<P> t({
      bind(ParamSpec::Float("ratio", 0.5, 1e-6, 1.0,
                            "d_lat / D_s: latent width over the stored heads' width (d_lat = ceil(ratio·D_s)); 0.5 "
                            "fits the paper's savings arithmetic"),
           &P::ratio),
      bind(ParamSpec::Float("hidden", 0.5, 1e-6, 4.0, "h / D_s: hidden width of encoder and decoder (h >= d_lat)"),
           &P::hidden),
      bind(ParamSpec::Bool("int8", false, "int8 latent with a per-token float32 scale and minimum (else fp16)"),
           &P::int8),
      bind(ParamSpec::Int("reuse_heads", 0, 0, 4096,
                          "r: per layer, the r KV heads closest (normalized L1, calibration data) to the same head of "
                          "the previous layer are not stored and read that layer's reconstruction"),
           &P::reuse_heads),
      bind_choice(ParamSpec::Choice("loss", "mse", {"mse", "l1"}, "reconstruction loss on standardized K/V rows"),
                  &P::loss, {{"mse", KvcarLoss::kMse}, {"l1", KvcarLoss::kL1}}),
      bind(ParamSpec::Int("epochs", 4, 1, 100000, "training epochs over the calibration tokens"), &P::epochs),
      bind(ParamSpec::Int("batch", 128, 2, 1 << 20, "mini-batch rows (BatchNorm batch statistics)"), &P::batch),
      bind(ParamSpec::Float("lr", 3e-3, 1e-9, 10.0, "Adam learning rate"), &P::lr),
      bind(ParamSpec::Int("max_calib_tokens", 1024, 1, 1 << 30,
                          "calibration tokens per layer (evenly strided over the calibration sequences)"),
           &P::max_calib_tokens),
      bind(ParamSpec::Float("leaky_slope", 0.01, 0.0, 1.0, "LeakyReLU negative slope"), &P::leaky_slope),
      bind_choice(ParamSpec::Choice("decode", "every_call", {"every_call", "once"},
                                    "every_call: each scores/attend decodes all cached tokens (the paper's per-step "
                                    "cost); once: each head decoded on first use and kept (identical outputs; for "
                                    "fidelity sweeps, not counted as storage, throughput then excludes the decoder)"),
                  &P::decode_once, {{"every_call", false}, {"once", true}}),
  });
  return t;
}

bool KvcarParams::trains_like(const KvcarParams& o) const {
  KvcarParams a = *this;
  a.int8 = o.int8;
  a.decode_once = o.decode_once;
  return a == o;
}

void KvcarParams::check(int head_dim) const {
  KVB_CHECK(head_dim >= 1, Unsupported, "{}: head_dim {} must be >= 1", label(), head_dim);
  KVB_CHECK(ratio > 0 && ratio <= 1, Unsupported, "{}: ratio {} outside (0, 1]", label(), ratio);
}

std::string KvcarParams::label() const {
  return fmt::format("kvcar-proxy-lat{:g}{}{}{}", ratio, int8 ? "-int8" : "",
                     reuse_heads > 0 ? fmt::format("-reuse{}", reuse_heads) : std::string(),
                     decode_once ? "-decode-once" : "");
}

int KvcarParams::latent_dim(int Ds) const {
  return std::max(1, static_cast<int>(std::ceil(ratio * Ds - 1e-9)));
}

int KvcarParams::hidden_dim(int Ds) const {
  return std::max(latent_dim(Ds), static_cast<int>(std::ceil(hidden * Ds - 1e-9)));
}

double KvcarParams::bytes_per_token_layer(int stored, int d) const {
  if (stored <= 0) return 0;
  const double dl = latent_dim(stored * d);
  return 2.0 * (int8 ? dl + 8.0 : 2.0 * dl);
}

namespace {

/// The kvcar codec: fit() trains each layer (kvcar_fit_layer, shared with the reference), encode() runs the
/// cpu or ref inference, report() lists per-layer training facts.
class KvcarCodec final : public Codec {
 public:
  KvcarCodec(KvcarParams p, KvcarEncodeFn fn, bool cpu, std::string impl)
      : p_(p), fn_(fn), cpu_(cpu), impl_(std::move(impl)) {}

  void fit(int layer, const std::vector<const LayerKV*>& calib, const CodecContext& ctx) override {
    KVB_CHECK(!calib.empty(), RuntimeError, "{}: fit of layer {} got no calibration cache", p_.label(), layer);
    for (const LayerKV* kv : calib) check_layer(*kv, p_.label());
    p_.check(calib[0]->head_dim);
    // The reuse ranking compares with layer−1's calibration caches, which an adopted layer−1 did not leave.
    KVB_CHECK(p_.reuse_heads == 0 || prev_layer_ != layer - 1 || !prev_adopted_, UsageError,
              "{}: fit of layer {} after adopt of layer {}: the reuse ranking needs that layer's calibration caches "
              "(fit every layer, or adopt every layer)",
              p_.label(), layer, layer - 1);
    const std::vector<LayerKV> none;
    set_model(layer, kvcar_fit_layer(p_, layer, calib, prev_layer_ == layer - 1 ? prev_calib_ : none, ctx.seed));
    // Keep this layer's calibration caches for the next layer's reuse ranking.
    prev_calib_.clear();
    if (p_.reuse_heads > 0)
      for (const LayerKV* kv : calib) prev_calib_.push_back(*kv);
    prev_layer_ = layer;
    prev_adopted_ = false;
  }

  std::shared_ptr<const TrainedLayer> trained(int layer) const override {
    const auto it = fits_.find(layer);
    return it == fits_.end() ? nullptr : it->second.model;
  }
  void adopt(int layer, std::shared_ptr<const TrainedLayer> state) override {
    auto m = adopted_state<KvcarLayerModel>(std::move(state), p_, layer);
    KVB_CHECK(m->layer == layer, UsageError, "{}: adopt of layer {}: the state is layer {}'s", p_.label(), layer,
              m->layer);
    set_model(layer, std::move(m));
    prev_calib_.clear();
    prev_layer_ = layer;
    prev_adopted_ = true;
  }

  std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer* prev,
                                       const CodecContext& ctx) const override {
    check_layer(kv, p_.label());
    p_.check(kv.head_dim);
    const auto it = fits_.find(layer);
    KVB_CHECK(it != fits_.end(), RuntimeError,
              "{}: layer {} was not fitted (kvcar is trainable: fit() on calibration data comes first)", p_.label(),
              layer);
    const KvcarLayerModel& m = *it->second.model;
    KVB_CHECK(m.kv_heads == kv.kv_heads && m.head_dim == kv.head_dim, DataError,
              "{}: layer {} was fitted on {} KV heads x head_dim {}, the cache has {} x {}", p_.label(), layer,
              m.kv_heads, m.head_dim, kv.kv_heads, kv.head_dim);
    return fn_(p_, it->second, layer, kv, prev, ctx);
  }

  Json report() const override {
    Json layers = Json::array();
    double train_s = 0;
    int64_t fixed = 0;
    for (const auto& [l, f] : fits_) {
      const KvcarLayerModel& m = *f.model;
      Json j{{"layer", l}, {"stored_heads", m.stored}, {"reused_heads", m.reused}};
      if (!m.head_distance.empty()) j["head_l1_distance_to_prev_layer"] = m.head_distance;
      if (!m.stored.empty()) {
        j["D_s"] = m.k.D;
        j["hidden"] = m.k.h;
        j["d_lat"] = m.k.dl;
        j["train_tokens"] = m.k_log.tokens;
        j["train_steps"] = m.k_log.steps;
        j["k_loss_per_epoch"] = m.k_log.loss;
        j["v_loss_per_epoch"] = m.v_log.loss;
        j["k_final_loss"] = m.k_log.loss.empty() ? 0.0 : m.k_log.loss.back();
        j["v_final_loss"] = m.v_log.loss.empty() ? 0.0 : m.v_log.loss.back();
        j["train_seconds"] = m.k_log.seconds + m.v_log.seconds;
        train_s += m.k_log.seconds + m.v_log.seconds;
        fixed += 4 * (m.k.inference_floats() + m.v.inference_floats());
        // Decoder work per cached token of one head, per scores/attend call (the paper decodes every step):
        // d_lat·h for the first decoder Linear (shared by the layer's heads, redone per call) + h·head_dim.
        j["decode_macs_per_token_per_call"] = 2 * (static_cast<int64_t>(m.k.dl) * m.k.h + static_cast<int64_t>(m.k.h) * m.head_dim);
      }
      layers.push_back(j);
    }
    return Json{{"label", p_.label()},
                {"variant", kKvcarProxyLabel},
                {"implementation", impl_},
                {"loss", p_.loss == KvcarLoss::kL1 ? "l1" : "mse"},
                {"train_seconds_total", train_s},
                {"train_seconds_note", "CPU seconds summed over the K and V trainings (run two at a time), "
                                       "adopted layers (one codec's trained state handed to another) report the fit that trained them"},
                {"ae_weight_bytes_total", fixed},
                {"attend", p_.decode_once
                               ? "decode=once: each head decoded on first use and kept (NOT the paper's per-step "
                                 "cost; throughput excludes the decoder; decoded rows not counted as storage)"
                               : "every scores/attend call decodes all cached tokens of the head (first decoder "
                                 "Linear over the layer latent, then the head's slice of the last Linear)"},
                {"layers", layers}};
  }

 private:
  KvcarParams p_;
  KvcarEncodeFn fn_;
  bool cpu_;
  std::string impl_;
  std::map<int, KvcarFit> fits_;
  std::vector<LayerKV> prev_calib_;
  int prev_layer_ = -2;
  bool prev_adopted_ = false;

  /// The layer's fit as the encoders see it: the model, and for the cpu (and CUDA) codec its folded weights.
  void set_model(int layer, std::shared_ptr<const KvcarLayerModel> model) {
    KvcarFit f;
    f.model = std::move(model);
    if (cpu_ && !f.model->stored.empty()) {
      f.cpu_k = kvcar_fold_cpu(f.model->k);
      f.cpu_v = kvcar_fold_cpu(f.model->v);
    }
    fits_[layer] = std::move(f);
  }
};

/// Bits per element of one KV head (D = head_dim, nothing reused): an upper bound for wider layers, whose
/// d_lat = ceil(ratio·D) rounds up by less per head and whose int8 metadata spreads over more elements.
double candidate_bits(double ratio, bool int8, int head_dim) {
  KvcarParams p;
  p.ratio = ratio, p.int8 = int8;
  return 8.0 * p.bytes_per_token_layer(1, head_dim) / (2.0 * head_dim);
}

}  // namespace

CodecEntry kvcar_entry() {
  CodecEntry e;
  e.info.name = "kvcar";
  e.info.family = "learned_autoencoder";
  e.info.summary = std::string(kKvcarProxyLabel) +
                   ": per-layer K and V autoencoders (Linear-BatchNorm-LeakyReLU-Linear, mirrored decoder) trained on "
                   "calibration tokens with a reconstruction loss, fp16/int8 latents, cross-layer head reuse";
  e.info.paper = "KV-CAR, arXiv 2512.06727";
  e.info.trainable = true;
  e.info.params = KvcarParams::table().specs();
  e.info.budget_rule =
      "b_eff = 16·d_lat/D (fp16 latent) or 8·d_lat/D + 64/D (int8 latent and per-token float32 scale and minimum), "
      "d_lat = ceil(ratio·D); candidates ratio 1/2, 1/4, 1/8 x int8 off/on, with bits stated for one KV head "
      "(D = head_dim), an upper bound for wider layers. Reuse is not a grid point: it lowers b_eff by "
      "r/n_kv_heads on every layer but the first, which a head_dim-keyed grid cannot state; combine a budget with "
      "params {\"reuse_heads\": r} or use the paper-reuse preset. Autoencoder weights are fixed bytes.";
  e.info.presets = {
      {"paper", Json{{"ratio", 0.5}, {"int8", false}, {"reuse_heads", 0}}},
      {"paper-int8", Json{{"ratio", 0.5}, {"int8", true}, {"reuse_heads", 0}}},
      {"paper-reuse", Json{{"ratio", 0.5}, {"int8", false}, {"reuse_heads", 1}}},
  };
  e.info.notes =
      std::string(kKvcarProxyLabel) +
      ": the paper fine-tunes with the LM cross-entropy; kvbench has no model in the loop, so the autoencoders "
      "train on reconstruction only (docs/codecs.md §10.6). h defaults to D/2 (one secondary source); inputs "
      "standardized per channel with calibration statistics (folded into the weights); BatchNorm uses running "
      "statistics at inference. Every scores/attend decodes all cached tokens (the paper's cost, see "
      "throughput). Defaults train briefly (4 epochs over <= 1024 tokens per layer, seconds per layer at "
      "D = 1024 on one core); raise epochs / max_calib_tokens for better fidelity. Reuse needs consecutive "
      "layers starting where fitting started. CUDA backend: the CPU encoder writes the latents, the device decodes "
      "every token per call (tiled SGEMM kernels) and attends; reuse is CPU-only.";
  e.candidates = [](int head_dim) {
    std::vector<Candidate> out;
    for (double r : {0.5, 0.25, 0.125})
      for (bool q : {false, true}) {
        const double bits = candidate_bits(r, q, head_dim);
        out.push_back({Json{{"ratio", r}, {"int8", q}, {"reuse_heads", 0}}, bits});
      }
    return out;
  };
  e.label = codec_label(KvcarParams::table(), "kvcar");
  auto factory = [](KvcarEncodeFn fn, bool cpu, std::string impl) -> CodecFactory {
    return codec_factory(KvcarParams::table(), "kvcar", [fn, cpu, impl](KvcarParams p, const ModelShape& shape) {
      KVB_CHECK(shape.n_kv_heads <= 0 || p.reuse_heads <= shape.n_kv_heads, Unsupported,
                "{}: reuse_heads {} exceeds n_kv_heads {}", p.label(), p.reuse_heads, shape.n_kv_heads);
      return std::make_unique<KvcarCodec>(p, fn, cpu, impl);
    });
  };
  e.make_cpu = factory(kvcar_encode_cpu, true, "cpu");
  e.make_ref = factory(kvcar_encode_ref, false, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = factory(kvcar_encode_cuda, true, "cuda");
#endif
  return e;
}

}  // namespace kvb::codecs
