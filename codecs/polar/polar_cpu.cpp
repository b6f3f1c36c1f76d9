/// polarquant CPU path (layout: polar_codec.h, polar_math.h).
///
/// Encode, per row, in float64: y = Π [x; 0] (the zero-padded row, Σ over the d real coordinates, j ascending),
/// the forward polar transform, each angle's code decided from its pair by exact sign tests against the
/// boundaries (polar::encode_node; in exact arithmetic the nearest codebook level), the dp/2^L radii to
/// binary16. Deterministic, and the CUDA encoder (polar_cuda.cu) runs the same float64 steps: the same bytes.
/// The reference computes the same float64 values independently.
///
/// Attend never leaves the rotated domain for the cache: ⟨Πq, Π k̂⟩ = ⟨q, k̂⟩, so every key row is decoded
/// top-down into ŷ = Π k̂ (float32: fp16 radii, cos/sin tables of the stored float32 codebook angles) and dotted
/// with the rotated query; the values are decoded the same way and accumulated as Σ_t p_t ŷ_t, and the output
/// is un-rotated once per query, o = (Πᵀ Σ_t p_t ŷ_t)[0, d). The shared drivers (codecs/common/baseline.h
/// attend_many_rows, decoded_row_dots; kernels::row_kernels dots_many / axpy_many) decode each row once per
/// call, for all the queries of a GQA group.
#include <algorithm>
#include <cmath>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/polar/polar_codec.h"
#include "kernels/cpu/row_kernels.h"
#include "kernels/formats/fp16.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/half.h"

namespace kvb::codecs {
namespace {

struct Part {
  std::vector<uint8_t> angles;   // [head][token][row_bytes]
  std::vector<uint16_t> radii;   // [head][token][radii] binary16
  std::vector<uint64_t> seeds;   // [head]
  std::vector<std::shared_ptr<const polar::Rotation>> rot;  // [head]
};

class PolarLayer final : public EncodedLayer {
 public:
  PolarLayer(const PolarParams& p, int layer, const LayerKV& kv, const CodecContext& ctx)
      : lay_(p.layout(kv.head_dim)), H_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), dp_(lay_.dp), attn_(ctx.attn) {
    // The stored codebook (float32, level-major), the decode tables cos/sin of those float32 angles and the
    // boundaries' cos/sin (angle_code).
    polar::Tables tab = polar::make_tables(lay_);
    codebook_ = std::move(tab.codebook);
    cs_ = std::move(tab.cs);
    bcs_ = std::move(tab.bcs);
    int part = 0;
    for (Part* pt : {&k_, &v_}) {
      pt->angles.assign(static_cast<size_t>(H_) * C_ * lay_.row_bytes, 0);
      pt->radii.resize(static_cast<size_t>(H_) * C_ * lay_.radii);
      pt->seeds.resize(H_);
      pt->rot.resize(H_);
      for (int g = 0; g < H_; ++g) pt->seeds[g] = polar::rotation_seed(ctx.seed, layer, g, part);
      ++part;
    }
    for_each_head(H_, [&](int g) {
      for (Part* pt : {&k_, &v_}) pt->rot[g] = polar::rotation(dp_, pt->seeds[g]);
      encode_head(kv.k_head(g), g, k_);
      encode_head(kv.v_head(g), g, v_);
    });
  }

  int64_t tokens() const override { return C_; }

  Storage storage() const override { return polar_storage(lay_, H_, C_); }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out;
    for (const auto& [name, pt] : {std::pair{"k", &k_}, std::pair{"v", &v_}}) {
      const std::string pre(name);
      out.push_back(named_buffer(pre + ".angles", pt->angles));
      out.push_back(named_buffer(pre + ".radii", pt->radii));
      out.push_back(named_buffer(pre + ".rotation_seed", pt->seeds));
    }
    out.push_back(named_buffer("codebook", codebook_));
    return out;
  }

  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override {
    float* qr = thread_floats(0, static_cast<size_t>(dp_));
    rotate_query(k_, g, q, qr);
    key_logits(g, &qr, 1, s_out, scratch);
    return true;
  }

  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    attend_one(g, q, o_out, nullptr, scratch);
  }
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const override {
    attend_one(g, q, o_out, lse_out, scratch);
  }

  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    if (nq == 1) return attend(g, qs[0], outs[0], scratch);
    float* qr = thread_floats(0, static_cast<size_t>(nq) * dp_);
    float* acc = thread_floats(1, static_cast<size_t>(nq) * dp_);
    thread_local std::vector<const float*> qp;  // the hot path: no allocation per call
    thread_local std::vector<float*> op;
    qp.resize(static_cast<size_t>(nq)), op.resize(static_cast<size_t>(nq));
    for (int i = 0; i < nq; ++i) {
      qp[static_cast<size_t>(i)] = qr + static_cast<size_t>(i) * dp_;
      op[static_cast<size_t>(i)] = acc + static_cast<size_t>(i) * dp_;
      rotate_query(k_, g, qs[i], qr + static_cast<size_t>(i) * dp_);
    }
    attend_many_rows(
        C_, dp_, 0, qp.data(), nq, op.data(), scratch,
        [&](const float* const* qc, int nc, float* s) { key_logits(g, qc, nc, s, scratch); },
        [&](int64_t t0, int n, float* rows, float*) { decode_rows(v_, g, t0, n, rows); }, [](float*) {}, 1.f);
    for (int i = 0; i < nq; ++i) unrotate_output(g, op[static_cast<size_t>(i)], outs[i]);
  }

 private:
  /// s[i·C + t] = logit of rotated query qc[i] against key t: dots with the decoded rows, then to_logits.
  void key_logits(int g, const float* const* qc, int nc, float* s, Scratch& scratch) const {
    decoded_row_dots(C_, dp_, 0, qc, nc, s, scratch,
                     [&](int64_t t0, int n, float* rows, float*) { decode_rows(k_, g, t0, n, rows); });
    for (int i = 0; i < nc; ++i) to_logits(s + static_cast<size_t>(i) * C_, C_, attn_);
  }

  /// attend() and attend_lse(): one query, two passes (logits, then the weighted values), lse may be null.
  void attend_one(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const {
    constexpr int kRows = BaselineLayer::kDecodeRows;
    float* qr = thread_floats(0, static_cast<size_t>(dp_));
    float* acc = thread_floats(1, static_cast<size_t>(dp_));
    rotate_query(k_, g, q, qr);
    float* s = scratch.floats(static_cast<size_t>(C_));
    key_logits(g, &qr, 1, s, scratch);
    const double l = softmax_weights(s, C_, lse_out);
    for (int j = 0; j < dp_; ++j) acc[j] = 0.f;
    const kernels::RowKernels& K = kernels::row_kernels_switched();
    float* buf = scratch.floats2(static_cast<size_t>(kRows) * dp_);
    for (int64_t t0 = 0; t0 < C_; t0 += kRows) {
      const int n = static_cast<int>(std::min<int64_t>(kRows, C_ - t0));
      bool any = false;
      for (int r = 0; r < n && !any; ++r) any = s[t0 + r] != 0.f;
      if (!any) continue;
      decode_rows(v_, g, t0, n, buf);
      K.axpy_many(buf, n, dp_, s + t0, C_, 1, &acc);
    }
    unrotate_output(g, acc, o_out);
    const float inv = static_cast<float>(1.0 / l);  // l >= 1
    for (int j = 0; j < d_; ++j) o_out[j] *= inv;
  }

  /// qr[0, dp) = Π_K [q; 0] (float32 matrix, float32 sums over the d real coordinates).
  void rotate_query(const Part& pt, int g, const float* q, float* qr) const {
    const kernels::RowKernels& K = kernels::row_kernels_switched();
    const float* P = pt.rot[g]->m32.data();
    for (int i = 0; i < dp_; ++i) qr[i] = K.dot_f32(P + static_cast<size_t>(i) * dp_, q, d_);
  }

  /// o[0, d) = (Π_Vᵀ acc)[0, d) = Σ_i acc_i · row i of Π_V (first d entries).
  void unrotate_output(int g, const float* acc, float* o) const {
    const kernels::RowKernels& K = kernels::row_kernels_switched();
    const float* P = v_.rot[g]->m32.data();
    for (int j = 0; j < d_; ++j) o[j] = 0.f;
    for (int i = 0; i < dp_; ++i)
      if (acc[i] != 0.f) K.axpy_f32(acc[i], P + static_cast<size_t>(i) * dp_, o, d_);
  }

  /// rows[r·dp + j] = ŷ_{t0+r, j}: token t0 + r of KV head g decoded top-down in the rotated domain
  /// (polar::inverse_in_place with the codes read in place and each level's (cos, sin) table inlined).
  void decode_rows(const Part& pt, int g, int64_t t0, int n, float* rows) const {
    const size_t base = static_cast<size_t>(g) * C_ + static_cast<size_t>(t0);
    for (int r = 0; r < n; ++r) {
      const uint8_t* codes = &pt.angles[(base + r) * lay_.row_bytes];
      const uint16_t* rad = &pt.radii[(base + r) * lay_.radii];
      float* out = rows + static_cast<size_t>(r) * dp_;
      for (int i = 0; i < lay_.radii; ++i) out[i] = f16_to_f32(rad[i]);
      for (int l = lay_.levels; l >= 1; --l) {
        const int b = lay_.bits[l - 1], off = lay_.bit_off[l - 1];
        const float* tab = &cs_[2 * static_cast<size_t>(lay_.cb_off[l - 1])];
        for (int i = lay_.count[l - 1] - 1; i >= 0; --i) {  // descending: children 2i, 2i+1 >= i already read
          const float* cs = tab + 2 * polar::get_code(codes, off + i * b, b);
          const float rr = out[i];
          out[2 * i + 1] = rr * cs[1];
          out[2 * i] = rr * cs[0];
        }
      }
    }
  }

  void encode_head(const float* x, int g, Part& pt) const {
    const double* Pt = pt.rot[g]->m64t.data();
    std::vector<double> y(static_cast<size_t>(dp_)), work(static_cast<size_t>(dp_ / 2));
    for (int64_t t = 0; t < C_; ++t) {
      // y_i = Σ_{j<d} Π_ij·x_j, each y_i summed over j ascending (the reference's order), as d row updates.
      const float* xt = x + t * d_;
      double* yp = y.data();
      for (int i = 0; i < dp_; ++i) yp[i] = 0;
      for (int j = 0; j < d_; ++j) {
        const double xj = static_cast<double>(xt[j]);
        const double* col = Pt + static_cast<size_t>(j) * dp_;
        for (int i = 0; i < dp_; ++i) yp[i] += col[i] * xj;
      }
      // The forward transform level by level (level 1 from y, then in place in work), each node's code decided
      // from its pair (polar::encode_node: exact sign tests, no atan2) and packed.
      const size_t row = static_cast<size_t>(g) * C_ + static_cast<size_t>(t);
      uint8_t* codes = &pt.angles[row * lay_.row_bytes];
      for (int l = 1; l <= lay_.levels; ++l) {
        const int b = lay_.bits[l - 1], nb = (1 << b) - 1;
        const double* in = l == 1 ? yp : work.data();
        const double* bcs = bcs_.data() + 2 * lay_.cb_off[l - 1];
        for (int i = 0; i < lay_.count[l - 1]; ++i) {
          const int c = polar::encode_node(l, in[2 * i], in[2 * i + 1], bcs, nb, &work[static_cast<size_t>(i)]);
          polar::put_code(codes, lay_.bit_off[l - 1] + i * b, b, static_cast<unsigned>(c));
        }
      }
      uint16_t* r16 = &pt.radii[row * lay_.radii];
      for (int i = 0; i < lay_.radii; ++i)
        r16[i] = kernels::f32_to_f16_sat(static_cast<float>(work[static_cast<size_t>(i)]));
    }
  }

  polar::Layout lay_;
  int H_;
  int64_t C_;
  int d_, dp_;
  AttnConfig attn_;
  Part k_, v_;
  std::vector<float> codebook_;  // stored: Σ_ℓ 2^b float32 angles
  std::vector<float> cs_;        // decode tables: (cos, sin) of each stored angle
  std::vector<double> bcs_;      // code decisions: (cos, sin) of each level's boundaries (polar::Tables::bcs)
};

}  // namespace

Storage polar_storage(const polar::Layout& lay, int kv_heads, int64_t tokens) {
  const uint64_t rows = static_cast<uint64_t>(kv_heads) * static_cast<uint64_t>(tokens);
  StorageList st(kv_heads, 2.0 * lay.part_bytes());
  for (const char* name : {"k", "v"}) {
    const std::string pre(name);
    st.add(pre + ".angles", StorageKind::kCompressed, rows * static_cast<uint64_t>(lay.row_bytes), tokens)
        .add(pre + ".radii", StorageKind::kCompressed, rows * static_cast<uint64_t>(lay.radii) * sizeof(uint16_t), tokens)
        .add(pre + ".rotation_seed", StorageKind::kFixed, sizeof(uint64_t) * static_cast<uint64_t>(kv_heads), 0);
  }
  st.add("codebook", StorageKind::kFixed, sizeof(float) * static_cast<uint64_t>(lay.codebook_size), 0);
  return st.get();
}

std::unique_ptr<EncodedLayer> polar_encode_cpu(const PolarParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx) {
  return std::make_unique<PolarLayer>(p, layer, kv, ctx);
}

}  // namespace kvb::codecs
