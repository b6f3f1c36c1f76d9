#pragma once
/// int: plain per-token asymmetric INTn (docs/codecs.md §4) applied to both K and V, no fp16 window.
/// Each token's head_dim channels are split into groups of `group_size`; each group stores an fp16
/// (scale, min) and code_bits-bit codes (math and packing: kernels/formats/uniform.h).
/// INT8 uses the same asymmetric min-max scheme (not symmetric absmax), so every width is one quantizer.
#include <memory>
#include <string>

#include <fmt/format.h>

#include "codecs/common/rotation.h"
#include "kvb/core/codec.h"
#include "kvb/core/error.h"

namespace kvb::codecs {

struct IntParams {
  int code_bits = 4;
  int group_size = 32;
  std::string rotate = "none";  ///< "hadamard": codecs/common/rotation.h

  void check(int head_dim) const {
    KVB_CHECK(head_dim % group_size == 0, Unsupported,
              "int: group_size {} does not divide head_dim {} (use a group_size that divides it, e.g. {})",
              group_size, head_dim, head_dim);
  }
  std::string label() const { return fmt::format("int{}-g{}{}", code_bits, group_size, rotate_suffix(rotate)); }
  /// Bytes per token per KV head, K and V together: packed codes + one (scale, min) per group.
  double bytes_per_token(int head_dim) const {
    return 2.0 * (static_cast<double>((static_cast<int64_t>(head_dim) * code_bits + 7) / 8) + 4.0 * (head_dim / group_size));
  }
};

std::unique_ptr<EncodedLayer> int_encode_cpu(const IntParams& p, const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> int_encode_ref(const IntParams& p, const LayerKV& kv, const CodecContext& ctx);
/// The CUDA backend (codecs/common/gpu_layer.h); defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> int_encode_cuda(const IntParams& p, const LayerKV& kv, const CodecContext& ctx);

}  // namespace kvb::codecs
