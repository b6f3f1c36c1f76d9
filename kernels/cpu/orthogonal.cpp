#include "kernels/cpu/orthogonal.h"

#include <cmath>

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
  std::vector<double> A = gaussian(d, d, seed);  // becomes R (upper triangle) in place
  std::vector<double> V(D * D, 0.0);              // Householder vectors, column k in V[·][k]
  std::vector<double> rdiag_sign(D, 1.0);
  for (int k = 0; k < d; ++k) {
    double nrm = 0;
    for (int i = k; i < d; ++i) nrm += A[i * D + k] * A[i * D + k];
    nrm = std::sqrt(nrm);
    const double akk = A[k * D + k];
    const double alpha = akk > 0 ? -nrm : nrm;  // R_kk = alpha; reflect away from a_kk to avoid cancellation
    rdiag_sign[static_cast<size_t>(k)] = alpha < 0 ? -1.0 : 1.0;
    double vnorm2 = 0;
    for (int i = k; i < d; ++i) {
      const double v = A[i * D + k] - (i == k ? alpha : 0.0);
      V[i * D + k] = v;
      vnorm2 += v * v;
    }
    if (vnorm2 == 0) continue;  // column already reduced (probability 0 for a Gaussian)
    for (int j = k; j < d; ++j) {  // A <- (I − 2 v vᵀ / vᵀv) A on columns j >= k
      double dot = 0;
      for (int i = k; i < d; ++i) dot += V[i * D + k] * A[i * D + j];
      const double f = 2 * dot / vnorm2;
      for (int i = k; i < d; ++i) A[i * D + j] -= f * V[i * D + k];
    }
    for (int i = k; i < d; ++i) V[i * D + k] /= std::sqrt(vnorm2);  // unit vector
  }
  // Q = H_0 H_1 ... H_{d-1}: apply to the identity from the last reflector back.
  std::vector<double> Q(D * D, 0.0);
  for (int i = 0; i < d; ++i) Q[i * D + i] = 1.0;
  for (int k = d - 1; k >= 0; --k)
    for (int j = 0; j < d; ++j) {
      double dot = 0;
      for (int i = k; i < d; ++i) dot += V[i * D + k] * Q[i * D + j];
      for (int i = k; i < d; ++i) Q[i * D + j] -= 2 * dot * V[i * D + k];
    }
  // Haar correction: column k times sign(R_kk).
  for (int i = 0; i < d; ++i)
    for (int k = 0; k < d; ++k) Q[i * D + k] *= rdiag_sign[static_cast<size_t>(k)];
  return Q;
}

}  // namespace kvb::kernels::orthogonal
