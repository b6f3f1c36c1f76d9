/// KV-CAR-proxy training (docs/codecs.md §10.6): the autoencoder's forward and backward passes (Linear,
/// BatchNorm with batch statistics and running averages, LeakyReLU), Adam, the reuse ranking and the
/// per-layer fit. Shared by the cpu and ref codecs: the fit is the codec's training procedure,
/// not its inference path, and both must run the same trained model for cpu-vs-ref to compare inference.
// NOTE(kvcar): Eigen's own OpenMP GEMM threading is off in kvcar's files: kvcar parallelizes at a coarser
// grain (K and V trainings side by side, the runner's queries), and small per-block products are slower
// threaded than serial on a shared 2-core machine.
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

#include <fmt/format.h>

#include "codecs/kvcar/kvcar_codec.h"
#include "kvb/core/error.h"
#include "kvb/core/progress.h"
#include "kvb/core/rng.h"

namespace kvb::codecs {
namespace {

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;

constexpr double kBnEps = 1e-5;
constexpr double kBnMomentum = 0.1;

/// The trainable autoencoder in precision T (float to train, double for the gradient check).
template <class T>
struct Net {
  int D = 0, h = 0, dl = 0;
  T slope = T(0.01);
  Mat<T> w1, w2, w3, w4;            // [h,D] [dl,h] [h,dl] [D,h]
  Row<T> g1, b1, c2, g3, b3, c4;    // [h] [h] [dl] [h] [h] [D]
  Row<T> rm1, rv1, rm3, rv3;        // BN running statistics (not trained)

  void init(Rng& rng) {
    auto uni = [&](Mat<T>& w, int rows, int cols) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(cols));  // PyTorch Linear: U(±1/√fan_in)
      w.resize(rows, cols);
      for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<T>((2 * rng.uniform() - 1) * bound);
    };
    uni(w1, h, D);
    uni(w2, dl, h);
    uni(w3, h, dl);
    uni(w4, D, h);
    g1 = Row<T>::Ones(h), b1 = Row<T>::Zero(h), g3 = Row<T>::Ones(h), b3 = Row<T>::Zero(h);
    c2 = Row<T>::Zero(dl), c4 = Row<T>::Zero(D);
    rm1 = Row<T>::Zero(h), rv1 = Row<T>::Ones(h), rm3 = Row<T>::Zero(h), rv3 = Row<T>::Ones(h);
  }
  /// Every trainable tensor as (data, size), in a fixed order (Adam state and gradients follow it).
  std::vector<std::pair<T*, Eigen::Index>> tensors() {
    return {{w1.data(), w1.size()}, {g1.data(), g1.size()}, {b1.data(), b1.size()}, {w2.data(), w2.size()},
            {c2.data(), c2.size()}, {w3.data(), w3.size()}, {g3.data(), g3.size()}, {b3.data(), b3.size()},
            {w4.data(), w4.size()}, {c4.data(), c4.size()}};
  }
};

template <class T>
struct Grads {
  Mat<T> w1, w2, w3, w4;
  Row<T> g1, b1, c2, g3, b3, c4;
  std::vector<std::pair<T*, Eigen::Index>> tensors() {
    return {{w1.data(), w1.size()}, {g1.data(), g1.size()}, {b1.data(), b1.size()}, {w2.data(), w2.size()},
            {c2.data(), c2.size()}, {w3.data(), w3.size()}, {g3.data(), g3.size()}, {b3.data(), b3.size()},
            {w4.data(), w4.size()}, {c4.data(), c4.size()}};
  }
};

/// Activations of one training-mode forward pass (batch statistics).
template <class T>
struct Cache {
  Mat<T> x, xh1, y1, h1, z, xh3, y3, h3, out, dout;
  Row<T> m1, v1, is1, m3, v3, is3;
};

template <class T>
void bn_forward(const Mat<T>& a, const Row<T>& g, const Row<T>& b, Mat<T>& xh, Mat<T>& y, Row<T>& m, Row<T>& v,
                Row<T>& istd) {
  m = a.colwise().mean();
  Mat<T> c = a.rowwise() - m;
  v = c.array().square().colwise().mean();
  istd = (v.array() + T(kBnEps)).rsqrt();
  xh = (c.array().rowwise() * istd.array()).matrix();
  y = ((xh.array().rowwise() * g.array()).rowwise() + b.array()).matrix();
}

template <class T>
Mat<T> leaky(const Mat<T>& y, T s) {
  return y.unaryExpr([s](T a) { return a > T(0) ? a : s * a; });
}

/// Training-mode forward; returns the loss (mean over B·D elements, channel j weighted by lw[j]) and leaves
/// dL/dout in c.dout.
template <class T>
double forward(const Net<T>& n, const Mat<T>& x, const Row<T>& lw, KvcarLoss loss, Cache<T>& c) {
  c.x = x;
  Mat<T> a1 = x * n.w1.transpose();
  bn_forward(a1, n.g1, n.b1, c.xh1, c.y1, c.m1, c.v1, c.is1);
  c.h1 = leaky(c.y1, n.slope);
  c.z = (c.h1 * n.w2.transpose()).rowwise() + n.c2;
  Mat<T> a3 = c.z * n.w3.transpose();
  bn_forward(a3, n.g3, n.b3, c.xh3, c.y3, c.m3, c.v3, c.is3);
  c.h3 = leaky(c.y3, n.slope);
  c.out = (c.h3 * n.w4.transpose()).rowwise() + n.c4;
  const Mat<T> diff = c.out - x;
  const T inv = T(1) / static_cast<T>(diff.size());
  if (loss == KvcarLoss::kMse) {
    c.dout = ((diff.array().rowwise() * lw.array()) * (T(2) * inv)).matrix();
    return static_cast<double>((diff.array().square().rowwise() * lw.array()).sum()) * static_cast<double>(inv);
  }
  c.dout = (diff.unaryExpr([inv](T a) { return a > T(0) ? inv : (a < T(0) ? -inv : T(0)); }).array().rowwise() *
            lw.array())
               .matrix();
  return static_cast<double>((diff.array().abs().rowwise() * lw.array()).sum()) * static_cast<double>(inv);
}

/// dL/da of a training-mode BatchNorm y = g·(a − m)·istd + b, given dL/dy; also dL/dg, dL/db.
template <class T>
Mat<T> bn_backward(const Mat<T>& dy, const Mat<T>& xh, const Row<T>& g, const Row<T>& istd, Row<T>& dg, Row<T>& db) {
  dg = (dy.array() * xh.array()).colwise().sum();
  db = dy.colwise().sum();
  const Mat<T> dxh = (dy.array().rowwise() * g.array()).matrix();
  const Row<T> mean_dxh = dxh.colwise().mean();
  const Row<T> mean_dxh_xh = (dxh.array() * xh.array()).colwise().mean();
  Mat<T> da = dxh.rowwise() - mean_dxh;
  da.array() -= xh.array().rowwise() * mean_dxh_xh.array();
  da.array().rowwise() *= istd.array();
  return da;
}

template <class T>
Mat<T> leaky_grad(const Mat<T>& dh, const Mat<T>& y, T s) {
  return dh.binaryExpr(y, [s](T g, T a) { return a > T(0) ? g : s * g; });
}

template <class T>
void backward(const Net<T>& n, const Cache<T>& c, Grads<T>& g) {
  g.w4 = c.dout.transpose() * c.h3;
  g.c4 = c.dout.colwise().sum();
  const Mat<T> dy3 = leaky_grad<T>(c.dout * n.w4, c.y3, n.slope);
  const Mat<T> da3 = bn_backward(dy3, c.xh3, n.g3, c.is3, g.g3, g.b3);
  g.w3 = da3.transpose() * c.z;
  const Mat<T> dz = da3 * n.w3;
  g.w2 = dz.transpose() * c.h1;
  g.c2 = dz.colwise().sum();
  const Mat<T> dy1 = leaky_grad<T>(dz * n.w2, c.y1, n.slope);
  const Mat<T> da1 = bn_backward(dy1, c.xh1, n.g1, c.is1, g.g1, g.b1);
  g.w1 = da1.transpose() * c.x;
}

template <class T>
void update_running(Net<T>& n, const Cache<T>& c, Eigen::Index B) {
  const T unbias = B > 1 ? static_cast<T>(B) / static_cast<T>(B - 1) : T(1);
  const T mom = T(kBnMomentum);
  n.rm1 = (T(1) - mom) * n.rm1 + mom * c.m1;
  n.rv1 = (T(1) - mom) * n.rv1 + (mom * unbias) * c.v1;
  n.rm3 = (T(1) - mom) * n.rm3 + mom * c.m3;
  n.rv3 = (T(1) - mom) * n.rv3 + (mom * unbias) * c.v3;
}

template <class T>
std::vector<double> to_d(const T* p, Eigen::Index n) {
  return std::vector<double>(p, p + n);
}

}  // namespace

AeWeights kvcar_train_ae(const float* X, int64_t n, int D, int h, int dl, const KvcarParams& p, uint64_t seed,
                         TrainLog* log, const std::string& tag) {
  KVB_CHECK(n >= 1 && D >= 1 && h >= 1 && dl >= 1, RuntimeError, "kvcar: empty training set (n={}, D={})", n, D);
  const auto t0 = std::chrono::steady_clock::now();
  AeWeights w;
  w.D = D, w.h = h, w.dl = dl, w.slope = p.leaky_slope, w.eps = kBnEps;
  // Per-channel standardization from the calibration rows (float64 sums).
  w.mu.assign(D, 0.0);
  w.sigma.assign(D, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < D; ++j) w.mu[j] += X[i * D + j];
  for (int j = 0; j < D; ++j) w.mu[j] /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < D; ++j) w.sigma[j] += (X[i * D + j] - w.mu[j]) * (X[i * D + j] - w.mu[j]);
  for (int j = 0; j < D; ++j) {
    const double s = std::sqrt(w.sigma[j] / static_cast<double>(n));
    w.sigma[j] = s > 1e-12 ? s : 1.0;  // a constant channel: reconstructed as its mean
  }
  Mat<float> xn(n, D);
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < D; ++j) xn(i, j) = static_cast<float>((X[i * D + j] - w.mu[j]) / w.sigma[j]);

  // NOTE(kvcar): the loss weighs standardized channel j by σ_j² / mean(σ²) (MSE; σ_j / mean(σ) for L1), so
  // the objective is the raw-space reconstruction error: attention reads raw keys and values, where the
  // high-variance channels carry the logit spread. Standardizing only conditions the optimization.
  Row<float> lw(D);
  {
    double mean = 0;
    for (int j = 0; j < D; ++j) mean += p.loss == KvcarLoss::kMse ? w.sigma[j] * w.sigma[j] : w.sigma[j];
    mean /= D;
    for (int j = 0; j < D; ++j)
      lw[j] = static_cast<float>((p.loss == KvcarLoss::kMse ? w.sigma[j] * w.sigma[j] : w.sigma[j]) / mean);
  }
  Rng rng(seed);
  Net<float> net;
  net.D = D, net.h = h, net.dl = dl, net.slope = static_cast<float>(p.leaky_slope);
  net.init(rng);
  auto params = net.tensors();
  std::vector<std::vector<float>> m1(params.size()), m2(params.size());
  for (size_t i = 0; i < params.size(); ++i) m1[i].assign(params[i].second, 0.f), m2[i].assign(params[i].second, 0.f);
  const double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  int step = 0;

  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  const int64_t nb = std::max<int64_t>(1, (n + p.batch - 1) / p.batch);  // near-equal batches, none of size 1
  const int64_t total_steps = nb * p.epochs;
  Cache<float> cache;
  Grads<float> grads;
  Mat<float> xb;
  TrainLog lg;
  // On a terminal (and without -q) the epochs show on the progress line instead of the loss line below.
  ProgressLine progress(!tag.empty() && progress_allowed(), p.epochs);
  for (int ep = 0; ep < p.epochs; ++ep) {
    for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(static_cast<uint64_t>(i + 1))]);
    double sum = 0;
    int64_t off = 0;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t B = n / nb + (b < n % nb ? 1 : 0);
      xb.resize(B, D);
      for (int64_t r = 0; r < B; ++r) xb.row(r) = xn.row(perm[off + r]);
      off += B;
      sum += forward(net, xb, lw, p.loss, cache) * static_cast<double>(B);
      backward(net, cache, grads);
      update_running(net, cache, B);
      ++step;
      const double bc1 = 1 - std::pow(beta1, step), bc2 = 1 - std::pow(beta2, step);
      // Cosine decay from lr to lr/10 over the run: late steps settle instead of bouncing (outlier-heavy
      // keys made the constant-rate loss oscillate by ~10%).
      const double frac = static_cast<double>(step - 1) / static_cast<double>(std::max<int64_t>(1, total_steps - 1));
      const double lr_sched = p.lr * (0.1 + 0.45 * (1 + std::cos(3.141592653589793 * frac)));
      const float lr_t = static_cast<float>(lr_sched * std::sqrt(bc2) / bc1);
      auto gs = grads.tensors();
      for (size_t t = 0; t < params.size(); ++t) {
        float* P = params[t].first;
        const float* G = gs[t].first;
        float* M = m1[t].data();
        float* V = m2[t].data();
        for (Eigen::Index i = 0; i < params[t].second; ++i) {
          M[i] = static_cast<float>(beta1) * M[i] + static_cast<float>(1 - beta1) * G[i];
          V[i] = static_cast<float>(beta2) * V[i] + static_cast<float>(1 - beta2) * G[i] * G[i];
          P[i] -= lr_t * M[i] / (std::sqrt(V[i]) + static_cast<float>(adam_eps));
        }
      }
    }
    lg.loss.push_back(sum / static_cast<double>(n));
    progress.step(fmt::format("kvcar {} training: epoch loss {:.4g}", tag, lg.loss.back()));
  }
  progress.finish();
  lg.steps = step;
  lg.tokens = n;
  lg.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!tag.empty() && !progress.enabled()) {
    std::string losses;
    for (double l : lg.loss) losses += fmt::format(" {:.4g}", l);
    std::fprintf(stderr, "kvcar %s (D=%d h=%d d_lat=%d, %lld tokens, %d steps): loss/epoch%s (%.2f s)\n", tag.c_str(), D,
                 h, dl, static_cast<long long>(n), step, losses.c_str(), lg.seconds);
  }
  if (log) *log = lg;

  w.w1 = to_d(net.w1.data(), net.w1.size());
  w.g1 = to_d(net.g1.data(), h), w.b1 = to_d(net.b1.data(), h);
  w.rm1 = to_d(net.rm1.data(), h), w.rv1 = to_d(net.rv1.data(), h);
  w.w2 = to_d(net.w2.data(), net.w2.size()), w.c2 = to_d(net.c2.data(), dl);
  w.w3 = to_d(net.w3.data(), net.w3.size());
  w.g3 = to_d(net.g3.data(), h), w.b3 = to_d(net.b3.data(), h);
  w.rm3 = to_d(net.rm3.data(), h), w.rv3 = to_d(net.rv3.data(), h);
  w.w4 = to_d(net.w4.data(), net.w4.size()), w.c4 = to_d(net.c4.data(), D);
  return w;
}

double kvcar_gradient_check(int D, int h, int dl, int B, KvcarLoss loss, uint64_t seed) {
  Rng rng(seed);
  Net<double> net;
  net.D = D, net.h = h, net.dl = dl, net.slope = 0.1;
  net.init(rng);
  // Non-trivial BN affine parameters and biases, so their gradients are exercised too.
  for (auto& [ptr, size] : net.tensors())
    for (Eigen::Index i = 0; i < size; ++i) ptr[i] += 0.3 * (2 * rng.uniform() - 1);
  Mat<double> x(B, D);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = rng.normal();
  Row<double> lw(D);
  for (int j = 0; j < D; ++j) lw[j] = 0.5 + rng.uniform();  // channel loss weights (as σ²/mean σ²)
  Cache<double> c;
  Grads<double> g;
  forward(net, x, lw, loss, c);
  backward(net, c, g);
  auto ps = net.tensors();
  auto gs = g.tensors();
  double worst = 0;
  const double step = 1e-6;
  for (size_t t = 0; t < ps.size(); ++t) {
    const Eigen::Index n = ps[t].second;
    for (int k = 0; k < std::min<Eigen::Index>(n, 24); ++k) {
      const Eigen::Index i = static_cast<Eigen::Index>(rng.below(static_cast<uint64_t>(n)));
      double* v = ps[t].first + i;
      const double keep = *v;
      *v = keep + step;
      const double lp = forward(net, x, lw, loss, c);
      *v = keep - step;
      const double lm = forward(net, x, lw, loss, c);
      *v = keep;
      const double num = (lp - lm) / (2 * step);
      const double ana = gs[t].first[i];
      // Floor 1e-3 on the denominator: a gradient entry that is ~0 is compared with the difference
      // quotient's rounding noise (~1e-16/step = 1e-10) in absolute terms.
      worst = std::max(worst, std::fabs(num - ana) / std::max(std::fabs(num) + std::fabs(ana), 1e-3));
    }
  }
  return worst;
}

double kvcar_eval_loss(const AeWeights& w, const float* X, int64_t n, KvcarLoss loss) {
  // Inference mode: BatchNorm with the running statistics.
  double sum = 0;
  std::vector<double> x(w.D), a(w.h), z(w.dl), o(w.D);
  auto leak = [&](double y) { return y > 0 ? y : w.slope * y; };
  for (int64_t t = 0; t < n; ++t) {
    for (int j = 0; j < w.D; ++j) x[j] = (X[t * w.D + j] - w.mu[j]) / w.sigma[j];
    for (int i = 0; i < w.h; ++i) {
      double s = 0;
      for (int j = 0; j < w.D; ++j) s += w.w1[static_cast<size_t>(i) * w.D + j] * x[j];
      a[i] = leak(w.g1[i] * (s - w.rm1[i]) / std::sqrt(w.rv1[i] + w.eps) + w.b1[i]);
    }
    for (int k = 0; k < w.dl; ++k) {
      double s = w.c2[k];
      for (int i = 0; i < w.h; ++i) s += w.w2[static_cast<size_t>(k) * w.h + i] * a[i];
      z[k] = s;
    }
    for (int i = 0; i < w.h; ++i) {
      double s = 0;
      for (int k = 0; k < w.dl; ++k) s += w.w3[static_cast<size_t>(i) * w.dl + k] * z[k];
      a[i] = leak(w.g3[i] * (s - w.rm3[i]) / std::sqrt(w.rv3[i] + w.eps) + w.b3[i]);
    }
    for (int j = 0; j < w.D; ++j) {
      double s = w.c4[j];
      for (int i = 0; i < w.h; ++i) s += w.w4[static_cast<size_t>(j) * w.h + i] * a[i];
      const double e = s - x[j];  // standardized-space error (unweighted)
      sum += loss == KvcarLoss::kMse ? e * e : std::fabs(e);
    }
  }
  return sum / (static_cast<double>(n) * w.D);
}

// ---- the per-layer fit ----------------------------------------------------------------------------------

namespace {

/// Rows [n, n_stored·d] of the stored heads' K (or V), concatenated per token, from every calibration cache,
/// evenly strided down to at most max_tokens rows.
std::vector<float> gather_rows(const std::vector<const LayerKV*>& calib, const std::vector<int>& stored, bool keys,
                               int64_t max_tokens, int64_t* n_out) {
  int64_t total = 0;
  for (const LayerKV* kv : calib) total += kv->tokens;
  const int64_t n = std::min(total, max_tokens);
  const int d = calib[0]->head_dim;
  const int Ds = static_cast<int>(stored.size()) * d;
  std::vector<float> X(static_cast<size_t>(n) * Ds);
  for (int64_t r = 0; r < n; ++r) {
    int64_t t = n == total ? r : (r * total) / n;  // r < 2^30, total < 2^33: no overflow
    size_t s = 0;
    while (t >= calib[s]->tokens) t -= calib[s++]->tokens;
    for (size_t i = 0; i < stored.size(); ++i) {
      const float* src = (keys ? calib[s]->k_head(stored[i]) : calib[s]->v_head(stored[i])) + t * d;
      std::copy(src, src + d, X.data() + static_cast<size_t>(r) * Ds + i * d);
    }
  }
  *n_out = n;
  return X;
}

}  // namespace

std::shared_ptr<const KvcarLayerModel> kvcar_fit_layer(const KvcarParams& p, int layer,
                                                       const std::vector<const LayerKV*>& calib,
                                                       const std::vector<LayerKV>& prev_calib, uint64_t seed) {
  KVB_CHECK(!calib.empty(), RuntimeError, "kvcar: layer {} has no calibration sequences", layer);
  const int H = calib[0]->kv_heads, d = calib[0]->head_dim;
  for (const LayerKV* kv : calib)
    KVB_CHECK(kv->kv_heads == H && kv->head_dim == d && kv->tokens > 0, DataError,
              "kvcar: calibration caches of layer {} disagree in shape", layer);
  KVB_CHECK(p.reuse_heads <= H, Unsupported, "{}: reuse_heads {} exceeds n_kv_heads {}", p.label(), p.reuse_heads, H);

  auto m = std::make_shared<KvcarLayerModel>();
  m->fitted_with = p;
  m->layer = layer, m->kv_heads = H, m->head_dim = d;
  // Reuse ranking: normalized L1 distance of each head to the same head of layer−1, K and V averaged.
  const bool can_rank = p.reuse_heads > 0 && !prev_calib.empty() && prev_calib.size() == calib.size() &&
                        prev_calib[0].kv_heads == H && prev_calib[0].head_dim == d;
  if (can_rank) {
    m->head_distance.assign(H, 0.0);
    for (int g = 0; g < H; ++g) {
      double dist = 0;
      for (int kvsel = 0; kvsel < 2; ++kvsel) {
        double num = 0, den = 0;
        for (size_t s = 0; s < calib.size(); ++s) {
          const int64_t T = std::min(calib[s]->tokens, prev_calib[s].tokens);
          const float* a = kvsel ? calib[s]->v_head(g) : calib[s]->k_head(g);
          const float* b = kvsel ? prev_calib[s].v_head(g) : prev_calib[s].k_head(g);
          for (int64_t i = 0; i < T * d; ++i) num += std::fabs(static_cast<double>(a[i]) - b[i]), den += std::fabs(b[i]);
        }
        dist += 0.5 * (den > 0 ? num / den : (num > 0 ? 1e300 : 0.0));
      }
      m->head_distance[g] = dist;
    }
    std::vector<int> order(H);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return m->head_distance[a] < m->head_distance[b]; });
    m->reused.assign(order.begin(), order.begin() + p.reuse_heads);
    std::sort(m->reused.begin(), m->reused.end());
  }
  for (int g = 0; g < H; ++g)
    if (!std::binary_search(m->reused.begin(), m->reused.end(), g)) m->stored.push_back(g);

  if (!m->stored.empty()) {
    const int Ds = static_cast<int>(m->stored.size()) * d;
    const int dl = p.latent_dim(Ds), h = p.hidden_dim(Ds);
#pragma omp parallel for num_threads(2) schedule(static, 1)
    for (int which = 0; which < 2; ++which) {
      int64_t n = 0;
      const std::vector<float> X = gather_rows(calib, m->stored, which == 0, p.max_calib_tokens, &n);
      TrainLog lg;
      AeWeights w = kvcar_train_ae(X.data(), n, Ds, h, dl, p, derive_seed(seed, {static_cast<uint64_t>(layer),
                                                                                 static_cast<uint64_t>(which)}),
                                   &lg, fmt::format("layer {} {}", layer, which == 0 ? "K" : "V"));
      if (which == 0) m->k = std::move(w), m->k_log = std::move(lg);
      else m->v = std::move(w), m->v_log = std::move(lg);
    }
  }
  return m;
}

}  // namespace kvb::codecs
