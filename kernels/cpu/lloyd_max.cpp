#include "kernels/cpu/lloyd_max.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace kvb::kernels::lloyd {

Codebook solve(const std::vector<double>& x, const std::vector<double>& w, int levels, int max_iter) {
  const size_t N = x.size();
  if (levels < 1 || N == 0 || w.size() != N) throw std::invalid_argument("lloyd::solve: bad quadrature or levels");
  // Prefix sums of w and w·x: the mass and first moment of any run of points in O(1).
  std::vector<double> W(N + 1, 0.0), M(N + 1, 0.0);
  for (size_t i = 0; i < N; ++i) W[i + 1] = W[i] + w[i], M[i + 1] = M[i] + w[i] * x[i];
  const double total = W[N];
  if (!(total > 0)) throw std::invalid_argument("lloyd::solve: zero total weight");
  // First point index with x > b (cells are [first(b_{j-1}), first(b_j))).
  auto first_above = [&](double b) { return static_cast<size_t>(std::upper_bound(x.begin(), x.end(), b) - x.begin()); };
  Codebook cb;
  cb.centroids.assign(static_cast<size_t>(levels), 0.0);
  // Start: equal-mass cells, centroid = cell mean.
  {
    size_t start = 0;
    for (int j = 0; j < levels; ++j) {
      const double target = total * (j + 1) / levels;
      size_t end = j + 1 == levels ? N : static_cast<size_t>(std::lower_bound(W.begin(), W.end(), target) - W.begin());
      end = std::clamp(end, start + 1 <= N ? start + 1 : N, N);
      const double m = W[end] - W[start];
      cb.centroids[static_cast<size_t>(j)] = m > 0 ? (M[end] - M[start]) / m : x[std::min(start, N - 1)];
      start = end;
    }
  }
  const double span = std::max(x.back() - x.front(), 1e-300);
  cb.boundaries.assign(static_cast<size_t>(levels - 1), 0.0);
  for (cb.iterations = 0; cb.iterations < max_iter; ++cb.iterations) {
    for (int j = 0; j + 1 < levels; ++j)
      cb.boundaries[static_cast<size_t>(j)] = 0.5 * (cb.centroids[static_cast<size_t>(j)] + cb.centroids[static_cast<size_t>(j + 1)]);
    double moved = 0;
    size_t start = 0;
    for (int j = 0; j < levels; ++j) {
      const size_t end = j + 1 == levels ? N : first_above(cb.boundaries[static_cast<size_t>(j)]);
      const double m = W[end] - W[start];
      if (m > 0) {  // an empty cell keeps its centroid
        const double c = (M[end] - M[start]) / m;
        moved = std::max(moved, std::fabs(c - cb.centroids[static_cast<size_t>(j)]));
        cb.centroids[static_cast<size_t>(j)] = c;
      }
      start = std::max(start, end);
    }
    if (moved <= 1e-13 * span) break;
  }
  for (int j = 0; j + 1 < levels; ++j)
    cb.boundaries[static_cast<size_t>(j)] = 0.5 * (cb.centroids[static_cast<size_t>(j)] + cb.centroids[static_cast<size_t>(j + 1)]);
  double dist = 0;
  for (size_t i = 0; i < N; ++i) {
    const double c = cb.centroids[static_cast<size_t>(nearest_level(cb.boundaries.data(), levels - 1, x[i]))];
    dist += w[i] * (x[i] - c) * (x[i] - c);
  }
  cb.distortion = dist / total;
  return cb;
}

void symmetrize(Codebook& cb, double center) {
  const size_t L = cb.centroids.size();
  std::vector<double> c(L);
  for (size_t j = 0; j < L; ++j) c[j] = 0.5 * (cb.centroids[j] + (2 * center - cb.centroids[L - 1 - j]));
  for (size_t j = 0; j < L / 2; ++j) {  // exact mirror pairs: c_{L−1−j} − center = center − c_j
    const double h = 0.5 * ((c[L - 1 - j] - center) + (center - c[j]));
    c[j] = center - h, c[L - 1 - j] = center + h;
  }
  if (L % 2) c[L / 2] = center;
  cb.centroids = c;
  cb.boundaries.resize(L ? L - 1 : 0);
  for (size_t j = 0; j + 1 < L; ++j) cb.boundaries[j] = 0.5 * (c[j] + c[j + 1]);
  if (L % 2 == 0 && L >= 2) cb.boundaries[L / 2 - 1] = center;
}

void sphere_coordinate_quadrature(int n, int N, std::vector<double>& x, std::vector<double>& w) {
  if (n < 2 || N < 2) throw std::invalid_argument("sphere_coordinate_quadrature: n >= 2 and N >= 2");
  x.resize(static_cast<size_t>(N)), w.resize(static_cast<size_t>(N));
  const double pi = 3.14159265358979323846, h = pi / N;
  // θ descending from π so that t = cos θ ascends; log-domain power avoids underflow at large n.
  for (int i = 0; i < N; ++i) {
    const double theta = pi - (i + 0.5) * h;
    x[static_cast<size_t>(i)] = std::cos(theta);
    const double s = std::sin(theta);
    w[static_cast<size_t>(i)] = n == 2 ? 1.0 : std::exp((n - 2) * std::log(s));
  }
}

}  // namespace kvb::kernels::lloyd
