/// TurboQuant reference: Algorithms 1 and 2 of arXiv 2504.19874 written out in the original domain, dense and
/// in float64, independent of turbo_state.cpp's encoder, decoder and transforms. It shares only the codec's
/// constants — the seeded Π and S and the Lloyd–Max codebook of each instance (turbo::make_part; as other
/// references share a seeded projection) — and picks the outlier channels by its own code (checked against
/// make_part's). Per vector and instance:
///   x̂_mse = fp16(‖x‖)·Πᵀ c[argmin over the boundaries],            (Algorithm 1)
///   prod:  r = x − x̂_mse, z = sign(S' r) with S' = S Π,  x̂ = x̂_mse + sqrt(π/2)/n · fp16(‖r‖) · S'ᵀ z,  (Algorithm 2)
/// then float64 exact attention over the dense K̂, V̂ (ref::DenseLayer). Storage from the byte formulas.
#include <algorithm>
#include <cmath>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/turbo/turbo_codec.h"
#include "kvb/core/hd.h"  // kSqrtHalfPi

namespace kvb::codecs {
namespace {


std::vector<int> ref_outliers(const float* x, int64_t C, int d, int n_out) {
  std::vector<std::pair<double, int>> e;
  for (int c = 0; c < d; ++c) {
    double s = 0;
    for (int64_t t = 0; t < C; ++t) s += static_cast<double>(x[t * d + c]) * x[t * d + c];
    e.push_back({-s, c});  // largest energy first, lower channel on ties
  }
  std::sort(e.begin(), e.end());
  std::vector<int> out;
  for (int i = 0; i < n_out; ++i) out.push_back(e[static_cast<size_t>(i)].second);
  std::sort(out.begin(), out.end());
  return out;
}

/// x̂ of one instance's channels xs[n] (the two algorithms above), written into xhat[n].
void qdq_instance(const turbo::Instance& I, const double* xs, double* xhat) {
  const int n = I.n;
  const auto at = [n](const std::vector<double>& A, int i, int j) { return A[static_cast<size_t>(i) * n + j]; };
  double nrm2 = 0;
  for (int j = 0; j < n; ++j) nrm2 += xs[j] * xs[j];
  const double nrm = std::sqrt(nrm2);
  std::vector<double> r(xs, xs + n);
  for (int j = 0; j < n; ++j) xhat[j] = 0;
  if (I.mb > 0) {
    const double nh = ref::round_f16_sat(static_cast<float>(nrm));
    std::vector<double> c(static_cast<size_t>(n)), u(static_cast<size_t>(n));
    for (int j = 0; j < n; ++j) u[static_cast<size_t>(j)] = nrm > 0 ? xs[j] / nrm : 0.0;
    for (int i = 0; i < n; ++i) {
      double y = 0;
      for (int j = 0; j < n; ++j) y += at(I.pi, i, j) * u[static_cast<size_t>(j)];
      int idx = 0;
      for (double b : I.cb->boundaries) idx += b < y;
      c[static_cast<size_t>(i)] = I.cb->centroids[static_cast<size_t>(idx)];
    }
    std::vector<double> v(static_cast<size_t>(n), 0.0);  // Πᵀ c, row by row of Π
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) v[static_cast<size_t>(j)] += at(I.pi, i, j) * c[static_cast<size_t>(i)];
    for (int j = 0; j < n; ++j) {
      xhat[j] = nh * v[static_cast<size_t>(j)];
      r[static_cast<size_t>(j)] = xs[j] - xhat[j];
    }
  }
  if (!I.prod) return;
  double g2 = 0;
  for (double v : r) g2 += v * v;
  const double gamma = ref::round_f16_sat(static_cast<float>(std::sqrt(g2)));
  // z = sign(S' r) and x̂ += sqrt(π/2)/n · γ · S'ᵀ z, S' = S Π applied as S (Π r) and Πᵀ (Sᵀ z): the same
  // matrix, n² per vector instead of forming S' (n³ per instance; seconds at head_dim 1024).
  std::vector<double> pr(static_cast<size_t>(n), 0.0), sz(static_cast<size_t>(n), 0.0);
  for (int k = 0; k < n; ++k)
    for (int j = 0; j < n; ++j) pr[static_cast<size_t>(k)] += at(I.pi, k, j) * r[static_cast<size_t>(j)];
  for (int i = 0; i < n; ++i) {
    double z = 0;
    for (int k = 0; k < n; ++k) z += at(I.s, i, k) * pr[static_cast<size_t>(k)];
    const double sg = z > 0 ? 1.0 : -1.0;
    for (int k = 0; k < n; ++k) sz[static_cast<size_t>(k)] += at(I.s, i, k) * sg;
  }
  std::vector<double> v(static_cast<size_t>(n), 0.0);  // Πᵀ (Sᵀ z)
  for (int k = 0; k < n; ++k)
    for (int j = 0; j < n; ++j) v[static_cast<size_t>(j)] += at(I.pi, k, j) * sz[static_cast<size_t>(k)];
  for (int j = 0; j < n; ++j) xhat[j] += kSqrtHalfPi / n * gamma * v[static_cast<size_t>(j)];
}

}  // namespace

std::unique_ptr<EncodedLayer> turbo_encode_ref(const TurboParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx) {
  const int d = kv.head_dim, H = kv.kv_heads;
  const int64_t C = kv.tokens;
  std::vector<float> k(kv.k.size()), v(kv.v.size());
  for (int part = 0; part < 2; ++part) {
    const bool key = part == 0;
    for (int g = 0; g < H; ++g) {
      const float* x = key ? kv.k_head(g) : kv.v_head(g);
      float* out = (key ? k.data() : v.data()) + static_cast<size_t>(g) * C * d;
      const turbo::Part P = turbo::make_part(p, key, layer, g, x, C, d, ctx.seed);
      if (p.n_out > 0)
        KVB_CHECK(ref_outliers(x, C, d, p.n_out) == P.inst[0].channels, RuntimeError,
                  "turboquant reference: outlier channels of layer {} head {} differ from the codec's", layer, g);
      for (int64_t t = 0; t < C; ++t)
        for (size_t s = 0; s < P.inst.size(); ++s) {
          const auto& I = P.inst[s];
          std::vector<double> xs(static_cast<size_t>(I.n)), xh(static_cast<size_t>(I.n));
          for (int j = 0; j < I.n; ++j) xs[static_cast<size_t>(j)] = x[t * d + I.channels[static_cast<size_t>(j)]];
          qdq_instance(I, xs.data(), xh.data());
          for (int j = 0; j < I.n; ++j) out[t * d + I.channels[static_cast<size_t>(j)]] = static_cast<float>(xh[static_cast<size_t>(j)]);
        }
    }
  }
  // Byte formulas (turbo_codec.h layout).
  const uint64_t Hu = static_cast<uint64_t>(H), Cu = static_cast<uint64_t>(C);
  double nominal = 0;
  StorageList st(H, 0);
  for (int part = 0; part < 2; ++part) {
    const bool key = part == 0;
    const bool prod = (key ? p.k_variant : p.v_variant) == "prod";
    const int b = key ? p.k_bits : p.v_bits;
    std::vector<std::pair<int, int>> inst;  // (channels, bits)
    if (p.n_out > 0) inst = {{p.n_out, b + p.out_extra}, {d - p.n_out, b}};
    else inst = {{d, b}};
    uint64_t code_bits = 0, norms = 0, sign_bytes = 0, rnorms = 0, cb = 0;
    for (auto [n, bits] : inst) {
      const int mb = prod ? bits - 1 : bits;
      code_bits += static_cast<uint64_t>(n) * mb;
      if (mb > 0) norms += 1, cb += 4ull << mb;
      if (prod) sign_bytes += (n + 7) / 8, rnorms += 1;
    }
    const uint64_t code_bytes = (code_bits + 7) / 8;
    const std::string pre = key ? "k" : "v";
    if (code_bytes) st.add(pre + ".codes", StorageKind::kCompressed, Hu * Cu * code_bytes, C);
    if (norms) st.add(pre + ".norm", StorageKind::kCompressed, Hu * Cu * 2 * norms, C);
    if (sign_bytes) st.add(pre + ".qjl", StorageKind::kCompressed, Hu * Cu * sign_bytes, C);
    if (rnorms) st.add(pre + ".rnorm", StorageKind::kCompressed, Hu * Cu * 2 * rnorms, C);
    if (p.n_out > 0) st.add(pre + ".channels", StorageKind::kFixed, Hu * p.n_out * (d <= 256 ? 1 : 2), 0);
    if (cb) st.add(pre + ".codebooks", StorageKind::kFixed, cb, 0);
    nominal += static_cast<double>(code_bytes + 2 * norms + sign_bytes + 2 * rnorms);
  }
  st.add("seeds", StorageKind::kFixed, 8 * Hu, 0);
  Storage s = st.get();
  s.nominal_bytes_per_token = nominal;
  return ref::dense_layer(kv, std::move(k), std::move(v), ctx, std::move(s));
}

}  // namespace kvb::codecs
