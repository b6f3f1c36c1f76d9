/// qjl reference: docs/codecs.md §7.3–§7.4 written literally, in float64. Bits as unpacked ±1 per row, the
/// estimator as the plain ±1 dot product sqrt(π/2)/m·‖k_in‖·<S_in q, σ_in> + sqrt(π/2)/m_o·‖k_out‖·
/// <S_out q, σ_out> (no masked sums, no packing), values dequantized to a dense copy (allowed here), fp16
/// buffers as rounded floats. Shares only the projection generator with the CPU path (the matrix is part of
/// the codec's definition) and computes every projection as project_f64 does (j ascending, float64), so the
/// signs match the CPU path's certified signs. Storage from the byte formulas.
#include <algorithm>
#include <cmath>
#include <vector>

#include "codecs/common/ref_dense.h"
#include "codecs/sketch/qjl_codec.h"
#include "codecs/sketch/sketch_cpu.h"
#include "codecs/sketch/sketch_layer.h"

namespace kvb::codecs {

uint64_t qjl_projection_seed(uint64_t seed, int layer_set);  // qjl_entry.cpp

namespace {

struct RefHead {
  std::vector<int8_t> s_in, s_out;  // [Cq][m], [Cq][m_o] as ±1
  std::vector<double> n_in, n_out;  // [Cq] fp16-rounded norms
  std::vector<std::vector<int>> outl;  // [groups] outlier channels
  std::vector<float> k_res;         // [C - Cq][d] fp16-rounded
};

}  // namespace

std::unique_ptr<EncodedLayer> qjl_encode_ref(const QjlParams& p, int layer, std::shared_ptr<const sk::Projection> P,
                                             const LayerKV& kv, const CodecContext& ctx) {
  const int d = kv.head_dim, H = kv.kv_heads, G = p.group_size, no = p.outliers;
  const int m = p.m_for(layer), mo = p.mo_for(layer);
  const int64_t C = kv.tokens, Cq = (C / p.residual) * p.residual, Vq = C > p.residual ? C - p.residual : 0;
  auto heads = std::make_shared<std::vector<RefHead>>(H);
  const int mr = P->rows;
  std::vector<double> St(static_cast<size_t>(d) * mr);  // S transposed, float64
  for (int i = 0; i < mr; ++i)
    for (int c = 0; c < d; ++c) St[static_cast<size_t>(c) * mr + i] = P->s64[static_cast<size_t>(i) * d + c];
  std::vector<float> v_hat(kv.v.size());
  for (int g = 0; g < H; ++g) {
    RefHead& R = (*heads)[g];
    const float* K = kv.k_head(g);
    R.s_in.resize(Cq * m);
    R.s_out.resize(Cq * mo);
    R.n_in.resize(Cq);
    R.n_out.resize(Cq);
    for (int64_t b = 0; b < Cq / G; ++b) {
      // Outlier channels: repeatedly the largest remaining column norm (ties: lower channel).
      std::vector<double> cn(d, 0.0);
      for (int t = 0; t < G; ++t)
        for (int c = 0; c < d; ++c) cn[c] += static_cast<double>(K[(b * G + t) * d + c]) * K[(b * G + t) * d + c];
      std::vector<int> O;
      std::vector<bool> taken(d, false);
      for (int a = 0; a < no; ++a) {
        int best = -1;
        for (int c = 0; c < d; ++c)
          if (!taken[c] && (best < 0 || cn[c] > cn[best])) best = c;
        taken[best] = true;
        O.push_back(best);
      }
      std::sort(O.begin(), O.end());
      R.outl.push_back(O);
      for (int t = 0; t < G; ++t) {
        const int64_t tok = b * G + t;
        std::vector<float> kin(K + tok * d, K + tok * d + d), kout(d, 0.f);
        for (int c : O) kout[c] = kin[c], kin[c] = 0.f;
        double ni = 0, nout = 0;
        for (int c = 0; c < d; ++c) ni += static_cast<double>(kin[c]) * kin[c];
        for (int c = 0; c < d; ++c) nout += static_cast<double>(kout[c]) * kout[c];
        R.n_in[tok] = ref::round_f16_sat(static_cast<float>(std::sqrt(ni)));
        R.n_out[tok] = ref::round_f16_sat(static_cast<float>(std::sqrt(nout)));
        // z_i = Σ_c S_ic·x_c, each z_i summed over c ascending (the loop runs c outer so the m sums advance
        // together; every z_i still sees its terms in the same order as project_f64). k_out is zero off O.
        std::vector<double> z(std::max(m, mo), 0.0);
        ref::project_columns(St.data(), mr, m, kin.data(), nullptr, d, z.data());
        for (int i = 0; i < m; ++i) R.s_in[tok * m + i] = z[i] > 0 ? 1 : -1;
        ref::project_columns(St.data(), mr, mo, kout.data(), O.data(), static_cast<int>(O.size()), z.data());
        for (int i = 0; i < mo; ++i) R.s_out[tok * mo + i] = z[i] > 0 ? 1 : -1;
      }
    }
    for (int64_t i = Cq * d; i < C * d; ++i) R.k_res.push_back(ref::round_f16_sat(K[i]));
    ref::values_qdq(kv.v_head(g), C, d, Vq, p.value_bits, p.value_group, v_hat.data() + g * C * d);
  }
  const double scale = ctx.attn.softmax_scale;
  auto raw = [P, heads, d, m, mo, G, Cq, C, scale](int g, const float* q, double* s) {
    const RefHead& R = (*heads)[g];
    // docs/codecs.md §7.4: q_sk = S q (all channels), q_out_sk = the group's outlier channels' share, q_in_sk = the difference.
    const int mr = std::max(m, mo);
    std::vector<double> q_sk(mr, 0.0), q_in(m), q_out(mr);
    for (int i = 0; i < mr; ++i)
      for (int c = 0; c < d; ++c) q_sk[i] += q[c] * P->s64[static_cast<size_t>(i) * d + c];
    for (int64_t b = 0; b < Cq / G; ++b) {
      const std::vector<int>& O = R.outl[b];
      for (int i = 0; i < mr; ++i) {
        q_out[i] = 0;
        for (int c : O) q_out[i] += q[c] * P->s64[static_cast<size_t>(i) * d + c];
      }
      for (int i = 0; i < m; ++i) q_in[i] = q_sk[i] - q_out[i];
      for (int64_t tok = b * G; tok < (b + 1) * G; ++tok) {
        double a = 0, o = 0;
        for (int i = 0; i < m; ++i) a += q_in[i] * R.s_in[tok * m + i];
        for (int i = 0; i < mo; ++i) o += q_out[i] * R.s_out[tok * mo + i];
        double e = kSqrtHalfPi / m * R.n_in[tok] * a;
        if (mo > 0) e += kSqrtHalfPi / mo * R.n_out[tok] * o;
        s[tok] = scale * e;
      }
    }
    for (int64_t t = Cq; t < C; ++t) {
      double e = 0;
      for (int c = 0; c < d; ++c) e += static_cast<double>(q[c]) * R.k_res[(t - Cq) * d + c];
      s[t] = scale * e;
    }
  };
  const uint64_t ib = d <= 256 ? 1 : 2;
  const uint64_t vrow = (static_cast<uint64_t>(d) * p.value_bits + 7) / 8;
  const uint64_t Hu = static_cast<uint64_t>(H);
  const double nominal = (m + mo) / 8.0 + 4.0 + static_cast<double>(no) * ib / G + vrow + 4.0 * (d / p.value_group);
  Storage st = StorageList(H, nominal)
                   .add("k.inlier_bits", StorageKind::kCompressed, Hu * Cq * (m / 8), Cq)
                   .add("k.outlier_bits", StorageKind::kCompressed, Hu * Cq * (mo / 8), Cq)
                   .add("k.norms", StorageKind::kCompressed, Hu * Cq * 4, Cq)
                   .add("k.outlier_idx", StorageKind::kCompressed, Hu * (Cq / G) * no * ib, Cq)
                   .add("k.residual", StorageKind::kBuffer, Hu * (C - Cq) * d * 2, C - Cq)
                   .add("v.codes", StorageKind::kCompressed, Hu * Vq * vrow, Vq)
                   .add("v.scale_min", StorageKind::kCompressed, Hu * Vq * (d / p.value_group) * 4, Vq)
                   .add("v.window", StorageKind::kBuffer, Hu * (C - Vq) * d * 2, C - Vq)
                   .add("k.projection_seed", StorageKind::kFixed, 8, 0)
                   .get();
  return std::make_unique<ref::SketchRefLayer>(C, d, ctx.attn, std::move(v_hat), raw, std::move(st));
}

}  // namespace kvb::codecs
