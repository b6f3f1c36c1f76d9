#include "kvb/gen/generator.h"

/// The synthetic model (docs/dump-format.md §3). Everything a real LLM's K/V/Q has that makes compression
/// hard, each behind a GenOptions knob:
///
///   sequence content  tokens w_t (Zipf-like, with copied spans) and a latent state e_t in R^rank:
///                     e_t = sqrt(.5) E(w_t) + sqrt(.5) c_t, E a fixed token embedding, c_t an AR(1) "topic"
///                     state (unit variance, correlation topic_persistence between neighbours).
///                     Shared by all layers and heads; only this depends on the sequence.
///   key head (l, g)   fixed by (seed, l, g) like weights: pre-RoPE k_t = mu + s * x_t with
///                     x_t = sqrt(1-nu^2) W_k e_t + nu * noise (unit variance per channel), per-pair channel
///                     scales s (log-normal around a trend that grows toward the slow, low-frequency pairs:
///                     key_scale_tilt), per-channel means mu (nonzero: real keys are biased), and outlier
///                     pairs among the slowest quarter of the pairs with RMS 10-50x the median channel and a
///                     large mean. The other pairs of the slowest half are the "sink" pairs: they barely
///                     rotate over a context, the first token's key gets its extra norm there (up to
///                     sink_key_scale x typical), spread over all of them along a fixed direction d, so no
///                     channel of the sink key exceeds 1.5x the largest outlier mean (its per-token value
///                     range stays like an ordinary token's; no real sink key has 100x single channels).
///                     Then RoPE at the token's position (half or interleaved pairs, theta).
///   value head        rho_t * (x^v_t * vs) + vmu, rho_t log-normal (value_scale_spread); the sink's value is
///                     small (sink_value_scale), as in real models.
///   query head h      (seed, l, h): a focus f (broad .. peaked), a sink share, a generic projection W_q.
///                     Its content direction at position p mixes f x (the whitened keys of 1-4 earlier
///                     "target" tokens, recent or anywhere) and (1-f) x (W_q e_p, rotated to p), weighted
///                     down to sink_content on the sink pairs and made orthogonal to d. A temperature tau,
///                     fitted on a calibration draw so the head's non-sink entropy hits its target, scales
///                     it. The sink's logit comes from alignment, as in real models (the first key acts as
///                     a key bias that the queries' shared component points at): every query adds beta x d,
///                     with beta chosen so that the sink's logit is logit(share) + log-sum-exp of the
///                     query's other logits, so the sink draws the head's share of attention (jittered per
///                     query). GQA: every query head has its own focus, share, W_q, targets and beta; the
///                     heads of a group share their KV head's d.
///   ref_out           exact float64 attention over the first C tokens of the tensors as stored (after
///                     rounding to the file dtype), so kvbench's self-check agrees to float32 precision.
///   obs queries       (obs_window W) the queries of prompt positions p = C-W..C-1, the same head model at p
///                     over the tokens p attends to causally: targets among 1..p, beta fitted against the
///                     log-sum-exp of its logits over 1..p. Their random streams are their own (kTagObsQuery,
///                     keyed by position) and they are made after everything else, so every other tensor is
///                     bit-identical with or without them, and a query at p is the same for every W.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/core/half.h"
#include "kvb/core/progress.h"
#include "kvb/core/rng.h"
#include "kernels/cpu/rope.h"
#include "kvb/attention/exact_batch.h"
#include "kvb/version.h"

namespace kvb {
namespace {

// Purpose tags of the random streams (derive_seed(seed, {tag, ...})).
constexpr uint64_t kTagKvHead = 0x4b56484541440001ull;
constexpr uint64_t kTagQHead = 0x5148454144000002ull;
constexpr uint64_t kTagContent = 0x434f4e5445000003ull;
constexpr uint64_t kTagEmbed = 0x454d424544000004ull;
constexpr uint64_t kTagKeyNoise = 0x4b4e4f4953000005ull;
constexpr uint64_t kTagValNoise = 0x564e4f4953000006ull;
constexpr uint64_t kTagQuery = 0x5155455259000007ull;
constexpr uint64_t kTagCalib = 0x43414c4942000008ull;
constexpr uint64_t kTagObsQuery = 0x4f42535155000009ull;
constexpr uint64_t kCalibSequence = 0xffffffffull;  // content key of the calibration draw (never written)
constexpr int32_t kVocab = 32000;
constexpr int32_t kBos = 1;
constexpr double kPi = 3.14159265358979323846;

/// Approximately standard normal from one 64-bit draw (Irwin-Hall of four 16-bit uniforms, bounded at
/// +-3.46): the bulk per-token noise, ~10x cheaper than Box-Muller.
inline float fast_normal(Rng& r) {
  const uint64_t u = r.next_u64();
  const float s = static_cast<float>((u & 0xffffu) + ((u >> 16) & 0xffffu) + ((u >> 32) & 0xffffu) + (u >> 48));
  return (s - 131070.0f) * (1.7320508075688772f / 65536.0f);
}

/// exp(x) for x <= 0 (x < -700 is clamped), relative error ~1e-13; branch-free so loops over it
/// vectorize. Only for the generator's own fitting (sink logits, temperatures) — never for ref_out.
inline double exp_neg(double x) {
  const double y = x + 700.0;
  x = 0.5 * (y + std::fabs(y)) - 700.0;  // max(x, -700) without a branch (lets the loop vectorize)
  const double t = x * 1.4426950408889634;  // x / ln 2
  const double kRound = 6755399441055744.0;  // 1.5 * 2^52: t + kRound rounds t to an integer n
  const double tm = t + kRound;
  const double n = tm - kRound;
  const double r = (t - n) * 0.6931471805599453;  // |r| <= ln2 / 2
  double p = 1.0 / 39916800.0;  // Taylor series of exp(r) to degree 11 (error < 1e-14)
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t ni;
  std::memcpy(&ni, &tm, sizeof ni);
  ni -= 0x4338000000000000ll;  // the integer n, from the bits of t + kRound
  const uint64_t bits = static_cast<uint64_t>(ni + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/// log(sum_t exp(a[t])) over a[0..n), n >= 1; `buf` is scratch of n doubles.
double log_sum_exp(const double* a, int64_t n, double* buf) {
  double m = -INFINITY;
  for (int64_t t = 0; t < n; ++t) m = std::max(m, a[t]);
  for (int64_t t = 0; t < n; ++t) buf[t] = exp_neg(a[t] - m);
  double z = 0;
  for (int64_t t = 0; t < n; ++t) z += buf[t];
  return m + std::log(z);
}

using RopeStyle = kernels::rope::Style;
using kernels::rope::pair_a;
using kernels::rope::pair_b;

RopeStyle parse_rope(const std::string& s) {
  RopeStyle st = RopeStyle::kNone;
  if (kernels::rope::parse(s, &st)) return st;
  throw UsageError(fmt::format("--rope-style: expected half, interleaved or none, got '{}'", s));
}

/// cos/sin of every (position, pair) from position 0, so RoPE costs d multiply-adds per vector.
struct Rope : kernels::rope::Table {
  Rope(RopeStyle st, int d, double theta, int64_t positions) : Table(st, d, theta, 0, positions) {}
};

float round_to(DType dt, float x) {
  switch (dt) {
    case DType::kFloat16: return round_f16(x);
    case DType::kBFloat16: return bf16_to_f32(f32_to_bf16(x));
    case DType::kFloat32: return x;
  }
  return x;
}

/// One sequence's content: tokens and the latent state e_t (shared by every layer and head).
struct Content {
  int r = 0;
  std::vector<int32_t> tokens;
  std::vector<float> e;  // [T][r]
  const float* row(int64_t t) const { return e.data() + static_cast<size_t>(t) * r; }
};

void embed(uint64_t seed, int32_t w, int r, float* out) {
  Rng rng(derive_seed(seed, {kTagEmbed, static_cast<uint64_t>(w)}));
  for (int j = 0; j < r; ++j) out[j] = static_cast<float>(rng.normal());
}

Content make_content(const GenOptions& o, uint64_t seq_key, int64_t T) {
  Content c;
  c.r = o.rank;
  Rng rng(derive_seed(o.seed, {kTagContent, seq_key}));
  c.tokens.resize(static_cast<size_t>(T));
  c.tokens[0] = kBos;
  int64_t src = 0, left = 0;
  const double ln_v = std::log(static_cast<double>(kVocab - 2));
  for (int64_t t = 1; t < T; ++t) {
    if (left == 0 && t > 8 && rng.uniform() < o.copy_prob) {
      left = 4 + static_cast<int64_t>(rng.below(29));
      src = 1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(t - 1)));
    }
    if (left > 0) {
      c.tokens[t] = c.tokens[src++];
      --left;
    } else {  // Zipf(1)-like: log-uniform rank over the vocabulary
      const double rank = std::floor(std::exp(rng.uniform() * ln_v));
      c.tokens[t] = 2 + static_cast<int32_t>(std::min<double>(kVocab - 3, rank - 1));
    }
  }
  const int r = o.rank;
  c.e.resize(static_cast<size_t>(T) * r);
  std::vector<float> emb(r), ctx(r);
  const float rho = static_cast<float>(o.topic_persistence);
  const float a = std::sqrt(1.0f - rho * rho), h = std::sqrt(0.5f);
  // The topic state drifts with its own zero-mean innovations (driving it with the token embeddings
  // would amplify their frequency-weighted mean by sqrt((1 + rho) / (1 - rho))).
  for (int64_t t = 0; t < T; ++t) {
    embed(o.seed, c.tokens[t], r, emb.data());
    float* e = c.e.data() + static_cast<size_t>(t) * r;
    for (int j = 0; j < r; ++j) {
      const float xi = static_cast<float>(rng.normal());
      ctx[j] = t == 0 ? xi : rho * ctx[j] + a * xi;
      e[j] = h * emb[j] + h * ctx[j];
    }
  }
  return c;
}

/// The fixed "weights" of one KV head.
struct KvHead {
  std::vector<float> s, mu;   // [D] pre-RoPE key channel scale (equal within a RoPE pair) and mean
  std::vector<float> wk, wv;  // [r][D] latent -> key / value projections
  std::vector<float> vs, vmu; // [D] value channel scale and mean
  std::vector<float> qw;        // [D] weight of each channel in the queries' content part
  std::vector<float> sink_dir;  // [D] unit vector on the sink pairs
  float sink_lambda = 0;        // extra magnitude of the sink key along sink_dir
  std::vector<int> outliers;    // outlier channels
};

/// The fixed "weights" of one query head, plus its calibration.
struct QHead {
  std::vector<float> wq;  // [r][D] generic query projection
  double focus = 0, sink_share = 0;
  double tau = 1;  // calibrated temperature
};

KvHead make_kv_head(const GenOptions& o, RopeStyle st, int layer, int g) {
  const int D = o.shape.head_dim, P = D / 2, r = o.rank;
  Rng rng(derive_seed(o.seed, {kTagKvHead, static_cast<uint64_t>(layer), static_cast<uint64_t>(g)}));
  KvHead k;
  k.s.resize(D);
  k.mu.resize(D);
  k.qw.assign(D, 1.f);
  const double cm = o.channel_mean;
  const double norm = 1.0 / std::sqrt(1.0 + cm * cm);  // median channel RMS ~ 1
  // Pair i turns by theta^(-2i/d) per token: i = 0 is the fastest pair, P - 1 the slowest. Channel scales
  // are log-normal around a trend that grows toward the slow pairs (key_scale_tilt), as in real keys.
  for (int i = 0; i < P; ++i) {
    const double slow = P > 1 ? static_cast<double>(i) / (P - 1) - 0.5 : 0.0;
    const float sc = static_cast<float>(std::exp(0.3 * rng.normal() + o.key_scale_tilt * slow) * norm);
    for (int c : {pair_a(st, P, i), pair_b(st, P, i)}) {
      k.s[c] = sc;
      k.mu[c] = static_cast<float>(sc * cm * rng.normal());
    }
  }
  // Outlier pairs: placed at random among the slowest quarter of the pairs (more if many are asked for),
  // with RMS m x the median channel RMS and a large mean (consistent across tokens).
  std::vector<double> rms(static_cast<size_t>(D));
  for (int c = 0; c < D; ++c) rms[c] = std::sqrt(static_cast<double>(k.s[c]) * k.s[c] + static_cast<double>(k.mu[c]) * k.mu[c]);
  std::nth_element(rms.begin(), rms.begin() + D / 2, rms.end());
  const double med = rms[D / 2];
  const int n_out_pairs = std::min((o.outlier_channels + 1) / 2, P - 1);
  std::vector<char> is_out(static_cast<size_t>(P), 0);
  double out_mean = 0;  // the largest |mean| of an outlier channel
  if (n_out_pairs > 0) {
    const int window = std::min(P, std::max(2 * n_out_pairs, P / 4));
    std::vector<int> cand(static_cast<size_t>(window));
    std::iota(cand.begin(), cand.end(), P - window);
    for (int i = 0; i < n_out_pairs; ++i) std::swap(cand[i], cand[i + rng.below(window - i)]);
    const double lo = std::log(o.outlier_scale_min), hi = std::log(o.outlier_scale_max);
    for (int i = 0; i < n_out_pairs; ++i) {
      const double m = std::exp(lo + (hi - lo) * rng.uniform());  // target RMS / median RMS
      const double b = (rng.uniform() < 0.5 ? -1 : 1) * (0.8 + 0.2 * rng.uniform());
      const double amp = m * med / std::sqrt(b * b + 0.09);  // value = amp * (b + 0.3 x): RMS = m * med
      const int pi = cand[i];
      is_out[pi] = 1;
      out_mean = std::max(out_mean, amp * std::abs(b));
      // The pair's mean vector (norm sqrt(2) amp |b|) sits at 45 degrees in the middle of the sequence,
      // so RoPE's slow turn over the tokens leaves both channels with RMS m on average (a fixed 45-degree
      // phase would pile up to sqrt(2) m in one channel where the pair turns by ~pi/2 over the context).
      const double omega = st == RopeStyle::kNone ? 0.0 : std::pow(o.rope_theta, -2.0 * pi / D);
      const double phase = 0.25 * kPi - 0.5 * omega * static_cast<double>(std::max<int64_t>(o.tokens - 1, 0));
      const int ca = pair_a(st, P, pi), cb = pair_b(st, P, pi);
      k.mu[ca] = static_cast<float>(std::sqrt(2.0) * amp * b * std::cos(phase));
      k.mu[cb] = static_cast<float>(std::sqrt(2.0) * amp * b * std::sin(phase));
      for (int c : {ca, cb}) {
        k.s[c] = static_cast<float>(0.3 * amp);
        k.outliers.push_back(c);
      }
    }
    std::sort(k.outliers.begin(), k.outliers.end());
  }
  // Sink pairs: the other pairs of the slowest half. The sink direction is spread over all of them
  // (equal magnitudes, random phases), so the sink key's extra norm is carried by many channels
  // instead of piling up in a few; these pairs barely rotate over a context, so the queries' shared
  // component along it keeps the sink's logit high at every position. The queries' content part is weak
  // on these pairs (sink_content).
  const int slow = std::min(P, std::max(P / 2, n_out_pairs + 1));
  k.sink_dir.assign(D, 0.f);
  double sd2 = 0;
  for (int i = P - slow; i < P; ++i) {
    if (is_out[i]) continue;
    const double ph = 2 * kPi * rng.uniform();
    const int a = pair_a(st, P, i), b = pair_b(st, P, i);
    k.sink_dir[a] = static_cast<float>(std::cos(ph));
    k.sink_dir[b] = static_cast<float>(std::sin(ph));
    k.qw[a] = k.qw[b] = static_cast<float>(o.sink_content);
    sd2 += 1.0;
  }
  double dmax = 0;
  for (float& v : k.sink_dir) {
    v = static_cast<float>(v / std::sqrt(sd2));
    dmax = std::max(dmax, static_cast<double>(std::abs(v)));
  }
  // The typical key norm (E|k|^2 over ordinary tokens) sets the sink's extra magnitude, limited so that
  // no channel of the sink key exceeds 1.5x the largest outlier channel's mean (ordinary tokens reach
  // ~2x there): the sink's per-token value range stays like an ordinary token's.
  double e2 = 0;
  for (int c = 0; c < D; ++c) e2 += static_cast<double>(k.mu[c]) * k.mu[c] + static_cast<double>(k.s[c]) * k.s[c];
  double lambda = std::sqrt(e2 * std::max(0.0, o.sink_key_scale * o.sink_key_scale - 1.0));
  if (n_out_pairs > 0) lambda = std::min(lambda, 1.5 * out_mean / dmax);
  k.sink_lambda = static_cast<float>(lambda);

  const float wkn = static_cast<float>(std::sqrt((1.0 - o.key_noise * o.key_noise) / r));
  const float wvn = static_cast<float>(std::sqrt((1.0 - o.value_noise * o.value_noise) / r));
  k.wk.resize(static_cast<size_t>(r) * D);
  k.wv.resize(static_cast<size_t>(r) * D);
  for (float& w : k.wk) w = static_cast<float>(rng.normal()) * wkn;
  for (float& w : k.wv) w = static_cast<float>(rng.normal()) * wvn;
  k.vs.resize(D);
  k.vmu.resize(D);
  for (int c = 0; c < D; ++c) {
    k.vs[c] = static_cast<float>(std::exp(0.2 * rng.normal()));
    k.vmu[c] = static_cast<float>(0.1 * rng.normal());
  }
  return k;
}

QHead make_q_head(const GenOptions& o, int layer, int h) {
  const int D = o.shape.head_dim, r = o.rank;
  Rng rng(derive_seed(o.seed, {kTagQHead, static_cast<uint64_t>(layer), static_cast<uint64_t>(h)}));
  QHead q;
  q.focus = o.focus_min + (o.focus_max - o.focus_min) * rng.uniform();
  q.sink_share = o.sink_share_min + (o.sink_share_max - o.sink_share_min) * rng.uniform();
  q.wq.resize(static_cast<size_t>(r) * D);
  for (float& w : q.wq) w = static_cast<float>(rng.normal());
  return q;
}

/// Post-RoPE keys of one KV head for tokens [0, n): K [n][D].
void gen_keys(const GenOptions& o, const KvHead& kh, const Content& ct, int64_t n, uint64_t noise_seed,
              const Rope& rope, float* K) {
  const int D = o.shape.head_dim, r = o.rank;
  const float nu = static_cast<float>(o.key_noise);
  Rng rng(noise_seed);
  for (int64_t t = 0; t < n; ++t) {
    float* k = K + t * D;
    std::fill(k, k + D, 0.f);
    const float* e = ct.row(t);
    for (int j = 0; j < r; ++j) {
      const float ej = e[j];
      const float* w = kh.wk.data() + static_cast<size_t>(j) * D;
      for (int c = 0; c < D; ++c) k[c] += w[c] * ej;
    }
    for (int c = 0; c < D; ++c) k[c] = kh.mu[c] + kh.s[c] * (k[c] + nu * fast_normal(rng));
    if (t == 0)
      for (int c = 0; c < D; ++c) k[c] += kh.sink_lambda * kh.sink_dir[c];
    rope.apply(k, t);
  }
}

/// Values of one KV head for tokens [0, n): V [n][D].
void gen_values(const GenOptions& o, const KvHead& kh, const Content& ct, int64_t n, uint64_t noise_seed, float* V) {
  const int D = o.shape.head_dim, r = o.rank;
  const float nu = static_cast<float>(o.value_noise);
  const double sig = o.value_scale_spread;
  Rng rng(noise_seed);
  for (int64_t t = 0; t < n; ++t) {
    float* v = V + t * D;
    std::fill(v, v + D, 0.f);
    const float* e = ct.row(t);
    for (int j = 0; j < r; ++j) {
      const float ej = e[j];
      const float* w = kh.wv.data() + static_cast<size_t>(j) * D;
      for (int c = 0; c < D; ++c) v[c] += w[c] * ej;
    }
    float rho = static_cast<float>(std::exp(sig * rng.normal() - 0.5 * sig * sig));
    if (t == 0) rho *= static_cast<float>(o.sink_value_scale);
    for (int c = 0; c < D; ++c) v[c] = rho * (v[c] + nu * fast_normal(rng)) * kh.vs[c] + kh.vmu[c] * (t == 0 ? rho : 1.f);
  }
}

/// The content direction (post-RoPE, before the temperature) of head `qh`'s query at position p over
/// keys K (post-RoPE, [>= C][D]).
void query_content(const GenOptions& o, const KvHead& kh, const QHead& qh, const Content& ct, const float* K,
                   int64_t C, int64_t p, const Rope& rope, Rng& rng, float* out, std::vector<float>& tmp) {
  const int D = o.shape.head_dim, r = o.rank;
  tmp.resize(3 * static_cast<size_t>(D));
  float* g = tmp.data();
  float* u = g + D;
  float* m = u + D;
  // Generic part: the head's projection of the current token's state, whitened and rotated to p.
  std::fill(g, g + D, 0.f);
  const float* e = ct.row(p);
  for (int j = 0; j < r; ++j) {
    const float ej = e[j];
    const float* w = qh.wq.data() + static_cast<size_t>(j) * D;
    for (int c = 0; c < D; ++c) g[c] += w[c] * ej;
  }
  double gn = 0;
  for (int c = 0; c < D; ++c) gn += static_cast<double>(g[c]) * g[c];
  const float ginv = gn > 0 ? static_cast<float>(1.0 / std::sqrt(gn)) : 0.f;
  for (int c = 0; c < D; ++c) g[c] = g[c] * ginv / kh.s[c];
  rope.apply(g, p);
  // Target part: the whitened variation of 1-4 earlier tokens' keys (half recent, half anywhere).
  std::fill(u, u + D, 0.f);
  if (C >= 2) {
    const int nt = 1 + static_cast<int>(rng.below(4));
    for (int k = 0; k < nt; ++k) {
      int64_t j;
      if (rng.uniform() < 0.5) {
        const double back = std::floor(-std::log(1.0 - rng.uniform()) * 16.0);
        j = C - 1 - static_cast<int64_t>(std::min<double>(static_cast<double>(C - 2), back));
      } else {
        j = 1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(C - 1)));
      }
      std::copy(kh.mu.begin(), kh.mu.end(), m);
      rope.apply(m, j);
      const float* kj = K + j * D;
      for (int c = 0; c < D; ++c) u[c] += (kj[c] - m[c]) / kh.s[c];
    }
  }
  double un = 0;
  for (int c = 0; c < D; ++c) un += static_cast<double>(u[c]) * u[c];
  const float uinv = un > 0 ? static_cast<float>(1.0 / std::sqrt(un)) : 0.f;
  const float f = static_cast<float>(qh.focus);
  double dd = 0;
  for (int c = 0; c < D; ++c) {
    out[c] = (f * (u[c] * uinv / kh.s[c]) + (1.f - f) * g[c]) * kh.qw[c];
    dd += static_cast<double>(out[c]) * kh.sink_dir[c];
  }
  for (int c = 0; c < D; ++c) out[c] -= static_cast<float>(dd) * kh.sink_dir[c];
}

/// Mean entropy and mean d(entropy)/d(log tau) of softmax(tau * a_i) over the calibration rows.
void entropy_at(const std::vector<std::vector<double>>& a, double tau, double* H, double* dH) {
  double hs = 0, ds = 0;
  std::vector<double> w;
  for (const auto& row : a) {
    const size_t n = row.size();
    double m = -INFINITY;
    for (double x : row) m = std::max(m, tau * x);
    w.resize(n);
    for (size_t t = 0; t < n; ++t) w[t] = exp_neg(tau * row[t] - m);
    double z = 0, e1 = 0, e2 = 0;
    for (size_t t = 0; t < n; ++t) {
      z += w[t];
      e1 += w[t] * row[t];
      e2 += w[t] * row[t] * row[t];
    }
    e1 /= z;
    e2 /= z;
    hs += std::log(z) + m - tau * e1;
    ds += -tau * tau * std::max(0.0, e2 - e1 * e1);
  }
  const double n = static_cast<double>(a.size());
  *H = hs / n;
  *dH = ds / n;
}

/// Fits tau (safeguarded Newton on log tau) so the mean non-sink entropy equals `target`.
double fit_temperature(const std::vector<std::vector<double>>& a, double target) {
  // tau multiplies a unit-whitened content direction, so logits move by O(tau / sqrt(d)) per unit;
  // peaked heads need tau ~ 10-50. The bracket keeps queries far from float16 overflow.
  double lo = std::log(1e-3), hi = std::log(1e3);
  if (a.front().size() < 2) return 1.0;  // one non-sink token: its entropy is 0 whatever tau is
  double sd = 0;
  for (const auto& row : a) {
    double m1 = 0, m2 = 0;
    for (double x : row) {
      m1 += x;
      m2 += x * x;
    }
    m1 /= static_cast<double>(row.size());
    sd += std::sqrt(std::max(1e-30, m2 / static_cast<double>(row.size()) - m1 * m1));
  }
  sd /= static_cast<double>(a.size());
  const double n = static_cast<double>(a.front().size());
  double lt = std::log(std::sqrt(2.0 * std::max(std::log(n) - target, 0.05)) / std::max(sd, 1e-6));
  lt = std::clamp(lt, lo, hi);
  double H = 0, dH = 0;
  for (int it = 0; it < 60; ++it) {
    entropy_at(a, std::exp(lt), &H, &dH);
    const double gap = H - target;
    if (std::abs(gap) < 1e-3) break;
    if (gap > 0) lo = lt; else hi = lt;  // entropy falls as tau grows
    double next = dH < -1e-12 ? lt - gap / dH : 0.5 * (lo + hi);
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    if (hi - lo < 1e-9) break;
    lt = next;
  }
  return std::exp(lt);
}

struct LayerModel {
  std::vector<KvHead> kv;
  std::vector<QHead> q;
};

LayerModel make_layer(const GenOptions& o, RopeStyle st, int layer) {
  LayerModel m;
  for (int g = 0; g < o.shape.n_kv_heads; ++g) m.kv.push_back(make_kv_head(o, st, layer, g));
  for (int h = 0; h < o.shape.n_heads; ++h) m.q.push_back(make_q_head(o, layer, h));
  return m;
}

double target_entropy(const GenOptions& o, double focus, int64_t C) {
  const double frac = o.entropy_broad + (o.entropy_peaked - o.entropy_broad) * focus;
  return frac * std::log(static_cast<double>(std::max<int64_t>(C - 1, 1)));
}

/// Fits every query head's temperature and sink logit offset on the calibration draw.
void calibrate_layer(const GenOptions& o, int layer, LayerModel& lm, const Content& cal, int64_t C,
                     const Rope& rope) {
  const int D = o.shape.head_dim, G = o.shape.n_kv_heads, gs = o.shape.group();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<float> K(static_cast<size_t>(C) * D), qcs, tmp;
  std::vector<double> logits;
  for (int g = 0; g < G; ++g) {
    gen_keys(o, lm.kv[g], cal, C,
             derive_seed(o.seed, {kTagCalib, kTagKeyNoise, static_cast<uint64_t>(layer), static_cast<uint64_t>(g)}),
             rope, K.data());
    for (int hh = 0; hh < gs; ++hh) {
      const int h = g * gs + hh;
      QHead& qh = lm.q[h];
      if (C < 2) {
        qh.tau = 1;
        continue;
      }
      const int nc = o.calib_queries;
      qcs.resize(static_cast<size_t>(nc) * D);
      for (int i = 0; i < nc; ++i) {
        Rng rng(derive_seed(o.seed, {kTagCalib, kTagQuery, static_cast<uint64_t>(layer), static_cast<uint64_t>(h),
                                     static_cast<uint64_t>(i)}));
        query_content(o, lm.kv[g], qh, cal, K.data(), C, C + i, rope, rng, qcs.data() + static_cast<size_t>(i) * D,
                      tmp);
      }
      logits.resize(static_cast<size_t>(nc) * C);
      exact_logits_batch_f64(K.data(), C, D, qcs.data(), nc, scale, 0.0, logits.data());
      std::vector<std::vector<double>> a(static_cast<size_t>(nc));
      for (int i = 0; i < nc; ++i)  // the non-sink tokens 1..C-1
        a[i].assign(logits.begin() + static_cast<std::ptrdiff_t>(i) * C + 1,
                    logits.begin() + static_cast<std::ptrdiff_t>(i + 1) * C);
      qh.tau = fit_temperature(a, target_entropy(o, qh.focus, C));
    }
  }
}

/// The observation queries of KV head g's query heads at prompt positions C-W..C-1 into obs [n_heads, W, D]
/// (rounded to the file dtype): the decode queries' model at position p over the tokens p attends to (0..p).
/// K: the head's keys before rounding, ks: as stored. Own streams and buffers: nothing else changes.
void gen_obs(const GenOptions& o, uint64_t seq, uint64_t L, const LayerModel& lm, int g, const Content& ct, int64_t C,
             int64_t W, const Rope& rope, const float* K, const float* ks, float* obs) {
  const int D = o.shape.head_dim, gs = o.shape.group();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const KvHead& kh = lm.kv[g];
  const int64_t p0 = C - W;
  std::vector<float> qc(static_cast<size_t>(gs) * W * D), tmp;
  std::vector<double> want(static_cast<size_t>(gs) * W), logits(static_cast<size_t>(gs) * W * C),
      scratch(static_cast<size_t>(C));
  for (int hh = 0; hh < gs; ++hh) {
    const int h = g * gs + hh;
    const QHead& qh = lm.q[h];
    const double base_logit = std::log(qh.sink_share / (1.0 - qh.sink_share));
    for (int64_t i = 0; i < W; ++i) {
      const int64_t p = p0 + i;
      Rng rng(derive_seed(o.seed, {kTagObsQuery, seq, L, static_cast<uint64_t>(h), static_cast<uint64_t>(p)}));
      float* q = qc.data() + (static_cast<size_t>(hh) * W + i) * D;
      query_content(o, kh, qh, ct, K, p + 1, p, rope, rng, q, tmp);  // targets among the visible 1..p
      for (int c = 0; c < D; ++c) q[c] = static_cast<float>(q[c] * qh.tau);
      want[static_cast<size_t>(hh) * W + i] = base_logit + o.sink_share_jitter * rng.normal();
    }
  }
  // Logits over all C keys; query i uses the causal prefix 0..p of its row.
  exact_logits_batch_f64(ks, C, D, qc.data(), gs * W, scale, 0.0, logits.data());
  double b0 = 0;
  for (int c = 0; c < D; ++c) b0 += static_cast<double>(kh.sink_dir[c]) * ks[c];
  b0 *= scale;
  for (int hh = 0; hh < gs; ++hh)
    for (int64_t i = 0; i < W; ++i) {
      const int64_t row = static_cast<int64_t>(hh) * W + i, p = p0 + i;
      const double* a = logits.data() + row * C;
      // p = 0 sees only the sink (its share is 1 whatever beta is): beta as if the others summed to 1.
      const double lse = p >= 1 ? log_sum_exp(a + 1, p, scratch.data()) : 0.0;
      const double beta = (want[static_cast<size_t>(row)] + lse - a[0]) / b0;
      const float* q = qc.data() + row * D;
      float* qs = obs + (static_cast<size_t>(g * gs + hh) * W + i) * D;
      for (int c = 0; c < D; ++c) qs[c] = round_to(o.dtype, static_cast<float>(q[c] + beta * kh.sink_dir[c]));
    }
}

/// One layer of one sequence: keys, values, queries (rounded to the file dtype), ref_out and the W observation
/// queries.
void gen_layer(const GenOptions& o, uint64_t seq, int layer, const LayerModel& lm, const Content& ct, int64_t T,
               int64_t C, int64_t Q, int64_t W, const Rope& rope, SequenceData::Layer& out) {
  const int D = o.shape.head_dim, G = o.shape.n_kv_heads, H = o.shape.n_heads, gs = o.shape.group();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const size_t head_kv = static_cast<size_t>(T) * D, head_q = static_cast<size_t>(Q) * D;
  out.keys.resize(G * head_kv);
  out.values.resize(G * head_kv);
  out.queries.resize(H * head_q);
  out.ref_out.assign(o.write_ref_out ? H * head_q : 0, 0.f);
  out.obs_queries.assign(static_cast<size_t>(H) * W * D, 0.f);
  out.sliding_window = 0;
  std::vector<float> K(head_kv), qc(gs * head_q), tmp;
  std::vector<double> o64(gs * head_q), logits(static_cast<size_t>(gs) * Q * C), want(static_cast<size_t>(gs) * Q),
      scratch(static_cast<size_t>(C));
  const uint64_t L = static_cast<uint64_t>(layer);
  for (int g = 0; g < G; ++g) {
    const KvHead& kh = lm.kv[g];
    gen_keys(o, kh, ct, T, derive_seed(o.seed, {kTagKeyNoise, seq, L, static_cast<uint64_t>(g)}), rope, K.data());
    float* ks = out.keys.data() + g * head_kv;
    float* vs = out.values.data() + g * head_kv;
    for (size_t i = 0; i < head_kv; ++i) ks[i] = round_to(o.dtype, K[i]);
    gen_values(o, kh, ct, T, derive_seed(o.seed, {kTagValNoise, seq, L, static_cast<uint64_t>(g)}), vs);
    for (size_t i = 0; i < head_kv; ++i) vs[i] = round_to(o.dtype, vs[i]);
    // Each query = tau * content + beta * sink_dir, with beta chosen so that the sink's logit is
    // logit(share) + log-sum-exp of the query's other logits: the sink then draws the head's share
    // (jittered per query) of the attention. The content is orthogonal to sink_dir, and the other
    // tokens' keys have no extra component along it, so beta barely moves their logits.
    for (int hh = 0; hh < gs; ++hh) {
      const int h = g * gs + hh;
      const QHead& qh = lm.q[h];
      const double base_logit = std::log(qh.sink_share / (1.0 - qh.sink_share));
      for (int64_t i = 0; i < Q; ++i) {
        Rng rng(derive_seed(o.seed, {kTagQuery, seq, L, static_cast<uint64_t>(h), static_cast<uint64_t>(i)}));
        float* q = qc.data() + (static_cast<size_t>(hh) * Q + i) * D;
        query_content(o, kh, qh, ct, K.data(), C, C + i, rope, rng, q, tmp);
        for (int c = 0; c < D; ++c) q[c] = static_cast<float>(q[c] * qh.tau);
        want[static_cast<size_t>(hh) * Q + i] = base_logit + o.sink_share_jitter * rng.normal();
      }
    }
    exact_logits_batch_f64(ks, C, D, qc.data(), gs * Q, scale, 0.0, logits.data());
    double b0 = 0;  // the sink's logit per unit of sink_dir
    for (int c = 0; c < D; ++c) b0 += static_cast<double>(kh.sink_dir[c]) * ks[c];
    b0 *= scale;
    for (int64_t row = 0; row < gs * Q; ++row) {
      const double* a = logits.data() + row * C;
      const double lse = log_sum_exp(a + 1, C - 1, scratch.data());
      const double beta = (want[static_cast<size_t>(row)] + lse - a[0]) / b0;
      const float* q = qc.data() + row * D;
      float* qs = out.queries.data() + (static_cast<size_t>(g) * gs * Q + row) * D;
      for (int c = 0; c < D; ++c) qs[c] = round_to(o.dtype, static_cast<float>(q[c] + beta * kh.sink_dir[c]));
    }
    if (o.write_ref_out) {
      exact_attention_batch_f64(ks, vs, C, D, out.queries.data() + static_cast<size_t>(g) * gs * head_q, gs * Q, scale,
                                0.0, o64.data(), nullptr);
      float* ro = out.ref_out.data() + static_cast<size_t>(g) * gs * head_q;
      for (size_t i = 0; i < o64.size(); ++i) ro[i] = static_cast<float>(o64[i]);
    }
    if (W > 0) gen_obs(o, seq, L, lm, g, ct, C, W, rope, K.data(), ks, out.obs_queries.data());
  }
}

void check(bool ok, const std::string& msg) {
  if (!ok) throw UsageError(msg);
}

}  // namespace

void apply_rope(float* x, int head_dim, int64_t pos, const std::string& style, double theta) {
  kernels::rope::apply(x, head_dim, pos, parse_rope(style), theta);
}

std::vector<std::string> gen_presets() {
  return {"tiny", "llama2-7b", "llama3-8b", "mistral-7b", "qwen2-7b", "gpt2"};
}

GenOptions gen_preset(const std::string& name) {
  GenOptions o;
  o.model_like = name;
  o.sequences = 2;
  o.tokens = 4096 + 64;
  o.queries = 64;
  auto shape = [&](int l, int h, int g, int d) { o.shape = ModelShape{l, h, g, d}; };
  if (name == "tiny") {
    shape(2, 4, 2, 64);
    o.tokens = 512 + 16;
    o.queries = 16;
  } else if (name == "llama2-7b") {
    shape(32, 32, 32, 128);
    o.rope_theta = 10000;
  } else if (name == "llama3-8b") {
    shape(32, 32, 8, 128);
    o.rope_theta = 500000;
    o.dtype = DType::kBFloat16;
  } else if (name == "mistral-7b") {
    shape(32, 32, 8, 128);
    o.rope_theta = 1000000;
    o.dtype = DType::kBFloat16;
  } else if (name == "qwen2-7b") {
    shape(28, 28, 4, 128);
    o.rope_theta = 1000000;
    o.dtype = DType::kBFloat16;
  } else if (name == "gpt2") {
    shape(12, 12, 12, 64);
    o.rope_style = "none";
    o.tokens = 1024;
    o.queries = 32;
  } else {
    std::string list;
    for (const auto& p : gen_presets()) list += (list.empty() ? "" : ", ") + p;
    throw UsageError(fmt::format("--model-like: unknown preset '{}' (available: {})", name, list));
  }
  o.rope_style = name == "gpt2" ? "none" : "half";
  return o;
}

void validate_gen_options(const GenOptions& o) {
  const ModelShape& s = o.shape;
  check(s.n_layers >= 1 && s.n_layers <= 1000, fmt::format("--layers: expected 1..1000, got {}", s.n_layers));
  check(s.n_heads >= 1 && s.n_heads <= 1024, fmt::format("--heads: expected 1..1024, got {}", s.n_heads));
  check(s.n_kv_heads >= 1 && s.n_kv_heads <= s.n_heads && s.n_heads % s.n_kv_heads == 0,
        fmt::format("--kv-heads: expected a divisor of --heads ({}), got {}", s.n_heads, s.n_kv_heads));
  check(s.head_dim >= 4 && s.head_dim <= 1024 && s.head_dim % 2 == 0,
        fmt::format("--head-dim: the generator needs an even head_dim in [4, 1024] (RoPE pairs), got {}", s.head_dim));
  check(o.queries >= 1, fmt::format("--queries: expected >= 1, got {}", o.queries));
  check(o.tokens >= o.queries + 2,
        fmt::format("--tokens: expected >= --queries + 2 (a context of >= 2 tokens), got {} with {} queries", o.tokens,
                    o.queries));
  check(o.tokens <= (int64_t(1) << 20), fmt::format("--tokens: expected <= 1048576, got {}", o.tokens));
  check(o.sequences >= 1 && o.sequences <= 100000, fmt::format("--sequences: expected >= 1, got {}", o.sequences));
  parse_rope(o.rope_style);
  check(std::isfinite(o.rope_theta) && o.rope_theta > 1, fmt::format("--rope-theta: expected > 1, got {}", o.rope_theta));
  check(o.outlier_channels >= 0 && o.outlier_channels <= s.head_dim,
        fmt::format("--outlier-channels: expected 0..head_dim = {}, got {}", s.head_dim, o.outlier_channels));
  check(o.outlier_scale_min >= 1 && o.outlier_scale_min <= o.outlier_scale_max && o.outlier_scale_max <= 1000,
        fmt::format("--outlier-scale-min/max: expected 1 <= min <= max <= 1000, got {} and {}", o.outlier_scale_min,
                    o.outlier_scale_max));
  check(o.channel_mean >= 0 && o.channel_mean <= 3, fmt::format("--channel-mean: expected 0..3, got {}", o.channel_mean));
  check(o.sink_share_min > 0 && o.sink_share_min <= o.sink_share_max && o.sink_share_max < 1,
        fmt::format("--sink-share-min/max: expected 0 < min <= max < 1, got {} and {}", o.sink_share_min,
                    o.sink_share_max));
  check(o.sink_share_jitter >= 0 && o.sink_share_jitter <= 3,
        fmt::format("--sink-share-jitter: expected 0..3, got {}", o.sink_share_jitter));
  check(o.sink_key_scale >= 1.5 && o.sink_key_scale <= 100,
        fmt::format("--sink-key-scale: expected 1.5..100, got {}", o.sink_key_scale));
  check(o.sink_content >= 0 && o.sink_content <= 1,
        fmt::format("--sink-content: expected 0..1, got {}", o.sink_content));
  check(o.key_scale_tilt >= 0 && o.key_scale_tilt <= 5,
        fmt::format("--key-scale-tilt: expected 0..5, got {}", o.key_scale_tilt));
  check(o.sink_value_scale >= 0 && o.sink_value_scale <= 10,
        fmt::format("--sink-value-scale: expected 0..10, got {}", o.sink_value_scale));
  check(o.focus_min >= 0 && o.focus_min <= o.focus_max && o.focus_max <= 1,
        fmt::format("--focus-min/max: expected 0 <= min <= max <= 1, got {} and {}", o.focus_min, o.focus_max));
  check(o.entropy_broad > 0 && o.entropy_broad <= 1 && o.entropy_peaked > 0 && o.entropy_peaked <= 1,
        fmt::format("--entropy-broad/peaked: expected fractions of ln(C) in (0, 1], got {} and {}", o.entropy_broad,
                    o.entropy_peaked));
  check(o.value_scale_spread >= 0 && o.value_scale_spread <= 3,
        fmt::format("--value-scale-spread: expected 0..3, got {}", o.value_scale_spread));
  check(o.rank >= 1 && o.rank <= 1024, fmt::format("--rank: expected 1..1024, got {}", o.rank));
  check(o.key_noise >= 0 && o.key_noise < 1, fmt::format("--key-noise: expected [0, 1), got {}", o.key_noise));
  check(o.value_noise >= 0 && o.value_noise < 1, fmt::format("--value-noise: expected [0, 1), got {}", o.value_noise));
  check(o.topic_persistence >= 0 && o.topic_persistence < 1,
        fmt::format("--topic-persistence: expected [0, 1), got {}", o.topic_persistence));
  check(o.copy_prob >= 0 && o.copy_prob <= 1, fmt::format("--copy-prob: expected 0..1, got {}", o.copy_prob));
  check(o.calib_queries >= 1 && o.calib_queries <= 1024,
        fmt::format("--calib-queries: expected 1..1024, got {}", o.calib_queries));
  check(o.obs_window >= 0, fmt::format("--obs-window: expected >= 0 (0 = none), got {}", o.obs_window));
  check(o.chunk_tokens >= 0, fmt::format("--chunk-tokens: expected >= 0, got {}", o.chunk_tokens));
  check(o.deflate >= 0 && o.deflate <= 9, fmt::format("--deflate: expected 0..9, got {}", o.deflate));
}

namespace {

DumpAttrs gen_attrs(const GenOptions& o) {
  DumpAttrs attrs;
  attrs.model = "synthetic:" + o.model_like;
  attrs.model_revision = fmt::format("kvbench-gen/1 seed={}", o.seed);
  attrs.source = std::string("kvbench gen ") + KVB_VERSION;
  attrs.shape = o.shape;
  attrs.rope_applied = parse_rope(o.rope_style) == RopeStyle::kNone ? 0 : 1;
  attrs.rope_style = o.rope_style;
  attrs.rope_theta = o.rope_theta;
  attrs.qk_norm = 0;
  attrs.softmax_scale = 1.0 / std::sqrt(static_cast<double>(o.shape.head_dim));
  attrs.attn_softcap = 0;
  attrs.orig_dtype = to_string(o.dtype);
  attrs.seed = static_cast<int64_t>(o.seed);
  return attrs;
}

/// Generates every sequence into `sink` (begin_sequence, write_layer per layer, end_sequence: KvDumpWriter's
/// streaming interface), one layer at a time.
template <class Sink>
void generate_into(const GenOptions& o, Sink& sink, ProgressLine* progress = nullptr) {
  validate_gen_options(o);
  const RopeStyle st = parse_rope(o.rope_style);
  const int64_t T = o.tokens, Q = o.queries, C = T - Q, W = std::min(o.obs_window, C);
  const int D = o.shape.head_dim;
  const Rope rope(st, D, o.rope_theta, std::max<int64_t>(T, C + o.calib_queries));
  const Content cal = make_content(o, kCalibSequence, C + o.calib_queries);
  // Per-layer calibration (tau per query head) is fitted once, on the calibration draw, and reused by
  // every sequence: like weights, it does not depend on the evaluated sequences.
  std::vector<std::vector<double>> calib(static_cast<size_t>(o.shape.n_layers));
  SequenceData::Layer layer;
  for (int s = 0; s < o.sequences; ++s) {
    const Content ct = make_content(o, static_cast<uint64_t>(s), T);
    SequenceData header;
    header.id = fmt::format("s{}", s);
    header.n_tokens = T;
    header.context_len = C;
    header.tokens = ct.tokens;
    for (int64_t i = 0; i < Q; ++i) header.query_positions.push_back(C + i);
    for (int64_t p = C - W; p < C; ++p) header.obs_positions.push_back(p);
    sink.begin_sequence(header);
    for (int l = 0; l < o.shape.n_layers; ++l) {
      LayerModel lm = make_layer(o, st, l);
      auto& cl = calib[static_cast<size_t>(l)];
      if (cl.empty()) {
        calibrate_layer(o, l, lm, cal, C, rope);
        for (const auto& q : lm.q) cl.push_back(q.tau);
      } else {
        for (size_t h = 0; h < lm.q.size(); ++h) lm.q[h].tau = cl[h];
      }
      gen_layer(o, static_cast<uint64_t>(s), l, lm, ct, T, C, Q, W, rope, layer);
      sink.write_layer(l, layer);
      if (progress) progress->step(fmt::format("sequence {} layer {} written", header.id, l));
    }
    sink.end_sequence();
  }
}

/// Collects the sequences in memory (generate_sequences).
struct MemorySink {
  std::vector<SequenceData> seqs;
  void begin_sequence(const SequenceData& h) { seqs.push_back(h); }
  void write_layer(int /*layer*/, const SequenceData::Layer& l) { seqs.back().layers.push_back(l); }
  void end_sequence() {}
};

}  // namespace

void generate_dump(const std::string& path, const GenOptions& o) {
  validate_gen_options(o);
  WriterOptions wo;
  wo.dtype = o.dtype;
  wo.chunk_tokens = o.chunk_tokens;
  wo.deflate = o.deflate;
  KvDumpWriter writer(path, gen_attrs(o), wo);
  ProgressLine progress(progress_allowed(), static_cast<int64_t>(o.sequences) * o.shape.n_layers);
  generate_into(o, writer, &progress);
  progress.finish();
  writer.close();
}

std::vector<SequenceData> generate_sequences(const GenOptions& o) {
  MemorySink sink;
  generate_into(o, sink);
  return std::move(sink.seqs);
}

}  // namespace kvb
