#include "kernels/cpu/row_kernels.h"

#include "kernels/formats/fp16.h"
#include "kvb/core/half.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define KVB_ROW_X86 1
#endif

namespace kvb::kernels {
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

void from_f16_portable(const uint16_t* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(x[i]);
}

void dots_many_portable(const float* rows, int nr, int d, const float* const* qs, int nq, float* dots,
                        int64_t dstride) {
  for (int i = 0; i < nq; ++i)
    for (int r = 0; r < nr; ++r) dots[i * dstride + r] = dot_f32_inline(qs[i], rows + static_cast<int64_t>(r) * d, d);
}

void axpy_many_portable(const float* rows, int nr, int d, const float* w, int64_t wstride, int nq,
                        float* const* outs) {
  for (int i = 0; i < nq; ++i)
    for (int r = 0; r < nr; ++r) {
      const float wr = w[i * wstride + r];
      if (wr != 0.f) axpy_f32_inline(wr, rows + static_cast<int64_t>(r) * d, outs[i], d);
    }
}

constexpr RowKernels kPortable{"portable",        dot_f32_portable,   dot_f16_portable,  axpy_f32_portable,
                               axpy_f16_portable, to_f16_sat_portable, from_f16_portable, dots_many_portable,
                               axpy_many_portable};

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

KVB_AVX2 void from_f16_avx2(const uint16_t* x, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_f16x8(x + i));
  for (; i < n; ++i) out[i] = f16_to_f32(x[i]);
}

/// [hsum(a), hsum(b), hsum(c), hsum(d)]
KVB_AVX2 inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/// Two queries x four rows = 8 independent FMA chains; each 8-float chunk of a row is loaded once for both
/// queries. d % 8 == 0 (else the portable loop).
KVB_AVX2 void dots_many_avx2(const float* rows, int nr, int d, const float* const* qs, int nq, float* dots,
                             int64_t dstride) {
  if (d % 8 != 0) return dots_many_portable(rows, nr, d, qs, nq, dots, dstride);
  int i = 0;
  for (; i < nq; i += 2) {
    const bool two = i + 1 < nq;
    const float* q0 = qs[i];
    const float* q1 = two ? qs[i + 1] : qs[i];
    float* d0 = dots + i * dstride;
    float* d1 = two ? d0 + dstride : nullptr;
    int r = 0;
    for (; r + 4 <= nr; r += 4) {
      const float* x = rows + static_cast<int64_t>(r) * d;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      for (int j = 0; j < d; j += 8) {
        const __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + d + j);
        const __m256 x2 = _mm256_loadu_ps(x + 2 * d + j), x3 = _mm256_loadu_ps(x + 3 * d + j);
        const __m256 u = _mm256_loadu_ps(q0 + j), v = _mm256_loadu_ps(q1 + j);
        a0 = _mm256_fmadd_ps(u, x0, a0), a1 = _mm256_fmadd_ps(u, x1, a1);
        a2 = _mm256_fmadd_ps(u, x2, a2), a3 = _mm256_fmadd_ps(u, x3, a3);
        b0 = _mm256_fmadd_ps(v, x0, b0), b1 = _mm256_fmadd_ps(v, x1, b1);
        b2 = _mm256_fmadd_ps(v, x2, b2), b3 = _mm256_fmadd_ps(v, x3, b3);
      }
      _mm_storeu_ps(d0 + r, hsum4(a0, a1, a2, a3));
      if (two) _mm_storeu_ps(d1 + r, hsum4(b0, b1, b2, b3));
    }
    for (; r < nr; ++r) {
      const float* x = rows + static_cast<int64_t>(r) * d;
      __m256 a = _mm256_setzero_ps(), b = a;
      for (int j = 0; j < d; j += 8) {
        const __m256 x0 = _mm256_loadu_ps(x + j);
        a = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + j), x0, a);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + j), x0, b);
      }
      d0[r] = hsum256(a);
      if (two) d1[r] = hsum256(b);
    }
  }
}

/// outs[i][j0, j0 + 8·NV) += Σ_r w_ir·rows[r][...] for NQ (1 or 2) queries: 2·NV accumulators in registers
/// over the block's rows, each row chunk loaded once for both queries.
template <int NQ, int NV>
KVB_AVX2 inline void axpy_chunk(const float* rows, int nr, int d, const float* w0, const float* w1, float* o0,
                                float* o1, int j0) {
  __m256 a[NQ][NV];
  for (int k = 0; k < NQ; ++k)
    for (int v = 0; v < NV; ++v) a[k][v] = _mm256_setzero_ps();
  const float* x = rows + j0;
  for (int r = 0; r < nr; ++r, x += d) {
    const __m256 u = _mm256_broadcast_ss(w0 + r);
    const __m256 t = NQ == 2 ? _mm256_broadcast_ss(w1 + r) : u;
    for (int v = 0; v < NV; ++v) {
      const __m256 xv = _mm256_loadu_ps(x + 8 * v);
      a[0][v] = _mm256_fmadd_ps(u, xv, a[0][v]);
      if constexpr (NQ == 2) a[1][v] = _mm256_fmadd_ps(t, xv, a[1][v]);
    }
  }
  for (int v = 0; v < NV; ++v) {
    _mm256_storeu_ps(o0 + j0 + 8 * v, _mm256_add_ps(_mm256_loadu_ps(o0 + j0 + 8 * v), a[0][v]));
    if constexpr (NQ == 2) _mm256_storeu_ps(o1 + j0 + 8 * v, _mm256_add_ps(_mm256_loadu_ps(o1 + j0 + 8 * v), a[1][v]));
  }
}

template <int NQ>
KVB_AVX2 inline void axpy_many_q(const float* rows, int nr, int d, const float* w0, const float* w1, float* o0, float* o1) {
  int j0 = 0;
  for (; j0 + 32 <= d; j0 += 32) axpy_chunk<NQ, 4>(rows, nr, d, w0, w1, o0, o1, j0);
  for (; j0 < d; j0 += 8) axpy_chunk<NQ, 1>(rows, nr, d, w0, w1, o0, o1, j0);
}

KVB_AVX2 void axpy_many_avx2(const float* rows, int nr, int d, const float* w, int64_t wstride, int nq,
                             float* const* outs) {
  if (d % 8 != 0) return axpy_many_portable(rows, nr, d, w, wstride, nq, outs);
  int i = 0;
  for (; i + 2 <= nq; i += 2)
    axpy_many_q<2>(rows, nr, d, w + i * wstride, w + (i + 1) * wstride, outs[i], outs[i + 1]);
  if (i < nq) axpy_many_q<1>(rows, nr, d, w + i * wstride, nullptr, outs[i], nullptr);
}

constexpr RowKernels kAvx2{"avx2-f16c",    dot_f32_avx2,    dot_f16_avx2,  axpy_f32_avx2, axpy_f16_avx2,
                           to_f16_sat_avx2, from_f16_avx2, dots_many_avx2, axpy_many_avx2};
#undef KVB_AVX2
#endif

/// AVX2 + FMA + F16C. F16C through CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports has no "f16c".
bool cpu_has_avx2_fma_f16c() {
#if defined(KVB_ROW_X86)
  __builtin_cpu_init();
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
#else
  return false;
#endif
}

const RowKernels& pick() {
#if defined(KVB_ROW_X86)
  if (cpu_has_avx2_fma_f16c()) return kAvx2;
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
bool cpu_has_avx2() { return cpu_has_avx2_fma_f16c(); }
bool g_simd_on = true;
}  // namespace

bool simd_kernels_enabled() {
  static const bool has = cpu_has_avx2();
  return has && g_simd_on;
}

void set_simd_kernels(bool enabled) { g_simd_on = enabled; }

const RowKernels& row_kernels_switched() { return simd_kernels_enabled() ? row_kernels() : row_kernels_portable(); }

}  // namespace kvb::kernels
