#pragma once
/// qjl: 1-bit Quantized JL keys (Zandieh, Daliri, Han; arXiv 2406.03482; docs/codecs.md §7), as the released code
/// (github.com/amirzandieh/QJL) stores them, with the reference kernel's limits lifted (any head_dim, m and
/// m_outlier any multiple of 8, up to head_dim outlier channels, m_outlier > m allowed).
///
/// Per KV head, the first Cq = C − C mod residual keys (whole flushes of the fp16 key buffer) are quantized
/// in groups of group_size consecutive tokens:
///   outlier_idx [outliers]   per group: the channels of largest L2 norm over the group's tokens (uint8 while
///                            head_dim <= 256, else uint16)
///   inlier bits [m]          per token: sign(S·k_in), k_in = k with the outlier channels zeroed
///   outlier bits [m_outlier] per token: sign(S[0:m_outlier]·k_out), k_out = k on the outlier channels only
///   norms [2] fp16           per token: ‖k_in‖ and ‖k_out‖ (docs/codecs.md §7.6 pitfall 3: ‖k_in‖ is stored instead of the
///                            code's ‖k‖ and sqrt(‖k‖² − ‖k_out‖²): same bits, no negative square root)
/// The last C mod residual keys stay fp16 (flush-when-full). Values: all but the last min(residual, C) tokens
/// per token asymmetric at value_bits in groups of value_group channels (kernels/formats/uniform.h), the last
/// min(residual, C) in fp16 (sliding window). S (rows max(m, m_outlier), orthogonalized) comes from the seed
/// derive_seed(ctx.seed, {"qjl", layer set}) and costs its 8 bytes.
#include <algorithm>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "codecs/sketch/sketch_cpu.h"
#include "codecs/sketch/sketch_math.h"
#include "kvb/core/codec.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

struct QjlParams {
  int m = 256;           ///< inlier sketch bits per token (layers >= initial_layers)
  int m_outlier = 256;   ///< outlier sketch bits per token
  int outliers = 8;      ///< outlier channels per token group (0 = no outlier sketch)
  int group_size = 32;   ///< tokens per outlier group
  int residual = 128;    ///< fp16 key buffer capacity and value window (tokens)
  int value_bits = 2;
  int value_group = 32;  ///< channels per value (scale, min) group
  int initial_layers = 0;   ///< layers [0, initial_layers) use m_initial / m_outlier_initial
  int m_initial = 512;
  int m_outlier_initial = 128;

  void check(int head_dim) const;
  std::string label() const;

  int m_for(int layer) const { return layer < initial_layers ? m_initial : m; }
  /// Outlier sketch bits actually stored (0 without outlier channels).
  int mo_for(int layer) const { return outliers > 0 ? (layer < initial_layers ? m_outlier_initial : m_outlier) : 0; }
  int64_t key_quant_tokens(int64_t C) const { return C - C % residual; }
  int64_t value_quant_tokens(int64_t C) const { return C - std::min<int64_t>(residual, C); }
  /// Bytes per quantized token per KV head (K and V): sketches, two fp16 norms, the group's outlier indices
  /// amortized over group_size tokens, the packed value row and its per-group fp16 (scale, min).
  double bytes_per_token(int head_dim, int layer) const {
    const double key = (m_for(layer) + mo_for(layer)) / 8.0 + 4.0 +
                       static_cast<double>(outliers) * sk::outlier_index_bytes(head_dim) / group_size;
    const double val = static_cast<double>((static_cast<int64_t>(head_dim) * value_bits + 7) / 8) +
                       4.0 * (head_dim / value_group);
    return key + val;
  }
};

const ParamTable<QjlParams>& qjl_params();
uint64_t qjl_projection_seed(uint64_t seed, int layer_set);

/// Encoders: P is the projection of the layer's set (QjlCodec::encode picks it: qjl_projection_seed of the
/// set, max(m, m_outlier) rows of that layer, orthogonalized).
using QjlEncodeFn = std::unique_ptr<EncodedLayer> (*)(const QjlParams&, int layer, std::shared_ptr<const sk::Projection> P,
                                                      const LayerKV&, const CodecContext&);
std::unique_ptr<EncodedLayer> qjl_encode_cpu(const QjlParams& p, int layer, std::shared_ptr<const sk::Projection> P,
                                             const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> qjl_encode_ref(const QjlParams& p, int layer, std::shared_ptr<const sk::Projection> P,
                                             const LayerKV& kv, const CodecContext& ctx);
/// The CUDA backend (sketch_gpu.cpp); defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> qjl_encode_cuda(const QjlParams& p, int layer, std::shared_ptr<const sk::Projection> P,
                                              const LayerKV& kv, const CodecContext& ctx);

/// The codec: its projections (one per layer set, made once per instance) handed to every layer it encodes.
class QjlCodec final : public Codec {
 public:
  QjlCodec(QjlParams p, QjlEncodeFn fn, std::string impl) : p_(std::move(p)), fn_(fn), impl_(std::move(impl)) {}
  std::unique_ptr<EncodedLayer> encode(int layer, const LayerKV& kv, const EncodedLayer* prev,
                                       const CodecContext& ctx) const override;
  Json report() const override { return Json{{"label", p_.label()}, {"implementation", impl_}}; }

 private:
  QjlParams p_;
  QjlEncodeFn fn_;
  std::string impl_;
  sk::Projections proj_;
};

CodecFactory qjl_factory(QjlEncodeFn fn, std::string impl);

}  // namespace kvb::codecs
