#pragma once
/// fp16: the cache stored as IEEE binary16 and attended exactly — the "exact fp16 attention" row
/// every throughput number is compared with (docs/metrics.md §7).
#include <memory>
#include <string>

#include "kvb/core/codec.h"

namespace kvb::codecs {

struct Fp16Params {
  void check(int) const {}
  std::string label() const { return "fp16"; }
};

std::unique_ptr<EncodedLayer> fp16_encode_cpu(const Fp16Params& p, const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> fp16_encode_ref(const Fp16Params& p, const LayerKV& kv, const CodecContext& ctx);
/// The CUDA backend (codecs/common/gpu_layer.h); defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> fp16_encode_cuda(const Fp16Params& p, const LayerKV& kv, const CodecContext& ctx);

}  // namespace kvb::codecs
