/// kvcar CPU path: float32 encoder at encode time, float32 decoder of every cached token inside each
/// scores/attend call (Eigen matrix products over blocks of kBlock tokens), standard attention over the
/// decoded rows. Reused heads decode from the layer that stores them (held by shared pointer).
// NOTE(kvcar): Eigen's own OpenMP GEMM threading is off in kvcar's files: kvcar parallelizes at a coarser
// grain (K and V trainings side by side, the runner's queries), and small per-block products are slower
// threaded than serial on a shared 2-core machine.
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <mutex>

#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "kernels/formats/fp16.h"
#include "codecs/kvcar/kvcar_codec.h"
#include "codecs/kvcar/kvcar_cpu.h"
#include "codecs/kvcar/kvcar_math.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/error.h"
#include "kvb/core/half.h"

namespace kvb::codecs {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapF = Eigen::Map<MatF>;
using CMapF = Eigen::Map<const MatF>;

std::shared_ptr<const CpuAe> kvcar_fold_cpu(const AeWeights& w) {
  auto a = std::make_shared<CpuAe>();
  const int D = w.D, h = w.h, dl = w.dl;
  a->D = D, a->h = h, a->dl = dl, a->slope = static_cast<float>(w.slope);
  a->w1.resize(static_cast<size_t>(h) * D), a->c1.resize(h);
  for (int i = 0; i < h; ++i) {
    const double s = w.g1[i] / std::sqrt(w.rv1[i] + w.eps);
    double shift = 0;
    for (int j = 0; j < D; ++j) {
      const double wij = w.w1[static_cast<size_t>(i) * D + j];
      a->w1[static_cast<size_t>(i) * D + j] = static_cast<float>(s * wij / w.sigma[j]);
      shift += wij * w.mu[j] / w.sigma[j];
    }
    a->c1[i] = static_cast<float>(w.b1[i] - s * (w.rm1[i] + shift));
  }
  a->w2.assign(w.w2.begin(), w.w2.end());
  a->c2.assign(w.c2.begin(), w.c2.end());
  a->w3.resize(static_cast<size_t>(h) * dl), a->c3.resize(h);
  for (int i = 0; i < h; ++i) {
    const double s = w.g3[i] / std::sqrt(w.rv3[i] + w.eps);
    for (int k = 0; k < dl; ++k)
      a->w3[static_cast<size_t>(i) * dl + k] = static_cast<float>(s * w.w3[static_cast<size_t>(i) * dl + k]);
    a->c3[i] = static_cast<float>(w.b3[i] - s * w.rm3[i]);
  }
  a->w4.resize(static_cast<size_t>(D) * h), a->c4.resize(D);
  for (int j = 0; j < D; ++j) {
    for (int i = 0; i < h; ++i)
      a->w4[static_cast<size_t>(j) * h + i] = static_cast<float>(w.sigma[j] * w.w4[static_cast<size_t>(j) * h + i]);
    a->c4[j] = static_cast<float>(w.sigma[j] * w.c4[j] + w.mu[j]);
  }
  return a;
}

namespace {

constexpr int kBlock = 64;  ///< tokens decoded per block (their hidden rows stay in L1/L2)

/// What one layer stores: latents of its stored heads and its autoencoders.
struct CpuState {
  int layer = 0;
  int64_t C = 0;
  int H = 0, d = 0, dl = 0;
  bool int8 = false;
  std::vector<int> slot;  ///< [H] position among the stored heads, −1 for reused heads
  std::shared_ptr<const CpuAe> ak, av;
  std::vector<uint16_t> k16, v16;  ///< [C, dl] fp16 latents
  std::vector<int8_t> k8, v8;      ///< [C, dl] int8 latents
  std::vector<float> ksm, vsm;     ///< [C, 2] (scale, min) per token (int8)

  /// out[n, d] = decoded rows t0..t0+n of stored head `slot` (keys or values). tmp: tmp_floats() floats.
  void decode(bool keys, int s, int64_t t0, int n, float* out, float* tmp) const {
    const CpuAe& a = keys ? *ak : *av;
    float* z = tmp;
    float* hb = tmp + static_cast<size_t>(kBlock) * dl;
    if (int8) {
      const std::vector<int8_t>& q = keys ? k8 : v8;
      const std::vector<float>& sm = keys ? ksm : vsm;
      for (int r = 0; r < n; ++r) {
        const float sc = sm[2 * (t0 + r)], lo = sm[2 * (t0 + r) + 1];
        const int8_t* row = q.data() + (t0 + r) * dl;
        for (int k = 0; k < dl; ++k) z[r * dl + k] = kvcar_int8_value(row[k], sc, lo);
      }
    } else {
      const uint16_t* row = (keys ? k16 : v16).data() + t0 * dl;
      for (int64_t i = 0; i < static_cast<int64_t>(n) * dl; ++i) z[i] = f16_to_f32(row[i]);
    }
    MapF H(hb, n, a.h);
    H.noalias() = CMapF(z, n, dl) * CMapF(a.w3.data(), a.h, dl).transpose();
    for (int r = 0; r < n; ++r)
      for (int i = 0; i < a.h; ++i) H(r, i) = kvcar_leaky(H(r, i) + a.c3[i], a.slope);
    MapF O(out, n, d);
    O.noalias() = H * CMapF(a.w4.data() + static_cast<size_t>(s) * d * a.h, d, a.h).transpose();
    const float* c4 = a.c4.data() + static_cast<size_t>(s) * d;
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < d; ++j) O(r, j) += c4[j];
  }
  size_t tmp_floats() const {
    const int h = std::max(ak ? ak->h : 0, av ? av->h : 0);
    return static_cast<size_t>(kBlock) * (dl + h);
  }
};

class KvcarCpuLayer final : public EncodedLayer {
 public:
  KvcarCpuLayer(std::shared_ptr<const CpuState> self, std::vector<std::shared_ptr<const CpuState>> src,
                AttnConfig attn, Storage st, bool decode_once)
      : self_(std::move(self)), src_(std::move(src)), attn_(attn), st_(std::move(st)), once_(decode_once) {
    if (once_) {
      flags_ = std::make_unique<std::once_flag[]>(static_cast<size_t>(self_->H));
      kc_.resize(self_->H), vc_.resize(self_->H);
    }
  }

  int64_t tokens() const override { return self_->C; }
  Storage storage() const override { return st_; }
  int layer() const { return self_->layer; }
  int kv_heads() const { return self_->H; }
  int head_dim() const { return self_->d; }
  const std::shared_ptr<const CpuState>& source(int g) const { return src_[g]; }

  /// This layer's own latents (reused heads live in the layer that stores them).
  std::vector<NamedBuffer> buffers() const override {
    const CpuState& S = *self_;
    if (S.int8)
      return {named_buffer("k.latent", S.k8), named_buffer("k.scale_min", S.ksm), named_buffer("v.latent", S.v8),
              named_buffer("v.scale_min", S.vsm)};
    return {named_buffer("k.latent", S.k16), named_buffer("v.latent", S.v16)};
  }
  bool scores(int g, const float* q, float* s_out, Scratch& scratch) const override {
    logits(g, &q, 1, s_out, scratch);
    return true;
  }
  void attend(int g, const float* q, float* o_out, Scratch& scratch) const override {
    attend_rows(g, &q, 1, &o_out, nullptr, scratch);
  }
  /// attend() and the log of its softmax normalizer from the same pass (softmax_weights).
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch& scratch) const override {
    attend_rows(g, &q, 1, &o_out, lse_out, scratch);
  }
  /// Decodes every cached key and value of head g once for all nq queries.
  void attend_many(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    attend_rows(g, qs, nq, outs, nullptr, scratch);
  }

 private:
  /// attend_many(), and with lse_out (nq values) each query's log-sum-exp beside its output.
  void attend_rows(int g, const float* const* qs, int nq, float* const* outs, double* lse_out, Scratch& scratch) const {
    const int64_t C = self_->C;
    const int d = self_->d;
    float* s = scratch.floats(static_cast<size_t>(nq) * C);  // [nq, C]
    logits(g, qs, nq, s, scratch);
    std::vector<double> inv(nq);
    for (int i = 0; i < nq; ++i)
      inv[i] = 1.0 / softmax_weights(s + static_cast<size_t>(i) * C, C, lse_out ? lse_out + i : nullptr);
    const CpuState& S = *src_[g];
    const int slot = S.slot[g];
    float* buf = scratch.floats2(S.tmp_floats() + static_cast<size_t>(kBlock) * d + 2 * static_cast<size_t>(nq) * d);
    float* vb = buf + S.tmp_floats();
    float* acc = vb + static_cast<size_t>(kBlock) * d;
    MapF A(acc, nq, d);
    A.setZero();
    for (int64_t t0 = 0; t0 < C; t0 += kBlock) {
      const int n = static_cast<int>(std::min<int64_t>(kBlock, C - t0));
      const float* rows = block(false, g, S, slot, t0, n, vb, buf);
      const Eigen::Map<const MatF, 0, Eigen::OuterStride<>> W(s + t0, nq, n, Eigen::OuterStride<>(C));
      A.noalias() += W * CMapF(rows, n, d);
    }
    for (int i = 0; i < nq; ++i)
      for (int j = 0; j < d; ++j) outs[i][j] = static_cast<float>(A(i, j) * inv[i]);
  }

  /// s[i·C + t] = softcap(softmax_scale·<q_i, k̂_t>) for the nq queries, decoding every key once.
  void logits(int g, const float* const* qs, int nq, float* s, Scratch& scratch) const {
    const int64_t C = self_->C;
    const int d = self_->d;
    const CpuState& S = *src_[g];
    const int slot = S.slot[g];
    std::vector<float> qm(static_cast<size_t>(nq) * d);
    for (int i = 0; i < nq; ++i) std::copy(qs[i], qs[i] + d, qm.data() + static_cast<size_t>(i) * d);
    float* buf = scratch.floats2(S.tmp_floats() + static_cast<size_t>(kBlock) * d + static_cast<size_t>(kBlock) * nq);
    float* kb = buf + S.tmp_floats();
    float* db = kb + static_cast<size_t>(kBlock) * d;
    const float scale = attn_.softmax_scale, cap = attn_.softcap;
    for (int64_t t0 = 0; t0 < C; t0 += kBlock) {
      const int n = static_cast<int>(std::min<int64_t>(kBlock, C - t0));
      const float* rows = block(true, g, S, slot, t0, n, kb, buf);
      MapF Dm(db, nq, n);
      Dm.noalias() = CMapF(qm.data(), nq, d) * CMapF(rows, n, d).transpose();
      for (int i = 0; i < nq; ++i)
        for (int r = 0; r < n; ++r) s[static_cast<size_t>(i) * C + t0 + r] = softcap_f(scale * Dm(i, r), cap);
    }
  }

  /// Rows t0..t0+n of head g's decoded keys (values): decoded now into out (every_call, the paper's
  /// per-step cost), or, with decode=once, from the head's decoded copy made on first use (same blocks, same
  /// arithmetic, so the same floats; never counted as storage).
  const float* block(bool keys, int g, const CpuState& S, int slot, int64_t t0, int n, float* out, float* tmp) const {
    if (!once_) {
      S.decode(keys, slot, t0, n, out, tmp);
      return out;
    }
    std::call_once(flags_[g], [&] {
      const int64_t C = S.C;
      const int d = S.d;
      std::vector<float> t(S.tmp_floats());
      kc_[g].resize(static_cast<size_t>(C) * d), vc_[g].resize(static_cast<size_t>(C) * d);
      for (int64_t b0 = 0; b0 < C; b0 += kBlock) {
        const int m = static_cast<int>(std::min<int64_t>(kBlock, C - b0));
        S.decode(true, slot, b0, m, kc_[g].data() + b0 * d, t.data());
        S.decode(false, slot, b0, m, vc_[g].data() + b0 * d, t.data());
      }
    });
    return (keys ? kc_[g] : vc_[g]).data() + t0 * self_->d;
  }

  std::shared_ptr<const CpuState> self_;
  std::vector<std::shared_ptr<const CpuState>> src_;  ///< [H] the layer whose latents hold head g
  AttnConfig attn_;
  Storage st_;
  bool once_;
  mutable std::unique_ptr<std::once_flag[]> flags_;
  mutable std::vector<std::vector<float>> kc_, vc_;  ///< decode=once: [H][C, d] decoded copies
};

/// Latents of rows X[C, Ds] through encoder a, written as fp16 or int8 rows of S.
void encode_rows(const CpuAe& a, const float* X, int64_t C, bool keys, CpuState& S) {
  const int dl = a.dl;
  if (S.int8) {
    (keys ? S.k8 : S.v8).resize(static_cast<size_t>(C) * dl);
    (keys ? S.ksm : S.vsm).resize(static_cast<size_t>(C) * 2);
  } else {
    (keys ? S.k16 : S.v16).resize(static_cast<size_t>(C) * dl);
  }
  MatF H, Z;
  for (int64_t t0 = 0; t0 < C; t0 += 256) {
    const int n = static_cast<int>(std::min<int64_t>(256, C - t0));
    H.noalias() = CMapF(X + t0 * a.D, n, a.D) * CMapF(a.w1.data(), a.h, a.D).transpose();
    for (int r = 0; r < n; ++r)
      for (int i = 0; i < a.h; ++i) H(r, i) = kvcar_leaky(H(r, i) + a.c1[i], a.slope);
    Z.noalias() = H * CMapF(a.w2.data(), dl, a.h).transpose();
    for (int r = 0; r < n; ++r) {
      float* z = Z.data() + static_cast<size_t>(r) * dl;
      for (int k = 0; k < dl; ++k) z[k] += a.c2[k];
      const int64_t t = t0 + r;
      if (S.int8) {
        float sc, lo;
        kvcar_int8_grid(z, dl, &sc, &lo);
        float* sm = (keys ? S.ksm : S.vsm).data() + 2 * t;
        sm[0] = sc, sm[1] = lo;
        int8_t* q = (keys ? S.k8 : S.v8).data() + t * dl;
        for (int k = 0; k < dl; ++k) q[k] = kvcar_int8_code(z[k], sc, lo);
      } else {
        uint16_t* q = (keys ? S.k16 : S.v16).data() + t * dl;
        for (int k = 0; k < dl; ++k) q[k] = kernels::f32_to_f16_sat(z[k]);
      }
    }
  }
}

}  // namespace

std::unique_ptr<EncodedLayer> kvcar_encode_cpu(const KvcarParams& p, const KvcarFit& f, int layer,
                                               const LayerKV& kv, const EncodedLayer* prev, const CodecContext& ctx) {
  const KvcarLayerModel& m = *f.model;
  const int H = kv.kv_heads, d = kv.head_dim;
  const int64_t C = kv.tokens;
  auto S = std::make_shared<CpuState>();
  S->layer = layer, S->C = C, S->H = H, S->d = d, S->int8 = p.int8;
  S->slot.assign(H, -1);
  for (size_t i = 0; i < m.stored.size(); ++i) S->slot[m.stored[i]] = static_cast<int>(i);
  std::vector<std::shared_ptr<const CpuState>> src(H);
  if (!m.reused.empty()) {
    const auto* pl = dynamic_cast<const KvcarCpuLayer*>(prev);
    KVB_CHECK(pl && pl->layer() == layer - 1 && pl->tokens() == C && pl->kv_heads() == H && pl->head_dim() == d,
              Unsupported,
              "{}: layer {} reads {} head(s) from layer {}, but the previous layer passed to encode is {} (evaluate "
              "consecutive layers, or set reuse_heads=0)",
              p.label(), layer, m.reused.size(), layer - 1,
              pl ? fmt::format("layer {} with {} tokens", pl->layer(), pl->tokens()) : std::string("missing"));
    for (int g : m.reused) src[g] = pl->source(g);
  }
  const int Ds = static_cast<int>(m.stored.size()) * d;
  if (!m.stored.empty()) {
    S->dl = m.k.dl;
    S->ak = f.cpu_k, S->av = f.cpu_v;
    std::vector<float> X(static_cast<size_t>(C) * Ds);
    for (int which = 0; which < 2; ++which) {
      for (size_t i = 0; i < m.stored.size(); ++i) {
        const float* h = which == 0 ? kv.k_head(m.stored[i]) : kv.v_head(m.stored[i]);
        for (int64_t t = 0; t < C; ++t)
          std::copy(h + t * d, h + (t + 1) * d, X.data() + static_cast<size_t>(t) * Ds + i * d);
      }
      encode_rows(which == 0 ? *f.cpu_k : *f.cpu_v, X.data(), C, which == 0, *S);
    }
  }
  for (int g : m.stored) src[g] = S;

  StorageList st(H, p.bytes_per_token_layer(static_cast<int>(m.stored.size()), d) / H);
  if (p.int8) {
    st.add("k.latent", StorageKind::kCompressed, bytes_of(S->k8), C);
    st.add("k.scale_min", StorageKind::kCompressed, bytes_of(S->ksm), C);
    st.add("v.latent", StorageKind::kCompressed, bytes_of(S->v8), C);
    st.add("v.scale_min", StorageKind::kCompressed, bytes_of(S->vsm), C);
  } else {
    st.add("k.latent", StorageKind::kCompressed, bytes_of(S->k16), C);
    st.add("v.latent", StorageKind::kCompressed, bytes_of(S->v16), C);
  }
  st.add("k.ae_weights", StorageKind::kFixed, S->ak ? S->ak->bytes() : 0, 0);
  st.add("v.ae_weights", StorageKind::kFixed, S->av ? S->av->bytes() : 0, 0);
  st.add("reuse.heads", StorageKind::kFixed, 4 * m.reused.size(), 0);
  return std::make_unique<KvcarCpuLayer>(std::move(S), std::move(src), ctx.attn, st.get(), p.decode_once);
}

}  // namespace kvb::codecs
