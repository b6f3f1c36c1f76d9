/// BalanceKV / uniform reference: docs/codecs.md §6.2–§6.3 written out literally, in float64, without
/// walk_math.h's decision or the CPU path's halving. Per level it gathers the survivors, builds each
/// block's full B×B Gram matrix, runs the walk, then halves with cumulative counts and a stable argsort
/// of −ω exactly as the authors' pseudo-code does. It shares only the counter-based uniform draws
/// (walk::uniform01), which define *which* random numbers the walk uses, not how it uses them.
/// Attention: dense float64 over the held tokens with per-token weights; storage from byte formulas.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/select/select_codec.h"
#include "codecs/select/walk_math.h"

namespace kvb::codecs {
namespace {

/// σ over n survivors: Kc, Vc are [n][d] (values already multiplied by the cumulative weights).
std::vector<int> ref_signs(const SelectParams& p, const std::vector<double>& Kc, const std::vector<double>& Vc,
                           int64_t n, int d, uint64_t seed, int layer, int head, int level) {
  std::vector<int> sigma(static_cast<size_t>(n), 1);
  if (p.walk == SelectWalk::kUniform) {
    for (int64_t i = 0; i < n; ++i)
      sigma[i] = walk::uniform01(seed, layer, head, level, 0, static_cast<uint64_t>(i)) < 0.5 ? 1 : -1;
    return sigma;
  }
  const int64_t B = p.block_size;
  for (int64_t b = 0; b * B < n; ++b) {
    const int64_t lo = b * B, nb = std::min(B, n - lo);  // real rows; padding rows are left out entirely
    std::vector<double> mean(d, 0.0);
    for (int64_t i = 0; i < nb; ++i)
      for (int j = 0; j < d; ++j) mean[j] += Kc[(lo + i) * d + j];
    for (int j = 0; j < d; ++j) mean[j] /= static_cast<double>(nb);
    // Gram matrix in log form: X[i][j] = τ<k̄_i,k̄_j>/√d − β, Y[i][j] = <v_i,v_j> + c + 1e-8.
    std::vector<double> X(nb * nb), Y(nb * nb);
    for (int64_t i = 0; i < nb; ++i)
      for (int64_t j = 0; j < nb; ++j) {
        double kk = 0, vv = 0;
        for (int c = 0; c < d; ++c) {
          kk += (Kc[(lo + i) * d + c] - mean[c]) * (Kc[(lo + j) * d + c] - mean[c]);
          vv += Vc[(lo + i) * d + c] * Vc[(lo + j) * d + c];
        }
        X[i * nb + j] = p.temp * kk / std::sqrt(static_cast<double>(d)) - p.beta;
        Y[i * nb + j] = vv + p.const_denom + 1e-8;
      }
    sigma[lo] = 1;
    for (int64_t i = 1; i < nb; ++i) {
      // p_i = 0.5 − γ·Σ_{j<i} e^{X_ij} Y_ij σ_j, with the sum kept as e^M·R.
      double M = -INFINITY;
      for (int64_t j = 0; j < i; ++j) M = std::max(M, X[i * nb + j]);
      double R = 0;
      for (int64_t j = 0; j < i; ++j) R += std::exp(X[i * nb + j] - M) * Y[i * nb + j] * sigma[lo + j];
      const double u = walk::uniform01(seed, layer, head, level, static_cast<uint64_t>(b), static_cast<uint64_t>(i));
      int s;
      if (R == 0) {
        s = u < 0.5 ? 1 : -1;
      } else if (std::log(p.gamma) + M + std::log(std::fabs(R)) >= std::log(0.5)) {
        s = R > 0 ? -1 : 1;  // |γ·S| >= 0.5: p <= 0 or p >= 1
      } else {
        const double prob = 0.5 - p.gamma * std::exp(M) * R;
        s = u < prob ? 1 : -1;
      }
      sigma[lo + i] = s;
    }
  }
  return sigma;
}

/// Survivors of a head's middle (indices and weights), the authors' pseudo-code step (2) per level.
void ref_select(const SelectParams& p, const float* K, const float* V, int64_t n0, int d, uint64_t seed, int layer,
                int head, std::vector<int64_t>& idx, std::vector<int64_t>& w) {
  idx.resize(n0), w.assign(n0, 1);
  std::iota(idx.begin(), idx.end(), 0);
  for (int level = 0; level < p.levels; ++level) {
    const int64_t n = static_cast<int64_t>(idx.size());
    std::vector<double> Kc(n * d), Vc(n * d);
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < d; ++j) {
        Kc[i * d + j] = K[idx[i] * d + j];
        Vc[i * d + j] = static_cast<double>(V[idx[i] * d + j]) * static_cast<double>(w[i]);
      }
    const std::vector<int> sigma = ref_signs(p, Kc, Vc, n, d, seed, layer, head, level);
    const int64_t half = n / 2;
    std::vector<int64_t> cneg(n), cpos(n);
    for (int64_t i = 0; i < n; ++i) {
      cneg[i] = (i ? cneg[i - 1] : 0) + (sigma[i] == -1);
      cpos[i] = (i ? cpos[i - 1] : 0) + (sigma[i] == 1);
    }
    int64_t c_neg = 0, c_pos = 0;
    for (int64_t i = 0; i < n; ++i)
      if (cneg[i] == half) {
        c_neg = i;
        break;
      }
    for (int64_t i = 0; i < n; ++i)
      if (cpos[i] == half) {
        c_pos = i;
        break;
      }
    const int64_t c = std::max(c_neg, c_pos);
    std::vector<int64_t> omega(n, 1);
    for (int64_t i = 0; i <= c && i < n; ++i) omega[i] = 2 * sigma[i] * (sigma[c] == 1 ? -1 : 1);
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return -omega[a] < -omega[b]; });
    std::vector<int64_t> ni, nw;
    for (int64_t r = 0; r < half; ++r) {
      ni.push_back(idx[order[r]]);
      nw.push_back(w[order[r]] * omega[order[r]]);
    }
    idx.swap(ni), w.swap(nw);
  }
}

class RefSelectedLayer final : public EncodedLayer {
 public:
  struct Row {
    int64_t pos;
    double log_bias, vfac;
  };
  RefSelectedLayer(const LayerKV& kv, AttnConfig attn, std::vector<std::vector<Row>> rows, Storage st)
      : C_(kv.tokens), d_(kv.head_dim), attn_(attn), rows_(std::move(rows)), st_(std::move(st)) {
    // fp16-rounded copies of the stored rows, independently of the CPU's conversion code.
    for (size_t g = 0; g < rows_.size(); ++g) {
      std::vector<float> k, v;
      for (const Row& r : rows_[g])
        for (int j = 0; j < d_; ++j) {
          k.push_back(ref::round_f16_sat(kv.k_head(static_cast<int>(g))[r.pos * d_ + j]));
          v.push_back(ref::round_f16_sat(kv.v_head(static_cast<int>(g))[r.pos * d_ + j]));
        }
      k_.push_back(std::move(k)), v_.push_back(std::move(v));
    }
  }
  int64_t tokens() const override { return C_; }
  Storage storage() const override { return st_; }
  std::vector<uint8_t> held_tokens(int g) const override {
    std::vector<uint8_t> m(static_cast<size_t>(C_), 0);
    for (const Row& r : rows_[g]) m[r.pos] = 1;
    return m;
  }
  bool scores(int g, const float* q, float* s_out, Scratch&) const override {
    std::fill(s_out, s_out + C_, 0.f);
    for (size_t r = 0; r < rows_[g].size(); ++r) s_out[rows_[g][r].pos] = static_cast<float>(logit(g, r, q));
    return true;
  }
  void attend(int g, const float* q, float* o_out, Scratch&) const override { attend_f64(g, q, o_out); }
  /// lse = ln Σ_r e^{log_bias_r}·exp(ŝ_r) over the held rows: the denominator attend() divides by.
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch&) const override {
    *lse_out = attend_f64(g, q, o_out);
  }

 private:
  /// o_out = Σ_r e^{s_r + b_r}·vfac_r·v̂_r / Σ_r e^{s_r + b_r} in float64; returns ln Σ_r e^{s_r + b_r}.
  double attend_f64(int g, const float* q, float* o_out) const {
    const auto& R = rows_[g];
    std::vector<double> s(R.size());
    double m = -INFINITY;
    for (size_t r = 0; r < R.size(); ++r) m = std::max(m, s[r] = logit(g, r, q) + R[r].log_bias);
    double den = 0;
    std::vector<double> o(d_, 0.0);
    for (size_t r = 0; r < R.size(); ++r) {
      const double e = std::exp(s[r] - m);
      den += e;
      for (int j = 0; j < d_; ++j) o[j] += e * R[r].vfac * v_[g][r * d_ + j];
    }
    for (int j = 0; j < d_; ++j) o_out[j] = static_cast<float>(o[j] / den);
    return m + std::log(den);
  }

  double logit(int g, size_t r, const float* q) const {
    double dot = 0;
    for (int j = 0; j < d_; ++j) dot += static_cast<double>(q[j]) * k_[g][r * d_ + j];
    double s = attn_.softmax_scale * dot;
    if (attn_.softcap > 0) s = attn_.softcap * std::tanh(s / attn_.softcap);
    return s;
  }
  int64_t C_;
  int d_;
  AttnConfig attn_;
  std::vector<std::vector<Row>> rows_;
  std::vector<std::vector<float>> k_, v_;
  Storage st_;
};

}  // namespace

std::unique_ptr<EncodedLayer> select_encode_ref(const SelectParams& p, int layer, const LayerKV& kv,
                                                const CodecContext& ctx, WalkStats*) {
  const int H = kv.kv_heads, d = kv.head_dim, T = p.levels;
  const int64_t C = kv.tokens;
  const int64_t sink = std::min<int64_t>(p.sink, C), window = std::min<int64_t>(p.window, C - sink);
  const int64_t mid = C - sink - window;
  int64_t kept = mid;
  for (int l = 0; l < T; ++l) kept /= 2;
  std::vector<std::vector<RefSelectedLayer::Row>> rows(H);
  for (int g = 0; g < H; ++g) {
    for (int64_t t = 0; t < sink; ++t) rows[g].push_back({t, 0.0, 1.0});
    std::vector<int64_t> idx, w;
    ref_select(p, kv.k_head(g) + sink * d, kv.v_head(g) + sink * d, mid, d, ctx.seed, layer, g, idx, w);
    for (size_t i = 0; i < idx.size(); ++i) {
      const double wt = static_cast<double>(w[i]);
      if (p.consistent) rows[g].push_back({sink + idx[i], std::log(wt), 1.0});
      else rows[g].push_back({sink + idx[i], T * std::log(2.0), wt / std::ldexp(1.0, T)});
    }
    for (int64_t t = C - window; t < C; ++t) rows[g].push_back({t, 0.0, 1.0});
  }
  const uint64_t row = 2ull * d;
  Storage st = StorageList(H, 4.0 * d / std::ldexp(1.0, T))
                   .add("k.kept", StorageKind::kCompressed, H * kept * row, mid)
                   .add("v.kept", StorageKind::kCompressed, H * kept * row, mid)
                   .add("w.class_counts", StorageKind::kFixed, H * (T + 1) * 4ull, 0)
                   .add("k.sink_window", StorageKind::kBuffer, H * (sink + window) * row, sink + window)
                   .add("v.sink_window", StorageKind::kBuffer, H * (sink + window) * row, sink + window)
                   .get();
  return std::make_unique<RefSelectedLayer>(kv, ctx.attn, std::move(rows), std::move(st));
}

}  // namespace kvb::codecs
