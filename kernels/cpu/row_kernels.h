#pragma once
/// CPU row primitives of the baseline codecs' attend loops: one key row dotted with the query, one value
/// row added into the output. These are the only loops that see every stored element of a cache, so they
/// are written for speed: a portable version the compiler can vectorize, and on x86-64 an AVX2/FMA/F16C
/// version picked once at start-up when the CPU has those extensions (the default build targets plain
/// x86-64, and fp16 -> fp32 conversion without F16C costs more than the multiply-add itself).
/// The CUDA backend does not use these: per-element math shared with kernels lives in the KVB_HD headers.
#include <cstdint>

namespace kvb::kernels {

struct RowKernels {
  const char* name;  ///< "avx2-f16c" or "portable"
  /// Σ_j a[j]·b[j], n floats each.
  float (*dot_f32)(const float* a, const float* b, int n);
  /// Σ_j q[j]·f16(k[j]); k[n] binary16 bits.
  float (*dot_f16)(const float* q, const uint16_t* k, int n);
  /// y[j] += w·x[j].
  void (*axpy_f32)(float w, const float* x, float* y, int n);
  /// y[j] += w·f16(x[j]); x[n] binary16 bits.
  void (*axpy_f16)(float w, const uint16_t* x, float* y, int n);
  /// out[j] = binary16 bits of x[j], round to nearest even, saturating (see kernels/formats/fp16.h); NaN stays NaN.
  void (*to_f16_sat)(const float* x, uint16_t* out, int64_t n);
  /// out[j] = f16(x[j]), n values.
  void (*from_f16)(const uint16_t* x, float* out, int64_t n);
  /// Many-query dots over a block of decoded rows (attend_many): for i < nq, r < nr
  ///   dots[i·dstride + r] = Σ_j qs[i][j]·rows[r·d + j].
  void (*dots_many)(const float* rows, int nr, int d, const float* const* qs, int nq, float* dots, int64_t dstride);
  /// Many-query weighted sums over a block of decoded rows: for i < nq, j < d
  ///   outs[i][j] += Σ_{r < nr} w[i·wstride + r]·rows[r·d + j].
  void (*axpy_many)(const float* rows, int nr, int d, const float* w, int64_t wstride, int nq, float* const* outs);
};

/// The fastest kernels this CPU supports (chosen once, thread-safe).
const RowKernels& row_kernels();
/// The portable kernels (tests compare the two).
const RowKernels& row_kernels_portable();
/// row_kernels() while simd_kernels_enabled(), else row_kernels_portable() (attend_many uses these, so the
/// SIMD switch of tests covers its loops too).
const RowKernels& row_kernels_switched();

/// True when the hand-written AVX2/FMA/F16C attend kernels (uniform_avx2.cpp, fp8_cpu.cpp) may run: the CPU
/// has those extensions (checked once via cpuid) and they have not been switched off.
bool simd_kernels_enabled();
/// Switches the hand-written AVX2 kernels off (false) or back on; for tests comparing them with the portable
/// loops. Not thread-safe: call it while no attend is running.
void set_simd_kernels(bool enabled);

/// Hot loops that are not behind RowKernels (they inline the codec's own decoding) are compiled twice on
/// x86-64 with GCC/Clang: for AVX2+FMA+F16C (x86-64-v3) and for the baseline, picked at load time (ifunc).
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define KVB_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KVB_CPU_CLONES
#endif

/// For the per-format / per-width bodies of KVB_CPU_CLONES functions: they must be inlined into each clone
/// to be compiled for its target.
#define KVB_FORCE_INLINE inline __attribute__((always_inline))

/// Σ_j a[j]·b[j] with 8 independent partial sums (vectorizes without reassociation flags). Inline, for
/// loops compiled with KVB_CPU_CLONES.
KVB_FORCE_INLINE float dot_f32_inline(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[j + k] * b[j + k];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

/// y[j] += w·x[j]. Inline, for loops compiled with KVB_CPU_CLONES.
KVB_FORCE_INLINE void axpy_f32_inline(float w, const float* x, float* y, int n) {
  for (int j = 0; j < n; ++j) y[j] += w * x[j];
}

/// x[n] float -> out[n] binary16 bits, saturating (see kernels/formats/fp16.h); row_kernels().to_f16_sat.
inline void f32_to_f16_sat_row(const float* x, uint16_t* out, int64_t n) { row_kernels().to_f16_sat(x, out, n); }

}  // namespace kvb::kernels
