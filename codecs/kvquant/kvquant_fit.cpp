/// KVQuant's offline calibration (kvquant_codec.h): per-channel key thresholds, the per-layer NUQ levels of
/// keys and values by (sensitivity-weighted) 1-D k-means, and Q-Norm.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "codecs/kvquant/kvquant_codec.h"
#include "kvb/attention/exact.h"

namespace kvb::codecs::kvquant {
namespace {

/// Normalized coordinate of x against (offset, range), as encode() computes it.
float normalized(float x, float off, float rng) {
  const float diff = x - off;
  if (rng > 0.f) return diff / rng;
  return diff == 0.f ? 0.f : (diff > 0.f ? 2.f : -2.f);  // outside [-1, 1]: excluded like encode's ±inf
}

/// Diagonal Fisher information of the attention outputs of cache `kv`'s observation queries (header):
/// wk[g][t][c] for keys (pre-RoPE frame when `table` rotates), wv[g][t] for values. Adds into wk, wv.
void attention_fisher(const LayerKV& kv, const CodecContext& ctx, const kernels::rope::Table& table,
                      std::vector<float>& wk, std::vector<float>& wv) {
  const ObsQueries& ob = kv.obs;
  const int H = kv.kv_heads, d = kv.head_dim;
  const int64_t C = kv.tokens;
  const int group = ob.heads / H;
  const double scale = ctx.attn.softmax_scale, cap = ctx.attn.softcap;
  for_each_head(H, [&](int g) {
    std::vector<double> s(static_cast<size_t>(C)), p(static_cast<size_t>(C)), o(static_cast<size_t>(d));
    std::vector<float> qt(static_cast<size_t>(d));
    const float* K = kv.k_head(g);
    const float* V = kv.v_head(g);
    for (int h = g * group; h < (g + 1) * group; ++h)
      for (int64_t i = 0; i < ob.n; ++i) {
        const float* q = ob.query(h, i);
        const int64_t n = std::min<int64_t>(ob.positions[static_cast<size_t>(i)] + 1, C);  // causal
        exact_attention_f64(K, V, n, d, q, scale, cap, s.data(), p.data(), o.data());
        for (int64_t t = 0; t < n; ++t) {
          double e2 = 0;
          for (int c = 0; c < d; ++c) e2 += (V[t * d + c] - o[c]) * (V[t * d + c] - o[c]);
          // dŝ/d(q·k) = scale, times the softcap's derivative 1 − tanh² = 1 − (ŝ/cap)².
          const double dev = cap > 0 ? scale * (1 - (s[t] / cap) * (s[t] / cap)) : scale;
          const double a = p[t] * dev;
          const double base = a * a * e2;
          std::copy_n(q, d, qt.data());
          table.unapply(qt.data(), t);  // ∂s_t/∂k_pre = σ'·R_tᵀq
          float* w = &wk[(static_cast<size_t>(g) * C + t) * d];
          for (int c = 0; c < d; ++c) w[c] += static_cast<float>(base * qt[c] * qt[c]);
          wv[static_cast<size_t>(g) * C + t] += static_cast<float>(p[t] * p[t]);
        }
      }
  });
}

struct Moments {
  double m = 0, sd = 0;
};
Moments moments(const std::vector<float>& y, const std::vector<float>* levels, const std::vector<float>& bounds) {
  double s = 0, s2 = 0;
  const int k = levels ? static_cast<int>(levels->size()) : 0;
  for (float x : y) {
    const double v = levels ? (*levels)[nearest(bounds.data(), k, x)] : x;
    s += v;
    s2 += v * v;
  }
  const double n = std::max<double>(1.0, static_cast<double>(y.size()));
  const double m = s / n;
  return {m, std::sqrt(std::max(0.0, s2 / n - m * m))};
}

/// Assignment levels by k-means, then the decode levels (Q-Norm or the same).
void fit_levels(const KvquantParams& p, int bits, const std::vector<float>& y, const std::vector<float>& w,
                std::vector<float>* assign, std::vector<float>* bounds, std::vector<float>* levels, int* iters) {
  const bool weighted = p.kmeans == "fisher";
  *iters = kmeans_1d(y.data(), weighted ? w.data() : nullptr, static_cast<int64_t>(y.size()), 1 << bits, assign);
  *bounds = bounds_of(*assign);
  *levels = *assign;
  if (!p.qnorm || y.empty()) return;
  const Moments a = moments(y, nullptr, *bounds), b = moments(y, assign, *bounds);
  const double ns = b.sd > 0 ? a.sd / b.sd : 1.0, no = a.m - b.m * ns;
  for (float& L : *levels) L = static_cast<float>(L * ns + no);
}

}  // namespace

std::shared_ptr<const Trained> fit(const KvquantParams& p, int layer, const std::vector<const LayerKV*>& calib,
                                   const CodecContext& ctx) {
  const std::string who = p.label();
  KVB_CHECK(!calib.empty(), DataError, "{}: fit of layer {} got no calibration caches", who, layer);
  const LayerKV& f = *calib.front();
  const int H = f.kv_heads, d = f.head_dim;
  for (const LayerKV* kv : calib) {
    check_layer(*kv, who);
    KVB_CHECK(kv->kv_heads == H && kv->head_dim == d, DataError,
              "{}: calibration caches of layer {} disagree in shape ([{}, *, {}] vs [{}, *, {}])", who, layer, H, d,
              kv->kv_heads, kv->head_dim);
  }
  const bool fisher = p.kmeans == "fisher";
  int64_t n_obs = 0;
  for (const LayerKV* kv : calib) {
    KVB_CHECK(!fisher || (!kv->obs.empty() && kv->obs.heads % H == 0 && kv->obs.head_dim == d), Unsupported,
              "{}: kmeans \"fisher\" weights the k-means by the attention-output sensitivity that the calibration "
              "prompt's observation queries give (kvdump obs_queries), and a calibration cache of layer {} has none: "
              "record them (kvbench gen|capture --obs-window W, scripts/record_kv.py --obs-window W) or set "
              "\"kmeans\": \"plain\"",
              who, layer);
    n_obs += kv->obs.n * kv->obs.heads;
  }
  const kernels::rope::Style rope = key_rope(p, ctx);
  auto s = std::make_shared<Trained>();
  s->fitted_with = p;
  s->kv_heads = H;
  s->d = d;
  s->pre_rope = rope != kernels::rope::Style::kNone;
  s->weighting = fisher ? fmt::format("fisher (attention-output sensitivity of {} observation queries)", n_obs)
                        : "plain (unweighted)";
  if (!p.pre_rope) s->rope_note = "post-RoPE keys (pre_rope: false)";
  else if (s->pre_rope) s->rope_note = fmt::format("keys un-rotated before quantization (rope {}, theta {})",
                                                   ctx.rope.style, ctx.rope.theta);
  else s->rope_note = "no un-rotation needed: the dump's keys carry no RoPE (rope_applied = 0 or style none)";

  // Pre-RoPE calibration keys and, for fisher, the sensitivities.
  std::vector<std::vector<float>> keys(calib.size()), wk(calib.size()), wv(calib.size());
  for (size_t i = 0; i < calib.size(); ++i) {
    const LayerKV& kv = *calib[i];
    const kernels::rope::Table table(rope, d, ctx.rope.theta, kv.pos0, s->pre_rope ? kv.tokens : 0);
    keys[i] = kv.k;
    for (int g = 0; g < H; ++g)
      for (int64_t t = 0; t < kv.tokens; ++t) table.unapply(&keys[i][(static_cast<size_t>(g) * kv.tokens + t) * d], t);
    if (fisher) {
      wk[i].assign(kv.k.size(), 0.f);
      wv[i].assign(static_cast<size_t>(H) * kv.tokens, 0.f);
      attention_fisher(kv, ctx, table, wk[i], wv[i]);
    }
    s->calib_tokens += kv.tokens;
  }

  // Per-channel key thresholds: the (1 − f/2) and f/2 percentiles over every calibration token.
  const double hiq = 1.0 - p.outliers / 2, loq = p.outliers / 2;
  s->k_norm.assign(static_cast<size_t>(H) * d * 2, 0.f);
  for_each_head(H, [&](int g) {
    std::vector<float> col(static_cast<size_t>(s->calib_tokens));
    for (int c = 0; c < d; ++c) {
      size_t n = 0;
      for (size_t i = 0; i < calib.size(); ++i)
        for (int64_t t = 0; t < calib[i]->tokens; ++t)
          col[n++] = keys[i][(static_cast<size_t>(g) * calib[i]->tokens + t) * d + c];
      const double u = percentile(col.data(), static_cast<int64_t>(n), hiq);
      const double l = percentile(col.data(), static_cast<int64_t>(n), loq);
      s->k_norm[(static_cast<size_t>(g) * d + c) * 2] = static_cast<float>((u + l) / 2);
      s->k_norm[(static_cast<size_t>(g) * d + c) * 2 + 1] = static_cast<float>((u - l) / 2);
    }
  });

  // Normalized non-outlier points (and their weights) for the levels.
  std::vector<float> ky, kw, vy, vw, row(static_cast<size_t>(d));
  int64_t k_out = 0, v_out = 0, k_all = 0, v_all = 0;
  for (size_t i = 0; i < calib.size(); ++i) {
    const LayerKV& kv = *calib[i];
    for (int g = 0; g < H; ++g)
      for (int64_t t = 0; t < kv.tokens; ++t) {
        const size_t r = (static_cast<size_t>(g) * kv.tokens + t) * d;
        for (int c = 0; c < d; ++c) {
          const float* nrm = &s->k_norm[(static_cast<size_t>(g) * d + c) * 2];
          const float y = normalized(keys[i][r + c], nrm[0], nrm[1]);
          ++k_all;
          if (y > 1.f || y < -1.f) {
            ++k_out;
            continue;
          }
          ky.push_back(y);
          if (fisher) kw.push_back(wk[i][r + c]);
        }
        const float* v = kv.v.data() + r;
        std::copy_n(v, d, row.data());
        const double u = percentile(row.data(), d, hiq), l = percentile(row.data(), d, loq);
        const float off = static_cast<float>((u + l) / 2), rng = static_cast<float>((u - l) / 2);
        for (int c = 0; c < d; ++c) {
          const float y = normalized(v[c], off, rng);
          ++v_all;
          if (y > 1.f || y < -1.f) {
            ++v_out;
            continue;
          }
          vy.push_back(y);
          if (fisher) vw.push_back(wv[i][static_cast<size_t>(g) * kv.tokens + t]);
        }
      }
  }
  s->k_calib_outlier_frac = k_all ? static_cast<double>(k_out) / static_cast<double>(k_all) : 0.0;
  s->v_calib_outlier_frac = v_all ? static_cast<double>(v_out) / static_cast<double>(v_all) : 0.0;
  fit_levels(p, p.k_bits, ky, kw, &s->k_assign, &s->k_bounds, &s->k_levels, &s->k_iters);
  fit_levels(p, p.v_bits, vy, vw, &s->v_assign, &s->v_bounds, &s->v_levels, &s->v_iters);
  return s;
}

}  // namespace kvb::codecs::kvquant
