// The microscaling codecs on the GPU: the CPU layout (mx_codec.h) in device buffers, encoded by
// kernels/cuda/encode_mx.cu and attended by the baselines' split-context kernel through the format table
// (kernels/cuda/formats.h MxBlocks).
#ifdef KVB_WITH_CUDA
#include "codecs/common/gpu_layer.h"
#include "codecs/mx/mx_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> mx_encode_cuda(const MxParams& p, const LayerKV& kv, const CodecContext& ctx) {
  using kernels::gpu::Fmt;
  const Fmt f = p.kind == kernels::mx::Kind::kNvfp4 ? Fmt::kNvfp4 : p.kind == kernels::mx::Kind::kMxfp4 ? Fmt::kMxfp4 : Fmt::kMxfp8;
  gpu::LayerSpec s;
  for (auto* part : {&s.k, &s.v}) {
    part->fmt = f;
    part->q_tokens = kv.tokens;
  }
  s.k.codes_name = "k.codes", s.k.block_scale_name = "k.scales";
  s.v.codes_name = "v.codes", s.v.block_scale_name = "v.scales";
  if (p.kind == kernels::mx::Kind::kNvfp4) s.k.scale_name = "k.global", s.v.scale_name = "v.global";
  s.nominal_bytes_per_token = 2.0 * static_cast<double>(mx_part_bytes_per_token(p.kind, kv.head_dim));
  return gpu::encode_on_gpu(s, kv, ctx);
}

}  // namespace kvb::codecs
#endif
