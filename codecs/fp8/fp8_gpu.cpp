// fp8 on the GPU: codes [head][t][d] and one fp32 scale per head, as fp8_cpu.cpp (codecs/common/gpu_layer.h).
#ifdef KVB_WITH_CUDA
#include "codecs/common/gpu_layer.h"
#include "codecs/fp8/fp8_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> fp8_encode_cuda(const Fp8Params& p, const LayerKV& kv, const CodecContext& ctx) {
  gpu::LayerSpec s;
  for (auto* part : {&s.k, &s.v}) {
    part->fmt = p.format == kernels::fp8::Format::kE4M3 ? kernels::gpu::Fmt::kFp8E4M3 : kernels::gpu::Fmt::kFp8E5M2;
    part->q_tokens = kv.tokens;
  }
  s.k.codes_name = "k.fp8", s.k.scale_name = "k.scale";
  s.v.codes_name = "v.fp8", s.v.scale_name = "v.scale";
  s.nominal_bytes_per_token = 2.0 * kv.head_dim;
  return gpu::encode_on_gpu(s, kv, ctx);
}

}  // namespace kvb::codecs
#endif
