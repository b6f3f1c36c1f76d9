/// kivi reference: keys of the first C - C mod R tokens quantize->dequantize per channel in blocks of G
/// tokens, the rest rounded to fp16; values of the first C - min(R, C) tokens per token in groups of G
/// channels, the rest rounded to fp16. Dense copy, float64 attention; storage from the byte formulas.
#include <algorithm>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/quant/kivi_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> kivi_encode_ref(const KiviParams& p, const LayerKV& kv, const CodecContext& ctx) {
  const int d = kv.head_dim, G = p.group_size, R = p.residual, H = kv.kv_heads;
  const int64_t C = kv.tokens;
  const int64_t key_q = (C / R) * R;                     // tokens in full residual flushes
  const int64_t val_q = C > R ? C - R : 0;               // tokens that left the window
  std::vector<float> k(kv.k.size()), v(kv.v.size());
  for (int g = 0; g < H; ++g) {
    const float* K = kv.k_head(g);
    const float* V = kv.v_head(g);
    float* Kh = k.data() + static_cast<int64_t>(g) * C * d;
    float* Vh = v.data() + static_cast<int64_t>(g) * C * d;
    for (int64_t t0 = 0; t0 < key_q; t0 += G)
      for (int j = 0; j < d; ++j) ref::minmax_qdq(K + t0 * d + j, G, d, p.code_bits, Kh + t0 * d + j);
    for (int64_t i = key_q * d; i < C * d; ++i) Kh[i] = ref::round_f16_sat(K[i]);
    for (int64_t t = 0; t < val_q; ++t)
      for (int j0 = 0; j0 < d; j0 += G) ref::minmax_qdq(V + t * d + j0, G, 1, p.code_bits, Vh + t * d + j0);
    for (int64_t i = val_q * d; i < C * d; ++i) Vh[i] = ref::round_f16_sat(V[i]);
  }
  const uint64_t row = static_cast<uint64_t>((d * p.code_bits + 7) / 8);
  const double nominal = 2.0 * static_cast<double>(row) + 4.0 * d / G + 4.0 * (d / G);
  Storage st = StorageList(H, nominal)
                   .add("k.codes", StorageKind::kCompressed, H * key_q * row, key_q)
                   .add("k.scale_min", StorageKind::kCompressed, H * (key_q / G) * d * 4ull, key_q)
                   .add("k.residual", StorageKind::kBuffer, H * (C - key_q) * d * 2ull, C - key_q)
                   .add("v.codes", StorageKind::kCompressed, H * val_q * row, val_q)
                   .add("v.scale_min", StorageKind::kCompressed, H * val_q * (d / G) * 4ull, val_q)
                   .add("v.window", StorageKind::kBuffer, H * (C - val_q) * d * 2ull, C - val_q)
                   .get();
  return ref::dense_layer(kv, std::move(k), std::move(v), ctx, std::move(st));
}

}  // namespace kvb::codecs
