#include "kernels/cpu/attend_f16.h"

#include <cmath>
#include <type_traits>

#include "kernels/cpu/row_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KVB_F16A_X86 1
#endif

namespace kvb::kernels {

#if defined(KVB_F16A_X86)
namespace {

// ---- AVX2 + FMA + F16C: 8 floats per vector, 16 registers: 4 queries × 2 rows (dots), 4 × 2 vectors (values) ----
#if defined(__clang__)  // clang ignores GCC's target pragma: its attribute pragma gives every function the target
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace avx2 {
struct VT {
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V load_h(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static float hsum(V v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
  }
  /// exp(x) for x <= 0 (exp_nonpos below); under: lanes x < −87.3, which give 0.
  static V exp_parts(V x, V lo, V* n_out) {
    x = _mm256_max_ps(x, lo);
    *n_out = _mm256_round_ps(_mm256_mul_ps(x, set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return x;
  }
  static V pow2_times(V p, V n, V x, V lo) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
  }
};

constexpr int NR = 2, NV = 2;
#include "kernels/cpu/attend_f16_body.inc"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---- AVX-512F: 16 floats per vector, 32 registers: 4 queries × 4 rows, 4 × 4 vectors ----
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c")
#endif
// GCC 12's avx512fintrin.h initializes its pass-through operands with _mm512_undefined_*() (a self-initialized
// variable), which -Wmaybe-uninitialized reports at every use after inlining: a false positive of the header.
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
namespace avx512 {
struct VT {
  using V = __m512;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V load_h(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static float hsum(V v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
  }
  static V exp_parts(V x, V lo, V* n_out) {
    x = _mm512_max_ps(x, lo);
    *n_out = _mm512_roundscale_ps(_mm512_mul_ps(x, set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return x;
  }
  static V pow2_times(V p, V n, V x, V lo) {
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    return _mm512_maskz_mul_ps(static_cast<__mmask16>(~under), p, _mm512_castsi512_ps(e));
  }
};

constexpr int NR = 4, NV = 4;
#include "kernels/cpu/attend_f16_body.inc"
}  // namespace avx512
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

bool cpu_has_avx512f() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}
bool g_avx512_on = true;

}  // namespace
#endif

namespace {
enum class Path { kUnfused, kAvx2, kAvx512 };
/// The one dispatch rule: attend_f16_fused runs it, attend_f16_path names it.
Path path_for(int d) {
#if defined(KVB_F16A_X86)
  if (!simd_kernels_enabled() || d % 8 != 0) return Path::kUnfused;
  static const bool avx512 = cpu_has_avx512f();
  return avx512 && g_avx512_on && d % 16 == 0 ? Path::kAvx512 : Path::kAvx2;
#else
  (void)d;
  return Path::kUnfused;
#endif
}
}  // namespace

bool attend_f16_fused(const F16Attend& a, float* work) {
  const Path p = path_for(a.d);
  if (p == Path::kUnfused || a.rows < 1 || a.nq < 1 || a.nq > 64) return false;
  int64_t covered = 0;
  for (int i = 0; i < a.nsegs; ++i) covered += a.segs[i].rows;
  if (a.nsegs > 0 && covered != a.rows) return false;
#if defined(KVB_F16A_X86)
  return p == Path::kAvx512 ? avx512::fused_entry(a, work) : avx2::fused_entry(a, work);
#else
  (void)work;
  return false;
#endif
}

const char* attend_f16_path(int d) {
  switch (path_for(d)) {
    case Path::kAvx512: return "avx512f";
    case Path::kAvx2: return "avx2-fma-f16c";
    default: return "unfused";
  }
}

void set_attend_f16_avx512(bool enabled) {
#if defined(KVB_F16A_X86)
  g_avx512_on = enabled;
#else
  (void)enabled;
#endif
}

}  // namespace kvb::kernels
