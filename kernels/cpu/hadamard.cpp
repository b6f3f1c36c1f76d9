#include "kernels/cpu/hadamard.h"

#include <cmath>

#include "kvb/core/rng.h"

namespace kvb::kernels::hadamard {

int block_size(int d) { return d & -d; }

std::vector<int8_t> signs(int d, uint64_t seed) {
  Rng rng(seed);
  std::vector<int8_t> s(static_cast<size_t>(d));
  for (auto& x : s) x = (rng.next_u64() >> 63) ? int8_t{-1} : int8_t{1};
  return s;
}

void fwht_blocks(double* x, int d, int block) {
  const double norm = 1.0 / std::sqrt(static_cast<double>(block));
  for (int b0 = 0; b0 < d; b0 += block) {
    double* v = x + b0;
    for (int h = 1; h < block; h <<= 1)
      for (int i = 0; i < block; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const double a = v[j], c = v[j + h];
          v[j] = a + c;
          v[j + h] = a - c;
        }
    for (int j = 0; j < block; ++j) v[j] *= norm;
  }
}

namespace {
/// Per-thread float64 row buffer: rotate_rows runs once per query in attend, which must not allocate.
double* row_buffer(int d) {
  thread_local std::vector<double> t;
  if (t.size() < static_cast<size_t>(d)) t.resize(static_cast<size_t>(d));
  return t.data();
}
}  // namespace

void rotate_rows(const float* x, float* y, int64_t n, int d, const int8_t* s) {
  const int B = block_size(d);
  double* t = row_buffer(d);
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    for (int j = 0; j < d; ++j) t[j] = s[j] * static_cast<double>(xr[j]);
    fwht_blocks(t, d, B);
    float* yr = y + r * d;
    for (int j = 0; j < d; ++j) yr[j] = static_cast<float>(t[j]);
  }
}

void unrotate_rows(const float* y, float* x, int64_t n, int d, const int8_t* s) {
  const int B = block_size(d);
  double* t = row_buffer(d);
  for (int64_t r = 0; r < n; ++r) {
    const float* yr = y + r * d;
    for (int j = 0; j < d; ++j) t[j] = yr[j];
    fwht_blocks(t, d, B);
    float* xr = x + r * d;
    for (int j = 0; j < d; ++j) xr[j] = static_cast<float>(s[j] * t[j]);
  }
}

}  // namespace kvb::kernels::hadamard
