#pragma once
/// Counter-based randomness: every random stream in kvbench is keyed by (seed, purpose, indices...),
/// so results never depend on thread scheduling or on the order cells run in.
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "kvb/core/hd.h"

namespace kvb {

/// SplitMix64 finalizer: a bijective 64-bit mixer.
KVB_HD_INLINE uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Derive a sub-seed from a base seed and a list of keys (layer, head, purpose tag, ...).
inline uint64_t derive_seed(uint64_t base, std::initializer_list<uint64_t> keys) {
  uint64_t h = mix64(base);
  for (uint64_t k : keys) h = mix64(h ^ mix64(k + 0x632be59bd9b4e019ull));
  return h;
}

/// Small, fast, seedable generator (SplitMix64 stream). Deterministic across platforms.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next_u64() {
    state_ += 0x9e3779b97f4a7c15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  /// Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return n == 0 ? 0 : next_u64() % n; }
  /// Standard normal (Box-Muller; one value per call, deterministic).
  double normal() {
    double u1 = uniform();
    const double u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t state_;
};

}  // namespace kvb
