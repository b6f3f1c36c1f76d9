/// Hand-written AVX2/FMA/F16C attend kernels over packed uniform-quantized rows (declared in kernels/cpu/uniform_rows.h;
/// per-element math in uniform.h). Compiled with target attributes, so the default x86-64 build keeps a
/// portable binary; dot_rows / accumulate_rows call these only when simd_kernels_enabled().
///
/// Shape of every kernel: a block of rows is first unpacked to one byte per code (8-bit codes are used in
/// place; 4- and 2-bit codes with 128-bit mask/shift/unpack, 32 codes per few instructions; other widths
/// 8 codes at a time via unpack8), then each 8 codes are widened (vpmovzxbd), converted (vcvtdq2ps) and
/// fused-multiply-added with the query (keys) or the token's weight·scale (values). No fp16 conversion in
/// the inner loop: a token's (scale, min) pairs are converted once (vcvtph2ps) into a small float row.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/uniform_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KVB_UQ_X86 1
#endif

namespace kvb::kernels::uq {

#if defined(KVB_UQ_X86)
#define KVB_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KVB_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

namespace {

/// out[0, n) = the n codes of B bits packed at src (n·B a multiple of 8 bits, n % 8 == 0), one per byte.
template <int B>
KVB_AVX2_INLINE void expand_codes(const uint8_t* src, int64_t n, uint8_t* out) {
  int64_t j = 0;
  if constexpr (B == 4) {
    const __m128i m = _mm_set1_epi8(0x0f);
    for (; j + 32 <= n; j += 32, src += 16) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
      const __m128i lo = _mm_and_si128(x, m), hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm_unpacklo_epi8(lo, hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j + 16), _mm_unpackhi_epi8(lo, hi));
    }
  } else if constexpr (B == 2) {
    const __m128i m = _mm_set1_epi8(0x03);
    for (; j + 32 <= n; j += 32, src += 8) {
      const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
      const __m128i a0 = _mm_and_si128(x, m), a1 = _mm_and_si128(_mm_srli_epi16(x, 2), m);
      const __m128i a2 = _mm_and_si128(_mm_srli_epi16(x, 4), m), a3 = _mm_and_si128(_mm_srli_epi16(x, 6), m);
      const __m128i u01 = _mm_unpacklo_epi8(a0, a1), u23 = _mm_unpacklo_epi8(a2, a3);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm_unpacklo_epi16(u01, u23));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j + 16), _mm_unpackhi_epi16(u01, u23));
    }
  }
  for (; j + 8 <= n; j += 8, src += B) {  // codes j .. j+7 start at byte j·B/8
    uint32_t c[8];
    unpack8<B>(src, c);
    for (int k = 0; k < 8; ++k) out[j + k] = static_cast<uint8_t>(c[k]);
  }
}

/// One byte per code for n codes: 8-bit rows are used in place, narrower ones expanded into `scratch`.
template <int B>
KVB_AVX2_INLINE const uint8_t* code_bytes(const uint8_t* codes, int64_t n, uint8_t* scratch) {
  if constexpr (B == 8) {
    (void)n, (void)scratch;
    return codes;
  } else {
    expand_codes<B>(codes, n, scratch);
    return scratch;
  }
}

/// 8 byte codes at p -> 8 floats.
KVB_AVX2_INLINE __m256 codes8(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

KVB_AVX2_INLINE float hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

/// [hsum(a), hsum(b), hsum(c), hsum(d)]
KVB_AVX2_INLINE __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/// out[0, 2·ng) = w·(scale, min) of ng stored groups.
KVB_AVX2_INLINE void params_f32(const GroupParams* p, int ng, float w, float* out) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  const int n = 2 * ng;
  const __m256 vw = _mm256_set1_ps(w);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(vw, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)))));
  for (; i < n; ++i) out[i] = w * _cvtsh_ss(h[i]);
}

/// Lanes whose sum is <q, x̂> of one token: Σ_g scale_g·(Σ_{j∈g} q_j·code_j) + Σ_g min_g·qsum_g.
KVB_AVX2_INLINE __m256 token_dot(const float* q, const uint8_t* c, const float* par, const float* qsum, int G, int ng) {
  __m256 acc = _mm256_setzero_ps();
  float m = 0.f;
  for (int g = 0; g < ng; ++g) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    const int j1 = (g + 1) * G;
    int j = g * G;
    for (; j + 16 <= j1; j += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), codes8(c + j), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), codes8(c + j + 8), a1);
    }
    if (j < j1) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), codes8(c + j), a0);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(par[2 * g]), _mm256_add_ps(a0, a1), acc);
    m += par[2 * g + 1] * qsum[g];
  }
  return _mm256_add_ps(acc, _mm256_setr_ps(m, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f));
}

template <int B>
KVB_AVX2_INLINE void dot_rows_b(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm,
                                int64_t n, float* dots, float* tmp) {
  const int d = f.d, G = f.group, ng = f.groups();
  const int64_t rb = f.bytes();
  float* qsum = tmp;                                      // [ng]
  float* par = tmp + ng;                                  // [kRowBlock][2·ng]
  uint8_t* cb = reinterpret_cast<uint8_t*>(par + 2 * ng * kRowBlock);  // [kRowBlock][d]
  for (int g = 0; g < ng; ++g) {
    float s = 0.f;
    for (int j = g * G; j < (g + 1) * G; ++j) s += q[j];
    qsum[g] = s;
  }
  for (int64_t t0 = 0; t0 < n; t0 += kRowBlock) {
    const int nb = static_cast<int>(std::min<int64_t>(kRowBlock, n - t0));
    const uint8_t* blk = code_bytes<B>(codes + t0 * rb, static_cast<int64_t>(nb) * d, cb);
    for (int i = 0; i < nb; ++i) params_f32(sm + (t0 + i) * ng, ng, 1.f, par + i * 2 * ng);
    int i = 0;
    for (; i + 4 <= nb; i += 4) {
      const __m256 a = token_dot(q, blk + (i + 0) * d, par + (i + 0) * 2 * ng, qsum, G, ng);
      const __m256 b = token_dot(q, blk + (i + 1) * d, par + (i + 1) * 2 * ng, qsum, G, ng);
      const __m256 c = token_dot(q, blk + (i + 2) * d, par + (i + 2) * 2 * ng, qsum, G, ng);
      const __m256 e = token_dot(q, blk + (i + 3) * d, par + (i + 3) * 2 * ng, qsum, G, ng);
      _mm_storeu_ps(dots + t0 + i, hsum4(a, b, c, e));
    }
    for (; i < nb; ++i) dots[t0 + i] = hsum(token_dot(q, blk + i * d, par + i * 2 * ng, qsum, G, ng));
  }
}

/// out[j0, j0 + 8·NV) += Σ_{i<nb} par_i[scale of j's group]·code_ij + msum[min of j's group]: NV
/// accumulators stay in registers over the block's tokens.
template <int NV>
KVB_AVX2_INLINE void value_chunk(const uint8_t* blk, int d, const float* par, int pstride, int nb, int G, int j0,
                                 const float* msum, float* out) {
  int off[NV];
  __m256 acc[NV];
  for (int v = 0; v < NV; ++v) {
    off[v] = 2 * ((j0 + 8 * v) / G);
    acc[v] = _mm256_setzero_ps();
  }
  const uint8_t* c = blk + j0;
  for (int i = 0; i < nb; ++i, c += d, par += pstride)
    for (int v = 0; v < NV; ++v)
      acc[v] = _mm256_fmadd_ps(_mm256_broadcast_ss(par + off[v]), codes8(c + 8 * v), acc[v]);
  for (int v = 0; v < NV; ++v) {
    float* o = out + j0 + 8 * v;
    const __m256 blk_sum = _mm256_add_ps(acc[v], _mm256_set1_ps(msum[off[v] + 1]));
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), blk_sum));
  }
}

template <int B>
KVB_AVX2_INLINE void accumulate_rows_b(const RowFormat& f, const float* w, const uint8_t* codes,
                                       const GroupParams* sm, int64_t n, float* out, float* tmp) {
  const int d = f.d, G = f.group, ng = f.groups(), ps = 2 * ng;
  const int64_t rb = f.bytes();
  float* msum = tmp;                                      // [2·ng] Σ_block w·(scale, min)
  float* par = tmp + ps;                                  // [kRowBlock][2·ng] w_t·(scale, min)
  uint8_t* cb = reinterpret_cast<uint8_t*>(par + ps * kRowBlock);  // [kRowBlock][d]
  for (int64_t t0 = 0; t0 < n; t0 += kRowBlock) {
    const int nb = static_cast<int>(std::min<int64_t>(kRowBlock, n - t0));
    const uint8_t* blk = code_bytes<B>(codes + t0 * rb, static_cast<int64_t>(nb) * d, cb);
    for (int k = 0; k < ps; ++k) msum[k] = 0.f;
    for (int i = 0; i < nb; ++i) {
      float* p = par + i * ps;
      params_f32(sm + (t0 + i) * ng, ng, w[t0 + i], p);
      for (int k = 0; k < ps; ++k) msum[k] += p[k];
    }
    for (int j0 = 0; j0 < d; j0 += 64) {
      switch (std::min(8, (d - j0) / 8)) {
        case 1: value_chunk<1>(blk, d, par, ps, nb, G, j0, msum, out); break;
        case 2: value_chunk<2>(blk, d, par, ps, nb, G, j0, msum, out); break;
        case 3: value_chunk<3>(blk, d, par, ps, nb, G, j0, msum, out); break;
        case 4: value_chunk<4>(blk, d, par, ps, nb, G, j0, msum, out); break;
        case 5: value_chunk<5>(blk, d, par, ps, nb, G, j0, msum, out); break;
        case 6: value_chunk<6>(blk, d, par, ps, nb, G, j0, msum, out); break;
        case 7: value_chunk<7>(blk, d, par, ps, nb, G, j0, msum, out); break;
        default: value_chunk<8>(blk, d, par, ps, nb, G, j0, msum, out); break;
      }
    }
  }
}

/// Lanes whose sum is Σ_j qs_j·code_j (d % 8 == 0).
KVB_AVX2_INLINE __m256 scaled_dot(const float* qs, const uint8_t* c, int d) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int j = 0;
  for (; j + 16 <= d; j += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qs + j), codes8(c + j), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qs + j + 8), codes8(c + j + 8), a1);
  }
  if (j < d) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qs + j), codes8(c + j), a0);
  return _mm256_add_ps(a0, a1);
}

/// KIVI key blocks: the block's per-channel scales fold into the query (qs), so each token is one dot.
template <int B>
KVB_AVX2_INLINE void key_block_dots_b(const float* q, const uint8_t* codes, const GroupParams* sm, int64_t blocks,
                                      int G, int d, float* dots, float* tmp) {
  float* qs = tmp;                                        // [d]
  uint8_t* cb = reinterpret_cast<uint8_t*>(tmp + d);      // [4][d]
  const int64_t rb = row_bytes(d, B);
  for (int64_t b = 0; b < blocks; ++b, sm += d) {
    float qmin = 0.f;  // Σ_j q_j·min_j
    for (int j = 0; j < d; ++j) {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(sm + j);
      qs[j] = q[j] * _cvtsh_ss(h[0]);
      qmin += q[j] * _cvtsh_ss(h[1]);
    }
    const __m128 vmin = _mm_set1_ps(qmin);
    float* dt = dots + b * G;
    int t = 0;
    for (; t + 4 <= G; t += 4, codes += 4 * rb) {
      const uint8_t* c = code_bytes<B>(codes, 4 * static_cast<int64_t>(d), cb);
      _mm_storeu_ps(dt + t, _mm_add_ps(hsum4(scaled_dot(qs, c, d), scaled_dot(qs, c + d, d), scaled_dot(qs, c + 2 * d, d), scaled_dot(qs, c + 3 * d, d)), vmin));
    }
    for (; t < G; ++t, codes += rb) {
      const uint8_t* c = code_bytes<B>(codes, d, cb);
      dt[t] = hsum(scaled_dot(qs, c, d)) + qmin;
    }
  }
}

/// x̂ rows of format f: codes expanded to bytes once for the n rows, then per group one FMA per 8 codes.
template <int B>
KVB_AVX2_INLINE void decode_rows_b(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n, float* out,
                                   float* tmp) {
  const int d = f.d, G = f.group, ng = f.groups();
  float* par = tmp;                                           // [2·ng] (scale, min) of one row
  uint8_t* cb = reinterpret_cast<uint8_t*>(tmp + 2 * ng + 8);  // [n][d]
  const uint8_t* blk = code_bytes<B>(codes, static_cast<int64_t>(n) * d, cb);
  for (int r = 0; r < n; ++r) {
    params_f32(sm + static_cast<int64_t>(r) * ng, ng, 1.f, par);
    const uint8_t* c = blk + static_cast<int64_t>(r) * d;
    float* o = out + static_cast<int64_t>(r) * d;
    for (int g = 0; g < ng; ++g) {
      const __m256 vs = _mm256_set1_ps(par[2 * g]), vm = _mm256_set1_ps(par[2 * g + 1]);
      for (int j = g * G; j < (g + 1) * G; j += 8) _mm256_storeu_ps(o + j, _mm256_fmadd_ps(codes8(c + j), vs, vm));
    }
  }
}

/// KIVI key rows (per-channel scale and min, d % 8 == 0).
template <int B>
KVB_AVX2_INLINE void decode_rows_channel_b(const uint8_t* codes, int n, int d, const float* scale, const float* mn,
                                           float* out, float* tmp) {
  uint8_t* cb = reinterpret_cast<uint8_t*>(tmp);  // [n][d]
  const uint8_t* blk = code_bytes<B>(codes, static_cast<int64_t>(n) * d, cb);
  for (int r = 0; r < n; ++r) {
    const uint8_t* c = blk + static_cast<int64_t>(r) * d;
    float* o = out + static_cast<int64_t>(r) * d;
    for (int j = 0; j < d; j += 8)
      _mm256_storeu_ps(o + j, _mm256_fmadd_ps(codes8(c + j), _mm256_loadu_ps(scale + j), _mm256_loadu_ps(mn + j)));
  }
}


}  // namespace

bool avx2_rows_ok(const RowFormat& f) { return f.d % 8 == 0 && f.group % 8 == 0; }

KVB_AVX2 void dot_rows_avx2(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm,
                            int64_t n, float* dots, float* tmp) {
  KVB_DISPATCH_BITS(f.bits, dot_rows_b, f, q, codes, sm, n, dots, tmp)
}

KVB_AVX2 void accumulate_rows_avx2(const RowFormat& f, const float* w, const uint8_t* codes, const GroupParams* sm,
                                   int64_t n, float* out, float* tmp) {
  KVB_DISPATCH_BITS(f.bits, accumulate_rows_b, f, w, codes, sm, n, out, tmp)
}

KVB_AVX2 void key_block_dots_avx2(int bits, const float* q, const uint8_t* codes, const GroupParams* sm,
                                  int64_t blocks, int G, int d, float* dots, float* tmp) {
  KVB_DISPATCH_BITS(bits, key_block_dots_b, q, codes, sm, blocks, G, d, dots, tmp)
}

KVB_AVX2 void decode_rows_avx2(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n, float* out,
                               float* tmp) {
  KVB_DISPATCH_BITS(f.bits, decode_rows_b, f, codes, sm, n, out, tmp)
}

KVB_AVX2 void decode_rows_channel_avx2(int bits, const uint8_t* codes, int n, int d, const float* scale,
                                       const float* mn, float* out, float* tmp) {
  KVB_DISPATCH_BITS(bits, decode_rows_channel_b, codes, n, d, scale, mn, out, tmp)
}

#else  // not x86-64: the portable loops only
void decode_rows_avx2(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n, float* out, float*) {
  decode_rows_portable(f, codes, sm, n, out);
}
void decode_rows_channel_avx2(int bits, const uint8_t* codes, int n, int d, const float* scale, const float* mn,
                              float* out, float*) {
  decode_rows_channel_portable(bits, codes, n, d, scale, mn, out);
}

bool avx2_rows_ok(const RowFormat&) { return false; }
void dot_rows_avx2(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm, int64_t n,
                   float* dots, float* tmp) {
  dot_rows_portable(f, q, codes, sm, n, dots, tmp);
}
void accumulate_rows_avx2(const RowFormat& f, const float* w, const uint8_t* codes, const GroupParams* sm,
                          int64_t n, float* out, float* tmp) {
  accumulate_rows_portable(f, w, codes, sm, n, out, tmp);
}
void key_block_dots_avx2(int, const float*, const uint8_t*, const GroupParams*, int64_t, int, int, float*, float*) {}

#endif

}  // namespace kvb::kernels::uq
