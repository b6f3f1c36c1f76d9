/// int CPU implementation. Layout per KV head, token-major so attend streams one token at a time:
///   k_codes, v_codes [kv_head][token][row_bytes(head_dim, code_bits)]
///   k_sm,    v_sm    [kv_head][token][head_dim / group_size] (fp16 scale, fp16 min)
#include "codecs/common/baseline.h"
#include "codecs/quant/int_codec.h"
#include "kernels/cpu/uniform_rows.h"

namespace kvb::codecs {
namespace {

class IntLayer final : public BaselineLayer {
 public:
  IntLayer(const IntParams& p, const LayerKV& kv, const CodecContext& ctx)
      : BaselineLayer(kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn), p_(p),
        f_{kv.head_dim, p.code_bits, p.group_size},
        k_codes_(static_cast<size_t>(kv_heads_ * C_ * f_.bytes())), v_codes_(k_codes_.size()),
        k_sm_(static_cast<size_t>(kv_heads_ * C_ * f_.groups())), v_sm_(k_sm_.size()) {
    for_each_head(kv_heads_, [&](int g) {
      kernels::uq::encode_rows(f_, kv.k_head(g), C_, k_codes_.data() + codes_at(g), k_sm_.data() + sm_at(g));
      kernels::uq::encode_rows(f_, kv.v_head(g), C_, v_codes_.data() + codes_at(g), v_sm_.data() + sm_at(g));
    });
  }

  Storage storage() const override {
    return StorageList(kv_heads_, p_.bytes_per_token(d_))
        .add("k.codes", StorageKind::kCompressed, bytes_of(k_codes_), C_)
        .add("k.scale_min", StorageKind::kCompressed, bytes_of(k_sm_), C_)
        .add("v.codes", StorageKind::kCompressed, bytes_of(v_codes_), C_)
        .add("v.scale_min", StorageKind::kCompressed, bytes_of(v_sm_), C_)
        .get();
  }

  std::vector<NamedBuffer> buffers() const override {
    return {named_buffer("k.codes", k_codes_), named_buffer("k.scale_min", k_sm_), named_buffer("v.codes", v_codes_),
            named_buffer("v.scale_min", v_sm_)};
  }

 protected:
  void key_dots(int g, const float* q, float* dots, Scratch& scratch) const override {
    kernels::uq::dot_rows(f_, q, k_codes_.data() + codes_at(g), k_sm_.data() + sm_at(g), C_, dots, scratch.floats2(f_.scratch_floats()));
  }
  void weighted_values(int g, const float* w, float* out, Scratch& scratch) const override {
    for (int j = 0; j < d_; ++j) out[j] = 0.f;
    kernels::uq::accumulate_rows(f_, w, v_codes_.data() + codes_at(g), v_sm_.data() + sm_at(g), C_, out, scratch.floats2(f_.scratch_floats()));
  }
  /// GQA calls: the codes decoded in registers by the fused kernel (kernels/cpu/attend_rows.h) for 2-, 4- and
  /// 8-bit codes whose groups fit its chunks; other widths and shapes take the decoded-row path.
  bool attend_many_fused(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    const kernels::RowCodec rc = p_.code_bits == 8   ? kernels::RowCodec::kU8
                                 : p_.code_bits == 4 ? kernels::RowCodec::kU4
                                 : p_.code_bits == 2 ? kernels::RowCodec::kU2
                                                     : kernels::RowCodec::kF16;
    if (rc == kernels::RowCodec::kF16) return false;
    const auto side = [&](const std::vector<uint8_t>& codes, const std::vector<kernels::uq::GroupParams>& sm) {
      return kernels::StoredRows{rc, codes.data() + codes_at(g),
                                 reinterpret_cast<const uint16_t*>(sm.data() + sm_at(g)), p_.group_size};
    };
    return attend_many_coded_fused(side(k_codes_, k_sm_), side(v_codes_, v_sm_), C_, d_, attn_, qs, nq, outs, scratch);
  }
  void decode_keys(int g, int64_t t0, int n, float* out, float* tmp) const override {
    kernels::uq::decode_rows(f_, k_codes_.data() + codes_at(g) + t0 * f_.bytes(), k_sm_.data() + sm_at(g) + t0 * f_.groups(), n,
                    out, tmp);
  }
  void decode_values(int g, int64_t t0, int n, float* out, float* tmp) const override {
    kernels::uq::decode_rows(f_, v_codes_.data() + codes_at(g) + t0 * f_.bytes(), v_sm_.data() + sm_at(g) + t0 * f_.groups(), n,
                    out, tmp);
  }

 private:
  size_t codes_at(int g) const { return static_cast<size_t>(g * C_ * f_.bytes()); }  // head g's first row
  size_t sm_at(int g) const { return static_cast<size_t>(g * C_ * f_.groups()); }

  IntParams p_;
  kernels::uq::RowFormat f_;
  std::vector<uint8_t> k_codes_, v_codes_;      // [kv_head][token][row bytes]
  std::vector<kernels::uq::GroupParams> k_sm_, v_sm_;  // [kv_head][token][group]
};

}  // namespace

std::unique_ptr<EncodedLayer> int_encode_cpu(const IntParams& p, const LayerKV& kv, const CodecContext& ctx) {
  return std::make_unique<IntLayer>(p, kv, ctx);
}

}  // namespace kvb::codecs
