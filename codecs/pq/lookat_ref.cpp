/// lookat reference (docs/codecs.md §9.3: "an equivalent reference implementation for testing is ŝ_t = <q, k̃_t>,
/// where k̃_t is the concatenation of the chosen centroids"). Per key and subspace the nearest centroid by
/// exhaustive search (squared L2 in float64, ties to the lowest index); k̃ written densely (allowed only here),
/// values rounded to binary16 (ref::round_f16_sat) or min-max quantized per group (ref::minmax_qdq); scores
/// and outputs from kvbench's float64 exact attention. It shares the trained codebooks (pq::train) with
/// the CPU path — training is checked on its own against faiss (tests/faiss). Storage from the byte formulas.
#include <algorithm>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/pq/lookat_codec.h"

namespace kvb::codecs {

std::unique_ptr<EncodedLayer> lookat_encode_ref(const LookatParams& p, const LookatCodebooks& cb, const LayerKV& kv,
                                                const CodecContext& ctx) {
  const int d = kv.head_dim, m = p.subspaces, K = p.centroids(), dsub = d / m;
  const int64_t rows = static_cast<int64_t>(kv.kv_heads) * kv.tokens;
  std::vector<float> k(kv.k.size()), v(kv.v.size());
  // Centroids in float64, channel-major ([dsub][K]), so the distances of all K centroids accumulate
  // channel by channel (each one still summed in channel order).
  std::vector<double> c64(static_cast<size_t>(K) * dsub), dist(K);
  for (int g = 0; g < kv.kv_heads; ++g)
    for (int i = 0; i < m; ++i) {
      for (int c = 0; c < K; ++c)
        for (int j = 0; j < dsub; ++j) c64[static_cast<size_t>(j) * K + c] = cb.sub(g, i)[c * dsub + j];
      for (int64_t t = 0; t < kv.tokens; ++t) {
        const float* x = kv.k_head(g) + t * d + i * dsub;
        std::fill(dist.begin(), dist.end(), 0.0);
        for (int j = 0; j < dsub; ++j)
          for (int c = 0; c < K; ++c) {
            const double e = static_cast<double>(x[j]) - c64[static_cast<size_t>(j) * K + c];
            dist[c] += e * e;
          }
        int best = 0;
        for (int c = 1; c < K; ++c)
          if (dist[c] < dist[best]) best = c;
        for (int j = 0; j < dsub; ++j) k[(g * kv.tokens + t) * d + i * dsub + j] = cb.sub(g, i)[best * dsub + j];
      }
    }
  uint64_t v_bytes = 0, sm_bytes = 0;
  if (p.int_values()) {
    const int G = p.value_group;
    for (int64_t r = 0; r < rows; ++r)
      for (int j0 = 0; j0 < d; j0 += G) ref::minmax_qdq(&kv.v[r * d + j0], G, 1, p.value_bits(), &v[r * d + j0]);
    v_bytes = static_cast<uint64_t>(rows) * ((d * p.value_bits() + 7) / 8);
    sm_bytes = static_cast<uint64_t>(rows) * (d / G) * 4;
  } else {
    for (size_t i = 0; i < v.size(); ++i) v[i] = ref::round_f16_sat(kv.v[i]);
    v_bytes = static_cast<uint64_t>(rows) * d * 2;
  }
  const double nominal = m + (p.int_values() ? (d * p.value_bits() + 7) / 8 + 4.0 * (d / p.value_group) : 2.0 * d);
  StorageList s(kv.kv_heads, nominal);
  s.add("k.codes", StorageKind::kCompressed, static_cast<uint64_t>(rows) * m, kv.tokens);
  if (p.int_values()) {
    s.add("v.codes", StorageKind::kCompressed, v_bytes, kv.tokens);
    s.add("v.scale_min", StorageKind::kCompressed, sm_bytes, kv.tokens);
  } else {
    s.add("v.fp16", StorageKind::kCompressed, v_bytes, kv.tokens);
  }
  s.add("k.codebooks", StorageKind::kFixed, static_cast<uint64_t>(kv.kv_heads) * K * d * 2, 0);
  return ref::dense_layer(kv, std::move(k), std::move(v), ctx, s.get());
}

}  // namespace kvb::codecs
