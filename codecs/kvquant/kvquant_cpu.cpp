/// KVQuant's CPU layer: the bytes of kvquant::encode, attended through BaselineLayer's drivers. A key row is
/// decoded from its codes (offset_c + range_c·L[code], the row's fp16 outliers written over their channels) and,
/// for pre-RoPE keys, RoPE re-applied with the row's position (kernels::rope::BlockTable: two small tables and
/// one complex product per pair, as KVQuant's kernels fuse RoPE into the key matvec); value rows likewise
/// (offset_t + range_t·L[code], outliers). attend_many decodes each block of rows once for the GQA group.
#include "codecs/common/baseline.h"
#include "codecs/kvquant/kvquant_codec.h"
#include "kernels/cpu/row_kernels.h"
#include "kernels/formats/uniform.h"
#include "kvb/core/half.h"

namespace kvb::codecs {
namespace {

using kvquant::Part;

class KvquantLayer final : public BaselineLayer {
 public:
  KvquantLayer(std::shared_ptr<const kvquant::Trained> s, kernels::rope::Style rope, const LayerKV& kv,
               const CodecContext& ctx)
      : BaselineLayer(kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn),
        s_(std::move(s)),
        e_(kvquant::encode(*s_, kv, rope, ctx.rope.theta)),
        rope_(rope),
        table_(rope, kv.head_dim, ctx.rope.theta, kv.pos0, rope == kernels::rope::Style::kNone ? 0 : kv.tokens) {}

  Storage storage() const override { return kvquant::storage(*s_, e_); }
  std::vector<NamedBuffer> buffers() const override { return kvquant::buffers(*s_, e_); }

 protected:
  void decode_keys(int g, int64_t t0, int n, float* out, float* tmp) const override {
    const float* nrm = &s_->k_norm[static_cast<size_t>(g) * d_ * 2];
    decode(e_.k, g, t0, n, out, [&](int64_t, int c, float level) { return nrm[2 * c] + nrm[2 * c + 1] * level; },
           s_->k_levels.data());
    if (rope_ == kernels::rope::Style::kNone) return;
    const int P = d_ / 2;
    for (int r = 0; r < n; ++r) {
      table_.cos_sin(t0 + r, tmp, tmp + P);
      table_.apply(out + static_cast<size_t>(r) * d_, tmp, tmp + P);
    }
  }
  void decode_values(int g, int64_t t0, int n, float* out, float*) const override {
    const uint16_t* sc = &e_.v.scale[static_cast<size_t>(g) * C_ * 2];
    decode(e_.v, g, t0, n, out,
           [&](int64_t t, int, float level) { return f16_to_f32(sc[2 * t]) + f16_to_f32(sc[2 * t + 1]) * level; },
           s_->v_levels.data());
  }
  void key_dots(int g, const float* q, float* dots, Scratch& scratch) const override {
    const float* qs[1] = {q};
    decoded_row_dots(C_, d_, decode_tmp_floats(), qs, 1, dots, scratch,
                     [&](int64_t t0, int n, float* out, float* tmp) { decode_keys(g, t0, n, out, tmp); });
  }
  void weighted_values(int g, const float* w, float* out, Scratch& scratch) const override {
    constexpr int kRows = kDecodeRows;
    const kernels::RowKernels& K = kernels::row_kernels_switched();
    float* buf = scratch.floats2(static_cast<size_t>(kRows) * d_ + decode_tmp_floats());
    float* tmp = buf + static_cast<size_t>(kRows) * d_;
    for (int j = 0; j < d_; ++j) out[j] = 0.f;
    float* outs[1] = {out};
    for (int64_t t0 = 0; t0 < C_; t0 += kRows) {
      const int n = static_cast<int>(C_ - t0 < kRows ? C_ - t0 : kRows);
      bool any = false;
      for (int r = 0; r < n; ++r) any |= w[t0 + r] != 0.f;
      if (!any) continue;
      decode_values(g, t0, n, buf, tmp);
      K.axpy_many(buf, n, d_, w + t0, C_, 1, outs);
    }
  }

 private:
  /// out[r·d + c] = map(t, c, levels[code]) for rows t0..t0+n of head g, then the rows' outliers.
  template <class Map>
  void decode(const Part& P, int g, int64_t t0, int n, float* out, Map&& map, const float* levels) const {
    uint64_t oi = P.first_outlier(g, C_, t0);
    for (int r = 0; r < n; ++r) {
      const int64_t t = t0 + r;
      const uint8_t* row = &P.codes[(static_cast<size_t>(g) * C_ + t) * P.row_bytes];
      float* x = out + static_cast<size_t>(r) * d_;
      for (int c = 0; c < d_; ++c) x[c] = map(t, c, levels[kernels::uq::unpack_code(row, c, P.bits)]);
      const int cnt = P.count_at(g, C_, t);
      for (int j = 0; j < cnt; ++j, ++oi) x[P.index_at(oi)] = f16_to_f32(P.value[oi]);
    }
  }

  std::shared_ptr<const kvquant::Trained> s_;
  kvquant::Encoded e_;
  kernels::rope::Style rope_;
  kernels::rope::BlockTable table_;
};

}  // namespace

std::unique_ptr<EncodedLayer> kvquant_encode_cpu(const KvquantParams& p, std::shared_ptr<const kvquant::Trained> s,
                                                 const LayerKV& kv, const CodecContext& ctx) {
  const kernels::rope::Style rope = kvquant::key_rope(p, ctx);
  return std::make_unique<KvquantLayer>(std::move(s), rope, kv, ctx);
}

}  // namespace kvb::codecs
