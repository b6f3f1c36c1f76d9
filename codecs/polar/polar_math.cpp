#include "codecs/polar/polar_math.h"

#include <cmath>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "kernels/cpu/lloyd_max.h"
#include "kernels/cpu/orthogonal.h"
#include "kvb/core/rng.h"

namespace kvb::codecs::polar {

Layout make_layout(int d, int levels, const std::vector<int>& bits) {
  if (d < 1 || levels < 1 || levels > kMaxLevels || static_cast<int>(bits.size()) != levels)
    throw std::invalid_argument("polar::make_layout: bad head_dim, levels or bits");
  Layout L;
  L.d = d;
  L.levels = levels;
  L.dp = padded_dim(d, levels);
  int angle = 0, bit = 0, cb = 0;
  for (int l = 1; l <= levels; ++l) {
    const int b = bits[static_cast<size_t>(l - 1)];
    if (b < 1 || b > kMaxBits) throw std::invalid_argument("polar::make_layout: angle bits out of [1, 8]");
    L.bits[l - 1] = b;
    L.count[l - 1] = L.dp >> l;
    L.angle_off[l - 1] = angle;
    L.bit_off[l - 1] = bit;
    L.cb_off[l - 1] = cb;
    angle += L.count[l - 1];
    bit += L.count[l - 1] * b;
    cb += 1 << b;
  }
  L.angles = angle;
  L.radii = L.dp >> levels;
  L.code_bits = bit;
  L.row_bytes = (bit + 7) / 8;
  L.codebook_size = cb;
  return L;
}

void angle_quadrature(int level, int N, std::vector<double>& x, std::vector<double>& w) {
  if (level < 2 || N < 2) throw std::invalid_argument("polar::angle_quadrature: level >= 2, N >= 2");
  x.resize(static_cast<size_t>(N)), w.resize(static_cast<size_t>(N));
  const double h = (kPi / 2) / N, power = std::ldexp(1.0, level - 1) - 1;  // 2^{ℓ−1} − 1
  for (int i = 0; i < N; ++i) {
    const double psi = (i + 0.5) * h;
    x[static_cast<size_t>(i)] = psi;
    w[static_cast<size_t>(i)] = std::exp(power * std::log(std::sin(2 * psi)));
  }
}

namespace {

/// Quadrature points per codebook: spacing π/2 / 2^16 ≈ 2.4e-5 rad, far below the narrowest density's width
/// (level 10: σ ≈ 1/√(2·512) ≈ 0.03 rad) and the finest cell (8 bits).
constexpr int kQuadraturePoints = 1 << 16;

Codebook make_codebook(int level, int bits) {
  Codebook cb;
  const int n = 1 << bits;
  if (level == 1) {
    const double step = kTwoPi / n;
    for (int j = 0; j < n; ++j) cb.centroids.push_back((j + 0.5) * step);
    for (int j = 1; j < n; ++j) cb.boundaries.push_back(j * step);
    cb.distortion = step * step / 12;
    return cb;
  }
  std::vector<double> x, w;
  angle_quadrature(level, kQuadraturePoints, x, w);
  // The density is symmetric about π/4 (ψ -> π/2 − ψ): exact symmetry, boundaries the midpoints again.
  kernels::lloyd::Codebook s = kernels::lloyd::solve(x, w, n);
  kernels::lloyd::symmetrize(s, kPi / 4);
  cb.centroids = s.centroids;
  cb.boundaries = s.boundaries;
  double dist = 0, mass = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = x[i] - cb.centroids[static_cast<size_t>(quantize_angle(cb, x[i]))];
    dist += w[i] * e * e, mass += w[i];
  }
  cb.distortion = dist / mass;
  return cb;
}

}  // namespace

const Codebook& codebook(int level, int bits) {
  if (level < 1 || level > kMaxLevels || bits < 1 || bits > kMaxBits)
    throw std::invalid_argument("polar::codebook: level or bits out of range");
  static std::mutex mu;
  static std::map<std::pair<int, int>, std::unique_ptr<const Codebook>> cache;  // entries never move
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{level, bits}];
  if (!slot) slot = std::make_unique<const Codebook>(make_codebook(level, bits));
  return *slot;
}

int quantize_angle(const Codebook& cb, double psi) {
  return kernels::lloyd::nearest_level(cb.boundaries.data(), static_cast<int>(cb.boundaries.size()), psi);
}

void forward(const Layout& lay, const double* y, double* angles, double* radii, double* work) {
  const int n1 = lay.count[0];
  for (int i = 0; i < n1; ++i) {
    const double a = y[2 * i], b = y[2 * i + 1];
    work[i] = pair_norm(a, b);
    double psi = std::atan2(b, a);  // (−π, π]
    if (psi < 0) psi += kTwoPi;     // [0, 2π]; 2π only when psi rounds up from just below 0
    angles[i] = psi;
  }
  for (int l = 2; l <= lay.levels; ++l) {
    double* ang = angles + lay.angle_off[l - 1];
    for (int i = 0; i < lay.count[l - 1]; ++i) {  // in place: work[i] is written after work[2i], work[2i+1] are read
      const double a = work[2 * i], b = work[2 * i + 1];
      work[i] = pair_norm(a, b);
      ang[i] = std::atan2(b, a);  // both >= 0: [0, π/2]
    }
  }
  for (int i = 0; i < lay.radii; ++i) radii[i] = work[i];
}

Tables make_tables(const Layout& lay) {
  Tables t;
  t.bcs.assign(2 * static_cast<size_t>(lay.codebook_size), 0.0);
  for (int l = 1; l <= lay.levels; ++l) {
    const Codebook& cb = codebook(l, lay.bits[l - 1]);
    for (double c : cb.centroids) t.codebook.push_back(static_cast<float>(c));
    double* bcs = t.bcs.data() + 2 * lay.cb_off[l - 1];
    for (size_t j = 0; j < cb.boundaries.size(); ++j)
      bcs[2 * j] = std::cos(cb.boundaries[j]), bcs[2 * j + 1] = std::sin(cb.boundaries[j]);
  }
  t.cs.resize(2 * t.codebook.size());
  for (size_t i = 0; i < t.codebook.size(); ++i) {
    t.cs[2 * i] = static_cast<float>(std::cos(static_cast<double>(t.codebook[i])));
    t.cs[2 * i + 1] = static_cast<float>(std::sin(static_cast<double>(t.codebook[i])));
  }
  return t;
}

uint64_t rotation_seed(uint64_t run_seed, int layer, int head, int part) {
  return derive_seed(run_seed, {0x706f6c6172ull /* "polar" */, static_cast<uint64_t>(layer),
                                static_cast<uint64_t>(head), static_cast<uint64_t>(part)});
}

std::shared_ptr<const Rotation> rotation(int n, uint64_t seed) {
  auto r = std::make_shared<Rotation>();
  r->n = n;
  r->m64 = *kernels::orthogonal::memoized(kernels::orthogonal::Kind::kHaar, n, seed);
  r->m64t.resize(r->m64.size());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) r->m64t[static_cast<size_t>(j) * n + i] = r->m64[static_cast<size_t>(i) * n + j];
  r->m32.assign(r->m64.begin(), r->m64.end());
  return r;
}

}  // namespace kvb::codecs::polar
