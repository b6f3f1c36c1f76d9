#pragma once
/// KVB_HD marks per-element math that both the host compiler and nvcc compile (docs/design.md §4).
/// Headers using it must stay free of Eigen, HDF5, fmt, nlohmann and CLI11.
#if defined(__CUDACC__)
#define KVB_HD __host__ __device__
#define KVB_HD_INLINE __host__ __device__ __forceinline__
#else
#define KVB_HD
#define KVB_HD_INLINE inline __attribute__((always_inline))
#endif

#include <cmath>

namespace kvb {

/// sqrt(π/2): the scale of the QJL inner-product estimator (qjl, h1b's sketches, turboquant's _prod residual).
inline constexpr double kSqrtHalfPi = 1.2533141373155002512;

/// float64 a·b, a + b, a / b and sqrt(a), each rounded once to nearest (never fused into an FMA): encoders
/// whose float64 sums must round identically on the host (baseline x86-64, no FMA) and on the device (where
/// nvcc would contract a·b + c) write their arithmetic with these. Used by the sketch and turboquant families.
KVB_HD_INLINE double dmul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
KVB_HD_INLINE double dadd_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
KVB_HD_INLINE double ddiv_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
/// float32 a·b and a + b rounded once (never contracted into an FMA by nvcc): per-element float steps whose
/// bytes the device must reproduce (kernels/cpu/rope.h's rotation, which KVQuant's device encode runs).
KVB_HD_INLINE float fmul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KVB_HD_INLINE float fadd_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KVB_HD_INLINE double dsqrt_rn(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

}  // namespace kvb
