/// qjl CPU implementation. Layout per KV head (Cq = C − C mod residual quantized keys in Cq/G groups of G
/// tokens, Vq = C − min(residual, C) quantized values), token-major:
///   k_inlier  [kv_head][Cq][m/8]           inlier sign bits
///   k_outlier [kv_head][Cq][m_o/8]         outlier sign bits (absent without outliers)
///   k_norms   [kv_head][Cq][2]             fp16 ‖k_in‖, ‖k_out‖
///   k_idx     [kv_head][Cq/G][outliers]    outlier channels of each group (1 or 2 bytes each)
///   k_res     [kv_head][C − Cq][d]         fp16 key buffer
///   values    see SketchLayer (uniform.h rows, fp16 window)
/// Logits: the query is projected once (S q, float32); per group the outlier channels' share of it is
/// formed (q_out_sk, n_out·max(m, m_o) multiply-adds) and subtracted (q_in_sk), then each token is two masked
/// sums over its bits (sketch_cpu.h: one AVX-512 mask-add per byte where the CPU has it).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/row_kernels.h"
#include "codecs/sketch/qjl_codec.h"
#include "codecs/sketch/sketch_cpu.h"
#include "codecs/sketch/sketch_layer.h"
#include "codecs/sketch/sketch_math.h"
#include "kvb/core/half.h"
#include "kvb/core/rng.h"

namespace kvb::codecs {

uint64_t qjl_projection_seed(uint64_t seed, int layer_set);  // qjl_entry.cpp

namespace {

/// Σ x[i] with 8 partial sums (vectorizes without reassociation flags).
KVB_FORCE_INLINE float sum_f32(const float* x, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += x[i + k];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += x[i];
  return s;
}

class QjlLayer final : public SketchLayer {
 public:
  QjlLayer(const QjlParams& p, int layer, std::shared_ptr<const sk::Projection> P, const LayerKV& kv,
           const CodecContext& ctx)
      : SketchLayer(kv, ctx.attn, kernels::uq::RowFormat{kv.head_dim, p.value_bits, p.value_group},
                    p.value_quant_tokens(kv.tokens)),
        p_(p), layer_(layer), m_(p.m_for(layer)), mo_(p.mo_for(layer)), G_(p.group_size), no_(p.outliers),
        ib_(sk::outlier_index_bytes(kv.head_dim)), Cq_(p.key_quant_tokens(kv.tokens)), ng_(Cq_ / G_),
        P_(std::move(P)),
        k_in_(static_cast<size_t>(kv_heads_ * Cq_ * (m_ / 8))), k_out_(static_cast<size_t>(kv_heads_ * Cq_ * (mo_ / 8))),
        k_norms_(static_cast<size_t>(kv_heads_ * Cq_ * 2)), k_idx_(static_cast<size_t>(kv_heads_ * ng_ * no_ * ib_)),
        k_res_(static_cast<size_t>(kv_heads_ * (C_ - Cq_) * d_)) {
    const int64_t jobs = kv_heads_ * ng_;
    // Threads over (KV head, token group) pairs, once there is enough work to pay for waking them.
    const double work = static_cast<double>(jobs) * G_ * (m_ + mo_) * d_;
#pragma omp parallel if (jobs > 1 && work > 4e6)
    {
      std::vector<float> kin(static_cast<size_t>(G_) * d_);  // the group's keys, outlier channels zeroed
      std::vector<int> idx(static_cast<size_t>(no_));
      std::vector<uint8_t> is_out(static_cast<size_t>(d_));
#pragma omp for schedule(dynamic, 4)
      for (int64_t job = 0; job < jobs; ++job) encode_group(kv, job / ng_, job % ng_, kin, idx, is_out);
    }
    for (int g = 0; g < kv_heads_; ++g)
      kernels::f32_to_f16_sat_row(kv.k_head(g) + Cq_ * d_, k_res_.data() + g * (C_ - Cq_) * d_, (C_ - Cq_) * d_);
  }

  Storage storage() const override {
    StorageList st(kv_heads_, p_.bytes_per_token(d_, layer_));
    st.add("k.inlier_bits", StorageKind::kCompressed, bytes_of(k_in_), Cq_)
        .add("k.outlier_bits", StorageKind::kCompressed, bytes_of(k_out_), Cq_)
        .add("k.norms", StorageKind::kCompressed, bytes_of(k_norms_), Cq_)
        .add("k.outlier_idx", StorageKind::kCompressed, bytes_of(k_idx_), Cq_)
        .add("k.residual", StorageKind::kBuffer, bytes_of(k_res_), C_ - Cq_);
    add_value_storage(st);
    st.add("k.projection_seed", StorageKind::kFixed, sizeof(uint64_t), 0);
    return st.get();
  }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out{named_buffer("k.inlier_bits", k_in_), named_buffer("k.outlier_bits", k_out_),
                                 named_buffer("k.norms", k_norms_), named_buffer("k.outlier_idx", k_idx_),
                                 named_buffer("k.residual", k_res_)};
    add_value_buffers(out);
    return out;
  }

 protected:
  void logits(int g, const float* q, float* s, Scratch& scratch) const override {
    const int mr = P_->rows;
    float* qsk = scratch.floats2(static_cast<size_t>(3 * mr + 2 * G_ + 16));
    float* qo = qsk + mr;     // [mr] outlier channels' share of S q (this group)
    float* qin = qo + mr;     // [m]  S q − qo
    float* ms_in = qin + mr;  // [G]  masked sums of the group's tokens
    float* ms_out = ms_in + G_;
    sk::project_query(*P_, mr, q, qsk);
    const float scale = attn_.softmax_scale;
    const uint8_t* bin = k_in_.data() + static_cast<size_t>(g) * Cq_ * (m_ / 8);
    const uint8_t* bout = k_out_.data() + static_cast<size_t>(g) * Cq_ * (mo_ / 8);
    const uint16_t* nrm = k_norms_.data() + static_cast<size_t>(g) * Cq_ * 2;
    const uint8_t* idx = k_idx_.data() + static_cast<size_t>(g) * ng_ * no_ * ib_;
    for (int64_t b = 0; b < ng_; ++b, idx += no_ * ib_) {
      float tot_in, tot_out;
      group_query(q, idx, qsk, qo, qin, &tot_in, &tot_out);
      const int64_t t0 = b * G_;
      // scores from bits: no dense key reconstruction (masked sums of the projected query over the set bits)
      sk::masked_sums(bin + t0 * (m_ / 8), m_ / 8, G_, qin, m_, ms_in);
      if (mo_ > 0) sk::masked_sums(bout + t0 * (mo_ / 8), mo_ / 8, G_, qo, mo_, ms_out);
      for (int t = 0; t < G_; ++t) {
        const uint16_t* n = nrm + (t0 + t) * 2;
        float e = sk::qjl_term(ms_in[t], tot_in, f16_to_f32(n[0]), m_);
        if (mo_ > 0) e += sk::qjl_term(ms_out[t], tot_out, f16_to_f32(n[1]), mo_);
        s[t0 + t] = scale * e;
      }
    }
    const auto dot = kernels::row_kernels().dot_f16;
    const uint16_t* res = k_res_.data() + static_cast<size_t>(g) * (C_ - Cq_) * d_;
    for (int64_t t = Cq_; t < C_; ++t, res += d_) s[t] = scale * dot(q, res, d_);
  }

 private:
  void encode_group(const LayerKV& kv, int g, int64_t b, std::vector<float>& kin, std::vector<int>& idx,
                    std::vector<uint8_t>& is_out) {
    const float* K = kv.k_head(g) + b * G_ * d_;
    if (no_ > 0) sk::top_channels(K, G_, d_, no_, idx.data());
    uint8_t* ix = k_idx_.data() + (static_cast<size_t>(g) * ng_ + b) * no_ * ib_;
    std::fill(is_out.begin(), is_out.end(), uint8_t{0});
    for (int a = 0; a < no_; ++a) {
      sk::write_outlier_index(ix, a, ib_, idx[a]);
      is_out[idx[a]] = 1;
    }
    std::vector<double> n_in(static_cast<size_t>(G_));
    for (int t = 0; t < G_; ++t) {
      const int64_t tok = b * G_ + t;
      const float* k = K + static_cast<int64_t>(t) * d_;
      float* ki = kin.data() + static_cast<size_t>(t) * d_;
      for (int j = 0; j < d_; ++j) ki[j] = is_out[j] ? 0.f : k[j];
      n_in[t] = std::sqrt(sk::norm2_f64(k, d_, is_out.data(), 0));
      const double n_out = std::sqrt(sk::norm2_f64(k, d_, is_out.data(), 1));
      const size_t row = static_cast<size_t>(g) * Cq_ + tok;
      if (mo_ > 0) sk::sign_sketch_sparse(*P_, mo_, k, idx.data(), no_, n_out, k_out_.data() + row * (mo_ / 8));
      k_norms_[row * 2] = kernels::f32_to_f16_sat(static_cast<float>(n_in[t]));
      k_norms_[row * 2 + 1] = kernels::f32_to_f16_sat(static_cast<float>(n_out));
    }
    for (int t0 = 0; t0 < G_; t0 += sk::kSketchBlock) {
      const int T = std::min(sk::kSketchBlock, G_ - t0);
      const size_t row = static_cast<size_t>(g) * Cq_ + b * G_ + t0;
      sk::sign_sketch_block(*P_, m_, kin.data() + static_cast<size_t>(t0) * d_, d_, T, n_in.data() + t0,
                            k_in_.data() + row * (m_ / 8), m_ / 8);
    }
  }

  /// The group's query sketches: qo = the outlier channels' share of S q (rows < max(m, m_o)), qin = qsk − qo
  /// (rows < m), and their totals.
  void group_query(const float* q, const uint8_t* idx, const float* qsk, float* qo, float* qin, float* tot_in,
                   float* tot_out) const {
    group_query_loop(q, idx, no_, ib_, P_->t32.data(), P_->rows, m_, mo_, qsk, qo, qin, tot_in, tot_out);
  }
  KVB_CPU_CLONES static void group_query_loop(const float* q, const uint8_t* idx, int no, int ib, const float* t32,
                                              int mr, int m, int mo, const float* qsk, float* qo, float* qin,
                                              float* tot_in, float* tot_out) {
    for (int i = 0; i < mr; ++i) qo[i] = 0.f;
    for (int a = 0; a < no; ++a) {
      const int c = sk::read_outlier_index(idx, a, ib);
      kernels::axpy_f32_inline(q[c], t32 + static_cast<size_t>(c) * mr, qo, mr);
    }
    for (int i = 0; i < m; ++i) qin[i] = qsk[i] - qo[i];
    *tot_in = sum_f32(qin, m);
    *tot_out = sum_f32(qo, mo);
  }

  QjlParams p_;
  int layer_, m_, mo_, G_, no_, ib_;
  int64_t Cq_, ng_;
  std::shared_ptr<const sk::Projection> P_;  // the codec's, shared by its layers
  std::vector<uint8_t> k_in_, k_out_;
  std::vector<uint16_t> k_norms_;
  std::vector<uint8_t> k_idx_;
  std::vector<uint16_t> k_res_;
};

}  // namespace

std::unique_ptr<EncodedLayer> qjl_encode_cpu(const QjlParams& p, int layer, std::shared_ptr<const sk::Projection> P,
                                             const LayerKV& kv, const CodecContext& ctx) {
  return std::make_unique<QjlLayer>(p, layer, std::move(P), kv, ctx);
}

}  // namespace kvb::codecs
