#pragma once
/// The microscaling family (nvfp4, mxfp4, mxfp8): every element of K and V stored in a block format of
/// kernels/formats/mx.h, blocks along head_dim (16 elements with an E4M3 scale and one fp32 scale per
/// (KV head, K or V) for nvfp4; 32 elements with an E8M0 scale for mxfp4 and mxfp8).
///
/// Layout (CPU and CUDA alike, per part K or V):
///   <p>.codes   [kv_head][token][row_bytes]   row_bytes = ceil(d/2) (FP4, two per byte) or d (FP8)
///   <p>.scales  [kv_head][token][blocks]      blocks = ceil(d / block); one byte (E4M3 or E8M0) each
///   <p>.global  [kv_head] fp32                nvfp4 only: the per-tensor scale (a kFixed storage item)
#include <memory>
#include <string>

#include "kernels/formats/mx.h"
#include "kvb/core/codec.h"
#include "kvb/core/registry.h"

namespace kvb::codecs {

struct MxParams {
  kernels::mx::Kind kind = kernels::mx::Kind::kNvfp4;
  void check(int) const {}
  std::string label() const;
};

/// The codec's name (also its label): "nvfp4", "mxfp4", "mxfp8".
std::string mx_name(kernels::mx::Kind k);
/// Stored bytes per token per KV head of one part (K or V): row codes plus block scales.
int64_t mx_part_bytes_per_token(kernels::mx::Kind k, int head_dim);

std::unique_ptr<EncodedLayer> mx_encode_cpu(const MxParams& p, const LayerKV& kv, const CodecContext& ctx);
std::unique_ptr<EncodedLayer> mx_encode_ref(const MxParams& p, const LayerKV& kv, const CodecContext& ctx);
/// The CUDA backend (codecs/common/gpu_layer.h); defined only in builds with KVB_WITH_CUDA.
std::unique_ptr<EncodedLayer> mx_encode_cuda(const MxParams& p, const LayerKV& kv, const CodecContext& ctx);

CodecEntry nvfp4_entry();
CodecEntry mxfp4_entry();
CodecEntry mxfp8_entry();

namespace ref {
/// Independent E2M1 encoder for tests: the nearest of ±{0, 0.5, 1, 1.5, 2, 3, 4, 6} by search over the
/// value table (ties to the even code), saturating at ±6, sign kept; NaN gives 0.
uint8_t e2m1_encode_nearest(double x);
/// Independent E2M1 decoder: (-1)^s · 2^(e-1) · (1 + m/2), subnormal (e = 0) m · 0.5.
double e2m1_decode_formula(uint8_t code);
/// Independent MX shared exponent (OCP MX v1.0 §6.3) of a block with max magnitude amax:
/// ilogb(amax) − emax_elem, clamped below at −127 (amax = 0 too).
int mx_shared_exp(double amax, int emax_elem);
}  // namespace ref

}  // namespace kvb::codecs
