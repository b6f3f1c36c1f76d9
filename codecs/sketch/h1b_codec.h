#pragma once
/// h1b: H1B-KV hybrid one-bit keys (Vejendla; arXiv 2510.05529; docs/codecs.md §8). Per KV head and token:
///   k.sketch  [b]       sign(R k), R [b][head_dim] i.i.d. N(0, 1) from the seed (costs its 8 bytes)
///   k.norms   fp16 ‖k‖  (angle variant only)
///   v         per-token asymmetric value_bits codes in groups of value_group channels (0 = one group per
///             token), fp16 (scale, min) per group (kernels/formats/uniform.h); no fp16 window (docs/codecs.md §8.4)
/// The query is sketched with the same R; a key's score comes from the Hamming distance h of the two
/// sketches (XOR + popcount):
///   variant "angle" (default, training-free docs/codecs.md §8.3): ŝ = softmax_scale·‖q‖·‖k‖·cos(π·h/bits)  (SimHash angle)
///   variant "temp"  (docs/codecs.md §8.3 H1B-TF-temp, nearest to the paper): ŝ = (1 − 2h/bits) / T, T per layer fitted on
///                   calibration caches by minimizing KL(exact ‖ approximate) (or given as `temperature`).
/// The paper's own numbers come after fine-tuning T and a value projection, which kvbench never does.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "codecs/sketch/sketch_cpu.h"
#include "kvb/core/codec.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

struct H1bParams {
  int bits = 256;  ///< the `sketch_bits` parameter (b; `bits` is the budget key)
  std::string variant = "angle";  ///< "angle" | "temp"
  int value_bits = 4;
  int value_group = 0;  ///< 0 = head_dim (one (scale, min) per token)
  double temperature = 0;  ///< temp variant: 0 = fit on calibration data

  bool operator==(const H1bParams&) const = default;
  /// Whether a temperature fitted with these parameters is the one `o` fits: everything but the value
  /// storage, which the fit does not look at.
  bool trains_like(const H1bParams& o) const;
  void check(int head_dim) const;
  std::string label() const;
  bool angle() const { return variant == "angle"; }
  int group(int head_dim) const { return value_group > 0 ? value_group : head_dim; }
  double bytes_per_token(int head_dim) const {
    const double key = bits / 8.0 + (angle() ? 2.0 : 0.0);
    const double val = static_cast<double>((static_cast<int64_t>(head_dim) * value_bits + 7) / 8) +
                       4.0 * (head_dim / group(head_dim));
    return key + val;
  }
};

const ParamTable<H1bParams>& h1b_params();
/// The projection's seed (shared by every layer and head).
uint64_t h1b_projection_seed(uint64_t seed);

/// T minimizing the mean KL(p ‖ p̂_T) over pseudo-queries of the calibration caches (see h1b_entry.cpp).
/// Shared by the CPU path, the reference and the CUDA path: it is the calibration step, not the attend path
/// under test, so all three attend with the same T.
/// P: the projection (h1b_projection_seed(ctx.seed), p.bits rows, head_dim, not orthogonalized); calib is
/// not empty.
double h1b_fit_temperature(const H1bParams& p, const sk::Projection& P, const std::vector<const LayerKV*>& calib,
                           const CodecContext& ctx);

/// Encoders: T is the fitted (or given) temperature of the layer, ignored by the angle variant; P the
/// codec's projection (as for h1b_fit_temperature).
using H1bEncodeFn = std::unique_ptr<EncodedLayer> (*)(const H1bParams&, double T, std::shared_ptr<const sk::Projection> P,
                                                      const LayerKV&, const CodecContext&);
std::unique_ptr<EncodedLayer> h1b_encode_cpu(const H1bParams& p, double T, std::shared_ptr<const sk::Projection> P,
                                             const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> h1b_encode_ref(const H1bParams& p, double T, std::shared_ptr<const sk::Projection> P,
                                             const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> h1b_encode_cuda(const H1bParams& p, double T, std::shared_ptr<const sk::Projection> P,
                                              const LayerKV& kv, const CodecContext& ctx);

/// A layer's trained state: its temperature (the given one when nothing is fitted).
struct H1bTrained final : TrainedLayer {
  H1bParams fitted_with;
  double T = 0;
};

/// The codec: fit() fits T per layer (temp variant without an explicit temperature), encode() uses it; its
/// projection (made once per instance) is handed to the fit and to every layer it encodes.
class H1bCodec final : public Codec {
 public:
  H1bCodec(H1bParams p, H1bEncodeFn fn, std::string impl) : p_(std::move(p)), fn_(fn), impl_(std::move(impl)) {}
  void fit(int layer, const std::vector<const LayerKV*>& calib, const CodecContext& ctx) override;
  std::shared_ptr<const TrainedLayer> trained(int layer) const override;
  void adopt(int layer, std::shared_ptr<const TrainedLayer> state) override;
  std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer* prev,
                                       const CodecContext& ctx) const override;
  Json report() const override;

 private:
  H1bParams p_;
  H1bEncodeFn fn_;
  std::string impl_;
  std::map<int, std::shared_ptr<const H1bTrained>> T_;  // fitted temperature per layer
  sk::Projections proj_;

  std::shared_ptr<const sk::Projection> projection(uint64_t seed, int head_dim) const;
};

CodecFactory h1b_factory(H1bEncodeFn fn, std::string impl);

}  // namespace kvb::codecs
