#pragma once
/// Per-element product-quantization math shared by the CPU path (pq_cpu.cpp) and the CUDA kernels
/// (lookat_cuda.cu). Plain KVB_HD functions: nvcc compiles this as C++17.
#include <cstdint>

#include "kvb/core/hd.h"

namespace kvb::codecs::pq {

/// One step of the exact nearest-centroid distance: s + e², rounded twice (product, then sum), never fused,
/// so the CPU, the CUDA kernel and the reference (which the compiler cannot fuse: baseline x86-64 has no
/// FMA) agree bit for bit. The device spells the roundings out (nvcc fuses a*b+c by default); the host
/// caller is compiled with fp-contract off (pq_cpu.cpp sq_dist_exact).
KVB_HD_INLINE double dist_step(double s, double e) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(s, __dmul_rn(e, e));
#else
  return s + e * e;
#endif
}

/// ‖x − c‖² over n channels in float64, summed in channel order (dist_step).
KVB_HD_INLINE double sq_dist_f64(const float* x, const float* c, int n) {
  double s = 0.0;
  for (int j = 0; j < n; ++j) s = dist_step(s, static_cast<double>(x[j]) - static_cast<double>(c[j]));
  return s;
}

/// One lookup-table entry LUT_i[c] = Σ_j q_i[j]·C_i[c][j] over dsub channels, in channel order (float).
KVB_HD_INLINE float lut_entry(const float* q_sub, const float* centroid, int dsub) {
  float acc = 0.f;
  for (int j = 0; j < dsub; ++j) acc += q_sub[j] * centroid[j];
  return acc;
}

/// A key's inner-product estimate from its m codes: Σ_i lut[i·K + code[i]], in subspace order.
KVB_HD_INLINE float table_sum(const float* lut, const uint8_t* code, int m, int K) {
  float acc = lut[code[0]];
  for (int i = 1; i < m; ++i) acc += lut[i * K + code[i]];
  return acc;
}

}  // namespace kvb::codecs::pq
