#include "kernels/cpu/orthogonal_rowwise.h"

#include <cmath>

#include "kernels/cpu/orthogonal.h"

namespace kvb::kernels::orthogonal {

std::vector<double> haar_orthogonal_rowwise(int d, uint64_t seed) {
  const size_t D = static_cast<size_t>(d);
  std::vector<double> A = gaussian(d, d, seed);  // becomes R (upper triangle) in place
  std::vector<double> V(D * D, 0.0);              // Householder vector k in V[k][·] (row k, entries i >= k)
  std::vector<double> rdiag_sign(D, 1.0), dot(D, 0.0);
  for (int k = 0; k < d; ++k) {
    double* v = &V[static_cast<size_t>(k) * D];
    double nrm = 0;
    for (int i = k; i < d; ++i) nrm += A[i * D + k] * A[i * D + k];
    nrm = std::sqrt(nrm);
    const double akk = A[k * D + k];
    const double alpha = akk > 0 ? -nrm : nrm;
    rdiag_sign[static_cast<size_t>(k)] = alpha < 0 ? -1.0 : 1.0;
    double vnorm2 = 0;
    for (int i = k; i < d; ++i) {
      const double x = A[i * D + k] - (i == k ? alpha : 0.0);
      v[i] = x;
      vnorm2 += x * x;
    }
    if (vnorm2 == 0) continue;  // as haar_orthogonal: the vector stays unnormalized (probability 0)
    // dot[j] = Σ_{i>=k} v_i·A[i][j], accumulated over i ascending for every column j at once.
    for (int j = k; j < d; ++j) dot[static_cast<size_t>(j)] = 0;
    for (int i = k; i < d; ++i) {
      const double vi = v[i];
      const double* a = &A[i * D];
      for (int j = k; j < d; ++j) dot[static_cast<size_t>(j)] += vi * a[j];
    }
    for (int j = k; j < d; ++j) dot[static_cast<size_t>(j)] = 2 * dot[static_cast<size_t>(j)] / vnorm2;  // f_j
    for (int i = k; i < d; ++i) {
      const double vi = v[i];
      double* a = &A[i * D];
      for (int j = k; j < d; ++j) a[j] -= dot[static_cast<size_t>(j)] * vi;
    }
    const double s = std::sqrt(vnorm2);
    for (int i = k; i < d; ++i) v[i] /= s;
  }
  // Q = H_0 H_1 ... H_{d-1} applied to the identity from the last reflector back.
  std::vector<double> Q(D * D, 0.0);
  for (int i = 0; i < d; ++i) Q[i * D + i] = 1.0;
  for (int k = d - 1; k >= 0; --k) {
    const double* v = &V[static_cast<size_t>(k) * D];
    for (int j = 0; j < d; ++j) dot[static_cast<size_t>(j)] = 0;
    for (int i = k; i < d; ++i) {
      const double vi = v[i];
      const double* q = &Q[i * D];
      for (int j = 0; j < d; ++j) dot[static_cast<size_t>(j)] += vi * q[j];
    }
    for (int i = k; i < d; ++i) {
      const double vi = v[i];
      double* q = &Q[i * D];
      for (int j = 0; j < d; ++j) q[j] -= 2 * dot[static_cast<size_t>(j)] * vi;
    }
  }
  for (int i = 0; i < d; ++i)
    for (int k = 0; k < d; ++k) Q[i * D + k] *= rdiag_sign[static_cast<size_t>(k)];
  return Q;
}

}  // namespace kvb::kernels::orthogonal
