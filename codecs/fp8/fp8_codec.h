#pragma once
/// fp8: every element of K and V stored as one FP8 code (E4M3FN or E5M2, kernels/formats/fp8.h) of x / scale,
/// with one fp32 scale = absmax / max_finite per (KV head, K or V) chosen from the encoded cache.
#include <memory>
#include <string>

#include "codecs/common/ref_fp8.h"  // ref::fp8_encode_nearest, ref::fp8_decode_formula
#include "kernels/formats/fp8.h"
#include "kvb/core/codec.h"

namespace kvb::codecs {

struct Fp8Params {
  kernels::fp8::Format format = kernels::fp8::Format::kE4M3;
  void check(int) const {}
  std::string label() const { return format == kernels::fp8::Format::kE4M3 ? "fp8-e4m3" : "fp8-e5m2"; }
};

std::unique_ptr<EncodedLayer> fp8_encode_cpu(const Fp8Params& p, const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> fp8_encode_ref(const Fp8Params& p, const LayerKV& kv, const CodecContext& ctx);
/// The CUDA backend (codecs/common/gpu_layer.h); defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> fp8_encode_cuda(const Fp8Params& p, const LayerKV& kv, const CodecContext& ctx);

}  // namespace kvb::codecs
