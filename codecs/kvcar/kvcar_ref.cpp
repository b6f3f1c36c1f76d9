/// kvcar naive reference: the trained model's inference written literally in float64 from the
/// training-mode parameters (BatchNorm with its running statistics, standardization applied explicitly, no
/// folding), the latents rounded to fp16 / int8 with independent float64 code (not kvcar_math.h), every
/// token decoded once into a dense K̂, V̂ (allowed in a reference) and exact float64 attention over it.
/// Reused heads copy the previous reference layer's dense rows. Storage comes from the byte formulas.
/// The matrix-vector products run through Eigen (float64) only for speed: a literal triple loop over a
/// 4k-token, 1024-wide layer takes minutes; the arithmetic is the same dense float64 sum.
// NOTE(kvcar): Eigen's own OpenMP GEMM threading is off in kvcar's files: kvcar parallelizes at a coarser
// grain (K and V trainings side by side, the runner's queries), and small per-block products are slower
// threaded than serial on a shared 2-core machine.
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Dense>

#include <cmath>

#include <fmt/format.h>

#include "codecs/common/ref_dense.h"
#include "codecs/kvcar/kvcar_codec.h"
#include "kvb/core/error.h"

namespace kvb::codecs {
namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CMapD = Eigen::Map<const MatD>;

/// The dense float64 reference layer, remembering its layer index (reuse reads layer N−1's reconstruction).
class KvcarRefLayer final : public ref::DenseLayer {
 public:
  KvcarRefLayer(int layer, const LayerKV& kv, std::vector<float> k, std::vector<float> v, AttnConfig attn, Storage st)
      : DenseLayer(kv, std::move(k), std::move(v), attn, std::move(st)), layer_(layer) {}
  int layer() const { return layer_; }

 private:
  int layer_;
};

/// rows [n, D] -> BatchNorm (running statistics) -> LeakyReLU, in place on a = rows·Wᵀ.
void bn_leaky(MatD& a, const std::vector<double>& g, const std::vector<double>& b, const std::vector<double>& rm,
              const std::vector<double>& rv, double eps, double slope) {
  for (Eigen::Index r = 0; r < a.rows(); ++r)
    for (Eigen::Index i = 0; i < a.cols(); ++i) {
      const double y = g[i] * (a(r, i) - rm[i]) / std::sqrt(rv[i] + eps) + b[i];
      a(r, i) = y > 0 ? y : slope * y;
    }
}

/// x[n, D] raw rows -> stored latents ẑ[n, dl] (after fp16 or int8 rounding) -> decoded rows [n, D].
MatD roundtrip(const AeWeights& w, const MatD& x, bool int8) {
  const Eigen::Index n = x.rows();
  MatD xs(n, w.D);
  for (Eigen::Index t = 0; t < n; ++t)
    for (int j = 0; j < w.D; ++j) xs(t, j) = (x(t, j) - w.mu[j]) / w.sigma[j];
  MatD a = xs * CMapD(w.w1.data(), w.h, w.D).transpose();
  bn_leaky(a, w.g1, w.b1, w.rm1, w.rv1, w.eps, w.slope);
  MatD z = a * CMapD(w.w2.data(), w.dl, w.h).transpose();
  for (Eigen::Index t = 0; t < n; ++t) {
    for (int k = 0; k < w.dl; ++k) z(t, k) += w.c2[k];
    // The stored latent: the float32 value (what the cache holds) rounded to fp16, or the int8 grid.
    if (int8) {
      double mn = static_cast<float>(z(t, 0)), mx = mn;
      for (int k = 0; k < w.dl; ++k) {
        const double zk = static_cast<float>(z(t, k));
        mn = std::min(mn, zk), mx = std::max(mx, zk);
      }
      double span = mx - mn;
      if (!(span > 0)) span = mn != 0 ? std::fabs(mn) : 1.0;
      const double scale = static_cast<float>(255.0 / span);
      for (int k = 0; k < w.dl; ++k) {
        const double q = std::clamp(std::floor(scale * (static_cast<float>(z(t, k)) - mn) + 0.5) - 128.0, -128.0, 127.0);
        z(t, k) = (q + 128.0) / scale + mn;
      }
    } else {
      for (int k = 0; k < w.dl; ++k) z(t, k) = ref::round_f16_sat(static_cast<float>(z(t, k)));
    }
  }
  MatD b = z * CMapD(w.w3.data(), w.h, w.dl).transpose();
  bn_leaky(b, w.g3, w.b3, w.rm3, w.rv3, w.eps, w.slope);
  MatD out = b * CMapD(w.w4.data(), w.D, w.h).transpose();
  for (Eigen::Index t = 0; t < n; ++t)
    for (int j = 0; j < w.D; ++j) out(t, j) = (out(t, j) + w.c4[j]) * w.sigma[j] + w.mu[j];
  return out;
}

}  // namespace

std::unique_ptr<EncodedLayer> kvcar_encode_ref(const KvcarParams& p, const KvcarFit& f, int layer,
                                               const LayerKV& kv, const EncodedLayer* prev, const CodecContext& ctx) {
  const KvcarLayerModel& m = *f.model;
  const int H = kv.kv_heads, d = kv.head_dim;
  const int64_t C = kv.tokens;
  std::vector<float> kh(kv.k.size()), vh(kv.v.size());
  if (!m.reused.empty()) {
    const auto* pl = dynamic_cast<const KvcarRefLayer*>(prev);
    KVB_CHECK(pl && pl->layer() == layer - 1 && pl->tokens() == C && pl->kv_heads() == H && pl->head_dim() == d,
              Unsupported, "{}: layer {} reads heads from layer {}, which is not the previous layer passed to encode",
              p.label(), layer, layer - 1);
    for (int g : m.reused) {
      std::copy(pl->k_head(g), pl->k_head(g) + C * d, kh.data() + static_cast<size_t>(g) * C * d);
      std::copy(pl->v_head(g), pl->v_head(g) + C * d, vh.data() + static_cast<size_t>(g) * C * d);
    }
  }
  const int ns = static_cast<int>(m.stored.size());
  if (ns > 0) {
    for (int which = 0; which < 2; ++which) {
      MatD x(C, static_cast<Eigen::Index>(ns) * d);
      for (int i = 0; i < ns; ++i) {
        const float* src = which == 0 ? kv.k_head(m.stored[i]) : kv.v_head(m.stored[i]);
        for (int64_t t = 0; t < C; ++t)
          for (int j = 0; j < d; ++j) x(t, i * d + j) = src[t * d + j];
      }
      const MatD out = roundtrip(which == 0 ? m.k : m.v, x, p.int8);
      std::vector<float>& dst = which == 0 ? kh : vh;
      for (int i = 0; i < ns; ++i)
        for (int64_t t = 0; t < C; ++t)
          for (int j = 0; j < d; ++j)
            dst[(static_cast<size_t>(m.stored[i]) * C + t) * d + j] = static_cast<float>(out(t, i * d + j));
    }
  }
  // Storage from the formulas of kvcar_codec.h.
  const uint64_t dl = ns > 0 ? static_cast<uint64_t>(m.k.dl) : 0;
  const uint64_t Cu = static_cast<uint64_t>(C);
  Storage st;
  st.kv_heads = H;
  st.nominal_bytes_per_token = p.bytes_per_token_layer(ns, d) / H;
  if (p.int8) {
    st.items = {{"k.latent", StorageKind::kCompressed, Cu * dl, C},
                {"k.scale_min", StorageKind::kCompressed, ns > 0 ? 8 * Cu : 0, C},
                {"v.latent", StorageKind::kCompressed, Cu * dl, C},
                {"v.scale_min", StorageKind::kCompressed, ns > 0 ? 8 * Cu : 0, C}};
  } else {
    st.items = {{"k.latent", StorageKind::kCompressed, 2 * Cu * dl, C},
                {"v.latent", StorageKind::kCompressed, 2 * Cu * dl, C}};
  }
  st.items.push_back({"k.ae_weights", StorageKind::kFixed, ns > 0 ? 4 * static_cast<uint64_t>(m.k.inference_floats()) : 0, 0});
  st.items.push_back({"v.ae_weights", StorageKind::kFixed, ns > 0 ? 4 * static_cast<uint64_t>(m.v.inference_floats()) : 0, 0});
  st.items.push_back({"reuse.heads", StorageKind::kFixed, 4 * static_cast<uint64_t>(m.reused.size()), 0});
  return std::make_unique<KvcarRefLayer>(layer, kv, std::move(kh), std::move(vh), ctx.attn, std::move(st));
}

}  // namespace kvb::codecs
