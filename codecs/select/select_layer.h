#pragma once
/// Host-side pieces shared by the CPU and CUDA backends of the token-selection codecs (select_codec.h):
/// the halving step, the grouping of kept rows by weight class, and the layer bookkeeping that does not
/// depend on where the rows live (split, positions, class counts, storage, held_tokens, buffers).
#include <cstdint>
#include <vector>

#include "kernels/cpu/attend_rows.h"

#include "codecs/select/select_codec.h"

namespace kvb::codecs {

/// One halving (docs/codecs.md §6.2 step 2): keeps exactly ⌊n/2⌋ of the n survivors (idx, cumulative weights w)
/// given their signs, and multiplies the kept weights by 2 (balanced prefix) or 1 (tail after the cut).
void halve(const std::vector<int8_t>& sigma, std::vector<int32_t>& idx, std::vector<int32_t>& w);

/// The final survivors grouped by weight class, heaviest first, by increasing index within a class.
KeptSet group_by_class(const std::vector<int32_t>& idx, const std::vector<int32_t>& w);

/// What every backend's layer knows about its rows. Stored rows of KV head g, in this order:
///   [ sink (positions 0..) | kept, class by class, heaviest first | window ]
class SelectLayerBase : public EncodedLayer {
 public:
  SelectLayerBase(const SelectParams& p, int kv_heads, int64_t tokens, int head_dim, AttnConfig attn);

  int64_t tokens() const final { return C_; }
  Storage storage() const final;
  std::vector<uint8_t> held_tokens(int g) const final;
  /// lse = ln Σ_r exp(ŝ_r + b_r) over the stored rows r (b_r: the row's class bias, 0 for sink and window):
  /// the estimator's denominator, which attend() divides by; dropped tokens are not in it. EncodedLayer's
  /// default (log-sum-exp of scores() over all C) would count every dropped token as a logit of 0 and
  /// ignore the weights. This form serves every backend: scores() gathered into row order, the class biases
  /// added, then attend(); the CPU layer overrides it with attend()'s own pass.
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const override;

  int64_t rows() const { return rows_; }
  /// Original token position of every stored row, [kv_heads][rows] (evaluation only, not storage).
  const std::vector<int32_t>& positions() const { return pos_; }
  /// Kept rows per weight class, [kv_heads][T + 1], class k = weight 2^(T−k).
  const std::vector<int32_t>& class_counts() const { return counts_; }
  /// Per class: the logit bias and the value factor of the configured estimator (docs/codecs.md §6.3).
  const std::vector<float>& class_bias() const { return bias_; }
  const std::vector<float>& class_vfac() const { return vfac_; }

 protected:
  /// Records KV head g's kept set: its row positions and class counts.
  void set_head(int g, const KeptSet& ks);
  /// buffers() from the stored fp16 rows k, v ([kv_heads][rows][d] each), split per storage item.
  std::vector<NamedBuffer> split_buffers(const std::vector<uint16_t>& k, const std::vector<uint16_t>& v) const;
  /// Host attention over rows: adds each kept row's class bias to its logit s[r] (in place) ...
  void add_class_bias(int g, float* s) const;
  /// ... and multiplies each kept row's softmax weight w[r] by its class's value factor.
  void scale_class_weights(int g, float* w) const;
  /// The rows of KV head g as runs for the fused fp16 kernel: sink, one run per weight class (its bias and value
  /// factor), the rest (window); at most levels + 3 runs into out (capacity cap); returns the count, or 0 when
  /// they do not fit.
  int class_segments(int g, kernels::RowSegment* out, int cap) const;
  /// s_out[0, C) from per-row logits s[rows] of KV head g: held tokens get theirs, dropped tokens 0.
  void scatter_scores(int g, const float* s, float* s_out) const;

  SelectParams p_;
  int H_, d_;
  int64_t C_;
  AttnConfig attn_;
  SelectSplit split_;
  int64_t kept_, rows_;
  std::vector<int32_t> counts_, pos_;
  std::vector<float> bias_, vfac_;
};

}  // namespace kvb::codecs
