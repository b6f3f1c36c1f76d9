/// TurboQuant's CPU layer: codes, norms and sketches in the layout of turbo_codec.h; attention straight from
/// them in the rotated domain. Per GQA group each key row is decoded once (‖x‖·c[idx] and ±κγ, kDecodeRows
/// at a time) and dotted with every transformed query q' = [Π q ; S Π q] (kernels::row_kernels dots_many);
/// each value row likewise decoded once and added into every query's rotated accumulator (axpy_many); each
/// output is un-transformed once (o = Πᵀ(a + Sᵀ b)). The softmax normalizer is summed in double
/// (softmax_weights), as every layer of kvbench.
#include <algorithm>

#include "codecs/common/baseline.h"
#include "codecs/turbo/turbo_codec.h"

namespace kvb::codecs {
namespace {

using turbo::Part;

/// The stored rows of one part of every KV head.
struct PartRows {
  std::vector<Part> heads;  // [H]
  std::vector<uint8_t> codes, signs;
  std::vector<uint16_t> norms, rnorms;
  const Part& P(int g) const { return heads[static_cast<size_t>(g)]; }
};

class TurboLayer final : public EncodedLayer {
 public:
  TurboLayer(const TurboParams& p, int layer, const LayerKV& kv, const CodecContext& ctx)
      : H_(kv.kv_heads), C_(kv.tokens), d_(kv.head_dim), attn_(ctx.attn), n_out_(p.n_out) {
    for (int g = 0; g < H_; ++g) {
      k_.heads.push_back(turbo::make_part(p, true, layer, g, kv.k_head(g), C_, d_, ctx.seed));
      v_.heads.push_back(turbo::make_part(p, false, layer, g, kv.v_head(g), C_, d_, ctx.seed));
    }
    encode(k_, kv, true);
    encode(v_, kv, false);
  }

  int64_t tokens() const override { return C_; }

  Storage storage() const override { return turbo::layer_storage(k_.heads, v_.heads, C_, d_); }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out;
    auto add = [&](const char* pfx, const PartRows& R) {
      const std::string p(pfx);
      if (!R.codes.empty()) out.push_back(named_buffer(p + ".codes", R.codes));
      if (!R.norms.empty()) out.push_back(named_buffer(p + ".norm", R.norms));
      if (!R.signs.empty()) out.push_back(named_buffer(p + ".qjl", R.signs));
      if (!R.rnorms.empty()) out.push_back(named_buffer(p + ".rnorm", R.rnorms));
      if (n_out_ > 0) out.push_back(NamedBuffer{p + ".channels", turbo::channel_bytes(R.heads, d_)});
    };
    add("k", k_);
    add("v", v_);
    return out;
  }

  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override {
    const Part& K = k_.P(g);
    float* qt = thread_floats(0, static_cast<size_t>(K.width));
    turbo::transform_query(K, q, qt);
    const float* qp[1] = {qt};
    key_dots(g, qp, 1, s_out, scratch);
    to_logits(s_out, C_, attn_);
    return true;
  }

  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    const float* qs[1] = {q};
    float* os[1] = {o_out};
    attend_many(g, qs, 1, os, scratch);
  }

  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    const Part& K = k_.P(g);
    const Part& V = v_.P(g);
    const size_t wk = static_cast<size_t>(K.width), wv = static_cast<size_t>(V.width);
    float* qt = thread_floats(0, static_cast<size_t>(nq) * wk);
    float* acc = thread_floats(1, static_cast<size_t>(nq) * wv);
    thread_local std::vector<const float*> qp;
    thread_local std::vector<float*> ap;
    qp.resize(static_cast<size_t>(nq)), ap.resize(static_cast<size_t>(nq));
    for (int i = 0; i < nq; ++i) {
      turbo::transform_query(K, qs[i], qt + i * wk);
      qp[static_cast<size_t>(i)] = qt + i * wk;
      ap[static_cast<size_t>(i)] = acc + i * wv;
    }
    attend_many_rows(
        C_, V.width, 0, qp.data(), nq, ap.data(), scratch,
        [&](const float* const* qc, int nc, float* s) {
          key_dots(g, qc, nc, s, scratch);
          for (int i = 0; i < nc; ++i) to_logits(s + static_cast<size_t>(i) * C_, C_, attn_);
        },
        [&](int64_t t0, int n, float* rows, float*) { decode(v_, g, t0, n, rows); }, [](float*) {}, 1.f);
    for (int i = 0; i < nq; ++i) turbo::untransform_output(V, ap[static_cast<size_t>(i)], outs[i], d_);
  }

 private:
  void encode(PartRows& R, const LayerKV& kv, bool key) {
    const Part& P0 = R.P(0);
    const size_t N = static_cast<size_t>(H_) * static_cast<size_t>(C_);
    R.codes.assign(N * P0.code_bytes, 0);
    R.norms.assign(N * P0.norms, 0);
    R.signs.assign(N * P0.sign_bytes, 0);
    R.rnorms.assign(N * P0.rnorms, 0);
    for_each_head(H_, [&](int g) {
      const Part& P = R.P(g);
      const float* x = key ? kv.k_head(g) : kv.v_head(g);
#pragma omp parallel for schedule(static) if (H_ == 1 && C_ > 256)
      for (int64_t t = 0; t < C_; ++t) {
        const size_t r = static_cast<size_t>(g) * C_ + static_cast<size_t>(t);
        turbo::encode_vector(P, x + t * d_, R.codes.data() + r * P.code_bytes, R.norms.data() + r * P.norms,
                             R.signs.data() + r * P.sign_bytes, R.rnorms.data() + r * P.rnorms);
      }
    });
  }

  void decode(const PartRows& R, int g, int64_t t0, int n, float* rows) const {
    const Part& P = R.P(g);
    for (int r = 0; r < n; ++r) {
      const size_t t = static_cast<size_t>(g) * C_ + static_cast<size_t>(t0 + r);
      turbo::decode_row(P, R.codes.data() + t * P.code_bytes, R.norms.data() + t * P.norms,
                        R.signs.data() + t * P.sign_bytes, R.rnorms.data() + t * P.rnorms,
                        rows + static_cast<size_t>(r) * P.width);
    }
  }

  /// s[i·C + t] = <q'_i, decoded key row t> for the nc transformed queries qc.
  void key_dots(int g, const float* const* qc, int nc, float* s, Scratch& scratch) const {
    decoded_row_dots(C_, k_.P(g).width, 0, qc, nc, s, scratch,
                     [&](int64_t t0, int n, float* rows, float*) { decode(k_, g, t0, n, rows); });
  }

  int H_;
  int64_t C_;
  int d_;
  AttnConfig attn_;
  int n_out_;
  PartRows k_, v_;
};

}  // namespace

std::unique_ptr<EncodedLayer> turbo_encode_cpu(const TurboParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx) {
  return std::make_unique<TurboLayer>(p, layer, kv, ctx);
}

}  // namespace kvb::codecs
