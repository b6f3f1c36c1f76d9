#pragma once
/// Glue shared by the one-bit sketch codecs (qjl, h1b): the CPU encoded layer's common half:
/// per-token asymmetric values (kernels/formats/uniform.h, the quantizer `int` and `kivi` use) with an
/// optional fp16 window of the last tokens, softmax and the weighted sum. Each codec supplies its logits,
/// computed from its sign bits.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "codecs/common/baseline.h"
#include "kernels/cpu/uniform_rows.h"
#include "kvb/core/codec.h"

namespace kvb::codecs {

/// CPU layer: values of tokens [0, Vq) quantized per token (format vf), tokens [Vq, C) kept in fp16.
/// Logits come from the subclass (straight from its sketches); attend = scores -> softmax (normalizer in
/// double, as BaselineLayer) -> Σ p_t v̂_t from the packed value rows and the fp16 window.
class SketchLayer : public EncodedLayer {
 public:
  SketchLayer(const LayerKV& kv, AttnConfig attn, kernels::uq::RowFormat vf, int64_t value_quant_tokens);

  int64_t tokens() const final { return C_; }
  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const final;
  void attend(int g, const float* q, float* o_out, Scratch& scratch) const final {
    attend_one(g, q, o_out, nullptr, scratch);
  }
  /// attend() and the log of its softmax normalizer from the same pass (softmax_weights).
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const final {
    attend_one(g, q, o_out, lse_out, scratch);
  }
  /// GQA groups: logits per query (each query has its own sketch), then the values through the fused kernel
  /// (kernels/cpu/attend_rows.h with the logits given: online softmax, value codes decoded in registers) for 2-,
  /// 4- and 8-bit values on a shape it fits; otherwise attend_many_rows (baseline.h), each block of value rows
  /// decoded once and added into every query's output.
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const final;

 protected:
  /// s[t] = the logit of token t before soft-capping (softmax_scale applied), t < C. Must not use
  /// scratch.floats() (it holds s); may use scratch.floats2().
  virtual void logits(int g, const float* q, float* s, Scratch& scratch) const = 0;
  /// Appends the value items ("v.codes", "v.scale_min", "v.window") to a storage list.
  void add_value_storage(StorageList& st) const;
  void add_value_buffers(std::vector<NamedBuffer>& out) const;
  /// Bytes of one quantized value token (row and (scale, min) pairs).
  double value_bytes_per_token() const { return static_cast<double>(vf_.bytes()) + 4.0 * vf_.groups(); }

  int kv_heads_;
  int64_t C_;
  int d_;
  AttnConfig attn_;
  kernels::uq::RowFormat vf_;
  int64_t Vq_;
  std::vector<uint8_t> v_codes_;       // [H][Vq][vf.bytes()]
  std::vector<kernels::uq::GroupParams> v_sm_;  // [H][Vq][vf.groups()]
  std::vector<uint16_t> v_win_;        // [H][C - Vq][d]

 private:
  bool attend_many_fused(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const;
  /// attend() and attend_lse(): lse_out may be null.
  void attend_one(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const;
};

namespace ref {

/// Reference layer of the sketch codecs: dense dequantized values (allowed in references), logits from a
/// callback in float64 (the reference's own ±1 dot products), soft-cap, softmax and output in float64.
class SketchRefLayer final : public EncodedLayer {
 public:
  /// raw(g, q, s): s[t] = logit of token t before soft-capping, t < C.
  using LogitFn = std::function<void(int g, const float* q, double* s)>;
  SketchRefLayer(int64_t C, int d, AttnConfig attn, std::vector<float> v_hat, LogitFn raw, Storage st)
      : C_(C), d_(d), attn_(attn), v_(std::move(v_hat)), raw_(std::move(raw)), st_(std::move(st)) {}
  int64_t tokens() const override { return C_; }
  Storage storage() const override { return st_; }
  bool scores(int g, const float* q, float* s_out, Scratch&) const override;
  void attend(int g, const float* q, float* o_out, Scratch&) const override { attend_f64(g, q, o_out); }
  /// lse = max + ln Σ exp(s − max) of the float64 logits attend() normalizes by.
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch&) const override {
    *lse_out = attend_f64(g, q, o_out);
  }

 private:
  void logits(int g, const float* q, std::vector<double>& s) const;
  /// o_out = softmax(s)ᵀV̂ in float64; returns ln Σ_t exp(s_t).
  double attend_f64(int g, const float* q, float* o_out) const;
  int64_t C_;
  int d_;
  AttnConfig attn_;
  std::vector<float> v_;  // [H][C][d]
  LogitFn raw_;
  Storage st_;
};

/// z[i] = Σ_c St[c·rows + i]·x[c] for i < n (St: a projection transposed, float64), each z_i summed over c
/// ascending — the order of sk::project_f64 — with the n sums advancing together (c outer) so the loop
/// vectorizes. Only the channels in `channels` (ascending; all d when null) are visited: the others are zero.
void project_columns(const double* St, int rows, int n, const float* x, const int* channels, int nc, double* z);

/// V̂ of one KV head: tokens [0, Vq) quantize -> dequantize per token in groups of `group` channels
/// (ref::minmax_qdq), tokens [Vq, C) rounded to fp16.
void values_qdq(const float* V, int64_t C, int d, int64_t Vq, int bits, int group, float* out);

}  // namespace ref
}  // namespace kvb::codecs
