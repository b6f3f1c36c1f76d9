// fp16 on the GPU: every row verbatim binary16 (codecs/common/gpu_layer.h).
#ifdef KVB_WITH_CUDA
#include "codecs/common/gpu_layer.h"
#include "codecs/fp16/fp16_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> fp16_encode_cuda(const Fp16Params&, const LayerKV& kv, const CodecContext& ctx) {
  gpu::LayerSpec s;
  s.k.tail_name = "k.fp16";
  s.v.tail_name = "v.fp16";
  s.k.tail_kind = s.v.tail_kind = StorageKind::kCompressed;
  s.nominal_bytes_per_token = 4.0 * kv.head_dim;
  return gpu::encode_on_gpu(s, kv, ctx);
}

}  // namespace kvb::codecs
#endif
