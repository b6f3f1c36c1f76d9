/// lookat CPU implementation. Layout per KV head, token-major:
///   k.codes     [kv_head][token][m]           uint8 centroid indices
///   v.fp16      [kv_head][token][head_dim]    binary16 values (values = fp16, the paper)
///   v.codes / v.scale_min                      per-token INTn rows (values = int8 / int4, codecs/quant)
///   k.codebooks [kv_head][m][K][d_sub]        binary16 centroids (kFixed; the layer computes from a float
///                                              copy transposed to [m][d_sub][K], a derived working form)
/// Scores never rebuild a key: per query m tables LUT_i[c] = <q_i, C_i[c]>, then ŝ_t = Σ_i LUT_i[code_ti].
#include <cmath>

#include "codecs/common/baseline.h"
#include "kernels/cpu/row_kernels.h"
#include "codecs/pq/lookat_codec.h"
#include "kernels/cpu/uniform_rows.h"
#include "kvb/core/attn_math.h"

namespace kvb::codecs {
// Defined before its first use: clang accepts target_clones only on a function not yet called.
KVB_CPU_CLONES void pq::luts_transposed(const float* q, int m, int dsub, int K, const float* ct, float* lut) {
  for (int i = 0; i < m; ++i) {
    float* li = lut + static_cast<size_t>(i) * K;
    for (int c = 0; c < K; ++c) li[c] = 0.f;
    for (int j = 0; j < dsub; ++j) {
      const float qj = q[i * dsub + j];
      const float* cj = ct + (static_cast<size_t>(i) * dsub + j) * K;
      for (int c = 0; c < K; ++c) li[c] += qj * cj[c];
    }
  }
}

namespace {

class LookatLayer final : public EncodedLayer {
 public:
  LookatLayer(const LookatParams& p, const LookatCodebooks& cb, const LayerKV& kv, const CodecContext& ctx)
      : p_(p), H_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), m_(p.subspaces), K_(p.centroids()),
        dsub_(d_ / m_), attn_(ctx.attn), vf_{d_, p.value_bits(), p.value_group}, cb16_(cb.c16),
        cbt_(static_cast<size_t>(H_) * m_ * dsub_ * K_), codes_(static_cast<size_t>(H_) * C_ * m_) {
    for (int g = 0; g < H_; ++g)
      for (int i = 0; i < m_; ++i)
        for (int c = 0; c < K_; ++c)
          for (int j = 0; j < dsub_; ++j)
            cbt_[((static_cast<size_t>(g) * m_ + i) * dsub_ + j) * K_ + c] = cb.sub(g, i)[c * dsub_ + j];
    if (p_.int_values()) {
      v_codes_.resize(static_cast<size_t>(H_ * C_ * vf_.bytes()));
      v_sm_.resize(static_cast<size_t>(H_ * C_ * vf_.groups()));
    } else {
      v16_.resize(static_cast<size_t>(H_) * C_ * d_);
    }
    for_each_head(H_, [&](int g) {
      pq::encode_codes(kv.k_head(g), C_, d_, m_, K_, cb.head(g), codes_.data() + static_cast<size_t>(g) * C_ * m_);
      if (p_.int_values())
        kernels::uq::encode_rows(vf_, kv.v_head(g), C_, v_codes_.data() + g * C_ * vf_.bytes(),
                        v_sm_.data() + g * C_ * vf_.groups());
      else
        kernels::f32_to_f16_sat_row(kv.v_head(g), v16_.data() + static_cast<size_t>(g) * C_ * d_, C_ * d_);
    });
  }

  int64_t tokens() const override { return C_; }

  Storage storage() const override {
    StorageList s(H_, p_.bytes_per_token(d_));
    s.add("k.codes", StorageKind::kCompressed, bytes_of(codes_), C_);
    if (p_.int_values()) {
      s.add("v.codes", StorageKind::kCompressed, bytes_of(v_codes_), C_);
      s.add("v.scale_min", StorageKind::kCompressed, bytes_of(v_sm_), C_);
    } else {
      s.add("v.fp16", StorageKind::kCompressed, bytes_of(v16_), C_);
    }
    s.add("k.codebooks", StorageKind::kFixed, bytes_of(cb16_), 0);
    return s.get();
  }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out{named_buffer("k.codes", codes_)};
    if (p_.int_values()) {
      out.push_back(named_buffer("v.codes", v_codes_));
      out.push_back(named_buffer("v.scale_min", v_sm_));
    } else {
      out.push_back(named_buffer("v.fp16", v16_));
    }
    out.push_back(named_buffer("k.codebooks", cb16_));
    return out;
  }

  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override {
    float* lut = scratch.floats2(static_cast<size_t>(m_) * K_);
    build_luts(g, q, lut);
    pq::table_sums(lut, codes_.data() + static_cast<size_t>(g) * C_ * m_, C_, m_, K_, s_out);
    to_logits(s_out, C_, attn_);
    return true;
  }

  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    attend_one(g, q, o_out, nullptr, scratch);
  }
  /// attend() and the log of its softmax normalizer from the same pass (softmax_weights).
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const override {
    attend_one(g, q, o_out, lse_out, scratch);
  }

  /// GQA groups (attend_many_rows, baseline.h): per query its tables and table-sum logits (scores(), which
  /// never rebuilds keys), then one pass over the value rows for all the chunk's queries. Equals attend() per
  /// query up to float reassociation.
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    if (nq == 1) return attend(g, qs[0], outs[0], scratch);
    const kernels::RowKernels& rk = kernels::row_kernels_switched();
    attend_many_rows(
        C_, d_, p_.int_values() ? kernels::uq::decode_scratch_floats(d_) : 0, qs, nq, outs, scratch,
        [&](const float* const* qc, int nc, float* s) {
          for (int i = 0; i < nc; ++i) scores(g, qc[i], s + static_cast<size_t>(i) * C_, scratch);
        },
        [&](int64_t t0, int n, float* rows, float* tmp) {
          if (p_.int_values())
            kernels::uq::decode_rows(vf_, v_codes_.data() + (g * C_ + t0) * vf_.bytes(),
                            v_sm_.data() + (g * C_ + t0) * vf_.groups(), n, rows, tmp);
          else
            rk.from_f16(v16_.data() + (static_cast<size_t>(g) * C_ + t0) * d_, rows, static_cast<int64_t>(n) * d_);
        },
        [](float*) {}, 1.f);
  }

 private:
  /// attend() and attend_lse(): lse_out may be null.
  void attend_one(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const {
    float* s = scratch.floats(static_cast<size_t>(C_));
    scores(g, q, s, scratch);
    const double l = softmax_weights(s, C_, lse_out);  // codecs/common/baseline.h
    for (int j = 0; j < d_; ++j) o_out[j] = 0.f;
    if (p_.int_values()) {
      kernels::uq::accumulate_rows(vf_, s, v_codes_.data() + g * C_ * vf_.bytes(), v_sm_.data() + g * C_ * vf_.groups(), C_,
                          o_out, scratch.floats2(vf_.scratch_floats()));
    } else {
      const auto axpy = kernels::row_kernels().axpy_f16;
      const uint16_t* v = v16_.data() + static_cast<size_t>(g) * C_ * d_;
      for (int64_t t = 0; t < C_; ++t)
        if (s[t] != 0.f) axpy(s[t], v + t * d_, o_out, d_);
    }
    const float inv = static_cast<float>(1.0 / l);  // l >= 1: the max token contributes exp(0)
    for (int j = 0; j < d_; ++j) o_out[j] *= inv;
  }

  /// lut[i][c] = Σ_j q_{i·d_sub + j}·C_i[c][j], summed in channel order; the transposed copy lets the loop
  /// over centroids vectorize.
  void build_luts(int g, const float* q, float* lut) const {
    const float* ct = cbt_.data() + static_cast<size_t>(g) * m_ * dsub_ * K_;
    pq::luts_transposed(q, m_, dsub_, K_, ct, lut);
  }

  LookatParams p_;
  int H_;
  int64_t C_;
  int d_, m_, K_, dsub_;
  AttnConfig attn_;
  kernels::uq::RowFormat vf_;
  std::vector<uint16_t> cb16_;  // [kv_head][m][K][d_sub] binary16, the stored codebooks
  std::vector<float> cbt_;      // [kv_head][m][d_sub][K] the same values as floats, transposed
  std::vector<uint8_t> codes_;  // [kv_head][token][m]
  std::vector<uint16_t> v16_;   // [kv_head][token][d]
  std::vector<uint8_t> v_codes_;
  std::vector<kernels::uq::GroupParams> v_sm_;
};

}  // namespace

std::unique_ptr<EncodedLayer> lookat_encode_cpu(const LookatParams& p, const LookatCodebooks& cb, const LayerKV& kv,
                                                const CodecContext& ctx) {
  return std::make_unique<LookatLayer>(p, cb, kv, ctx);
}

}  // namespace kvb::codecs
