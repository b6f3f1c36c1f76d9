/// The eviction codecs' packed-row bookkeeping (evict_layer.h) and their CPU layer: fp16 rows attended through
/// the fp16-row path every row-keeping codec shares (kernels/cpu row kernels, codecs/common attend_many_rows for
/// GQA groups), with weight 1 on every kept row.
#include "codecs/evict/evict_layer.h"

#include <algorithm>

#include "codecs/common/baseline.h"
#include "kernels/cpu/row_kernels.h"
#include "kvb/core/attn_math.h"

namespace kvb::codecs {

EvictLayerBase::EvictLayerBase(const EvictParams& p, int kv_heads, int64_t tokens, int head_dim, AttnConfig attn,
                               EvictPlan plan)
    : p_(p), H_(kv_heads), d_(head_dim), C_(tokens), attn_(attn), plan_(std::move(plan)) {
  counts_.resize(static_cast<size_t>(H_));
  for (int g = 0; g < H_; ++g) counts_[g] = static_cast<int32_t>(head_rows(g));
}

int64_t EvictLayerBase::max_head_rows() const {
  int64_t m = 0;
  for (int g = 0; g < H_; ++g) m = std::max(m, head_rows(g));
  return m;
}

Storage EvictLayerBase::storage() const {
  const uint64_t rows_bytes = static_cast<uint64_t>(total_rows()) * 2ull * d_;
  return StorageList(H_, 4.0 * d_ * p_.keep)
      .add("k.kept", StorageKind::kCompressed, rows_bytes, C_)
      .add("v.kept", StorageKind::kCompressed, rows_bytes, C_)
      .add("n.kept", StorageKind::kFixed, bytes_of(counts_), 0)
      .get();
}

std::vector<uint8_t> EvictLayerBase::held_tokens(int g) const {
  std::vector<uint8_t> m(static_cast<size_t>(C_), 0);
  for (int64_t r = plan_.row_off[g]; r < plan_.row_off[g + 1]; ++r) m[plan_.pos[r]] = 1;
  return m;
}

std::vector<NamedBuffer> EvictLayerBase::packed_buffers(const std::vector<uint16_t>& k,
                                                        const std::vector<uint16_t>& v) const {
  return {named_buffer("k.kept", k), named_buffer("v.kept", v), named_buffer("n.kept", counts_)};
}

void EvictLayerBase::scatter_scores(int g, const float* s, float* s_out) const {
  std::fill(s_out, s_out + C_, 0.f);
  const int32_t* pos = &plan_.pos[plan_.row_off[g]];
  for (int64_t r = 0, n = head_rows(g); r < n; ++r) s_out[pos[r]] = s[r];
}

namespace {

class EvictCpuLayer final : public EvictLayerBase {
 public:
  EvictCpuLayer(const EvictParams& p, const LayerKV& kv, const CodecContext& ctx, EvictPlan plan)
      : EvictLayerBase(p, kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn, std::move(plan)) {
    const size_t n = static_cast<size_t>(total_rows()) * d_;
    k_.resize(n), v_.resize(n);
    for_each_head(H_, [&](int g) {
      const float* K = kv.k_head(g);
      const float* V = kv.v_head(g);
      for (int64_t r = plan_.row_off[g]; r < plan_.row_off[g + 1]; ++r) {
        const size_t src = static_cast<size_t>(plan_.pos[r]) * d_;
        kernels::f32_to_f16_sat_row(K + src, &k_[r * d_], d_);
        kernels::f32_to_f16_sat_row(V + src, &v_[r * d_], d_);
      }
    });
  }

  std::vector<NamedBuffer> buffers() const override { return packed_buffers(k_, v_); }

  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override {
    float* s = scratch.floats2(static_cast<size_t>(head_rows(g)) + 1);
    row_logits(g, q, s);
    scatter_scores(g, s, s_out);
    return true;
  }
  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    attend_one(g, q, o_out, nullptr, scratch);
  }
  /// lse over the kept rows only (dropped tokens are not in the normalizer), from attend()'s own pass.
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const override {
    attend_one(g, q, o_out, lse_out, scratch);
  }
  /// GQA groups share one pass over the head's kept rows: the fused fp16 kernel (codecs/common/baseline.h
  /// attend_many_f16_fused), else attend_many_rows.
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    const int64_t rows = head_rows(g);
    if (rows == 0) {
      for (int i = 0; i < nq; ++i) std::fill(outs[i], outs[i] + d_, 0.f);
      return;
    }
    if (attend_many_f16_fused(head_k(g), head_v(g), rows, d_, attn_, qs, nq, outs, scratch)) return;
    if (nq == 1) return attend(g, qs[0], outs[0], scratch);
    attend_many_f16_rows(head_k(g), head_v(g), rows, d_, attn_, qs, nq, outs, scratch, [](float*) {}, [](float*) {});
  }

 private:
  const uint16_t* head_k(int g) const { return &k_[static_cast<size_t>(plan_.row_off[g]) * d_]; }
  const uint16_t* head_v(int g) const { return &v_[static_cast<size_t>(plan_.row_off[g]) * d_]; }

  void attend_one(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const {
    const int64_t rows = head_rows(g);
    std::fill(o_out, o_out + d_, 0.f);
    if (rows == 0) {  // a head that keeps nothing attends to nothing: output 0, normalizer e^-inf
      if (lse_out) *lse_out = -INFINITY;
      return;
    }
    float* s = scratch.floats(static_cast<size_t>(rows));
    row_logits(g, q, s);
    const double l = softmax_weights(s, rows, lse_out);
    const float inv = static_cast<float>(1.0 / l);
    const auto axpy = kernels::row_kernels().axpy_f16;
    const uint16_t* V = head_v(g);
    for (int64_t r = 0; r < rows; ++r)
      if (s[r] != 0.f) axpy(s[r] * inv, V + r * d_, o_out, d_);
  }

  /// s[r] = softcap(softmax_scale·<q, k̂_r>) for every kept row r of KV head g.
  void row_logits(int g, const float* q, float* s) const {
    const auto dot = kernels::row_kernels().dot_f16;
    const uint16_t* K = head_k(g);
    const float scale = attn_.softmax_scale, cap = attn_.softcap;
    for (int64_t r = 0, n = head_rows(g); r < n; ++r) s[r] = softcap_f(scale * dot(q, K + r * d_, d_), cap);
  }

  std::vector<uint16_t> k_, v_;  // [total_rows][d] binary16, head after head, rows by position
};

}  // namespace

std::unique_ptr<EncodedLayer> evict_encode_cpu(const EvictParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx) {
  return std::make_unique<EvictCpuLayer>(p, kv, ctx, evict_plan(p, layer, kv, ctx));
}

}  // namespace kvb::codecs
