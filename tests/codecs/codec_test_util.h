#pragma once
// Shared helpers of the codec tests: LLM-like synthetic caches and small metric helpers (local, so the
// codec tests do not depend on kvb_metrics being implemented).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvb/attention/exact.h"
#include "kvb/core/codec.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"

namespace kvb::test {

/// The trained states a test has fitted, so that a configuration training the same model as an earlier one
/// (same codec, calibration and context seed, parameters that train alike: lookat's value options, kvcar's
/// int8 and decode) takes that state (Codec::adopt) instead of fitting again.
class FitStore {
 public:
  /// Fits `c` (codec `codec`) on layer `layer`, or adopts a stored state that it accepts. `calib_key` names
  /// the calibration data and context seed: states are shared only under the same key.
  void fit(Codec& c, const std::string& codec, const std::string& calib_key, int layer,
           const std::vector<const LayerKV*>& calib, const CodecContext& ctx) {
    auto& states = states_[codec + "\n" + calib_key + "\n" + std::to_string(layer)];
    for (const auto& s : states) {
      try {
        c.adopt(layer, s);
        return;
      } catch (const UsageError&) {
        // trained with other parameters: try the next state
      }
    }
    c.fit(layer, calib, ctx);
    if (auto s = c.trained(layer)) states.push_back(std::move(s));
  }

 private:
  std::map<std::string, std::vector<std::shared_ptr<const TrainedLayer>>> states_;
};

/// One layer of a synthetic model: the cache, and `nq` decode queries per query head.
struct SynthLayer {
  ModelShape shape;
  LayerKV kv;
  int nq = 0;
  std::vector<float> q;  // [n_heads][nq][head_dim]
  AttnConfig attn;
  const float* query(int h, int i) const { return q.data() + (static_cast<size_t>(h) * nq + i) * shape.head_dim; }
  CodecContext ctx() const { return CodecContext{shape, attn, 7}; }
  std::string describe() const {
    return fmt::format("C={} head_dim={} kv_heads={} heads={} softcap={}", kv.tokens, shape.head_dim,
                       shape.n_kv_heads, shape.n_heads, attn.softcap);
  }
};

struct SynthOptions {
  int kv_heads = 2;
  int group = 1;  // query heads per KV head
  int64_t tokens = 127;
  int head_dim = 64;
  int queries = 2;
  uint64_t seed = 1;
  int outliers = 2;            // key channels with a ~20x larger, token-consistent magnitude
  float outlier_scale = 20.f;  // their |mean|; their spread along tokens is 2x a normal channel's
  float sink_logit = 10.f;     // mean extra logit of token 0 (the "sink") for the head's queries
  float softcap = 0.f;
  int obs_window = 32;         // observation queries at the last min(obs_window, C) positions (0 = none)
};

/// Keys: per-channel mean and scale, a few outlier channels ~20x larger (consistent across tokens), a
/// high-norm sink token 0 aligned with the head's shared query direction (its logit exceeds the others'
/// by ~sink_logit, giving it a sizeable share of the mass at a few thousand tokens). Values: per-token
/// log-normal scale spread. Queries: the shared direction, plus a per-query alignment ("focus") with a
/// random cached key, plus noise, so attention ranges from peaked (entropy ~1 nat) to broad (~7 nats).
inline SynthLayer make_layer(const SynthOptions& o) {
  SynthLayer L;
  const int d = o.head_dim;
  const int64_t C = o.tokens;
  const float sqrt_d = std::sqrt(static_cast<float>(d));
  L.shape = ModelShape{1, o.kv_heads * o.group, o.kv_heads, d};
  L.attn.softmax_scale = 1.f / sqrt_d;
  L.attn.softcap = o.softcap;
  L.kv.kv_heads = o.kv_heads;
  L.kv.tokens = C;
  L.kv.head_dim = d;
  L.kv.k.resize(static_cast<size_t>(o.kv_heads) * C * d);
  L.kv.v.resize(L.kv.k.size());
  L.nq = o.queries;
  L.q.resize(static_cast<size_t>(L.shape.n_heads) * o.queries * d);
  for (int g = 0; g < o.kv_heads; ++g) {
    Rng rng(derive_seed(o.seed, {static_cast<uint64_t>(g), 11}));
    std::vector<float> mu(d), sc(d), dir(d);
    for (int j = 0; j < d; ++j) {
      mu[j] = static_cast<float>(0.5 * rng.normal());
      sc[j] = static_cast<float>(std::exp(0.3 * rng.normal()));
    }
    for (int i = 0; i < std::min(o.outliers, d); ++i) {
      const int j = static_cast<int>(rng.below(static_cast<uint64_t>(d)));
      mu[j] = o.outlier_scale * (rng.uniform() < 0.5 ? -1.f : 1.f);
      sc[j] *= 2.f;
    }
    double dn = 0;
    for (int j = 0; j < d; ++j) dn += (dir[j] = static_cast<float>(rng.normal())) * dir[j];
    for (int j = 0; j < d; ++j) dir[j] = static_cast<float>(dir[j] / std::sqrt(dn));  // unit query direction
    float* K = L.kv.k_head(g);
    float* V = L.kv.v_head(g);
    for (int64_t t = 0; t < C; ++t) {
      const float vs = static_cast<float>(std::exp(0.5 * rng.normal()));
      for (int j = 0; j < d; ++j) {
        K[t * d + j] = mu[j] + sc[j] * static_cast<float>(rng.normal());
        V[t * d + j] = 0.2f * mu[j] / (std::fabs(mu[j]) + 1.f) + vs * static_cast<float>(rng.normal());
      }
    }
    // Shared query component a·dir; the sink key gets (sink_logit·√d / a)·dir, i.e. + sink_logit logit.
    const float a = 0.4f * sqrt_d;
    const float boost = o.sink_logit * static_cast<float>(0.7 + 0.6 * rng.uniform());
    for (int j = 0; j < d; ++j) K[j] += dir[j] * boost * sqrt_d / a;
    for (int h = g * o.group; h < (g + 1) * o.group; ++h)
      for (int i = 0; i < o.queries; ++i) {
        float* q = L.q.data() + (static_cast<size_t>(h) * o.queries + i) * d;
        const int64_t t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(C)));
        const float focus = static_cast<float>(rng.uniform()) * 0.8f;
        double kn = 0;
        for (int j = 0; j < d; ++j) kn += static_cast<double>(K[t * d + j] - mu[j]) * (K[t * d + j] - mu[j]);
        const float ks = kn > 0 ? static_cast<float>(std::sqrt(d / kn)) : 0.f;
        for (int j = 0; j < d; ++j)
          q[j] = a * dir[j] + focus * ks * (K[t * d + j] - mu[j]) + 0.7f * static_cast<float>(rng.normal());
      }
  }
  // Observation queries (the prompt's last W tokens, LayerKV::obs) from their own stream, so every tensor above
  // is unchanged by them: the same recipe as the decode queries, each focused on a key it can see.
  const int64_t W = std::min<int64_t>(o.obs_window, C);
  if (W > 0) {
    ObsQueries& ob = L.kv.obs;
    ob.heads = L.shape.n_heads, ob.n = W, ob.head_dim = d;
    ob.q.resize(static_cast<size_t>(ob.heads) * W * d);
    for (int64_t i = 0; i < W; ++i) ob.positions.push_back(C - W + i);
    for (int h = 0; h < ob.heads; ++h) {
      Rng rng(derive_seed(o.seed, {static_cast<uint64_t>(h), 13}));
      const float* K = L.kv.k_head(h / o.group);
      for (int64_t i = 0; i < W; ++i) {
        float* q = ob.q.data() + (static_cast<size_t>(h) * W + i) * d;
        const int64_t t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(ob.positions[i] + 1)));
        const float focus = static_cast<float>(rng.uniform()) * 0.8f;
        double kn = 0;
        for (int j = 0; j < d; ++j) kn += static_cast<double>(K[t * d + j]) * K[t * d + j];
        const float ks = kn > 0 ? static_cast<float>(std::sqrt(d / kn)) : 0.f;
        for (int j = 0; j < d; ++j) q[j] = focus * ks * K[t * d + j] + 0.7f * static_cast<float>(rng.normal());
      }
    }
  }
  return L;
}

template <class A, class B>
double cosine(const A* a, const B* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  if (aa == 0 && bb == 0) return 1.0;
  if (aa == 0 || bb == 0) return 0.0;
  return ab / std::sqrt(aa * bb);
}

/// ‖approx − exact‖ / max(‖exact‖, 1e-8)
template <class A, class B>
double rel_l2(const A* approx, const B* exact, int64_t n) {
  double e = 0, x = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = static_cast<double>(approx[i]) - static_cast<double>(exact[i]);
    e += diff * diff;
    x += static_cast<double>(exact[i]) * exact[i];
  }
  return std::sqrt(e) / std::max(std::sqrt(x), 1e-8);
}

template <class T>
bool all_finite(const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

/// Exact float64 attention output of query q of head h.
inline std::vector<double> exact_output(const SynthLayer& L, int h, const float* q) {
  const int g = h / L.shape.group();
  std::vector<double> o(static_cast<size_t>(L.shape.head_dim));
  exact_attention_f64(L.kv.k_head(g), L.kv.v_head(g), L.kv.tokens, L.shape.head_dim, q, L.attn.softmax_scale,
                      L.attn.softcap, nullptr, nullptr, o.data());
  return o;
}

/// Encodes L with each (codec, params) of `configs` (configurations the head_dim does not support are
/// skipped, but at least one must run), asserts finite scores and outputs for every query of every head,
/// and calls check(codec, resolved params, query head, query index, output) for extra assertions.
template <class F>
void for_each_config(const SynthLayer& L, const std::vector<std::pair<std::string, Json>>& configs, F&& check) {
  int ran = 0;
  for (const auto& [codec, params] : configs) {
    const CodecEntry& e = registry().at(codec);
    const Json p = resolve_params(e.info.params, params, codec);
    SCOPED_TRACE(fmt::format("{} on {}", e.label(p), L.describe()));
    std::unique_ptr<Codec> c;
    try {
      c = e.make_cpu(p, L.shape);
    } catch (const Unsupported&) {
      continue;
    }
    const auto enc = c->encode(0, L.kv, nullptr, L.ctx());
    ++ran;
    Scratch scratch;
    std::vector<float> s(L.kv.tokens), o(L.shape.head_dim);
    for (int h = 0; h < L.shape.n_heads; ++h)
      for (int i = 0; i < L.nq; ++i) {
        const int g = h / L.shape.group();
        ASSERT_TRUE(enc->scores(g, L.query(h, i), s.data(), scratch));
        enc->attend(g, L.query(h, i), o.data(), scratch);
        ASSERT_TRUE(all_finite(s.data(), L.kv.tokens)) << "scores";
        ASSERT_TRUE(all_finite(o.data(), L.shape.head_dim)) << "output";
        check(codec, p, h, i, o);
      }
  }
  EXPECT_GT(ran, 0) << "no configuration ran on " << L.describe();
}

}  // namespace kvb::test
