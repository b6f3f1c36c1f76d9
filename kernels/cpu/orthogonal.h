#pragma once
/// Seeded Haar-random orthogonal matrices and Gaussian projections (float64, deterministic for a seed): the
/// random rotation Π of TurboQuant (arXiv 2504.19874, "Q factor of QR(randn(d, d))") and the random
/// preconditioner of PolarQuant (arXiv 2502.02617).
///
/// haar_orthogonal: Householder QR of a d×d standard Gaussian matrix G (kvb::Rng normals, row-major), Q with
/// its columns multiplied by sign(R_ii) — without that correction QR's Q is not Haar-distributed (Mezzadri,
/// "How to generate random matrices from the classical compact groups", 2007).
#include <cstdint>
#include <memory>
#include <vector>

namespace kvb::kernels::orthogonal {

/// n×m matrix of i.i.d. N(0, 1) entries (row-major) from the seed.
std::vector<double> gaussian(int n, int m, uint64_t seed);

/// d×d Haar-random orthogonal matrix Q (row-major): Q Qᵀ = I to float64 rounding.
std::vector<double> haar_orthogonal(int d, uint64_t seed);

enum class Kind { kHaar, kGaussian };

/// haar_orthogonal(n, seed) or gaussian(n, n, seed), generated once per process and shared (codecs draw the
/// same seeded matrices for every cell of a run and for their CPU path and reference, and a 1024-dimensional
/// QR costs seconds). At most 256 MiB are kept, oldest first out (holders keep theirs alive). Thread-safe;
/// generated outside the lock, so two threads may both make a matrix once.
std::shared_ptr<const std::vector<double>> memoized(Kind kind, int n, uint64_t seed);

}  // namespace kvb::kernels::orthogonal
