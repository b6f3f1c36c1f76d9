/// int reference: per token, per group of channels, ref::minmax_qdq into a dense copy; float64 attention.
/// Storage from the byte formulas: ceil(d·b/8) code bytes and 4 bytes per group per token, K and V.
#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/quant/int_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> int_encode_ref(const IntParams& p, const LayerKV& kv, const CodecContext& ctx) {
  const int d = kv.head_dim, G = p.group_size;
  std::vector<float> k(kv.k.size()), v(kv.v.size());
  const int64_t rows = static_cast<int64_t>(kv.kv_heads) * kv.tokens;
  for (int64_t r = 0; r < rows; ++r)
    for (int j0 = 0; j0 < d; j0 += G) {
      ref::minmax_qdq(&kv.k[r * d + j0], G, 1, p.code_bits, &k[r * d + j0]);
      ref::minmax_qdq(&kv.v[r * d + j0], G, 1, p.code_bits, &v[r * d + j0]);
    }
  const uint64_t code_bytes = static_cast<uint64_t>(rows) * ((d * p.code_bits + 7) / 8);
  const uint64_t sm_bytes = static_cast<uint64_t>(rows) * (d / G) * 4;
  const double nominal = 2.0 * ((d * p.code_bits + 7) / 8 + 4 * (d / G));
  Storage st = StorageList(kv.kv_heads, nominal)
                   .add("k.codes", StorageKind::kCompressed, code_bytes, kv.tokens)
                   .add("k.scale_min", StorageKind::kCompressed, sm_bytes, kv.tokens)
                   .add("v.codes", StorageKind::kCompressed, code_bytes, kv.tokens)
                   .add("v.scale_min", StorageKind::kCompressed, sm_bytes, kv.tokens)
                   .get();
  return ref::dense_layer(kv, std::move(k), std::move(v), ctx, std::move(st));
}

}  // namespace kvb::codecs
