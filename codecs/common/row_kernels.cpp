#include "codecs/common/row_kernels.h"

#include "codecs/common/fp16_store.h"
#include "kvb/core/half.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KVB_ROW_X86 1
#endif

namespace kvb::codecs {
namespace {

// ---- portable: 8 independent partial sums so the compiler may vectorize without reassociating ----

float dot_f32_portable(const float* a, const float* b, int n) { return dot_f32_inline(a, b, n); }

float dot_f16_portable(const float* q, const uint16_t* k, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int i = 0; i < 8; ++i) acc[i] += q[j + i] * f16_to_f32(k[j + i]);
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < n; ++j) s += q[j] * f16_to_f32(k[j]);
  return s;
}

void axpy_f32_portable(float w, const float* x, float* y, int n) { axpy_f32_inline(w, x, y, n); }

void axpy_f16_portable(float w, const uint16_t* x, float* y, int n) {
  for (int j = 0; j < n; ++j) y[j] += w * f16_to_f32(x[j]);
}

void to_f16_sat_portable(const float* x, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16_sat(x[i]);
}

constexpr RowKernels kPortable{"portable", dot_f32_portable, dot_f16_portable, axpy_f32_portable,
                               axpy_f16_portable, to_f16_sat_portable};

#if defined(KVB_ROW_X86)
#define KVB_AVX2 __attribute__((target("avx2,fma,f16c")))

KVB_AVX2 inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

KVB_AVX2 inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

KVB_AVX2 float dot_f32_avx2(const float* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
  }
  for (; j + 8 <= n; j += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

KVB_AVX2 float dot_f16_avx2(const float* q, const uint16_t* k, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), load_f16x8(k + j), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), load_f16x8(k + j + 8), s1);
  }
  for (; j + 8 <= n; j += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), load_f16x8(k + j), s0);
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; j < n; ++j) s += q[j] * f16_to_f32(k[j]);
  return s;
}

KVB_AVX2 void axpy_f32_avx2(float w, const float* x, float* y, int n) {
  const __m256 vw = _mm256_set1_ps(w);
  int j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(y + j, _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
  for (; j < n; ++j) y[j] += w * x[j];
}

KVB_AVX2 void axpy_f16_avx2(float w, const uint16_t* x, float* y, int n) {
  const __m256 vw = _mm256_set1_ps(w);
  int j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(y + j, _mm256_fmadd_ps(vw, load_f16x8(x + j), _mm256_loadu_ps(y + j)));
  for (; j < n; ++j) y[j] += w * f16_to_f32(x[j]);
}

KVB_AVX2 void to_f16_sat_avx2(const float* x, uint16_t* out, int64_t n) {
  // minps/maxps return their SECOND operand when either is NaN: with x second, NaN passes through.
  const __m256 hi = _mm256_set1_ps(kF16Max), lo = _mm256_set1_ps(-kF16Max);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_max_ps(lo, _mm256_min_ps(hi, _mm256_loadu_ps(x + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) out[i] = f32_to_f16_sat(x[i]);
}

constexpr RowKernels kAvx2{"avx2-f16c", dot_f32_avx2, dot_f16_avx2, axpy_f32_avx2, axpy_f16_avx2, to_f16_sat_avx2};
#undef KVB_AVX2
#endif

const RowKernels& pick() {
#if defined(KVB_ROW_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return kAvx2;
#endif
  return kPortable;
}

}  // namespace

const RowKernels& row_kernels() {
  static const RowKernels& k = pick();
  return k;
}

const RowKernels& row_kernels_portable() { return kPortable; }

namespace {
bool cpu_has_avx2() {
#if defined(KVB_ROW_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}
bool g_simd_on = true;
}  // namespace

bool simd_kernels_enabled() {
  static const bool has = cpu_has_avx2();
  return has && g_simd_on;
}

void set_simd_kernels(bool enabled) { g_simd_on = enabled; }

}  // namespace kvb::codecs
