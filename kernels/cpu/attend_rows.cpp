#include "kernels/cpu/attend_rows.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/row_kernels.h"
#include "kvb/core/half.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KVB_ROWA_X86 1
#endif

namespace kvb::kernels {

#if defined(KVB_ROWA_X86)
namespace {

constexpr int kMaxChunks = 128;  // chunks per row the kU* sources index (d / chunk_channels)

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
  // Coded rows (attend_rows.h): W bytes of packed codes zero-extended to W 32-bit lanes; fp8 via binary16.
  using I = __m256i;
  static I load_u8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
  static I srli(I x, int n) { return _mm256_srli_epi32(x, n); }
  static I and_(I a, I b) { return _mm256_and_si256(a, b); }
  static I set1i(int x) { return _mm256_set1_epi32(x); }
  static V cvt(I x) { return _mm256_cvtepi32_ps(x); }
  static V blend_hi(V lo, V hi) { return _mm256_blend_ps(lo, hi, 0xF0); }
  static V load_e5m2(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))), 8));
  }
  /// E4M3 code c as the binary16 (c + (c & 0x80)) << 7: the sign bit carried from bit 14 to 15, exponent and
  /// mantissa in place; the value is dec(c)·2^-8.
  static V load_e4m3(const uint8_t* p) {
    const __m128i w = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return _mm256_cvtph_ps(_mm_slli_epi16(_mm_add_epi16(w, _mm_and_si128(w, _mm_set1_epi16(0x80))), 7));
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
  /// s[i·T + u] = Σ lanes of a[i·NR + u] for NQ queries × NR rows, NQ·NR == 8: one transposed reduction (21
  /// shuffles and adds for the 8 sums instead of 8 separate horizontal sums). Lane 4L + k of the result holds
  /// A[2k + L]; A is ordered so that lanes NR·i .. NR·i + NR − 1 are query i's rows.
  template <int NQ, int NR>
  static void hsum_tile(const V* a, float* s, int T) {
    static_assert(NQ * NR == 8, "one vector of sums");
    V A[8];
    for (int i = 0; i < NQ; ++i)
      for (int u = 0; u < NR; ++u) {
        const int lane = NR * i + u;
        A[2 * (lane % 4) + lane / 4] = a[i * NR + u];
      }
    V t[4];
    for (int p = 0; p < 4; ++p)
      t[p] = _mm256_add_ps(_mm256_permute2f128_ps(A[2 * p], A[2 * p + 1], 0x20),
                           _mm256_permute2f128_ps(A[2 * p], A[2 * p + 1], 0x31));
    V x[2];
    for (int m = 0; m < 2; ++m)
      x[m] = _mm256_add_ps(_mm256_shuffle_ps(t[2 * m], t[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm256_shuffle_ps(t[2 * m], t[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    alignas(32) float y[8];
    _mm256_store_ps(y, _mm256_add_ps(_mm256_shuffle_ps(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm256_shuffle_ps(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1))));
    for (int i = 0; i < NQ; ++i)
      for (int u = 0; u < NR; ++u) s[i * T + u] = y[NR * i + u];
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

constexpr int KQ = 4, kAcc = 8;  // queries per dot block; accumulators per block
#include "kernels/cpu/attend_rows_body.inc"
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
  using I = __m512i;
  static I load_u8(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static I srli(I x, int n) { return _mm512_srli_epi32(x, static_cast<unsigned>(n)); }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I set1i(int x) { return _mm512_set1_epi32(x); }
  static V cvt(I x) { return _mm512_cvtepi32_ps(x); }
  static V blend_hi(V lo, V hi) { return _mm512_mask_blend_ps(static_cast<__mmask16>(0xFF00), lo, hi); }
  static V load_e5m2(const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 8));
  }
  static V load_e4m3(const uint8_t* p) {
    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_add_epi16(w, _mm256_and_si256(w, _mm256_set1_epi16(0x80))), 7));
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
  /// s[i·T + u] = Σ lanes of a[i·NR + u] for NQ queries × NR rows, NQ·NR == 16: one transposed reduction (45
  /// shuffles and adds for the 16 sums instead of 16 separate horizontal sums). Lane 4L + k of the result holds
  /// A[4k + L]; A is ordered so that lanes NR·i .. NR·i + NR − 1 are query i's rows.
  template <int NQ, int NR>
  static void hsum_tile(const V* a, float* s, int T) {
    static_assert(NQ * NR == 16, "one vector of sums");
    V A[16];
    for (int i = 0; i < NQ; ++i)
      for (int u = 0; u < NR; ++u) {
        const int lane = NR * i + u;
        A[4 * (lane % 4) + lane / 4] = a[i * NR + u];
      }
    V t[8];
    for (int p = 0; p < 8; ++p)
      t[p] = _mm512_add_ps(_mm512_shuffle_f32x4(A[2 * p], A[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_f32x4(A[2 * p], A[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    V w[4];
    for (int m = 0; m < 4; ++m)
      w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * m], t[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_f32x4(t[2 * m], t[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    V x[2];
    for (int n = 0; n < 2; ++n)
      x[n] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * n], w[2 * n + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_ps(w[2 * n], w[2 * n + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    alignas(64) float y[16];
    _mm512_store_ps(y, _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_ps(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1))));
    for (int i = 0; i < NQ; ++i)
      for (int u = 0; u < NR; ++u) s[i * T + u] = y[NR * i + u];
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

constexpr int KQ = 8, kAcc = 16;
#include "kernels/cpu/attend_rows_body.inc"
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

int codec_bits(RowCodec c) {
  switch (c) {
    case RowCodec::kU8: case RowCodec::kC8: return 8;
    case RowCodec::kU4: case RowCodec::kC4: return 4;
    case RowCodec::kU2: case RowCodec::kC2: return 2;
    default: return 0;
  }
}
bool per_channel(RowCodec c) { return c == RowCodec::kC8 || c == RowCodec::kC4 || c == RowCodec::kC2; }

/// Whether rows of `codec` at head_dim d (and group) fit a path of W lanes (attend_rows_path's rule).
bool fits(RowCodec codec, int d, int group, int W) {
  const int b = codec_bits(codec);
  if (b == 0) return d % W == 0;
  const int cpc = W * 8 / b;  // channels per chunk
  if (d % cpc != 0 || d / cpc > 128) return false;
  if (per_channel(codec)) return group >= 8;
  return group > 0 && d % group == 0 && (group % cpc == 0 || 2 * group == cpc);
}

/// The pairs fused_entry takes (attend_rows.h).
bool pair_ok(RowCodec k, RowCodec v) {
  const bool vu = v == RowCodec::kU8 || v == RowCodec::kU4 || v == RowCodec::kU2;
  if (k == v) return !per_channel(k);
  if (per_channel(k)) return vu || v == RowCodec::kF16;
  return k == RowCodec::kF16 && vu;
}

/// The one dispatch rule: attend_rows_fused runs it, attend_rows_path names it.
Path path_for(const StoredRows& K, const StoredRows& V, int d) {
#if defined(KVB_ROWA_X86)
  if (!simd_kernels_enabled() || d < 1 || !pair_ok(K.codec, V.codec)) return Path::kUnfused;
  if (K.codec == V.codec && codec_bits(K.codec) > 0 && K.group != V.group) return Path::kUnfused;  // one source type
  static const bool avx512 = cpu_has_avx512f();
  const auto both = [&](int W) { return fits(K.codec, d, K.group, W) && fits(V.codec, d, V.group, W); };
  if (avx512 && g_avx512_on && both(16)) return Path::kAvx512;
  return both(8) ? Path::kAvx2 : Path::kUnfused;
#else
  (void)K, (void)V, (void)d;
  return Path::kUnfused;
#endif
}
}  // namespace

bool attend_rows_fused(const RowAttend& a, float* work) {
  const Path p = path_for(a.K, a.V, a.d);
  if (p == Path::kUnfused || a.rows < 1 || a.nq < 1 || a.nq > 64) return false;
  int64_t covered = 0;
  for (int i = 0; i < a.nsegs; ++i) covered += a.segs[i].rows;
  if (a.nsegs > 0 && covered != a.rows) return false;
#if defined(KVB_ROWA_X86)
  return p == Path::kAvx512 ? avx512::fused_entry(a, work) : avx2::fused_entry(a, work);
#else
  (void)work;
  return false;
#endif
}

const char* attend_rows_path(RowCodec codec, int d, int group) {
  const StoredRows s{codec, nullptr, nullptr, group};
  return attend_rows_path(s, s, d);
}

const char* attend_rows_path(const StoredRows& K, const StoredRows& V, int d) {
  switch (path_for(K, V, d)) {
    case Path::kAvx512: return "avx512f";
    case Path::kAvx2: return "avx2-fma-f16c";
    default: return "unfused";
  }
}

void set_attend_rows_avx512(bool enabled) {
#if defined(KVB_ROWA_X86)
  g_avx512_on = enabled;
#else
  (void)enabled;
#endif
}

const char* row_codec_name(RowCodec codec) {
  switch (codec) {
    case RowCodec::kF16: return "f16";
    case RowCodec::kE4M3: return "e4m3";
    case RowCodec::kE5M2: return "e5m2";
    case RowCodec::kU8: return "u8";
    case RowCodec::kU4: return "u4";
    case RowCodec::kU2: return "u2";
    case RowCodec::kC8: return "c8";
    case RowCodec::kC4: return "c4";
    case RowCodec::kC2: return "c2";
  }
  return "?";
}

}  // namespace kvb::kernels
