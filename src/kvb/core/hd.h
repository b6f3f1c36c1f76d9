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
