#pragma once
/// In-memory KV data handed between the dump reader, the runner and the codecs.
/// Everything is float32, row-major, converted once from the dump's dtype outside timed regions.
#include <cstdint>
#include <vector>

namespace kvb {

/// Model-level shape and attention constants of a dump (root attributes of docs/dump-format.md §1.1).
struct ModelShape {
  int n_layers = 0;
  int n_heads = 0;     ///< query heads
  int n_kv_heads = 0;  ///< query head h reads KV head h / (n_heads / n_kv_heads)
  int head_dim = 0;
  int group() const { return n_kv_heads > 0 ? n_heads / n_kv_heads : 0; }
};

/// How logits are formed: s = softmax_scale * <q, k>, then s = cap * tanh(s / cap) when softcap > 0.
struct AttnConfig {
  float softmax_scale = 0.f;
  float softcap = 0.f;  ///< 0 = none
};

/// The observation queries of one (sequence, layer): the queries of the last W prompt tokens (kvdump's optional
/// `obs_queries` / `obs_positions`, docs/dump-format.md §1.2), which observation-window eviction codecs
/// (SnapKV, H2O and the budget policies over SnapKV's scores, codecs/evict) score the cache with at encode
/// time. They belong to the prompt: the evaluation queries stay unseen. Empty (n == 0) when the dump has none.
struct ObsQueries {
  int heads = 0;        ///< query heads (n_heads)
  int64_t n = 0;        ///< W
  int head_dim = 0;
  std::vector<float> q;            ///< [heads, W, head_dim], post-RoPE like the keys
  std::vector<int64_t> positions;  ///< [W] token index of each query IN THE CACHE (0 = the cache's first row),
                                   ///< strictly increasing, each < tokens: query i attends to rows 0..positions[i]

  bool empty() const { return n == 0; }
  const float* query(int h, int64_t i) const {
    return q.data() + (static_cast<size_t>(h) * n + static_cast<size_t>(i)) * head_dim;
  }
};

/// One (sequence, layer) cache: the first C tokens of every KV head.
struct LayerKV {
  int kv_heads = 0;
  int64_t tokens = 0;  ///< C
  int head_dim = 0;
  int64_t pos0 = 0;    ///< sequence position of row 0 (row t is position pos0 + t; sliding-window layers cache
                       ///< the last w tokens, so pos0 = C − w there)
  std::vector<float> k;  ///< [kv_heads, tokens, head_dim]
  std::vector<float> v;  ///< [kv_heads, tokens, head_dim]
  ObsQueries obs;        ///< the prompt's observation queries, when the source has them (else empty)

  const float* k_head(int g) const { return k.data() + static_cast<size_t>(g) * tokens * head_dim; }
  const float* v_head(int g) const { return v.data() + static_cast<size_t>(g) * tokens * head_dim; }
  float* k_head(int g) { return k.data() + static_cast<size_t>(g) * tokens * head_dim; }
  float* v_head(int g) { return v.data() + static_cast<size_t>(g) * tokens * head_dim; }
};

/// One (sequence, layer) set of recorded decode queries.
struct LayerQueries {
  int heads = 0;
  int64_t n = 0;  ///< Q
  int head_dim = 0;
  std::vector<float> q;        ///< [heads, n, head_dim]
  std::vector<float> ref_out;  ///< [heads, n, head_dim], empty when the dump has no ref_out

  const float* query(int h, int64_t i) const {
    return q.data() + (static_cast<size_t>(h) * n + static_cast<size_t>(i)) * head_dim;
  }
  const float* ref(int h, int64_t i) const {
    return ref_out.empty() ? nullptr
                           : ref_out.data() + (static_cast<size_t>(h) * n + static_cast<size_t>(i)) * head_dim;
  }
};

}  // namespace kvb
