#pragma once
/// Lloyd–Max scalar quantizers (Lloyd 1982, Max 1960) for a known 1-D density, solved numerically: the
/// data-oblivious codebooks of TurboQuant (coordinates of a uniform point on the sphere, arXiv 2504.19874) and
/// PolarQuant (angles of the recursive polar transform, arXiv 2502.02617) are computed by the code from their
/// densities, never typed in.
///
/// The density is given as a quadrature: points x[0..N) ascending with non-negative weights w (the density
/// times the cell width, any overall scale). Lloyd's iteration alternates boundaries at the midpoints of
/// neighbouring centroids and centroids at the weighted mean of their cell, starting from equal-mass cells,
/// until no centroid moves by more than 1e-13 of the support (or max_iter). Cell sums come from prefix sums,
/// so an iteration costs O(levels · log N). On a log-concave density (both uses above) the fixed point is the
/// unique optimum. Everything runs in float64 and is deterministic: every backend of a codec uses the same
/// host-computed codebook.
#include <vector>

#include "kvb/core/hd.h"

namespace kvb::kernels::lloyd {

struct Codebook {
  std::vector<double> centroids;   ///< levels values, ascending
  std::vector<double> boundaries;  ///< levels − 1 decision thresholds, ascending (midpoints of centroids)
  double distortion = 0;           ///< E (x − Q(x))² under the (normalized) quadrature density
  int iterations = 0;
};

/// Solves the Lloyd–Max quantizer with `levels` (>= 1) levels for the quadrature (x ascending, w >= 0, Σw > 0).
Codebook solve(const std::vector<double>& x, const std::vector<double>& w, int levels, int max_iter = 20000);

/// For a density symmetric about `center`: the solver's fixed point on a discrete quadrature is symmetric
/// only to about one quadrature spacing; averaging each centroid with its mirror image (c_j and
/// 2·center − c_{L−1−j}) makes the symmetry exact (an odd middle level lands exactly on center), and the
/// boundaries are the midpoints again (the middle one exactly center when L is even). `distortion` unchanged.
void symmetrize(Codebook& cb, double center);

/// Index of the level of y: the number of boundaries strictly below y (a value exactly on a boundary goes to
/// the lower level). Binary search over `nb` ascending boundaries. Host and device (the CUDA encoders).
KVB_HD_INLINE int nearest_level(const double* boundaries, int nb, double y) {
  int lo = 0, hi = nb;  // answer in [0, nb]
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (boundaries[mid] < y) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/// The density of one coordinate t of a uniform point on S^{n−1} (n >= 2), f(t) ∝ (1 − t²)^{(n−3)/2}, as a
/// quadrature of N points: t = cos θ at the midpoints of N equal θ-cells of [0, π], weight sin^{n−2} θ (the
/// substitution removes the endpoint singularity at n = 2 and puts the points where the mass is).
void sphere_coordinate_quadrature(int n, int N, std::vector<double>& x, std::vector<double>& w);

}  // namespace kvb::kernels::lloyd
