/// fp8 reference, independent of fp8.h's bit manipulation: codes through codecs/common/ref_fp8.h (decoded by
/// the textbook formula, encoded by searching the sorted table of finite values for the nearest one).
#include <algorithm>
#include <cmath>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/fp8/fp8_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> fp8_encode_ref(const Fp8Params& p, const LayerKV& kv, const CodecContext& ctx) {
  const double fmax = ref::fp8_max_finite(p.format);
  const int64_t n = kv.tokens * kv.head_dim;
  std::vector<float> k(kv.k.size()), v(kv.v.size());
  auto qdq = [&](const float* x, float* out) {
    float absmax = 0.f;
    for (int64_t i = 0; i < n; ++i) absmax = std::max(absmax, std::fabs(x[i]));
    float scale = absmax / static_cast<float>(fmax);
    if (!(scale >= 1.17549435e-38f)) scale = 1.f;  // all-zero (or denormal-only) head
    for (int64_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(ref::fp8_decode_formula(p.format, ref::fp8_encode_nearest(p.format, x[i] / scale)) *
                                  scale);
  };
  for (int g = 0; g < kv.kv_heads; ++g) {
    qdq(kv.k_head(g), k.data() + g * n);
    qdq(kv.v_head(g), v.data() + g * n);
  }
  const uint64_t codes = static_cast<uint64_t>(kv.kv_heads) * n;  // one byte per element
  const uint64_t scales = 4ull * kv.kv_heads;                     // one fp32 per KV head
  Storage st = StorageList(kv.kv_heads, 2.0 * kv.head_dim)
                   .add("k.fp8", StorageKind::kCompressed, codes, kv.tokens)
                   .add("v.fp8", StorageKind::kCompressed, codes, kv.tokens)
                   .add("k.scale", StorageKind::kFixed, scales, 0)
                   .add("v.scale", StorageKind::kFixed, scales, 0)
                   .get();
  return ref::dense_layer(kv, std::move(k), std::move(v), ctx, std::move(st));
}

}  // namespace kvb::codecs
