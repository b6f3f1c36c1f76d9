#pragma once
/// kvcar: KV-CAR (Roy, Sridharan, Selvam, Raghunathan; arXiv 2512.06727; docs/codecs.md §10), as the
/// reconstruction-trained proxy of docs/codecs.md §10.6, labelled "KV-CAR-proxy (no LM fine-tune)" everywhere: the paper
/// fine-tunes with the language-model loss, kvbench has no model in the loop.
///
/// Per layer, the KV heads split into STORED heads and REUSED heads (cross-layer reuse, docs/codecs.md §10.2):
///  - reuse: at fit time the heads of layer N are ranked by the normalized L1 distance
///    Σ|X_N,h − X_{N−1},h| / Σ|X_{N−1},h| (K and V averaged) on the calibration tokens; the `reuse_heads`
///    most similar are not stored and attention reads layer N−1's reconstruction of that head (which may in
///    turn be a reuse of layer N−2). Layer 0, and a layer whose predecessor was not fitted just before it,
///    reuse nothing.
///  - stored heads: one autoencoder for K and one for V over the concatenated stored heads,
///    D_s = n_stored · head_dim wide (the whole layer width D when nothing is reused):
///      encoder  x -> Linear(D_s→h) -> BatchNorm -> LeakyReLU -> Linear(h→d_lat) = z
///      decoder  z -> Linear(d_lat→h) -> BatchNorm -> LeakyReLU -> Linear(h→D_s) = x̂
///    with d_lat = ⌈ratio·D_s⌉ and h = max(d_lat, ⌈hidden·D_s⌉). NOTE(kvcar): the input is standardized
///    per channel with the calibration mean and std (folded into the first and last Linear at inference);
///    the paper does not say, but raw keys carry ~20x outlier channels that otherwise dominate the loss and
///    the early training. The Linear before each BatchNorm has no bias (BatchNorm's shift subsumes it).
///    BatchNorm uses batch statistics in training and the running statistics (momentum 0.1, unbiased
///    variance, eps 1e-5, as PyTorch) at inference.
///  - training: Adam (β 0.9/0.999, eps 1e-8, cosine decay of the rate to lr/10) on the calibration tokens
///    only, MSE or L1 reconstruction loss measured in raw units (standardized channels re-weighted by σ² or
///    σ, normalized to mean 1, so the reported loss is relative to the mean channel variance), shuffled
///    mini-batches, deterministic per seed (kvcar_train.cpp, one function shared by cpu and ref).
///  - latent storage per token: d_lat fp16 values, or (int8 = true, docs/codecs.md §10.3) d_lat int8 codes with a per-token
///    float32 scale = 255/(max−min) and float32 minimum: q = round(scale·(z − min)) − 128,
///    ẑ = (q + 128)/scale + min. NOTE(kvcar): the spec's integer zero point −round(scale·min) − 128 is
///    stored as the float minimum instead: the same grid up to a sub-step shift, and no cancellation when
///    |min| ≫ max − min.
///
/// Storage (StorageItem names, per layer):
///   k.latent, v.latent       kCompressed  [C, d_lat] fp16 or int8 rows (0 bytes when every head is reused)
///   k.scale_min, v.scale_min kCompressed  [C, 2] float32 (int8 only)
///   k.ae_weights, v.ae_weights kFixed     the folded float32 inference weights of both halves
///                                          (encoder: h·D_s + h + d_lat·h + d_lat, decoder: h·d_lat + h +
///                                          D_s·h + D_s floats)
///   reuse.heads              kFixed       one int32 per reused head (which heads read layer N−1)
/// Reused heads cost 0 bytes per token.
///
/// Attention (docs/codecs.md §10.5): every scores/attend call decodes ALL C cached tokens of the head through the decoder
/// (the paper's design; the decoder is a nonlinear MLP and cannot be folded into the attention product),
/// then runs standard attention over the decoded rows. attend_many decodes once for its queries.
/// `decode=once` (not the paper's cost, for fidelity sweeps on CPU) decodes each head on first use and keeps
/// the rows (same floats; not counted as storage; throughput then excludes the decoder and says so).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvb/core/codec.h"
#include "kvb/core/params.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

/// The label every kvcar result carries (docs/codecs.md §10.6).
inline constexpr const char* kKvcarProxyLabel = "KV-CAR-proxy (no LM fine-tune)";

enum class KvcarLoss { kMse, kL1 };

struct KvcarParams {
  double ratio = 0.5;    ///< d_lat / D_s
  double hidden = 0.5;   ///< h / D_s (h is at least d_lat)
  bool int8 = false;     ///< int8 latent with per-token scale and minimum
  int reuse_heads = 0;   ///< r: heads of each layer read from the previous layer
  KvcarLoss loss = KvcarLoss::kMse;
  int epochs = 4;
  int batch = 128;
  double lr = 3e-3;
  int max_calib_tokens = 1024;  ///< calibration tokens per layer (evenly strided subsample)
  double leaky_slope = 0.01;
  bool decode_once = false;  ///< decode=once: decode each head once per layer and keep it (fidelity sweeps)

  /// The parameters, each bound to its field; from_json reads a resolved parameter object.
  static const ParamTable<KvcarParams>& table();
  static KvcarParams from_json(const Json& resolved) { return table().from_json(resolved); }
  bool operator==(const KvcarParams&) const = default;
  /// Whether a model trained with these parameters is the one `o` trains: everything but the latent
  /// storage (int8) and the decode schedule, which act after training on the same model.
  bool trains_like(const KvcarParams& o) const;
  void check(int head_dim) const;
  std::string label() const;
  int latent_dim(int Ds) const;
  int hidden_dim(int Ds) const;
  /// Bytes per token per layer for `stored` stored heads of head_dim d (K and V together).
  double bytes_per_token_layer(int stored, int d) const;
};

/// One trained autoencoder: the training-mode parameters (float64 copies of the float32 training state)
/// and the BatchNorm running statistics. Row-major matrices.
struct AeWeights {
  int D = 0, h = 0, dl = 0;
  double slope = 0.01, eps = 1e-5;
  std::vector<double> mu, sigma;               ///< [D] input standardization
  std::vector<double> w1;                      ///< [h, D]
  std::vector<double> g1, b1, rm1, rv1;        ///< [h] BN gamma, beta, running mean, running variance
  std::vector<double> w2, c2;                  ///< [dl, h], [dl]
  std::vector<double> w3;                      ///< [h, dl]
  std::vector<double> g3, b3, rm3, rv3;        ///< [h]
  std::vector<double> w4, c4;                  ///< [D, h], [D]
  /// Floats of the folded inference weights (what k.ae_weights / v.ae_weights count).
  int64_t inference_floats() const {
    return static_cast<int64_t>(h) * D + h + static_cast<int64_t>(dl) * h + dl + static_cast<int64_t>(h) * dl + h +
           static_cast<int64_t>(D) * h + D;
  }
};

struct TrainLog {
  std::vector<double> loss;  ///< mean training loss per epoch
  double seconds = 0;
  int64_t tokens = 0;
  int steps = 0;
};

/// Train one autoencoder on rows X[n, D] (float32). Deterministic for a given seed. `tag` prefixes the
/// per-epoch losses printed on stderr (nothing printed when tag is empty; on a terminal, without -q, the
/// epochs show on the progress line of core/progress.h instead).
AeWeights kvcar_train_ae(const float* X, int64_t n, int D, int h, int dl, const KvcarParams& p, uint64_t seed,
                         TrainLog* log, const std::string& tag);

/// Training-mode loss of a freshly initialized autoencoder on random rows, and the largest relative error
/// between its analytic gradient and a central finite difference (float64), over every parameter tensor.
/// For tests.
double kvcar_gradient_check(int D, int h, int dl, int B, KvcarLoss loss, uint64_t seed);

/// Mean reconstruction loss of an AE in inference mode, in the standardized space, channels unweighted.
double kvcar_eval_loss(const AeWeights& w, const float* X, int64_t n, KvcarLoss loss);

struct CpuAe;  // folded float32 weights of the CPU path (kvcar_cpu.cpp)

/// The fit of one layer.
struct KvcarLayerModel final : TrainedLayer {
  KvcarParams fitted_with;  ///< the parameters that trained it
  int layer = 0, kv_heads = 0, head_dim = 0;
  std::vector<int> stored;            ///< KV heads with latents, ascending
  std::vector<int> reused;            ///< KV heads read from layer−1, ascending
  std::vector<double> head_distance;  ///< [kv_heads] normalized L1 to layer−1 (empty when not ranked)
  AeWeights k, v;                     ///< valid when !stored.empty()
  TrainLog k_log, v_log;
};

/// A fitted layer as an encode function sees it: the trained model, and for the cpu codec the folded
/// float32 inference weights (null for ref).
struct KvcarFit {
  std::shared_ptr<const KvcarLayerModel> model;
  std::shared_ptr<const CpuAe> cpu_k, cpu_v;
};

/// Fold BatchNorm (running statistics) and the input standardization into float32 Linear weights.
std::shared_ptr<const CpuAe> kvcar_fold_cpu(const AeWeights& w);

using KvcarEncodeFn = std::unique_ptr<EncodedLayer> (*)(const KvcarParams&, const KvcarFit&, int layer,
                                                        const LayerKV&, const EncodedLayer* prev,
                                                        const CodecContext&);
std::unique_ptr<EncodedLayer> kvcar_encode_cpu(const KvcarParams& p, const KvcarFit& f, int layer,
                                               const LayerKV& kv, const EncodedLayer* prev, const CodecContext& ctx);
/// The CUDA backend (kvcar_gpu.cpp); defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> kvcar_encode_cuda(const KvcarParams& p, const KvcarFit& f, int layer,
                                                const LayerKV& kv, const EncodedLayer* prev, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> kvcar_encode_ref(const KvcarParams& p, const KvcarFit& f, int layer,
                                               const LayerKV& kv, const EncodedLayer* prev, const CodecContext& ctx);

/// Fit one layer (shared by cpu and ref): reuse ranking against `prev_calib` (the calibration caches of
/// layer−1, or empty), then the K and V autoencoders. Deterministic in its inputs; the model is the layer's
/// trained state (Codec::trained), which the cpu, ref and CUDA codecs share by adopt() instead of refitting.
std::shared_ptr<const KvcarLayerModel> kvcar_fit_layer(const KvcarParams& p, int layer,
                                                       const std::vector<const LayerKV*>& calib,
                                                       const std::vector<LayerKV>& prev_calib, uint64_t seed);

/// Registry entry (kvcar_entry.cpp).
CodecEntry kvcar_entry();

}  // namespace kvb::codecs
