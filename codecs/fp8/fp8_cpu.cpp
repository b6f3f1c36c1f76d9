/// fp8 CPU implementation. Layout: k8, v8 [kv_head][token][head_dim] FP8 codes; k_scale, v_scale
/// [kv_head] fp32. Attend decodes each row of codes through a table and applies the head's scale once per
/// logit and once to the output: <q, k̂_t> = scale_k · Σ_j q_j·dec(c_tj).
#include <algorithm>
#include <cmath>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "codecs/common/baseline.h"
#include "kernels/cpu/row_kernels.h"
#include "codecs/fp8/fp8_codec.h"

namespace kvb::codecs {
namespace {

// Hot loops: each row of codes is decoded into a scratch row through a 256-entry table built from fp8.h
// (L1-resident; measured 1.6x faster on x86-64 than fp8.h's branch-free bit decoder, which needs ~15
// vector ops per element), then dotted / accumulated with vectorized float loops. Compiled for AVX2 and
// the baseline (KVB_CPU_CLONES).

/// dec(c) for every code, per format.
struct DecodeTables {
  float e4m3[256], e5m2[256];
  DecodeTables() {
    for (int c = 0; c < 256; ++c) {
      e4m3[c] = kernels::fp8::decode_e4m3(static_cast<uint8_t>(c));
      e5m2[c] = kernels::fp8::decode_e5m2(static_cast<uint8_t>(c));
    }
  }
};
const DecodeTables kTables;

/// tmp[j] = dec(c[j]), j < d.
KVB_FORCE_INLINE void decode_row(const float* lut, const uint8_t* c, int d, float* tmp) {
  for (int j = 0; j < d; ++j) tmp[j] = lut[c[j]];
}

/// dots[t] = scale · Σ_j q_j·dec(k_tj), t < n; k [n][d]; tmp [d].
KVB_CPU_CLONES void fp8_dots(const float* lut, const float* q, const uint8_t* k, int64_t n, int d, float scale,
                             float* dots, float* tmp) {
  for (int64_t t = 0; t < n; ++t, k += d) {
    decode_row(lut, k, d, tmp);
    dots[t] = scale * kernels::dot_f32_inline(q, tmp, d);
  }
}

/// out[j] = scale · Σ_t w_t·dec(v_tj); v [n][d]; tmp [d].
KVB_CPU_CLONES void fp8_values(const float* lut, const float* w, const uint8_t* v, int64_t n, int d, float scale,
                               float* out, float* tmp) {
  for (int j = 0; j < d; ++j) out[j] = 0.f;
  for (int64_t t = 0; t < n; ++t, v += d) {
    if (w[t] == 0.f) continue;
    decode_row(lut, v, d, tmp);
    kernels::axpy_f32_inline(w[t], tmp, out, d);
  }
  for (int j = 0; j < d; ++j) out[j] *= scale;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KVB_FP8_X86 1
#define KVB_FP8_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KVB_FP8_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

// AVX2 kernels (d % 8 == 0): FP8 -> binary16 is a shift, then vcvtph2ps converts 8 at a time.
//  E5M2 is the upper byte of a binary16: f16(code << 8) = dec(code) exactly, Inf and NaN included.
//  E4M3FN: f16((sign << 15) | ((code & 0x7f) << 7)) = dec(code)·2^-8 exactly, subnormals included (an
//  E4M3 subnormal m·2^-9 lands on the binary16 subnormal m·2^-17); the 2^8 is folded into the head's
//  scale (exact: a power of two). Only the NaN code 0x7f / 0xff has no such image: layers holding it use
//  the table path (their inputs had NaN; the loader rejects those, so in practice never).

/// dec(c)·2^-8 (E4M3) or dec(c) (E5M2) of the 8 codes at p.
template <kernels::fp8::Format F>
KVB_FP8_AVX2_INLINE __m256 dec8(const uint8_t* p) {
  const __m128i c = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));  // sign-extended
  if constexpr (F == kernels::fp8::Format::kE4M3)
    return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(c, 7), _mm_set1_epi16(static_cast<short>(0xBF80))));
  else
    return _mm256_cvtph_ps(_mm_slli_epi16(c, 8));
}

template <kernels::fp8::Format F>
KVB_FP8_AVX2_INLINE __m256 dot_row(const float* q, const uint8_t* k, int d) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int j = 0;
  for (; j + 16 <= d; j += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), dec8<F>(k + j), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), dec8<F>(k + j + 8), a1);
  }
  if (j < d) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), dec8<F>(k + j), a0);
  return _mm256_add_ps(a0, a1);
}

KVB_FP8_AVX2_INLINE float hsum8(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

/// dots[t] = scale · Σ_j q_j·dec'(k_tj) (dec' = dec8's lanes; scale already includes the 2^8 for E4M3).
template <kernels::fp8::Format F>
KVB_FP8_AVX2 void fp8_dots_avx2(const float* q, const uint8_t* k, int64_t n, int d, float scale, float* dots) {
  const __m128 vs = _mm_set1_ps(scale);
  int64_t t = 0;
  for (; t + 4 <= n; t += 4, k += 4 * d) {
    const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(dot_row<F>(q, k, d), dot_row<F>(q, k + d, d)),
                                    _mm256_hadd_ps(dot_row<F>(q, k + 2 * d, d), dot_row<F>(q, k + 3 * d, d)));
    _mm_storeu_ps(dots + t, _mm_mul_ps(vs, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))));
  }
  for (; t < n; ++t, k += d) dots[t] = scale * hsum8(dot_row<F>(q, k, d));
}

/// out[j0, j0 + 8·NV) += Σ_{t<nb} w_t·dec'(v_t,j): NV accumulators in registers over a block of tokens.
template <kernels::fp8::Format F, int NV>
KVB_FP8_AVX2_INLINE void value_chunk(const float* w, const uint8_t* v, int64_t nb, int d, int j0, float* out) {
  __m256 acc[NV];
  for (int i = 0; i < NV; ++i) acc[i] = _mm256_setzero_ps();
  v += j0;
  for (int64_t t = 0; t < nb; ++t, v += d) {
    const __m256 wv = _mm256_broadcast_ss(w + t);
    for (int i = 0; i < NV; ++i) acc[i] = _mm256_fmadd_ps(wv, dec8<F>(v + 8 * i), acc[i]);
  }
  for (int i = 0; i < NV; ++i)
    _mm256_storeu_ps(out + j0 + 8 * i, _mm256_add_ps(_mm256_loadu_ps(out + j0 + 8 * i), acc[i]));
}

/// out[j] = scale · Σ_t w_t·dec'(v_tj), in blocks of 32 tokens × 64 channels.
template <kernels::fp8::Format F>
KVB_FP8_AVX2 void fp8_values_avx2(const float* w, const uint8_t* v, int64_t n, int d, float scale, float* out) {
  for (int j = 0; j < d; ++j) out[j] = 0.f;
  for (int64_t t0 = 0; t0 < n; t0 += 32) {
    const int64_t nb = std::min<int64_t>(32, n - t0);
    const uint8_t* vb = v + t0 * d;
    for (int j0 = 0; j0 < d; j0 += 64) {
      switch (std::min(8, (d - j0) / 8)) {
        case 1: value_chunk<F, 1>(w + t0, vb, nb, d, j0, out); break;
        case 2: value_chunk<F, 2>(w + t0, vb, nb, d, j0, out); break;
        case 3: value_chunk<F, 3>(w + t0, vb, nb, d, j0, out); break;
        case 4: value_chunk<F, 4>(w + t0, vb, nb, d, j0, out); break;
        case 5: value_chunk<F, 5>(w + t0, vb, nb, d, j0, out); break;
        case 6: value_chunk<F, 6>(w + t0, vb, nb, d, j0, out); break;
        case 7: value_chunk<F, 7>(w + t0, vb, nb, d, j0, out); break;
        default: value_chunk<F, 8>(w + t0, vb, nb, d, j0, out); break;
      }
    }
  }
  for (int j = 0; j < d; ++j) out[j] *= scale;
}

/// out[i] = dec'(c_i) (dec8's lanes), n % 8 == 0.
template <kernels::fp8::Format F>
KVB_FP8_AVX2 void fp8_decode_avx2(const uint8_t* c, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i += 8) _mm256_storeu_ps(out + i, dec8<F>(c + i));
}
#endif

/// out[i] = dec(c_i) through the table.
KVB_CPU_CLONES void fp8_decode(const float* lut, const uint8_t* c, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = lut[c[i]];
}

template <kernels::fp8::Format F>
KVB_FORCE_INLINE void encode_f(const float* x, int64_t n, float scale, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i)
    codes[i] = F == kernels::fp8::Format::kE4M3 ? kernels::fp8::encode_e4m3(x[i] / scale) : kernels::fp8::encode_e5m2(x[i] / scale);
}

/// Encodes one head's n floats: returns the scale, writes n codes.
KVB_CPU_CLONES float encode_head(kernels::fp8::Format f, const float* x, int64_t n, uint8_t* codes) {
  float absmax = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    absmax = a > absmax ? a : absmax;
  }
  const float scale = kernels::fp8::head_scale(absmax, f);
  if (f == kernels::fp8::Format::kE4M3) encode_f<kernels::fp8::Format::kE4M3>(x, n, scale, codes);
  else encode_f<kernels::fp8::Format::kE5M2>(x, n, scale, codes);
  return scale;
}

class Fp8Layer final : public BaselineLayer {
 public:
  Fp8Layer(const Fp8Params& p, const LayerKV& kv, const CodecContext& ctx)
      : BaselineLayer(kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn),
        format_(p.format), lut_(p.format == kernels::fp8::Format::kE4M3 ? kTables.e4m3 : kTables.e5m2),
        k_(kv.k.size()), v_(kv.v.size()), k_scale_(kv.kv_heads), v_scale_(kv.kv_heads) {
    const int64_t n = C_ * d_;
    for_each_head(kv_heads_, [&](int g) {
      k_scale_[g] = encode_head(p.format, kv.k_head(g), n, &k_[g * n]);
      v_scale_[g] = encode_head(p.format, kv.v_head(g), n, &v_[g * n]);
    });
    // The shift decode of the AVX2 path has no image for E4M3's NaN code (see dec8).
    const auto is_nan = [](uint8_t c) { return (c & 0x7fu) == 0x7fu; };
    shift_decode_ok_ = d_ % 8 == 0 && (p.format == kernels::fp8::Format::kE5M2 ||
                                       (std::none_of(k_.begin(), k_.end(), is_nan) &&
                                        std::none_of(v_.begin(), v_.end(), is_nan)));
  }

  Storage storage() const override {
    return StorageList(kv_heads_, 2.0 * d_)
        .add("k.fp8", StorageKind::kCompressed, bytes_of(k_), C_)
        .add("v.fp8", StorageKind::kCompressed, bytes_of(v_), C_)
        .add("k.scale", StorageKind::kFixed, bytes_of(k_scale_), 0)
        .add("v.scale", StorageKind::kFixed, bytes_of(v_scale_), 0)
        .get();
  }

  std::vector<NamedBuffer> buffers() const override {
    return {named_buffer("k.fp8", k_), named_buffer("v.fp8", v_), named_buffer("k.scale", k_scale_),
            named_buffer("v.scale", v_scale_)};
  }

 protected:
  void key_dots(int g, const float* q, float* dots, Scratch& scratch) const override {
#if defined(KVB_FP8_X86)
    if (shift_decode_ok_ && kernels::simd_kernels_enabled()) {
      const uint8_t* k = &k_[static_cast<size_t>(g) * C_ * d_];
      if (format_ == kernels::fp8::Format::kE4M3) fp8_dots_avx2<kernels::fp8::Format::kE4M3>(q, k, C_, d_, 256.f * k_scale_[g], dots);
      else fp8_dots_avx2<kernels::fp8::Format::kE5M2>(q, k, C_, d_, k_scale_[g], dots);
      return;
    }
#endif
    fp8_dots(lut_, q, &k_[static_cast<size_t>(g) * C_ * d_], C_, d_, k_scale_[g], dots, scratch.floats2(d_));
  }
  void weighted_values(int g, const float* w, float* out, Scratch& scratch) const override {
#if defined(KVB_FP8_X86)
    if (shift_decode_ok_ && kernels::simd_kernels_enabled()) {
      const uint8_t* v = &v_[static_cast<size_t>(g) * C_ * d_];
      if (format_ == kernels::fp8::Format::kE4M3) fp8_values_avx2<kernels::fp8::Format::kE4M3>(w, v, C_, d_, 256.f * v_scale_[g], out);
      else fp8_values_avx2<kernels::fp8::Format::kE5M2>(w, v, C_, d_, v_scale_[g], out);
      return;
    }
#endif
    fp8_values(lut_, w, &v_[static_cast<size_t>(g) * C_ * d_], C_, d_, v_scale_[g], out, scratch.floats2(d_));
  }
  /// GQA calls: the codes decoded in registers by the fused kernel (kernels/cpu/attend_rows.h), where the shift
  /// decode applies (no E4M3 NaN code); its 2^-8 joins the head's scales as in key_factor.
  bool attend_many_fused(int g, const float* const* qs, int nq, float* const* outs, Scratch& scratch) const override {
    if (!shift_decode_ok_) return false;
    const bool e4m3 = format_ == kernels::fp8::Format::kE4M3;
    const kernels::RowCodec rc = e4m3 ? kernels::RowCodec::kE4M3 : kernels::RowCodec::kE5M2;
    const size_t at = static_cast<size_t>(g) * C_ * d_;
    const float shift = e4m3 ? 256.f : 1.f;
    return attend_many_coded_fused({rc, &k_[at]}, {rc, &v_[at]}, C_, d_, attn_, qs, nq, outs, scratch,
                                   shift * k_scale_[g], shift * v_scale_[g]);
  }
  void decode_keys(int g, int64_t t0, int n, float* out, float*) const override {
    decode(&k_[(static_cast<size_t>(g) * C_ + t0) * d_], static_cast<int64_t>(n) * d_, out);
  }
  void decode_values(int g, int64_t t0, int n, float* out, float*) const override {
    decode(&v_[(static_cast<size_t>(g) * C_ + t0) * d_], static_cast<int64_t>(n) * d_, out);
  }
  // The shift decode of E4M3 yields dec·2^-8: the 2^8 joins the head's scale (as in key_dots).
  float key_factor(int g) const override { return shift_factor() * k_scale_[g]; }
  float value_factor(int g) const override { return shift_factor() * v_scale_[g]; }

 private:
  bool shift_path() const {
#if defined(KVB_FP8_X86)
    return shift_decode_ok_ && kernels::simd_kernels_enabled();
#else
    return false;
#endif
  }
  float shift_factor() const { return shift_path() && format_ == kernels::fp8::Format::kE4M3 ? 256.f : 1.f; }
  void decode(const uint8_t* c, int64_t n, float* out) const {
#if defined(KVB_FP8_X86)
    if (shift_path()) {
      if (format_ == kernels::fp8::Format::kE4M3) fp8_decode_avx2<kernels::fp8::Format::kE4M3>(c, n, out);
      else fp8_decode_avx2<kernels::fp8::Format::kE5M2>(c, n, out);
      return;
    }
#endif
    fp8_decode(lut_, c, n, out);
  }

  kernels::fp8::Format format_;
  bool shift_decode_ok_ = false;          // the AVX2 shift decode applies (d % 8 == 0, no E4M3 NaN code)
  const float* lut_;                      // [256] dec(code) of this layer's format
  std::vector<uint8_t> k_, v_;            // [kv_head][token][head_dim] FP8 codes
  std::vector<float> k_scale_, v_scale_;  // [kv_head] fp32 scales
};

}  // namespace

std::unique_ptr<EncodedLayer> fp8_encode_cpu(const Fp8Params& p, const LayerKV& kv, const CodecContext& ctx) {
  return std::make_unique<Fp8Layer>(p, kv, ctx);
}

}  // namespace kvb::codecs
