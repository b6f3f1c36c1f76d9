#include "kernels/cpu/orthogonal.h"

#include <cmath>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>

#include "kvb/core/rng.h"

namespace kvb::kernels::orthogonal {

std::vector<double> gaussian(int n, int m, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> g(static_cast<size_t>(n) * static_cast<size_t>(m));
  for (auto& x : g) x = rng.normal();
  return g;
}

std::vector<double> haar_orthogonal(int d, uint64_t seed) {
  const size_t D = static_cast<size_t>(d);
  // Work column-major (column k contiguous at A + k·D) so every reflection streams whole columns.
  const std::vector<double> G = gaussian(d, d, seed);  // row-major G[i][j]
  std::vector<double> A(D * D);
  for (size_t i = 0; i < D; ++i)
    for (size_t j = 0; j < D; ++j) A[j * D + i] = G[i * D + j];
  std::vector<double> V(D * D, 0.0);  // unit Householder vector k at V + k·D (entries k..d-1)
  std::vector<double> rsign(D, 1.0);
  std::vector<char> active(D, 0);
  for (size_t k = 0; k < D; ++k) {
    double* a = A.data() + k * D;
    double nrm = 0;
    for (size_t i = k; i < D; ++i) nrm += a[i] * a[i];
    nrm = std::sqrt(nrm);
    const double alpha = a[k] > 0 ? -nrm : nrm;  // R_kk; reflect away from a_kk to avoid cancellation
    rsign[k] = alpha < 0 ? -1.0 : 1.0;
    double* v = V.data() + k * D;
    double vn = 0;
    for (size_t i = k; i < D; ++i) {
      v[i] = a[i] - (i == k ? alpha : 0.0);
      vn += v[i] * v[i];
    }
    if (vn == 0) continue;  // already reduced (probability 0 for a Gaussian)
    active[k] = 1;
    vn = std::sqrt(vn);
    for (size_t i = k; i < D; ++i) v[i] /= vn;
    for (size_t j = k; j < D; ++j) {  // column j <- (I − 2 v vᵀ) column j
      double* c = A.data() + j * D;
      double dot = 0;
      for (size_t i = k; i < D; ++i) dot += v[i] * c[i];
      for (size_t i = k; i < D; ++i) c[i] -= 2 * dot * v[i];
    }
  }
  // Q = H_0 H_1 … H_{d−1} applied to the identity (column-major), last reflector first.
  std::vector<double> Q(D * D, 0.0);
  for (size_t i = 0; i < D; ++i) Q[i * D + i] = 1.0;
  for (size_t kk = D; kk-- > 0;) {
    if (!active[kk]) continue;
    const double* v = V.data() + kk * D;
    for (size_t j = 0; j < D; ++j) {
      double* c = Q.data() + j * D;
      double dot = 0;
      for (size_t i = kk; i < D; ++i) dot += v[i] * c[i];
      for (size_t i = kk; i < D; ++i) c[i] -= 2 * dot * v[i];
    }
  }
  // Row-major result with the Haar correction: column k times sign(R_kk).
  std::vector<double> out(D * D);
  for (size_t i = 0; i < D; ++i)
    for (size_t k = 0; k < D; ++k) out[i * D + k] = Q[k * D + i] * rsign[k];
  return out;
}

std::shared_ptr<const std::vector<double>> memoized(Kind kind, int n, uint64_t seed) {
  static std::mutex mu;
  static std::map<std::tuple<int, int, uint64_t>, std::shared_ptr<const std::vector<double>>> cache;
  static std::deque<std::tuple<int, int, uint64_t>> order;
  static size_t bytes = 0;
  const auto key = std::make_tuple(static_cast<int>(kind), n, seed);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  auto m = std::make_shared<const std::vector<double>>(kind == Kind::kHaar ? haar_orthogonal(n, seed)
                                                                           : gaussian(n, n, seed));
  std::lock_guard<std::mutex> lock(mu);
  const auto [it, inserted] = cache.emplace(key, m);
  if (inserted) {
    order.push_back(key);
    bytes += m->size() * sizeof(double);
    while (bytes > (size_t{256} << 20) && order.size() > 1) {
      bytes -= cache[order.front()]->size() * sizeof(double);
      cache.erase(order.front());
      order.pop_front();
    }
  }
  return it->second;
}

}  // namespace kvb::kernels::orthogonal
