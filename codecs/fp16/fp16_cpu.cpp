/// fp16 CPU implementation. Layout: k16, v16 [kv_head][token][head_dim] binary16 bits (saturating
/// conversion, kernels/formats/fp16.h). attend: one dot per key row and one axpy per value row, both
/// converting fp16 -> float in registers (F16C where available), float accumulation. attend_many (GQA groups,
/// what throughput times): the fused kernel of kernels/cpu/attend_rows.h, else BaselineLayer's decoded rows.
#include "codecs/common/baseline.h"
#include "kernels/cpu/row_kernels.h"
#include "codecs/fp16/fp16_codec.h"

namespace kvb::codecs {
namespace {

class Fp16Layer final : public BaselineLayer {
 public:
  Fp16Layer(const LayerKV& kv, const CodecContext& ctx)
      : BaselineLayer(kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn), k_(kv.k.size()), v_(kv.v.size()) {
    const int64_t n = C_ * d_;
    for_each_head(kv_heads_, [&](int g) {
      kernels::f32_to_f16_sat_row(kv.k_head(g), &k_[g * n], n);
      kernels::f32_to_f16_sat_row(kv.v_head(g), &v_[g * n], n);
    });
  }

  Storage storage() const override {
    return StorageList(kv_heads_, 4.0 * d_)
        .add("k.fp16", StorageKind::kCompressed, bytes_of(k_), C_)
        .add("v.fp16", StorageKind::kCompressed, bytes_of(v_), C_)
        .get();
  }

  std::vector<NamedBuffer> buffers() const override { return {named_buffer("k.fp16", k_), named_buffer("v.fp16", v_)}; }

 protected:
  void key_dots(int g, const float* q, float* dots, Scratch&) const override {
    const auto dot = kernels::row_kernels().dot_f16;
    const uint16_t* k = &k_[static_cast<size_t>(g) * C_ * d_];
    for (int64_t t = 0; t < C_; ++t) dots[t] = dot(q, k + t * d_, d_);
  }
  void weighted_values(int g, const float* w, float* out, Scratch&) const override {
    const auto axpy = kernels::row_kernels().axpy_f16;
    const uint16_t* v = &v_[static_cast<size_t>(g) * C_ * d_];
    for (int j = 0; j < d_; ++j) out[j] = 0.f;
    for (int64_t t = 0; t < C_; ++t)
      if (w[t] != 0.f) axpy(w[t], v + t * d_, out, d_);
  }
  /// The fused exact-attention kernel over the stored rows (codecs/common/baseline.h attend_many_f16_fused).
  bool attend_many_fused(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    const size_t off = static_cast<size_t>(g) * C_ * d_;
    return attend_many_f16_fused(&k_[off], &v_[off], C_, d_, attn_, qs, nq, outs, scratch);
  }
  void decode_keys(int g, int64_t t0, int n, float* out, float*) const override {
    kernels::row_kernels_switched().from_f16(&k_[(static_cast<size_t>(g) * C_ + t0) * d_], out, static_cast<int64_t>(n) * d_);
  }
  void decode_values(int g, int64_t t0, int n, float* out, float*) const override {
    kernels::row_kernels_switched().from_f16(&v_[(static_cast<size_t>(g) * C_ + t0) * d_], out, static_cast<int64_t>(n) * d_);
  }

 private:
  std::vector<uint16_t> k_, v_;  // [kv_head][token][head_dim] binary16
};

}  // namespace

std::unique_ptr<EncodedLayer> fp16_encode_cpu(const Fp16Params&, const LayerKV& kv, const CodecContext& ctx) {
  return std::make_unique<Fp16Layer>(kv, ctx);
}

}  // namespace kvb::codecs
