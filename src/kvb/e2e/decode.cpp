#include "kvb/e2e/decode.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kernels/cpu/row_kernels.h"
#include "kvb/attention/exact.h"
#include "kvb/core/error.h"
#include "kvb/metrics/metrics.h"

namespace kvb::e2e {
namespace {

using Clock = std::chrono::steady_clock;

bool all_finite(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

/// Dense float32 attention of q over n rows K_t = K + t·stride (V alike): out = Σ softmax(s)_t V_t with
/// s_t = scale·<q, K_t>; returns ln Σ_t exp(s_t) (softmax_weights: normalizer in double). Contiguous rows
/// (stride == d: the exact prompt) go through the blocked kernels the codecs' fp16 path uses (dots_many, four
/// rows per pass; axpy_many), so the exact cache is timed with an implementation as good as the compressed
/// ones'; strided rows (the runner's cache: prefill, continuation) one row at a time. buf: n floats.
double dense_lse(const float* K, const float* V, int64_t n, size_t stride, int d, const float* q, float scale,
                 float* out, float* buf) {
  const kernels::RowKernels& R = kernels::row_kernels();
  const bool rows = stride == static_cast<size_t>(d);
  if (rows) {
    R.dots_many(K, static_cast<int>(n), d, &q, 1, buf, n);
    for (int64_t t = 0; t < n; ++t) buf[t] *= scale;
  } else {
    for (int64_t t = 0; t < n; ++t) buf[t] = scale * R.dot_f32(q, K + static_cast<size_t>(t) * stride, d);
  }
  double lse = 0;
  const double l = softmax_weights(buf, n, &lse);
  std::fill(out, out + d, 0.f);
  if (rows)
    R.axpy_many(V, static_cast<int>(n), d, buf, n, 1, &out);
  else
    for (int64_t t = 0; t < n; ++t) R.axpy_f32(buf[t], V + static_cast<size_t>(t) * stride, out, d);
  const float inv = static_cast<float>(1.0 / l);
  for (int j = 0; j < d; ++j) out[j] *= inv;
  return lse;
}

/// The attention of every layer during the decode: the prompt from the codec (or exactly), the continuation
/// exactly, merged by log-sum-exp.
class SplitAttention final : public AttentionHook {
 public:
  SplitAttention(const Prefill& P, const std::vector<std::unique_ptr<EncodedLayer>>* enc, const LayerProbe* probe)
      : P_(P), enc_(enc), probe_(probe), c_(P.runner->config()), attn_(model_attn(c_)) {
    const int d = c_.head_size();
    prompt_o_.resize(d), tail_o_.resize(d);
    buf_.resize(static_cast<size_t>(c_.seq_len));
    if (probe_ && enc_) {
      held_.resize(static_cast<size_t>(c_.n_layers));
      for (int l = 0; l < c_.n_layers; ++l)
        for (int g = 0; g < c_.n_kv_heads; ++g) held_[l].push_back((*enc_)[l]->held_tokens(g));
      s_.resize(P.C), p_.resize(P.C), sd_.resize(P.C), sf_.resize(P.C), o_.resize(d), od_.resize(d);
    }
  }

  void attend(const Llama2Runner& r, int l, int pos, const float* q, float* out) override {
    const int d = c_.head_size(), kv_dim = c_.kv_dim(), C = P_.C;
    for (int h = 0; h < c_.n_heads; ++h) {
      const int g = h / c_.kv_mul();
      const float* qh = q + h * d;
      double lp;
      if (enc_) {
        (*enc_)[l]->attend_lse(g, qh, prompt_o_.data(), &lp, scratch_);
        if (!all_finite(prompt_o_.data(), d) || std::isnan(lp))
          throw RuntimeError(fmt::format("{}: the codec's attention is not finite at layer {}, query head {}, position {}",
                                         P_.window->id, l, h, pos));
      } else {
        const LayerKV& kv = P_.kv[l];  // the exact prompt, contiguous per KV head
        lp = dense_lse(kv.k_head(g), kv.v_head(g), C, size_t(d), d, qh, attn_.softmax_scale, prompt_o_.data(),
                       buf_.data());
      }
      const double lt = dense_lse(r.key(l, C) + g * d, r.value(l, C) + g * d, pos - C + 1, kv_dim, d, qh,
                                  attn_.softmax_scale, tail_o_.data(), buf_.data());
      merge_attention(prompt_o_.data(), lp, tail_o_.data(), lt, out + h * d, d);
      if (probe_ && enc_) observe(l, h, g, qh);
    }
  }

  double probe_seconds() const { return probe_s_; }

 private:
  /// The layer-level metrics of this query head's prompt attention (timed apart from the decode).
  void observe(int l, int h, int g, const float* qh) {
    const auto t0 = Clock::now();
    const int d = c_.head_size();
    const int64_t C = P_.C;
    const LayerKV& kv = P_.kv[l];
    exact_attention_f64(kv.k_head(g), kv.v_head(g), C, d, qh, attn_.softmax_scale, 0.0, s_.data(), p_.data(), o_.data());
    const bool hs = (*enc_)[l]->scores(g, qh, sf_.data(), scratch_);
    if (hs && !all_finite(sf_.data(), sf_.size()))
      throw RuntimeError(fmt::format("{}: the codec's logits are not finite at layer {}, query head {}", P_.window->id, l, h));
    for (int64_t t = 0; t < C; ++t) sd_[t] = sf_[t];
    for (int j = 0; j < d; ++j) od_[j] = prompt_o_[j];
    metrics::QueryInput in;
    in.C = C;
    in.d = d;
    in.s = s_.data();
    in.p = p_.data();
    in.o = o_.data();
    in.s_hat = hs ? sd_.data() : nullptr;
    in.o_hat = od_.data();
    in.held = held_[l][g].empty() ? nullptr : held_[l][g].data();
    in.topk = probe_->topk;
    const metrics::QueryMetrics qm = metrics::evaluate_query(in);
    auto& layer_vals = probe_->acc->per_layer[l];
    for (const auto& m : metrics::all_metrics()) {
      if (m.optional) continue;
      if (const auto v = m.value(qm)) {
        probe_->acc->values[m.name].push_back(*v);
        layer_vals[m.name].push_back(*v);
      }
    }
    probe_s_ += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  const Prefill& P_;
  const std::vector<std::unique_ptr<EncodedLayer>>* enc_;
  const LayerProbe* probe_;
  Llama2Config c_;
  AttnConfig attn_;
  Scratch scratch_;
  std::vector<float> prompt_o_, tail_o_, buf_, sf_;
  std::vector<double> s_, p_, sd_, o_, od_;
  std::vector<std::vector<std::vector<uint8_t>>> held_;  ///< [layer][kv head]
  double probe_s_ = 0;
};

/// The prefill's attention: dense float32 over positions 0..pos, exactly as the decode's exact parts. With an
/// observation window [p0, C), it also keeps the query of every head at those positions (obs[l]: [heads, C-p0, d]).
class DenseAttention final : public AttentionHook {
 public:
  explicit DenseAttention(const Llama2Config& c) : c_(c), attn_(model_attn(c)), buf_(static_cast<size_t>(c.seq_len)) {}
  void keep_queries(int p0, int C) {
    p0_ = p0, W_ = C - p0;
    obs.assign(static_cast<size_t>(c_.n_layers), std::vector<float>(static_cast<size_t>(c_.dim) * W_));
  }
  std::vector<std::vector<float>> obs;  ///< [layer][heads, W, d]

  void attend(const Llama2Runner& r, int l, int pos, const float* q, float* out) override {
    const int d = c_.head_size();
    if (W_ > 0 && pos >= p0_)
      for (int h = 0; h < c_.n_heads; ++h)
        std::copy_n(q + h * d, d, obs[l].data() + (static_cast<size_t>(h) * W_ + (pos - p0_)) * d);
    for (int h = 0; h < c_.n_heads; ++h) {
      const int g = h / c_.kv_mul();
      dense_lse(r.key(l, 0) + g * d, r.value(l, 0) + g * d, pos + 1, c_.kv_dim(), d, q + h * d, attn_.softmax_scale,
                out + h * d, buf_.data());
    }
  }

 private:
  Llama2Config c_;
  AttnConfig attn_;
  std::vector<float> buf_;
  int p0_ = 0, W_ = 0;
};

/// log-softmax of logits[n] in double into out[n].
void log_softmax(const float* x, int n, std::vector<double>& out) {
  out.resize(static_cast<size_t>(n));
  double m = -INFINITY;
  for (int i = 0; i < n; ++i) m = std::max(m, static_cast<double>(x[i]));
  double l = 0;
  for (int i = 0; i < n; ++i) l += std::exp(x[i] - m);
  const double lz = m + std::log(l);
  for (int i = 0; i < n; ++i) out[i] = x[i] - lz;
}

StepStats step_stats(const float* logits, const float* hidden, int vocab, int dim, int target, const DecodeResult* exact,
                     size_t step, std::vector<double>& lp, std::vector<double>& lq) {
  StepStats s;
  log_softmax(logits, vocab, lq);
  s.nll = -lq[static_cast<size_t>(target)];
  if (!exact) return s;
  const float* el = exact->logits.data() + step * static_cast<size_t>(vocab);
  log_softmax(el, vocab, lp);
  double kl = 0;
  for (int i = 0; i < vocab; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  s.kl = std::max(kl, 0.0);  // rounding can leave a tiny negative sum
  s.top1 = argmax(el, vocab) == argmax(logits, vocab) ? 1.0 : 0.0;
  std::vector<double> a(hidden, hidden + dim), b(exact->hidden.data() + step * static_cast<size_t>(dim),
                                                 exact->hidden.data() + (step + 1) * static_cast<size_t>(dim));
  s.hidden_cos = metrics::cosine(a.data(), b.data(), dim);
  return s;
}

}  // namespace

ModelShape model_shape(const Llama2Config& c) {
  ModelShape s;
  s.n_layers = c.n_layers;
  s.n_heads = c.n_heads;
  s.n_kv_heads = c.n_kv_heads;
  s.head_dim = c.head_size();
  return s;
}

AttnConfig model_attn(const Llama2Config& c) {
  AttnConfig a;
  a.softmax_scale = 1.0f / std::sqrt(static_cast<float>(c.head_size()));  // run.c divides by sqrt(head_size)
  a.softcap = 0.f;
  return a;
}

Prefill run_prefill(const Llama2Model& model, const Window& w, int C, int obs_window) {
  const Llama2Config& c = model.config();
  KVB_CHECK(obs_window >= 0, UsageError, "model.obs_window: expected >= 0, got {}", obs_window);
  const int W = std::min(obs_window, C);
  Prefill P;
  P.window = &w;
  P.C = C;
  P.runner = std::make_unique<Llama2Runner>(model, Matvec::kSimd);
  DenseAttention dense(c);
  if (W > 0) dense.keep_queries(C - W, C);
  P.runner->prefill(w.tokens.data(), C, &dense);
  const int d = c.head_size();
  for (int l = 0; l < c.n_layers; ++l) {
    LayerKV kv;
    kv.kv_heads = c.n_kv_heads;
    kv.tokens = C;
    kv.head_dim = d;
    kv.k.resize(static_cast<size_t>(c.n_kv_heads) * C * d);
    kv.v.resize(kv.k.size());
    for (int g = 0; g < c.n_kv_heads; ++g)
      for (int t = 0; t < C; ++t) {
        std::copy_n(P.runner->key(l, t) + g * d, d, kv.k_head(g) + static_cast<size_t>(t) * d);
        std::copy_n(P.runner->value(l, t) + g * d, d, kv.v_head(g) + static_cast<size_t>(t) * d);
      }
    KVB_CHECK(all_finite(kv.k.data(), kv.k.size()) && all_finite(kv.v.data(), kv.v.size()), DataError,
              "{}: the model's keys or values of window {} are not finite at layer {}", model.path(), w.id, l);
    if (W > 0) {
      ObsQueries& ob = kv.obs;
      ob.heads = c.n_heads;
      ob.n = W;
      ob.head_dim = d;
      ob.q = std::move(dense.obs[l]);
      for (int p = C - W; p < C; ++p) ob.positions.push_back(p);
      KVB_CHECK(all_finite(ob.q.data(), ob.q.size()), DataError,
                "{}: the model's queries of window {} are not finite at layer {}", model.path(), w.id, l);
    }
    P.kv.push_back(std::move(kv));
  }
  return P;
}

DecodeResult decode_window(const Llama2Model& model, const Prefill& P,
                           const std::vector<std::unique_ptr<EncodedLayer>>* enc, const DecodeResult* exact,
                           const LayerProbe* probe, int max_steps) {
  const Llama2Config& c = model.config();
  const int C = P.C;
  int N = static_cast<int>(P.window->tokens.size()) - C - 1;
  if (max_steps >= 0) N = std::min(N, max_steps);
  Llama2Runner r(model, Matvec::kSimd);
  r.copy_cache_from(*P.runner, C);
  SplitAttention hook(P, enc, probe);
  DecodeResult out;
  if (!enc) {
    out.logits.resize(static_cast<size_t>(N) * c.vocab_size);
    out.hidden.resize(static_cast<size_t>(N) * c.dim);
  }
  std::vector<double> lp, lq;
  double stats_s = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < N; ++i) {
    const int pos = C + i;
    const float* logits = r.forward(P.window->tokens[static_cast<size_t>(pos)], pos, &hook);
    const auto ts = Clock::now();
    KVB_CHECK(all_finite(logits, static_cast<size_t>(c.vocab_size)), RuntimeError,
              "{}: the model's logits are not finite at position {}", P.window->id, pos);
    if (!enc) {
      std::copy_n(logits, c.vocab_size, out.logits.data() + static_cast<size_t>(i) * c.vocab_size);
      std::copy_n(r.hidden(), c.dim, out.hidden.data() + static_cast<size_t>(i) * c.dim);
    }
    out.steps.push_back(step_stats(logits, r.hidden(), c.vocab_size, c.dim, P.window->tokens[static_cast<size_t>(pos) + 1],
                                   exact, static_cast<size_t>(i), lp, lq));
    stats_s += std::chrono::duration<double>(Clock::now() - ts).count();
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - t0).count() - stats_s - hook.probe_seconds();
  return out;
}

}  // namespace kvb::e2e
