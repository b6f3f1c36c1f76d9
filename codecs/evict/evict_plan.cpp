/// Which rows each eviction policy keeps (evict_codec.h): budgets, observation-window scores, pooling, top-k.
/// Shared by the CPU and CUDA layers, so both backends keep the same rows byte for byte.
///
/// Cost of the scores: every observation query of every query head dots every row it sees,
/// W·C·d multiply-adds per query head (W = 32, C = 32k, d = 128: 134 M per head), through kernels/cpu's
/// many-query dots (all W queries of a head share each row's load); the softmax and the accumulation run in
/// float64 (W·C exp per query head). Pooling and top-k are O(C·kernel) and O(C) (nth_element) per KV head.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "codecs/common/baseline.h"
#include "codecs/evict/evict_codec.h"
#include "kernels/cpu/row_kernels.h"
#include "kvb/core/attn_math.h"
#include "kvb/core/error.h"

namespace kvb::codecs {

int64_t evict_head_budget(double keep, int64_t C) {
  // Not above the budget (a 1e-9 guard against keep·C landing a rounding error below an integer), at least a row.
  const int64_t k = static_cast<int64_t>(std::floor(keep * static_cast<double>(C) + 1e-9));
  return std::clamp<int64_t>(k, 1, C);
}

std::vector<int64_t> pyramid_budgets(int n_layers, int64_t S, int64_t cap, double beta) {
  const int L = std::max(n_layers, 1);
  const int64_t total = static_cast<int64_t>(L) * S;
  std::vector<double> t(static_cast<size_t>(L), static_cast<double>(S));
  if (L > 1) {
    const double smin = static_cast<double>(S) / beta, smax = 2.0 * static_cast<double>(S) - smin;
    for (int l = 0; l < L; ++l) t[l] = smax - l * (smax - smin) / (L - 1);
  }
  // Cap at `cap` and hand the excess to the uncapped layers in proportion to their targets (water-filling;
  // S <= cap guarantees it ends), so the shape stays non-increasing and the total stays L·S.
  std::vector<bool> capped(static_cast<size_t>(L), false);
  for (int it = 0; it < L; ++it) {
    double excess = 0, free_sum = 0;
    for (int l = 0; l < L; ++l) {
      if (!capped[l] && t[l] >= static_cast<double>(cap)) excess += t[l] - cap, t[l] = static_cast<double>(cap), capped[l] = true;
      if (!capped[l]) free_sum += t[l];
    }
    if (excess <= 0) break;
    if (free_sum <= 0) break;
    for (int l = 0; l < L; ++l)
      if (!capped[l]) t[l] += excess * t[l] / free_sum;
  }
  // Largest remainder: floors, then +1 to the largest fractional parts (earlier layer first on ties).
  std::vector<int64_t> out(static_cast<size_t>(L));
  int64_t sum = 0;
  for (int l = 0; l < L; ++l) sum += out[l] = std::min<int64_t>(cap, static_cast<int64_t>(std::floor(t[l])));
  std::vector<int> order(static_cast<size_t>(L));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return t[a] - std::floor(t[a]) > t[b] - std::floor(t[b]); });
  for (int i = 0; sum < total; i = (i + 1) % L)
    if (out[order[i]] < cap) ++out[order[i]], ++sum;
  return out;
}

std::vector<double> evict_obs_scores(const LayerKV& kv, int g, int64_t q0, int64_t n, EvictGqa gqa,
                                     const AttnConfig& attn) {
  const ObsQueries& ob = kv.obs;
  const int d = kv.head_dim, G = ob.heads / kv.kv_heads;
  const int64_t W = ob.n - q0;
  std::vector<double> acc(static_cast<size_t>(std::max<int64_t>(n, 0)), 0.0);
  if (W <= 0 || n <= 0) return acc;
  // Rows any query sees: 0..(last position); each query's softmax runs over its own causal prefix, which
  // may reach past n (SnapKV's window rows are in the softmax but are not scored).
  const int64_t seen_all = std::min<int64_t>(ob.positions[ob.n - 1] + 1, kv.tokens);
  const kernels::RowKernels& R = kernels::row_kernels();
  const float* K = kv.k_head(g);
  std::vector<const float*> qs(static_cast<size_t>(W));
  std::vector<float> dots(static_cast<size_t>(W) * seen_all);
  std::vector<double> head(static_cast<size_t>(n));
  constexpr int kBlock = 64;  // rows per dots_many call: the block stays in L1 while all W queries read it
  for (int h = g * G; h < (g + 1) * G; ++h) {
    for (int64_t i = 0; i < W; ++i) qs[i] = ob.query(h, q0 + i);
    for (int64_t t0 = 0; t0 < seen_all; t0 += kBlock) {
      const int nb = static_cast<int>(std::min<int64_t>(kBlock, seen_all - t0));
      R.dots_many(K + t0 * d, nb, d, qs.data(), static_cast<int>(W), dots.data() + t0, seen_all);
    }
    std::fill(head.begin(), head.end(), 0.0);
    for (int64_t i = 0; i < W; ++i) {
      const int64_t seen = std::min<int64_t>(ob.positions[q0 + i] + 1, kv.tokens);  // causal: rows 0..pos
      float* s = dots.data() + i * seen_all;
      to_logits(s, seen, attn);
      double mx = -INFINITY;
      for (int64_t t = 0; t < seen; ++t) mx = std::max(mx, static_cast<double>(s[t]));
      if (!std::isfinite(mx)) continue;  // every logit -inf (or an overflow): this query adds nothing
      // One exp per logit: the unnormalised weights replace the logits in place (float: a relative rounding of
      // 2^-24 on a probability, below the dots' own), summed and accumulated in float64.
      double den = 0;
      for (int64_t t = 0; t < seen; ++t) den += s[t] = static_cast<float>(std::exp(static_cast<double>(s[t]) - mx));
      const double inv = 1.0 / den;
      for (int64_t t = 0, m = std::min(seen, n); t < m; ++t) head[t] += static_cast<double>(s[t]) * inv;
    }
    for (int64_t t = 0; t < n; ++t)
      acc[t] = gqa == EvictGqa::kMax ? (h == g * G ? head[t] : std::max(acc[t], head[t])) : acc[t] + head[t] / G;
  }
  return acc;
}

namespace {

/// pool1d over x[0, n) with stride 1 and padding kernel/2: max (pads −inf) or avg (pads 0, divides by kernel).
std::vector<double> pool1d(const std::vector<double>& x, int kernel, EvictPool pool) {
  const int64_t n = static_cast<int64_t>(x.size());
  if (pool == EvictPool::kNone || kernel <= 1) return x;
  const int r = kernel / 2;
  std::vector<double> y(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    const int64_t lo = std::max<int64_t>(0, t - r), hi = std::min<int64_t>(n - 1, t + r);
    double a = pool == EvictPool::kMax ? -INFINITY : 0.0;
    for (int64_t u = lo; u <= hi; ++u) a = pool == EvictPool::kMax ? std::max(a, x[u]) : a + x[u];
    y[t] = pool == EvictPool::kMax ? a : a / kernel;
  }
  return y;
}

/// Higher score first, then the earlier token: a strict total order (NaN never occurs: scores are finite sums).
struct ByScore {
  const std::vector<double>* s;
  bool operator()(int32_t a, int32_t b) const { return (*s)[a] != (*s)[b] ? (*s)[a] > (*s)[b] : a < b; }
};

/// The k best tokens of scores[0, n) (ByScore order), as a set.
std::vector<int32_t> top_k(const std::vector<double>& scores, int64_t k) {
  std::vector<int32_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  k = std::clamp<int64_t>(k, 0, static_cast<int64_t>(idx.size()));
  std::nth_element(idx.begin(), idx.begin() + k, idx.end(), ByScore{&scores});
  idx.resize(static_cast<size_t>(k));
  return idx;
}

void check_obs(const EvictParams& p, const LayerKV& kv, const CodecContext& ctx) {
  const ObsQueries& ob = kv.obs;
  KVB_CHECK(!ob.empty(), Unsupported,
            "{} scores the cache with the prompt's observation queries (kvdump obs_queries, docs/dump-format.md "
            "§1.2) and this cache has none: record them with `kvbench gen|capture --obs-window W` or "
            "scripts/record_kv.py --obs-window W",
            p.label());
  KVB_CHECK(ob.head_dim == kv.head_dim && ob.heads > 0 && ob.heads % kv.kv_heads == 0 &&
                ob.q.size() == static_cast<size_t>(ob.heads) * ob.n * ob.head_dim &&
                ob.positions.size() == static_cast<size_t>(ob.n),
            DataError, "{}: observation queries [{}, {}, {}] do not fit a cache of {} KV heads, head_dim {}", p.label(),
            ob.heads, ob.n, ob.head_dim, kv.kv_heads, kv.head_dim);
  KVB_CHECK(ctx.shape.n_heads == 0 || ob.heads == ctx.shape.n_heads, DataError,
            "{}: observation queries have {} heads, the model {}", p.label(), ob.heads, ctx.shape.n_heads);
  for (int64_t i = 0; i < ob.n; ++i)
    KVB_CHECK(ob.positions[i] >= 0 && ob.positions[i] < kv.tokens && (i == 0 || ob.positions[i] > ob.positions[i - 1]),
              DataError, "{}: observation query {} at position {}: expected increasing positions in [0, {})", p.label(),
              i, ob.positions[i], kv.tokens);
}

void push_range(std::vector<int32_t>& v, int64_t lo, int64_t hi) {
  for (int64_t t = lo; t < hi; ++t) v.push_back(static_cast<int32_t>(t));
}

}  // namespace

EvictPlan evict_plan(const EvictParams& p, int layer, const LayerKV& kv, const CodecContext& ctx) {
  if (p.needs_obs()) check_obs(p, kv, ctx);
  const int H = kv.kv_heads;
  const int64_t C = kv.tokens;
  const int64_t K = evict_head_budget(p.keep, C);
  std::vector<std::vector<int32_t>> keep(static_cast<size_t>(H));
  EvictPlan plan;

  if (p.policy == EvictPolicy::kStreaming) {
    const int64_t s = std::min<int64_t>(p.sink, K);
    for (int g = 0; g < H; ++g) push_range(keep[g], 0, s), push_range(keep[g], C - (K - s), C);
  } else if (p.policy == EvictPolicy::kH2O) {
    const int64_t rec = std::clamp<int64_t>(std::llround(p.recent * static_cast<double>(K)), 0, K);
    const int64_t n = C - rec;  // candidates for the heavy hitters
    plan.obs_used = kv.obs.n;
    for_each_head(H, [&](int g) {
      std::vector<int32_t> heavy;
      if (K - rec > 0) heavy = top_k(evict_obs_scores(kv, g, 0, n, p.gqa, ctx.attn), K - rec);
      std::sort(heavy.begin(), heavy.end());
      keep[g] = std::move(heavy);
      push_range(keep[g], C - rec, C);
    });
  } else {
    const int64_t w = std::min<int64_t>(p.window, K);
    const int64_t n = C - w;  // the prefix SnapKV scores
    const int64_t q0 = std::max<int64_t>(0, kv.obs.n - p.window);
    plan.obs_used = kv.obs.n - q0;
    std::vector<int64_t> sel(static_cast<size_t>(H), K - w);
    if (p.policy == EvictPolicy::kPyramid && layer >= 0) {
      const int L = std::max(ctx.shape.n_layers, layer + 1);
      const int64_t Sl = pyramid_budgets(L, K - w, n, p.beta)[layer];
      std::fill(sel.begin(), sel.end(), Sl);
    }
    std::vector<std::vector<double>> pooled(static_cast<size_t>(H));
    const bool any = std::any_of(sel.begin(), sel.end(), [](int64_t s) { return s > 0; });
    if (any)
      for_each_head(H, [&](int g) {
        pooled[g] = pool1d(evict_obs_scores(kv, g, q0, n, p.gqa, ctx.attn), p.kernel, p.pool);
      });
    if (p.policy == EvictPolicy::kAda && any) {
      // Safeguard: each head's own top ⌊α·S⌋; then the rest of H·S by score over all heads together.
      const int64_t S = K - w, floor_k = static_cast<int64_t>(std::floor(p.alpha * static_cast<double>(S)));
      std::vector<std::vector<uint8_t>> taken(static_cast<size_t>(H), std::vector<uint8_t>(static_cast<size_t>(n), 0));
      for (int g = 0; g < H; ++g)
        for (int32_t t : top_k(pooled[g], floor_k)) taken[g][t] = 1;
      const int64_t rest = static_cast<int64_t>(H) * (S - floor_k);
      std::vector<int64_t> cand;  // g·n + t of every token not taken yet
      cand.reserve(static_cast<size_t>(H) * (n - floor_k));
      for (int g = 0; g < H; ++g)
        for (int64_t t = 0; t < n; ++t)
          if (!taken[g][t]) cand.push_back(static_cast<int64_t>(g) * n + t);
      const auto score = [&](int64_t c) { return pooled[c / n][c % n]; };
      // Higher score first, then the lower head, then the earlier token.
      const auto better = [&](int64_t a, int64_t b) { return score(a) != score(b) ? score(a) > score(b) : a < b; };
      const int64_t r = std::min<int64_t>(rest, static_cast<int64_t>(cand.size()));
      std::nth_element(cand.begin(), cand.begin() + r, cand.end(), better);
      for (int64_t i = 0; i < r; ++i) taken[cand[i] / n][cand[i] % n] = 1;
      for (int g = 0; g < H; ++g)
        for (int64_t t = 0; t < n; ++t)
          if (taken[g][t]) keep[g].push_back(static_cast<int32_t>(t));
    } else if (any) {
      for_each_head(H, [&](int g) {
        keep[g] = top_k(pooled[g], sel[g]);
        std::sort(keep[g].begin(), keep[g].end());
      });
    }
    for (int g = 0; g < H; ++g) push_range(keep[g], C - w, C);
  }

  plan.row_off.assign(static_cast<size_t>(H) + 1, 0);
  for (int g = 0; g < H; ++g) {
    plan.row_off[g + 1] = plan.row_off[g] + static_cast<int64_t>(keep[g].size());
    plan.pos.insert(plan.pos.end(), keep[g].begin(), keep[g].end());
  }
  return plan;
}

}  // namespace kvb::codecs
