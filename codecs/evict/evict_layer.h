#pragma once
/// Host-side bookkeeping shared by the CPU and CUDA layers of the eviction codecs (evict_codec.h): the packed
/// row layout, storage, held_tokens, buffers and the scatter of per-row logits to the C tokens. Where the fp16
/// rows live (host vector or device buffer) is the backend's business.
#include <cstdint>
#include <vector>

#include "codecs/evict/evict_codec.h"

namespace kvb::codecs {

class EvictLayerBase : public EncodedLayer {
 public:
  EvictLayerBase(const EvictParams& p, int kv_heads, int64_t tokens, int head_dim, AttnConfig attn, EvictPlan plan);

  int64_t tokens() const final { return C_; }
  Storage storage() const final;
  std::vector<uint8_t> held_tokens(int g) const final;

  int kv_heads() const { return H_; }
  int64_t total_rows() const { return plan_.row_off.back(); }
  int64_t head_rows(int g) const { return plan_.row_off[g + 1] - plan_.row_off[g]; }
  int64_t max_head_rows() const;
  const EvictPlan& plan() const { return plan_; }

 protected:
  /// buffers() from the packed fp16 rows k, v ([total_rows][d] each) and the per-head counts.
  std::vector<NamedBuffer> packed_buffers(const std::vector<uint16_t>& k, const std::vector<uint16_t>& v) const;
  /// s_out[0, C) from head g's per-row logits s[head_rows(g)]: kept tokens get theirs, dropped tokens 0.
  void scatter_scores(int g, const float* s, float* s_out) const;

  EvictParams p_;
  int H_, d_;
  int64_t C_;
  AttnConfig attn_;
  EvictPlan plan_;
  std::vector<int32_t> counts_;  ///< n.kept: rows per head (what a serving engine stores besides the rows)
};

}  // namespace kvb::codecs
