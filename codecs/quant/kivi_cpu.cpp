/// kivi CPU implementation. Layout per KV head (Cq = C - C mod R quantized keys, Vq = C - min(R, C)
/// quantized values), token-major so attend streams tokens:
///   k_codes  [kv_head][Cq][row_bytes(d, b)]        token rows; block i = tokens [i·G, (i+1)·G)
///   k_sm     [kv_head][Cq / G][d]                  per block, per channel (fp16 scale, fp16 min)
///   k_res    [kv_head][C - Cq][d]                  fp16 key residual
///   v_codes  [kv_head][Vq][row_bytes(d, b)]        token rows
///   v_sm     [kv_head][Vq][d / G]                  per token, per channel group (fp16 scale, fp16 min)
///   v_win    [kv_head][C - Vq][d]                  fp16 value window
/// Key logits of a block fold the per-channel scale into the query once per block:
///   <q, k̂_t> = Σ_j (q_j·scale_j)·(code_tj - c0) + Σ_j q_j·mid_j      (centred form, uniform.h),
/// so the per-token loop is one dot product of the block's scaled query with the token's codes.
#include <algorithm>
#include <string>
#include <vector>

#include "codecs/common/baseline.h"
#include "kernels/cpu/row_kernels.h"
#include "codecs/quant/kivi_codec.h"
#include "kernels/cpu/uniform_rows.h"

namespace kvb::codecs {
namespace {

/// Reusable buffers of encode_key_block (one per KV head being encoded).
struct KeyBlockWork {
  explicit KeyBlockWork(int d) : mn(d), mx(d), scale(d), lo(d), c(d) {}
  std::vector<float> mn, mx, scale, lo;
  std::vector<uint32_t> c;
};

/// Quantizes one block x[G][d] per channel: sm[d], codes[G][row_bytes(d, bits)].
void encode_key_block(const float* x, int G, int d, int bits, kernels::uq::GroupParams* sm, uint8_t* codes, KeyBlockWork& w) {
  const uint32_t qmax = kernels::uq::max_code(bits);
  std::copy(x, x + d, w.mn.begin());
  std::copy(x, x + d, w.mx.begin());
  for (int t = 1; t < G; ++t)
    for (int j = 0; j < d; ++j) {
      w.mn[j] = std::min(w.mn[j], x[t * d + j]);
      w.mx[j] = std::max(w.mx[j], x[t * d + j]);
    }
  for (int j = 0; j < d; ++j) {
    sm[j] = kernels::uq::make_group(w.mn[j], w.mx[j], bits);
    w.scale[j] = f16_to_f32(sm[j].scale);
    w.lo[j] = f16_to_f32(sm[j].min);
  }
  const int64_t rb = kernels::uq::row_bytes(d, bits);
  for (int t = 0; t < G; ++t) {
    for (int j = 0; j < d; ++j) w.c[j] = kernels::uq::quantize(x[t * d + j], w.scale[j], w.lo[j], qmax);
    kernels::uq::pack_row(w.c.data(), d, bits, codes + t * rb);
  }
}

/// dots[b·G + t] = <q, k̂> for the `blocks` key blocks of G tokens: per block the channel scales fold into
/// the query once (qs), then each token is one dot of qs with its centred codes (uniform.h's
/// x̂ = (code - c0)·scale + mid). scratch: 2·d floats.
template <int B>
KVB_FORCE_INLINE void key_block_dots_b(const float* q, const uint8_t* codes, const kernels::uq::GroupParams* sm,
                                       int64_t blocks, int G, int d, float* dots, float* scratch) {
  float* qs = scratch;      // [d] q_j · scale_j of the block
  float* cf = scratch + d;  // [d] one token's codes, centred
  const int64_t rb = kernels::uq::row_bytes(d, B);
  const float c0 = kernels::uq::code_center(B);
  for (int64_t b = 0; b < blocks; ++b, sm += d) {
    float qmid = 0.f;  // Σ_j q_j·mid_j
    for (int j = 0; j < d; ++j) {
      const float scale = f16_to_f32(sm[j].scale);
      qs[j] = q[j] * scale;
      qmid += q[j] * kernels::uq::group_mid(scale, f16_to_f32(sm[j].min), B);
    }
    for (int t = 0; t < G; ++t, codes += rb) {
      kernels::uq::unpack_row<B>(codes, d, cf, c0);
      dots[b * G + t] = kernels::dot_f32_inline(qs, cf, d) + qmid;
    }
  }
}

KVB_CPU_CLONES void key_block_dots(int bits, const float* q, const uint8_t* codes, const kernels::uq::GroupParams* sm,
                                   int64_t blocks, int G, int d, float* dots, float* scratch) {
  KVB_DISPATCH_BITS(bits, key_block_dots_b, q, codes, sm, blocks, G, d, dots, scratch)
}

class KiviLayer final : public BaselineLayer {
 public:
  KiviLayer(const KiviParams& p, const LayerKV& kv, const CodecContext& ctx)
      : BaselineLayer(kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn), p_(p),
        G_(p.group_size), Cq_(p.key_quant_tokens(kv.tokens)), Vq_(p.value_quant_tokens(kv.tokens)),
        vf_{kv.head_dim, p.code_bits, p.group_size}, rb_(vf_.bytes()),
        k_codes_(static_cast<size_t>(kv_heads_ * Cq_ * rb_)), k_sm_(static_cast<size_t>(kv_heads_ * Cq_ / G_ * d_)),
        k_res_(static_cast<size_t>(kv_heads_ * (C_ - Cq_) * d_)), v_codes_(static_cast<size_t>(kv_heads_ * Vq_ * rb_)),
        v_sm_(static_cast<size_t>(kv_heads_ * Vq_ * vf_.groups())), v_win_(static_cast<size_t>(kv_heads_ * (C_ - Vq_) * d_)) {
    for_each_head(kv_heads_, [&](int g) {
      const float* k = kv.k_head(g);
      const float* v = kv.v_head(g);
      KeyBlockWork work(d_);
      for (int64_t b = 0; b < Cq_ / G_; ++b)
        encode_key_block(k + b * G_ * d_, G_, d_, p_.code_bits, k_sm_.data() + (g * (Cq_ / G_) + b) * d_,
                         k_codes_.data() + (g * Cq_ + b * G_) * rb_, work);
      kernels::f32_to_f16_sat_row(k + Cq_ * d_, k_res_.data() + g * (C_ - Cq_) * d_, (C_ - Cq_) * d_);
      kernels::uq::encode_rows(vf_, v, Vq_, v_codes_.data() + g * Vq_ * rb_, v_sm_.data() + g * Vq_ * vf_.groups());
      kernels::f32_to_f16_sat_row(v + Vq_ * d_, v_win_.data() + g * (C_ - Vq_) * d_, (C_ - Vq_) * d_);
    });
  }

  Storage storage() const override {
    return StorageList(kv_heads_, p_.bytes_per_token(d_))
        .add("k.codes", StorageKind::kCompressed, bytes_of(k_codes_), Cq_)
        .add("k.scale_min", StorageKind::kCompressed, bytes_of(k_sm_), Cq_)
        .add("k.residual", StorageKind::kBuffer, bytes_of(k_res_), C_ - Cq_)
        .add("v.codes", StorageKind::kCompressed, bytes_of(v_codes_), Vq_)
        .add("v.scale_min", StorageKind::kCompressed, bytes_of(v_sm_), Vq_)
        .add("v.window", StorageKind::kBuffer, bytes_of(v_win_), C_ - Vq_)
        .get();
  }

  std::vector<NamedBuffer> buffers() const override {
    return {named_buffer("k.codes", k_codes_),   named_buffer("k.scale_min", k_sm_), named_buffer("k.residual", k_res_),
            named_buffer("v.codes", v_codes_),   named_buffer("v.scale_min", v_sm_), named_buffer("v.window", v_win_)};
  }

 protected:
  void key_dots(int g, const float* q, float* dots, Scratch& scratch) const override {
    const int64_t blocks = Cq_ / G_;
    if (kernels::simd_kernels_enabled() && d_ % 8 == 0)
      kernels::uq::key_block_dots_avx2(p_.code_bits, q, k_codes_.data() + g * Cq_ * rb_, k_sm_.data() + g * blocks * d_, blocks,
                              G_, d_, dots, scratch.floats2(kernels::uq::key_block_scratch_floats(d_)));
    else
      key_block_dots(p_.code_bits, q, k_codes_.data() + g * Cq_ * rb_, k_sm_.data() + g * blocks * d_, blocks, G_,
                     d_, dots, scratch.floats2(2 * static_cast<size_t>(d_)));
    const auto dot = kernels::row_kernels().dot_f16;
    const uint16_t* res = k_res_.data() + static_cast<size_t>(g) * (C_ - Cq_) * d_;
    for (int64_t t = Cq_; t < C_; ++t, res += d_) dots[t] = dot(q, res, d_);
  }

  void weighted_values(int g, const float* w, float* out, Scratch& scratch) const override {
    for (int j = 0; j < d_; ++j) out[j] = 0.f;
    kernels::uq::accumulate_rows(vf_, w, v_codes_.data() + g * Vq_ * rb_, v_sm_.data() + g * Vq_ * vf_.groups(), Vq_, out,
                        scratch.floats2(vf_.scratch_floats()));
    const auto axpy = kernels::row_kernels().axpy_f16;
    const uint16_t* win = v_win_.data() + static_cast<size_t>(g) * (C_ - Vq_) * d_;
    for (int64_t t = Vq_; t < C_; ++t, win += d_)
      if (w[t] != 0.f) axpy(w[t], win, out, d_);
  }
  /// GQA calls: the fused kernel (kernels/cpu/attend_rows.h) over KIVI's three row ranges, chained through one
  /// running softmax — [0, min(Cq, Vq)) per-channel keys and per-token values, then the range where one side is
  /// already fp16 (the value window when Vq < Cq, the key residual otherwise), then [max(Cq, Vq), C) fp16 on both —
  /// for 2-, 4- and 8-bit codes on a shape its chunks fit; otherwise the decoded-row path.
  bool attend_many_fused(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    using kernels::RowCodec;
    const int b = p_.code_bits;
    if (b != 2 && b != 4 && b != 8) return false;
    const RowCodec kc = b == 8 ? RowCodec::kC8 : b == 4 ? RowCodec::kC4 : RowCodec::kC2;
    const RowCodec vc = b == 8 ? RowCodec::kU8 : b == 4 ? RowCodec::kU4 : RowCodec::kU2;
    const int64_t blocks = Cq_ / G_;
    const uint8_t* kcodes = k_codes_.data() + g * Cq_ * rb_;
    const auto* ksm = reinterpret_cast<const uint16_t*>(k_sm_.data() + g * blocks * d_);
    const uint8_t* vcodes = v_codes_.data() + g * Vq_ * rb_;
    const auto* vsm = reinterpret_cast<const uint16_t*>(v_sm_.data() + g * Vq_ * vf_.groups());
    const uint16_t* kres = k_res_.data() + static_cast<size_t>(g) * (C_ - Cq_) * d_;
    const uint16_t* vwin = v_win_.data() + static_cast<size_t>(g) * (C_ - Vq_) * d_;
    // Side t0 of keys / values: quantized rows below Cq / Vq, fp16 above.
    const auto kside = [&](int64_t t) {
      return t < Cq_ ? kernels::StoredRows{kc, kcodes + t * rb_, ksm, G_, t}
                     : kernels::StoredRows{RowCodec::kF16, kres + (t - Cq_) * d_};
    };
    const auto vside = [&](int64_t t) {
      return t < Vq_ ? kernels::StoredRows{vc, vcodes + t * rb_, vsm + t * 2 * vf_.groups(), p_.group_size}
                     : kernels::StoredRows{RowCodec::kF16, vwin + (t - Vq_) * d_};
    };
    if (std::string(kernels::attend_rows_path(kside(0), vside(0), d_)) == "unfused") return false;
    const int64_t cuts[4] = {0, std::min(Cq_, Vq_), std::max(Cq_, Vq_), C_};
    int64_t last = 0;  // the last non-empty range
    for (int r = 0; r < 3; ++r)
      if (cuts[r + 1] > cuts[r]) last = r;
    kernels::RowAttendState state;
    for (int r = 0; r < 3; ++r) {
      if (cuts[r + 1] <= cuts[r]) continue;
      if (!attend_many_coded_fused(kside(cuts[r]), vside(cuts[r]), cuts[r + 1] - cuts[r], d_, attn_, qs, nq, outs,
                                   scratch, 1.f, 1.f, nullptr, 0, &state, r == last))
        return false;
    }
    return true;
  }
  void decode_keys(int g, int64_t t0, int n, float* out, float* tmp) const override {
    const int64_t blocks = Cq_ / G_;
    float* scale = tmp;   // [d] the block's per-channel scale
    float* mn = tmp + d_;  // [d] and min
    int r = 0;
    while (r < n && t0 + r < Cq_) {  // quantized rows, one key block at a time
      const int64_t t = t0 + r, b = t / G_;
      const int m = static_cast<int>(std::min<int64_t>({static_cast<int64_t>(n - r), (b + 1) * G_ - t, Cq_ - t}));
      const kernels::uq::GroupParams* sm = k_sm_.data() + (g * blocks + b) * d_;
      for (int j = 0; j < d_; ++j) {
        scale[j] = f16_to_f32(sm[j].scale);
        mn[j] = f16_to_f32(sm[j].min);
      }
      kernels::uq::decode_rows_channel(p_.code_bits, k_codes_.data() + (g * Cq_ + t) * rb_, m, d_, scale, mn,
                              out + static_cast<int64_t>(r) * d_, tmp + 2 * d_);
      r += m;
    }
    if (r < n)  // fp16 residual
      kernels::row_kernels_switched().from_f16(k_res_.data() + (static_cast<size_t>(g) * (C_ - Cq_) + (t0 + r - Cq_)) * d_,
                                      out + static_cast<int64_t>(r) * d_, static_cast<int64_t>(n - r) * d_);
  }
  void decode_values(int g, int64_t t0, int n, float* out, float* tmp) const override {
    int r = 0;
    if (t0 < Vq_) {
      r = static_cast<int>(std::min<int64_t>(n, Vq_ - t0));
      kernels::uq::decode_rows(vf_, v_codes_.data() + (g * Vq_ + t0) * rb_, v_sm_.data() + (g * Vq_ + t0) * vf_.groups(), r, out,
                      tmp);
    }
    if (r < n)  // fp16 window
      kernels::row_kernels_switched().from_f16(v_win_.data() + (static_cast<size_t>(g) * (C_ - Vq_) + (t0 + r - Vq_)) * d_,
                                      out + static_cast<int64_t>(r) * d_, static_cast<int64_t>(n - r) * d_);
  }

 private:
  KiviParams p_;
  int G_;
  int64_t Cq_, Vq_;  // quantized keys, quantized values
  kernels::uq::RowFormat vf_;
  int64_t rb_;  // bytes of one packed token row (keys and values alike)
  std::vector<uint8_t> k_codes_;
  std::vector<kernels::uq::GroupParams> k_sm_;
  std::vector<uint16_t> k_res_;
  std::vector<uint8_t> v_codes_;
  std::vector<kernels::uq::GroupParams> v_sm_;
  std::vector<uint16_t> v_win_;
};

}  // namespace

std::unique_ptr<EncodedLayer> kivi_encode_cpu(const KiviParams& p, const LayerKV& kv, const CodecContext& ctx) {
  return std::make_unique<KiviLayer>(p, kv, ctx);
}

}  // namespace kvb::codecs
