#pragma once
/// kivi: KIVI (Liu et al., arXiv 2402.02750; docs/codecs.md §5).
///  - keys per CHANNEL: the first C - (C mod R) tokens in blocks of G consecutive tokens; each block stores
///    one fp16 (scale, min) per channel. The last C mod R keys stay fp16 (flush-when-full residual).
///  - values per TOKEN: all but the last min(R, C) tokens, in groups of G channels with fp16 (scale, min);
///    the last min(R, C) values stay fp16 (sliding window).
/// Quantizer and packing: kernels/formats/uniform.h (the same one `int` uses).
#include <algorithm>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "codecs/common/rotation.h"
#include "kvb/core/codec.h"
#include "kvb/core/error.h"

namespace kvb::codecs {

struct KiviParams {
  int code_bits = 2;
  int group_size = 32;  ///< G: tokens per key block and channels per value group
  int residual = 128;   ///< R: fp16 key residual capacity and value window length
  std::string rotate = "none";  ///< "hadamard": codecs/common/rotation.h (keys then quantized per rotated channel)

  void check(int head_dim) const {
    KVB_CHECK(residual % group_size == 0, Unsupported,
              "kivi: residual {} is not a multiple of group_size {} (KIVI flushes the key residual in whole "
              "groups)",
              residual, group_size);
    KVB_CHECK(head_dim % group_size == 0, Unsupported,
              "kivi: group_size {} (channels per value group) does not divide head_dim {}", group_size, head_dim);
  }
  std::string label() const {
    return fmt::format("kivi{}-g{}-r{}{}", code_bits, group_size, residual, rotate_suffix(rotate));
  }

  /// Keys quantized: whole residual flushes.
  int64_t key_quant_tokens(int64_t C) const { return C - C % residual; }
  /// Values quantized: everything before the fp16 window of the last min(R, C) tokens.
  int64_t value_quant_tokens(int64_t C) const { return C - std::min<int64_t>(residual, C); }
  /// Bytes per quantized token per KV head, K and V together: two packed rows, the key block's per-channel
  /// (scale, min) amortized over G tokens, and the value's per-group (scale, min).
  double bytes_per_token(int head_dim) const {
    const double row = static_cast<double>((static_cast<int64_t>(head_dim) * code_bits + 7) / 8);
    return 2.0 * row + 4.0 * head_dim / group_size + 4.0 * (head_dim / group_size);
  }
};

std::unique_ptr<EncodedLayer> kivi_encode_cpu(const KiviParams& p, const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> kivi_encode_ref(const KiviParams& p, const LayerKV& kv, const CodecContext& ctx);
/// The CUDA backend (codecs/common/gpu_layer.h); defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> kivi_encode_cuda(const KiviParams& p, const LayerKV& kv, const CodecContext& ctx);

}  // namespace kvb::codecs
