/// kvquant registry entry and its trainable Codec: fit() calibrates per layer (kvquant_fit.cpp), the ref and
/// CPU layers encode from that one state.
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "codecs/kvquant/kvquant_codec.h"

namespace kvb::codecs {

void KvquantParams::check(int head_dim) const {
  KVB_CHECK(head_dim >= 1 && head_dim <= 65535, Unsupported, "kvquant: head_dim {} outside [1, 65535]", head_dim);
}

std::string KvquantParams::label() const {
  std::string s = k_bits == v_bits ? fmt::format("kvquant-nuq{}", k_bits) : fmt::format("kvquant-k{}v{}", k_bits, v_bits);
  if (outliers > 0) s += fmt::format("-{:g}%", 100 * outliers);
  if (kmeans == "plain") s += "-plain";
  if (qnorm) s += "-qn";
  if (!pre_rope) s += "-postrope";
  return s;
}

double KvquantParams::nominal_bits(int d) const {
  const double cnt = d > 255 ? 16 : 8, idx = d > 256 ? 16 : 8;
  const double dense = std::ceil(d * k_bits / 8.0) * 8 + std::ceil(d * v_bits / 8.0) * 8 + 32  // v offset, range
                       + 2 * (cnt + 32.0 / 64);                                                // counts, block index
  const double sparse = (outliers * d + kvquant::values_outliers_per_row(d, outliers)) * (idx + 16);
  return (dense + sparse) / (2.0 * d);
}

namespace {

const ParamTable<KvquantParams>& kvquant_params() {
  using P = KvquantParams;
  static const ParamTable<P> table({
      bind(ParamSpec::Int("k_bits", 3, 1, 8, "key code bits b: 2^b non-uniform levels per layer (nuq-b)"), &P::k_bits),
      bind(ParamSpec::Int("v_bits", 3, 1, 8, "value code bits"), &P::v_bits),
      bind(ParamSpec::Float("outliers", 0.01, 0.0, 0.5,
                            "dense-and-sparse: fraction f kept in fp16 with their channel index (keys: outside the "
                            "calibrated per-channel f/2 and 1 − f/2 percentiles; values: per token); 0 = dense only"),
           &P::outliers),
      bind(ParamSpec::Choice("kmeans", "fisher", {"fisher", "plain"},
                             "level fitting: fisher = k-means weighted by the attention-output Fisher information of "
                             "the calibration prompt's observation queries (needs kvdump obs_queries); plain = unweighted"),
           &P::kmeans),
      bind(ParamSpec::Bool("qnorm", false, "Q-Norm: shift and scale the decode levels to the calibration mean and std"),
           &P::qnorm),
      bind(ParamSpec::Bool("pre_rope", true,
                           "quantize keys before RoPE (un-rotated with their positions, RoPE re-applied when scoring); "
                           "false = the post-RoPE keys as stored"),
           &P::pre_rope),
  });
  return table;
}

class KvquantCodec final : public Codec {
 public:
  using EncodeFn = std::unique_ptr<EncodedLayer> (*)(const KvquantParams&, std::shared_ptr<const kvquant::Trained>,
                                                     const LayerKV&, const CodecContext&);
  KvquantCodec(KvquantParams p, EncodeFn fn, std::string impl) : p_(std::move(p)), fn_(fn), impl_(std::move(impl)) {}

  void fit(int layer, const std::vector<const LayerKV*>& calib, const CodecContext& ctx) override {
    if (!calib.empty()) p_.check(calib.front()->head_dim);
    layers_[layer] = kvquant::fit(p_, layer, calib, ctx);
  }
  std::shared_ptr<const TrainedLayer> trained(int layer) const override {
    const auto it = layers_.find(layer);
    return it == layers_.end() ? nullptr : it->second;
  }
  void adopt(int layer, std::shared_ptr<const TrainedLayer> state) override {
    layers_[layer] = adopted_state<kvquant::Trained>(std::move(state), p_, layer);
  }
  std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer* prev,
                                       const CodecContext& ctx) const override {
    (void)prev;
    check_layer(kv, p_.label());
    p_.check(kv.head_dim);
    const auto it = layers_.find(layer);
    KVB_CHECK(it != layers_.end(), UsageError,
              "{}: layer {} was not fitted (kvquant calibrates its thresholds and levels first: fit(layer, ...))",
              p_.label(), layer);
    return fn_(p_, it->second, kv, ctx);
  }
  Json report() const override {
    Json j{{"label", p_.label()}, {"implementation", impl_}};
    Json layers = Json::object();
    for (const auto& [l, s] : layers_)
      layers[std::to_string(l)] = Json{{"kmeans", s->weighting},
                                       {"keys", s->rope_note},
                                       {"calibration_tokens", s->calib_tokens},
                                       {"k_calibration_outlier_fraction", s->k_calib_outlier_frac},
                                       {"v_calibration_outlier_fraction", s->v_calib_outlier_frac},
                                       {"k_levels", s->k_levels},
                                       {"v_levels", s->v_levels},
                                       {"kmeans_iterations", Json{s->k_iters, s->v_iters}}};
    j["fit"] = layers;
    return j;
  }

 private:
  KvquantParams p_;
  EncodeFn fn_;
  std::string impl_;
  std::map<int, std::shared_ptr<const kvquant::Trained>> layers_;
};

CodecFactory kvquant_factory(KvquantCodec::EncodeFn fn, std::string impl) {
  return codec_factory(kvquant_params(), "kvquant", [fn, impl = std::move(impl)](KvquantParams p) {
    return std::make_unique<KvquantCodec>(std::move(p), fn, impl);
  });
}

}  // namespace

CodecEntry kvquant_entry() {
  CodecEntry e;
  e.info.name = "kvquant";
  e.info.family = "nonuniform_quantization";
  e.info.summary =
      "KVQuant: keys per channel before RoPE (un-rotated exactly, RoPE re-applied when scoring), values per token, "
      "per-layer non-uniform levels by sensitivity-weighted k-means, dense-and-sparse fp16 outliers";
  e.info.paper = "KVQuant, arXiv 2401.18079 (NeurIPS 2024)";
  e.info.budget_rule =
      "b_eff = (K + V bits per token)/(2·head_dim): codes ⌈d·b/8⌉ bytes per part, values' fp16 offset and range "
      "(32 bits), per part an outlier count per row (8 bits; 16 above head_dim 255) and a 32-bit block index per "
      "64 rows, and every outlier (fp16 value + channel index, 24 bits at head_dim <= 256) as found (keys: data-"
      "dependent; values: 2 per row at head_dim 128 and f = 1%). Candidates nuq2..nuq5 with f = 1% and nuq2..nuq5 "
      "dense; their bits assume f of the keys outside the calibrated thresholds. At head_dim 128, nuq3-1%: 3.50 (384 + 384 code bits, 32 scale bits, 17 for counts and block index, 3.28 outliers × 24).";
  e.info.params = kvquant_params().specs();
  e.info.presets = {
      {"paper-4bit-1%", Json{{"k_bits", 4}, {"v_bits", 4}, {"outliers", 0.01}}},
      {"paper-3bit-1%", Json{{"k_bits", 3}, {"v_bits", 3}, {"outliers", 0.01}}},
      {"paper-2bit-1%", Json{{"k_bits", 2}, {"v_bits", 2}, {"outliers", 0.01}, {"qnorm", true}}},
  };
  e.info.trainable = true;
  e.info.notes =
      "the paper reports '3-bit 1%' as ~3.3 bits counting codes and outliers only; kvbench counts the value "
      "scales, the outlier counts and block index too (nuq3-1% at head_dim 128: 3.50 expected). The paper's "
      "Fisher information needs the model loss's gradients, which a KV dump cannot give: kmeans fisher uses the "
      "layer's attention output instead (diagonal Fisher of o from the calibration prompt's observation "
      "queries; kvdump obs_queries, default 32 per sequence); kmeans plain is the labelled unweighted variant. "
      "One level set per layer for keys and one for values (shared by KV heads and channels after per-channel/"
      "per-token normalization, as the reference code fits them). Key thresholds calibrated offline (§3.6); "
      "RoPE undone with positions pos0 + row and θ from the dump (plain RoPE: a model with scaled RoPE, e.g. "
      "Llama-3.1's, is not un-rotated exactly); dumps with rope_applied = 0 need no un-rotation (the report says "
      "which ran). Not implemented: the attention-sink fp16 first token and the paper's online (per-token) key thresholds. CUDA: the CPU's bytes (device encode), attention from the codes with RoPE re-applied per row.";
  e.candidates = [](int d) {
    std::vector<Candidate> out;
    for (double f : {0.01, 0.0})
      for (int b = 2; b <= 5; ++b) {
        KvquantParams p;
        p.k_bits = p.v_bits = b;
        p.outliers = f;
        out.push_back({Json{{"k_bits", b}, {"v_bits", b}, {"outliers", f}}, p.nominal_bits(d)});
      }
    return out;
  };
  e.label = codec_label(kvquant_params(), "kvquant");
  e.make_cpu = kvquant_factory(kvquant_encode_cpu, "cpu");
  e.make_ref = kvquant_factory(kvquant_encode_ref, "ref");
#ifdef KVB_WITH_CUDA
  e.make_cuda = kvquant_factory(kvquant_encode_cuda, "cuda");
#endif
  // Selftest (CPU vs CUDA, bytes exact): the defaults (3-bit, 1% outliers, Fisher, pre-RoPE), 2-bit with Q-Norm,
  // dense 4-bit on post-RoPE keys (pre_rope off: no un-rotation, no RoPE when scoring).
  e.selftest_variants = {Json::object(), Json{{"k_bits", 2}, {"v_bits", 2}, {"qnorm", true}},
                         Json{{"k_bits", 4}, {"v_bits", 4}, {"outliers", 0.0}, {"pre_rope", false}}};
  return e;
}

}  // namespace kvb::codecs
