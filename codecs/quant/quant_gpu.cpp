// int and kivi on the GPU, in the CPU layouts of int_cpu.cpp and kivi_cpu.cpp (codecs/common/gpu_layer.h).
#ifdef KVB_WITH_CUDA
#include "codecs/common/gpu_layer.h"
#include "codecs/quant/int_codec.h"
#include "codecs/quant/kivi_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> int_encode_cuda(const IntParams& p, const LayerKV& kv, const CodecContext& ctx) {
  gpu::LayerSpec s;
  for (auto* part : {&s.k, &s.v}) {
    part->fmt = kernels::gpu::Fmt::kTokenQuant;
    part->bits = p.code_bits;
    part->group = p.group_size;
    part->q_tokens = kv.tokens;
  }
  s.k.codes_name = "k.codes", s.k.sm_name = "k.scale_min";
  s.v.codes_name = "v.codes", s.v.sm_name = "v.scale_min";
  s.nominal_bytes_per_token = p.bytes_per_token(kv.head_dim);
  return gpu::encode_on_gpu(s, kv, ctx);
}

std::unique_ptr<EncodedLayer> kivi_encode_cuda(const KiviParams& p, const LayerKV& kv, const CodecContext& ctx) {
  gpu::LayerSpec s;
  s.k.fmt = kernels::gpu::Fmt::kChannelQuant;  // per channel over blocks of G tokens, fp16 residual (flush-when-full)
  s.k.q_tokens = p.key_quant_tokens(kv.tokens);
  s.k.codes_name = "k.codes", s.k.sm_name = "k.scale_min", s.k.tail_name = "k.residual";
  s.v.fmt = kernels::gpu::Fmt::kTokenQuant;  // per token in groups of G channels, fp16 sliding window
  s.v.q_tokens = p.value_quant_tokens(kv.tokens);
  s.v.codes_name = "v.codes", s.v.sm_name = "v.scale_min", s.v.tail_name = "v.window";
  for (auto* part : {&s.k, &s.v}) {
    part->bits = p.code_bits;
    part->group = p.group_size;
  }
  s.nominal_bytes_per_token = p.bytes_per_token(kv.head_dim);
  return gpu::encode_on_gpu(s, kv, ctx);
}

}  // namespace kvb::codecs
#endif
