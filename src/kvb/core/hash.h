#pragma once
/// The one FNV-1a (64-bit) of kvbench: byte strings, and the word-at-a-time variant the codecs use to
/// fingerprint float arrays (one multiply per float's bit pattern rather than per byte). Its values reach
/// results (cell seeds are derived from fnv1a(label)), so none of these may change.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace kvb {

inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;  ///< FNV-1a 64-bit offset basis
inline constexpr uint64_t kFnvPrime = 0x100000001b3ull;        ///< FNV-1a 64-bit prime

/// One FNV-1a step over a whole word.
constexpr uint64_t fnv1a_mix(uint64_t h, uint64_t word) { return (h ^ word) * kFnvPrime; }

/// FNV-1a of n bytes, continuing from h. (Not an overload of fnv1a: fnv1a("text", h) would pick it.)
inline uint64_t fnv1a_bytes(const void* data, size_t n, uint64_t h = kFnvOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = fnv1a_mix(h, p[i]);
  return h;
}

/// FNV-1a of a string's bytes.
inline uint64_t fnv1a(std::string_view s, uint64_t h = kFnvOffset) { return fnv1a_bytes(s.data(), s.size(), h); }

/// The word-at-a-time FNV-1a of n floats' bit patterns, continuing from h.
inline uint64_t fnv1a_floats(const float* x, size_t n, uint64_t h = kFnvOffset) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, 4);
    h = fnv1a_mix(h, u);
  }
  return h;
}

}  // namespace kvb
