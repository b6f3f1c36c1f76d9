/// Product quantization on the CPU: k-means training, nearest-centroid codes, lookup tables and table sums
/// (codecs/pq/lookat_codec.h). Shared by lookat's CPU path, its training, and the faiss cross-check.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/row_kernels.h"
#include "codecs/pq/lookat_codec.h"
#include "codecs/pq/pq_math.h"
#include "kvb/core/half.h"
#include "kvb/core/rng.h"

namespace kvb::codecs::pq {

namespace {

/// Index of the smallest of dist[0, K) (the first one on ties).
template <class T>
int argmin(const T* dist, int K) {
  int best = 0;
  for (int c = 1; c < K; ++c)
    if (dist[c] < dist[best]) best = c;
  return best;
}

double sq_dist(const float* a, const float* b, int n) {
  double s = 0;
  for (int j = 0; j < n; ++j) {
    const double e = static_cast<double>(a[j]) - static_cast<double>(b[j]);
    s += e * e;
  }
  return s;
}

/// sq_dist_f64 (pq_math.h) out of line and never fused (fp-contract off, not cloned for FMA targets): the
/// exact distance the encoder decides with, identical to the CUDA kernel's.
__attribute__((noinline, optimize("fp-contract=off"))) double sq_dist_exact(const float* x, const float* c, int n) {
  return sq_dist_f64(x, c, n);
}

}  // namespace

KVB_CPU_CLONES double kmeans(const float* x, int64_t n, int64_t stride, int dsub, int K, int iters, uint64_t seed,
                             float* centroids) {
  // A contiguous copy of the subvectors.
  std::vector<float> X(static_cast<size_t>(n) * dsub);
  for (int64_t t = 0; t < n; ++t) std::memcpy(&X[t * dsub], x + t * stride, sizeof(float) * dsub);
  auto row = [&](int64_t t) { return X.data() + t * dsub; };
  auto cent = [&](int c) { return centroids + static_cast<size_t>(c) * dsub; };

  if (n <= K) {
    // Fewer points than centroids: every point is a centroid; the surplus repeats them (a repeated centroid
    // is never chosen, since ties go to the lowest index).
    for (int c = 0; c < K; ++c) std::memcpy(cent(c), row(c % n), sizeof(float) * dsub);
  } else {
    // k-means++ seeding (Arthur & Vassilvitskii 2007): each next centroid is drawn with probability
    // proportional to its squared distance to the nearest centroid chosen so far.
    Rng rng(seed);
    std::vector<double> d2(static_cast<size_t>(n));
    std::memcpy(cent(0), row(static_cast<int64_t>(rng.below(static_cast<uint64_t>(n)))), sizeof(float) * dsub);
    for (int64_t t = 0; t < n; ++t) d2[t] = sq_dist(row(t), cent(0), dsub);
    for (int c = 1; c < K; ++c) {
      double total = 0;
      for (int64_t t = 0; t < n; ++t) total += d2[t];
      int64_t pick = n - 1;
      if (total <= 0) {
        pick = static_cast<int64_t>(rng.below(static_cast<uint64_t>(n)));  // all points already covered
      } else {
        const double r = rng.uniform() * total;
        double acc = 0;
        for (int64_t t = 0; t < n; ++t) {
          acc += d2[t];
          if (acc > r) {
            pick = t;
            break;
          }
        }
      }
      std::memcpy(cent(c), row(pick), sizeof(float) * dsub);
      for (int64_t t = 0; t < n; ++t) d2[t] = std::min(d2[t], sq_dist(row(t), cent(c), dsub));
    }

    // Lloyd iterations. Assignment in fp32 as ‖c‖² − 2<x, c> with the centroids transposed [dsub][K] so
    // the loop over centroids vectorizes; the means in float64.
    std::vector<float> ct(static_cast<size_t>(dsub) * K), cn(K), acc(K);
    std::vector<int> assign(static_cast<size_t>(n), -1);
    std::vector<float> pdist(static_cast<size_t>(n));
    std::vector<double> sums(static_cast<size_t>(K) * dsub);
    std::vector<int64_t> counts(K);
    for (int it = 0; it < iters; ++it) {
      for (int c = 0; c < K; ++c) {
        float s = 0;
        for (int j = 0; j < dsub; ++j) {
          ct[static_cast<size_t>(j) * K + c] = cent(c)[j];
          s += cent(c)[j] * cent(c)[j];
        }
        cn[c] = s;
      }
      int64_t changed = 0;
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = row(t);
        for (int c = 0; c < K; ++c) acc[c] = 0.f;
        for (int j = 0; j < dsub; ++j) {
          const float xj = xt[j];
          const float* cj = &ct[static_cast<size_t>(j) * K];
          for (int c = 0; c < K; ++c) acc[c] += xj * cj[c];
        }
        for (int c = 0; c < K; ++c) acc[c] = cn[c] - 2.f * acc[c];
        const int a = argmin(acc.data(), K);
        pdist[t] = acc[a];
        if (a != assign[t]) ++changed, assign[t] = a;
      }
      if (changed == 0) break;  // converged: the update below would reproduce the same centroids
      std::fill(sums.begin(), sums.end(), 0.0);
      std::fill(counts.begin(), counts.end(), 0);
      for (int64_t t = 0; t < n; ++t) {
        ++counts[assign[t]];
        double* s = &sums[static_cast<size_t>(assign[t]) * dsub];
        for (int j = 0; j < dsub; ++j) s[j] += row(t)[j];
      }
      for (int c = 0; c < K; ++c) {
        if (counts[c] > 0) {
          for (int j = 0; j < dsub; ++j)
            cent(c)[j] = static_cast<float>(sums[static_cast<size_t>(c) * dsub + j] / static_cast<double>(counts[c]));
          continue;
        }
        // Empty cluster: take the point worst served by its centroid (ranked by ‖c‖² − 2<x, c>, i.e. its
        // squared distance minus ‖x‖²... so add ‖x‖² back) and stop it from being taken twice.
        int64_t far = 0;
        double best = -1;
        for (int64_t t = 0; t < n; ++t) {
          if (pdist[t] == -std::numeric_limits<float>::infinity()) continue;
          double xx = 0;
          for (int j = 0; j < dsub; ++j) xx += static_cast<double>(row(t)[j]) * row(t)[j];
          const double dt = xx + pdist[t];
          if (dt > best) best = dt, far = t;
        }
        std::memcpy(cent(c), row(far), sizeof(float) * dsub);
        pdist[far] = -std::numeric_limits<float>::infinity();
      }
    }
  }
  // Final mean squared error with exact nearest centroids.
  double total = 0;
  std::vector<double> dist(K);
  for (int64_t t = 0; t < n; ++t) {
    for (int c = 0; c < K; ++c) dist[c] = sq_dist(row(t), cent(c), dsub);
    total += dist[argmin(dist.data(), K)];
  }
  return total / static_cast<double>(n);
}

LookatCodebooks train(const LookatParams& p, const std::vector<const LayerKV*>& calib, int layer, uint64_t seed) {
  const LayerKV& first = *calib.front();
  const int H = first.kv_heads, d = first.head_dim, m = p.subspaces, K = p.centroids(), dsub = d / m;
  int64_t N = 0;
  for (const LayerKV* kv : calib) N += kv->tokens;
  const int64_t n = std::min<int64_t>(N, p.train_points);
  LookatCodebooks cb;
  cb.kv_heads = H, cb.m = m, cb.K = K, cb.dsub = dsub, cb.train_points = n;
  cb.c.resize(static_cast<size_t>(H) * m * K * dsub);
  cb.c16.resize(cb.c.size());
  // Per head: a sample of n calibration keys (all of them when N <= train_points), without replacement.
  std::vector<std::vector<float>> X(H);
  for (int g = 0; g < H; ++g) {
    std::vector<int64_t> idx(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) idx[i] = i;
    if (n < N) {
      Rng rng(derive_seed(seed, {static_cast<uint64_t>(layer), static_cast<uint64_t>(g), 0x5a3d1e}));
      for (int64_t i = 0; i < n; ++i) std::swap(idx[i], idx[i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(N - i)))]);
      std::sort(idx.begin(), idx.begin() + n);
    }
    X[g].resize(static_cast<size_t>(n) * d);
    size_t s = 0;
    int64_t base = 0;
    for (int64_t i = 0; i < n; ++i) {
      while (idx[i] >= base + calib[s]->tokens) base += calib[s++]->tokens;
      std::memcpy(&X[g][static_cast<size_t>(i) * d], calib[s]->k_head(g) + (idx[i] - base) * d, sizeof(float) * d);
    }
  }
  std::vector<double> mse(static_cast<size_t>(H) * m);
  const int tasks = H * m;
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1)
  for (int task = 0; task < tasks; ++task) {
    const int g = task / m, i = task % m;
    float* out = cb.c.data() + (static_cast<size_t>(g) * m + i) * K * dsub;
    mse[task] = kmeans(X[g].data() + static_cast<size_t>(i) * dsub, n, d, dsub, K, p.iters,
                       derive_seed(seed, {static_cast<uint64_t>(layer), static_cast<uint64_t>(g), static_cast<uint64_t>(i)}),
                       out);
  }
  for (size_t i = 0; i < cb.c.size(); ++i) {
    float v = cb.c[i];
    v = v > 65504.f ? 65504.f : v < -65504.f ? -65504.f : v;  // stored as binary16, saturating
    cb.c16[i] = f32_to_f16(v);
    cb.c[i] = f16_to_f32(cb.c16[i]);
  }
  double total = 0;
  for (double e : mse) total += e;
  cb.train_mse = total / H;
  return cb;
}

KVB_CPU_CLONES void encode_codes(const float* x, int64_t n, int d, int m, int K, const float* cb, uint8_t* codes) {
  const int dsub = d / m;
  // A float32 pass over all centroids (transposed to [m][dsub][K] so the loop over centroids vectorizes),
  // then the float64 distance, summed in channel order, of every centroid the float pass cannot rule out:
  // the result is the float64 argmin (lowest index on ties) at float32 speed. Each float distance is a
  // sum of dsub non-negative terms, each with a relative error of at most 3u (difference, square), so
  // |f − D| <= (dsub + 3)·u·D; a centroid with D <= D_min has f <= f_min·(1 + γ)/(1 − γ).
  std::vector<float> ct(static_cast<size_t>(m) * dsub * K), f(K);
  for (int i = 0; i < m; ++i)
    for (int c = 0; c < K; ++c)
      for (int j = 0; j < dsub; ++j)
        ct[(static_cast<size_t>(i) * dsub + j) * K + c] = cb[(static_cast<size_t>(i) * K + c) * dsub + j];
  const double gamma = 1.01 * (dsub + 3) * 0x1p-24;
  const float widen = static_cast<float>((1 + gamma) / (1 - gamma) * (1 + 0x1p-20));
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < m; ++i) {
      const float* xs = x + t * d + static_cast<int64_t>(i) * dsub;
      for (int c = 0; c < K; ++c) f[c] = 0.f;
      for (int j = 0; j < dsub; ++j) {
        const float xj = xs[j];
        const float* cj = &ct[(static_cast<size_t>(i) * dsub + j) * K];
        for (int c = 0; c < K; ++c) {
          const float e = xj - cj[c];
          f[c] += e * e;
        }
      }
      float fmin = f[0];
      for (int c = 1; c < K; ++c) fmin = f[c] < fmin ? f[c] : fmin;
      const float limit = fmin * widen + 1e-30f;  // + an absolute term for distances near underflow
      int best = -1;
      double best_d = 0;
      for (int c = 0; c < K; ++c) {
        if (!(f[c] <= limit)) continue;
        const double s = sq_dist_exact(xs, cb + (static_cast<size_t>(i) * K + c) * dsub, dsub);
        if (best < 0 || s < best_d) best = c, best_d = s;
      }
      codes[t * m + i] = static_cast<uint8_t>(best < 0 ? argmin(f.data(), K) : best);
    }
}

void build_luts(const float* q, int d, int m, int K, const float* cb, float* lut) {
  const int dsub = d / m;
  for (int i = 0; i < m; ++i)
    for (int c = 0; c < K; ++c) {
      const float* cc = cb + (static_cast<size_t>(i) * K + c) * dsub;
      const float* qs = q + static_cast<size_t>(i) * dsub;
      float s = 0.f;
      for (int j = 0; j < dsub; ++j) s += qs[j] * cc[j];
      lut[static_cast<size_t>(i) * K + c] = s;
    }
}

namespace {

/// Σ_i lut[i][codes[i]] for one key of M codes (M = 4: one 32-bit read split by shifts; M = 8, 16, 32:
/// four interleaved partial sums so the adds do not form one long dependency chain).
template <int M>
KVB_FORCE_INLINE float table_sum(const float* lut, const uint8_t* ct, int K) {
  if constexpr (M % 8 == 0) {
    // Byte loads (the table address folds into each load) into four independent sums.
    float p[4] = {lut[ct[0]], lut[K + ct[1]], lut[2 * K + ct[2]], lut[3 * K + ct[3]]};
    for (int i = 4; i < M; i += 4)
      for (int r = 0; r < 4; ++r) p[r] += lut[static_cast<size_t>(i + r) * K + ct[i + r]];
    return (p[0] + p[1]) + (p[2] + p[3]);
  } else if constexpr (M == 4) {
    uint32_t word;
    std::memcpy(&word, ct, 4);
    return ((lut[word & 0xffu] + lut[K + ((word >> 8) & 0xffu)]) + lut[2 * K + ((word >> 16) & 0xffu)]) +
           lut[3 * K + (word >> 24)];
  } else {
    float s = lut[ct[0]];
    for (int i = 1; i < M; ++i) s += lut[static_cast<size_t>(i) * K + ct[i]];
    return s;
  }
}

template <int M>
void table_sums_m(const float* lut, const uint8_t* codes, int64_t n, int K, float* dots) {
  for (int64_t t = 0; t < n; ++t) dots[t] = table_sum<M>(lut, codes + t * M, K);
}

}  // namespace

void table_sums(const float* lut, const uint8_t* codes, int64_t n, int m, int K, float* dots) {
  switch (m) {
    case 1: return table_sums_m<1>(lut, codes, n, K, dots);
    case 2: return table_sums_m<2>(lut, codes, n, K, dots);
    case 4: return table_sums_m<4>(lut, codes, n, K, dots);
    case 8: return table_sums_m<8>(lut, codes, n, K, dots);
    case 16: return table_sums_m<16>(lut, codes, n, K, dots);
    case 32: return table_sums_m<32>(lut, codes, n, K, dots);
    default: break;
  }
  for (int64_t t = 0; t < n; ++t) {
    const uint8_t* ct = codes + t * m;
    float s = lut[ct[0]];
    for (int i = 1; i < m; ++i) s += lut[static_cast<size_t>(i) * K + ct[i]];
    dots[t] = s;
  }
}

double distortion(const float* x, int64_t n, int d, int m, int K, const float* cb, const uint8_t* codes) {
  const int dsub = d / m;
  double total = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < m; ++i)
      total += sq_dist(x + t * d + static_cast<int64_t>(i) * dsub,
                       cb + (static_cast<size_t>(i) * K + codes[t * m + i]) * dsub, dsub);
  return n > 0 ? total / static_cast<double>(n) : 0.0;
}

}  // namespace kvb::codecs::pq
