#pragma once
/// Helpers for the baseline codecs' naive references (`*_ref.cpp`). A reference is the specification
/// written as literally as possible and WITHOUT the shared per-element math headers (fp8.h, uniform.h,
/// kernels/formats/fp16.h, half.h), so that a bug there shows up as a cpu-vs-ref mismatch. A reference encode
/// quantizes, dequantizes to a dense float copy of K̂ and V̂ (allowed only here), and answers scores and
/// attend with kvbench's float64 exact attention over that copy. Its storage is computed from the
/// byte-count formulas, independently of the buffers the CPU implementation allocates.
#include <cstdint>
#include <memory>
#include <vector>

#include "kvb/core/codec.h"

namespace kvb::codecs::ref {

/// x rounded to the nearest binary16 value (ties to even), saturating at ±65504, in double arithmetic.
float round_f16_sat(float x);

/// Asymmetric min-max quantize -> dequantize of the n values x[0], x[stride], ... into out[i*stride]:
/// mn = min, mx = max, scale = fp16((mx - mn) / (2^bits - 1)), mn = fp16(mn),
/// code = clamp(floor((x - mn) / scale + 0.5), 0, 2^bits - 1) (code 0 when scale == 0),
/// x̂ = code·scale + mn.
void minmax_qdq(const float* x, int64_t n, int64_t stride, int bits, float* out);

/// An encoded layer that holds dense K̂, V̂ [kv_heads, C, d] (floats) and computes everything in float64.
class DenseLayer : public EncodedLayer {
 public:
  DenseLayer(const LayerKV& kv, std::vector<float> k_hat, std::vector<float> v_hat, AttnConfig attn, Storage st);
  int64_t tokens() const override { return C_; }
  Storage storage() const override { return st_; }
  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override;
  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override;
  /// attend() and the log-sum-exp of the float64 logits it normalized by, from the same exact_attention_f64 call.
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const override;
  int kv_heads() const { return H_; }
  int head_dim() const { return d_; }
  const float* k_head(int g) const { return k_.data() + static_cast<size_t>(g) * C_ * d_; }
  const float* v_head(int g) const { return v_.data() + static_cast<size_t>(g) * C_ * d_; }

 private:
  void run(int g, const float* q, double* s, double* o) const;
  /// attend() and attend_lse(): lse_out may be null.
  void attend_f64(int g, const float* q, float* o_out, double* lse_out) const;
  int H_;
  int64_t C_;
  int d_;
  std::vector<float> k_, v_;
  AttnConfig attn_;
  Storage st_;
};

/// A DenseLayer behind the EncodedLayer interface.
std::unique_ptr<EncodedLayer> dense_layer(const LayerKV& kv, std::vector<float> k_hat, std::vector<float> v_hat,
                                          const CodecContext& ctx, Storage storage);

}  // namespace kvb::codecs::ref
