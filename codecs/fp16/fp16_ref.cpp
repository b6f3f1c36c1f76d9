/// fp16 reference: K̂ = fp16(K), V̂ = fp16(V) (saturating, rounded by the independent double-precision
/// rounding of ref_dense.cpp), float64 attention.
#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/fp16/fp16_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> fp16_encode_ref(const Fp16Params&, const LayerKV& kv, const CodecContext& ctx) {
  std::vector<float> k(kv.k.size()), v(kv.v.size());
  for (size_t i = 0; i < k.size(); ++i) k[i] = ref::round_f16_sat(kv.k[i]);
  for (size_t i = 0; i < v.size(); ++i) v[i] = ref::round_f16_sat(kv.v[i]);
  const uint64_t bytes = 2ull * kv.kv_heads * kv.tokens * kv.head_dim;  // 2 bytes per element per head
  Storage st = StorageList(kv.kv_heads, 4.0 * kv.head_dim)
                   .add("k.fp16", StorageKind::kCompressed, bytes, kv.tokens)
                   .add("v.fp16", StorageKind::kCompressed, bytes, kv.tokens)
                   .get();
  return ref::dense_layer(kv, std::move(k), std::move(v), ctx, std::move(st));
}

}  // namespace kvb::codecs
