/// Eviction reference: evict_codec.h written out literally in float64, sharing nothing with evict_plan.cpp or the
/// row kernels. Per query head and observation query it forms the full causal softmax in float64, sums the
/// probabilities, aggregates the group, pools with an explicit window loop and ranks candidates with a full
/// std::sort of (score, token) pairs; budgets are recomputed from their formulas (PyramidKV's sequence,
/// largest remainder by a full sort; Ada-KV's safeguard and global ranking over (score, head, token) triples).
/// Attention: dense float64 over the kept rows, each rounded to binary16 (ref::round_f16_sat); storage from byte
/// formulas.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>
#include <vector>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/evict/evict_codec.h"

namespace kvb::codecs {
namespace {

double ref_logit(const float* q, const float* k, int d, const AttnConfig& attn) {
  double dot = 0;
  for (int j = 0; j < d; ++j) dot += static_cast<double>(q[j]) * static_cast<double>(k[j]);
  double s = static_cast<double>(attn.softmax_scale) * dot;
  if (attn.softcap > 0) s = attn.softcap * std::tanh(s / attn.softcap);
  return s;
}

/// A_t for t < n of KV head g from observation queries [q0, W).
std::vector<double> ref_scores(const LayerKV& kv, int g, int64_t q0, int64_t n, EvictGqa gqa, const AttnConfig& attn) {
  const ObsQueries& ob = kv.obs;
  const int d = kv.head_dim, G = ob.heads / kv.kv_heads;
  std::vector<std::vector<double>> per_head;
  for (int h = g * G; h < (g + 1) * G; ++h) {
    std::vector<double> a(static_cast<size_t>(n), 0.0);
    for (int64_t i = q0; i < ob.n; ++i) {
      const int64_t seen = std::min<int64_t>(ob.positions[i] + 1, kv.tokens);
      std::vector<double> s(static_cast<size_t>(seen));
      for (int64_t t = 0; t < seen; ++t) s[t] = ref_logit(ob.query(h, i), kv.k_head(g) + t * d, d, attn);
      const double mx = *std::max_element(s.begin(), s.end());
      if (!std::isfinite(mx)) continue;
      double den = 0;
      for (double x : s) den += std::exp(x - mx);
      for (int64_t t = 0; t < std::min(seen, n); ++t) a[t] += std::exp(s[t] - mx) / den;
    }
    per_head.push_back(std::move(a));
  }
  std::vector<double> out(static_cast<size_t>(n), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    if (gqa == EvictGqa::kMax) {
      out[t] = per_head[0][t];
      for (const auto& a : per_head) out[t] = std::max(out[t], a[t]);
    } else {
      for (const auto& a : per_head) out[t] += a[t] / G;
    }
  }
  return out;
}

std::vector<double> ref_pool(const std::vector<double>& x, int kernel, EvictPool pool) {
  if (pool == EvictPool::kNone || kernel <= 1) return x;
  const int64_t n = static_cast<int64_t>(x.size()), r = kernel / 2;
  std::vector<double> y(x.size());
  for (int64_t t = 0; t < n; ++t) {
    std::vector<double> win;
    for (int64_t u = t - r; u <= t + r; ++u) {
      if (u >= 0 && u < n) win.push_back(x[u]);
      else if (pool == EvictPool::kAvg) win.push_back(0.0);  // zero padding, counted in the mean
    }
    y[t] = pool == EvictPool::kMax ? *std::max_element(win.begin(), win.end())
                                   : std::accumulate(win.begin(), win.end(), 0.0) / kernel;
  }
  return y;
}

/// Tokens of the k best scores (higher first, earlier token on ties), by a full sort.
std::vector<int64_t> ref_top(const std::vector<double>& s, int64_t k) {
  std::vector<std::pair<double, int64_t>> v;
  for (size_t t = 0; t < s.size(); ++t) v.emplace_back(-s[t], static_cast<int64_t>(t));
  std::sort(v.begin(), v.end());
  std::vector<int64_t> out;
  for (int64_t i = 0; i < k && i < static_cast<int64_t>(v.size()); ++i) out.push_back(v[i].second);
  return out;
}

int64_t ref_budget(double keep, int64_t C) {
  int64_t k = static_cast<int64_t>(std::floor(keep * C + 1e-9));
  return std::max<int64_t>(1, std::min(k, C));
}

/// PyramidKV's per-layer selected budgets: the arithmetic sequence, capped with the excess redistributed in
/// proportion, then floors plus one for the largest fractional parts (earlier layer first on ties).
std::vector<int64_t> ref_pyramid(int L, int64_t S, int64_t cap, double beta) {
  std::vector<double> t(L, static_cast<double>(S));
  if (L > 1)
    for (int l = 0; l < L; ++l) {
      const double lo = S / beta, hi = 2.0 * S - lo;
      t[l] = hi - (hi - lo) * l / (L - 1.0);
    }
  for (int round = 0; round < L; ++round) {
    double excess = 0, free_sum = 0;
    for (int l = 0; l < L; ++l)
      if (t[l] > cap) excess += t[l] - cap, t[l] = static_cast<double>(cap);
    for (int l = 0; l < L; ++l)
      if (t[l] < cap) free_sum += t[l];
    if (excess <= 0 || free_sum <= 0) break;
    for (int l = 0; l < L; ++l)
      if (t[l] < cap) t[l] += excess * t[l] / free_sum;
  }
  std::vector<int64_t> out(L);
  int64_t left = static_cast<int64_t>(L) * S;
  std::vector<std::pair<double, int>> frac;
  for (int l = 0; l < L; ++l) {
    out[l] = std::min<int64_t>(cap, static_cast<int64_t>(std::floor(t[l])));
    left -= out[l];
    frac.emplace_back(-(t[l] - std::floor(t[l])), l);
  }
  std::sort(frac.begin(), frac.end());
  while (left > 0)
    for (auto& [f, l] : frac)
      if (left > 0 && out[l] < cap) ++out[l], --left;
  return out;
}

class RefEvictLayer final : public EncodedLayer {
 public:
  RefEvictLayer(const LayerKV& kv, AttnConfig attn, std::vector<std::vector<int64_t>> kept, Storage st)
      : C_(kv.tokens), d_(kv.head_dim), attn_(attn), kept_(std::move(kept)), st_(std::move(st)) {
    for (int g = 0; g < kv.kv_heads; ++g) {
      std::vector<float> k, v;
      for (int64_t t : kept_[g])
        for (int j = 0; j < d_; ++j) {
          k.push_back(ref::round_f16_sat(kv.k_head(g)[t * d_ + j]));
          v.push_back(ref::round_f16_sat(kv.v_head(g)[t * d_ + j]));
        }
      k_.push_back(std::move(k)), v_.push_back(std::move(v));
    }
  }
  int64_t tokens() const override { return C_; }
  Storage storage() const override { return st_; }
  std::vector<uint8_t> held_tokens(int g) const override {
    std::vector<uint8_t> m(static_cast<size_t>(C_), 0);
    for (int64_t t : kept_[g]) m[t] = 1;
    return m;
  }
  bool scores(int g, const float* q, float* s_out, Scratch&) const override {
    std::fill(s_out, s_out + C_, 0.f);
    for (size_t r = 0; r < kept_[g].size(); ++r) s_out[kept_[g][r]] = static_cast<float>(ref_logit(q, &k_[g][r * d_], d_, attn_));
    return true;
  }
  void attend(int g, const float* q, float* o_out, Scratch&) const override { attend_f64(g, q, o_out); }
  void attend_lse(int g, const float* q, float* o_out, double* lse_out, Scratch&) const override {
    *lse_out = attend_f64(g, q, o_out);
  }

 private:
  double attend_f64(int g, const float* q, float* o_out) const {
    const size_t R = kept_[g].size();
    std::fill(o_out, o_out + d_, 0.f);
    if (R == 0) return -INFINITY;
    std::vector<double> s(R);
    for (size_t r = 0; r < R; ++r) s[r] = ref_logit(q, &k_[g][r * d_], d_, attn_);
    const double m = *std::max_element(s.begin(), s.end());
    double den = 0;
    std::vector<double> o(d_, 0.0);
    for (size_t r = 0; r < R; ++r) {
      const double e = std::exp(s[r] - m);
      den += e;
      for (int j = 0; j < d_; ++j) o[j] += e * v_[g][r * d_ + j];
    }
    for (int j = 0; j < d_; ++j) o_out[j] = static_cast<float>(o[j] / den);
    return m + std::log(den);
  }
  int64_t C_;
  int d_;
  AttnConfig attn_;
  std::vector<std::vector<int64_t>> kept_;
  std::vector<std::vector<float>> k_, v_;
  Storage st_;
};

}  // namespace

std::unique_ptr<EncodedLayer> evict_encode_ref(const EvictParams& p, int layer, const LayerKV& kv,
                                               const CodecContext& ctx) {
  KVB_CHECK(!p.needs_obs() || !kv.obs.empty(), Unsupported, "{}: no observation queries", p.label());
  const int H = kv.kv_heads;
  const int64_t C = kv.tokens, K = ref_budget(p.keep, C);
  std::vector<std::vector<int64_t>> kept(H);
  if (p.policy == EvictPolicy::kStreaming) {
    for (int g = 0; g < H; ++g)
      for (int64_t t = 0; t < C; ++t)
        if (t < std::min<int64_t>(p.sink, K) || t >= C - (K - std::min<int64_t>(p.sink, K))) kept[g].push_back(t);
  } else if (p.policy == EvictPolicy::kH2O) {
    const int64_t rec = std::min<int64_t>(K, std::max<int64_t>(0, static_cast<int64_t>(std::floor(p.recent * K + 0.5))));
    for (int g = 0; g < H; ++g) {
      kept[g] = ref_top(ref_scores(kv, g, 0, C - rec, p.gqa, ctx.attn), K - rec);
      for (int64_t t = C - rec; t < C; ++t) kept[g].push_back(t);
    }
  } else {
    const int64_t w = std::min<int64_t>(p.window, K), n = C - w, S = K - w;
    const int64_t q0 = std::max<int64_t>(0, kv.obs.n - p.window);
    std::vector<std::vector<double>> sc(H);
    for (int g = 0; g < H; ++g) sc[g] = ref_pool(ref_scores(kv, g, q0, n, p.gqa, ctx.attn), p.kernel, p.pool);
    if (p.policy == EvictPolicy::kAda) {
      const int64_t fl = static_cast<int64_t>(std::floor(p.alpha * S));
      std::vector<std::vector<bool>> taken(H, std::vector<bool>(n, false));
      for (int g = 0; g < H; ++g)
        for (int64_t t : ref_top(sc[g], fl)) taken[g][t] = true;
      std::vector<std::tuple<double, int, int64_t>> all;
      for (int g = 0; g < H; ++g)
        for (int64_t t = 0; t < n; ++t)
          if (!taken[g][t]) all.emplace_back(-sc[g][t], g, t);
      std::sort(all.begin(), all.end());
      for (int64_t i = 0; i < static_cast<int64_t>(H) * (S - fl) && i < static_cast<int64_t>(all.size()); ++i)
        taken[std::get<1>(all[i])][std::get<2>(all[i])] = true;
      for (int g = 0; g < H; ++g)
        for (int64_t t = 0; t < n; ++t)
          if (taken[g][t]) kept[g].push_back(t);
    } else {
      int64_t sel = S;
      if (p.policy == EvictPolicy::kPyramid) sel = ref_pyramid(std::max(ctx.shape.n_layers, layer + 1), S, n, p.beta)[layer];
      for (int g = 0; g < H; ++g) kept[g] = ref_top(sc[g], sel);
    }
    for (int g = 0; g < H; ++g)
      for (int64_t t = n; t < C; ++t) kept[g].push_back(t);
  }
  int64_t rows = 0;
  for (auto& k : kept) std::sort(k.begin(), k.end()), rows += static_cast<int64_t>(k.size());
  const uint64_t bytes = static_cast<uint64_t>(rows) * 2ull * kv.head_dim;
  Storage st = StorageList(H, 4.0 * kv.head_dim * p.keep)
                   .add("k.kept", StorageKind::kCompressed, bytes, C)
                   .add("v.kept", StorageKind::kCompressed, bytes, C)
                   .add("n.kept", StorageKind::kFixed, 4ull * H, 0)
                   .get();
  return std::make_unique<RefEvictLayer>(kv, ctx.attn, std::move(kept), std::move(st));
}

}  // namespace kvb::codecs
