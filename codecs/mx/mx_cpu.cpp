/// Microscaling CPU implementation (layout: mx_codec.h). Encode is kernels/formats/mx.h's encode_row per token
/// row. Attend follows the fp8 path's structure: each row of codes is decoded into a scratch row (element
/// value × its block's scale: exact in float, the products having at most 6 significant bits; AVX2 rows when
/// d % 8 == 0, tables built from mx.h otherwise), then dotted / accumulated with the shared vectorized float
/// loops; nvfp4's per-tensor scale is applied once per logit and once to the output, like fp8's head scale.
#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "codecs/common/baseline.h"
#include "codecs/mx/mx_codec.h"
#include "kernels/cpu/row_kernels.h"

namespace kvb::codecs {
namespace mxk = kernels::mx;
namespace {

/// dec(code) for every byte: element pairs of a packed FP4 byte, E4M3 values, E8M0 values.
struct DecodeTables {
  float fp4_pair[256][2];
  float e4m3[256], e8m0[256];
  DecodeTables() {
    for (int c = 0; c < 256; ++c) {
      fp4_pair[c][0] = mxk::decode_e2m1(static_cast<uint8_t>(c & 0xf));
      fp4_pair[c][1] = mxk::decode_e2m1(static_cast<uint8_t>(c >> 4));
      e4m3[c] = kernels::fp8::decode_e4m3(static_cast<uint8_t>(c));
      e8m0[c] = mxk::decode_e8m0(static_cast<uint8_t>(c));
    }
  }
};
const DecodeTables kTables;

/// One row's values up to the nvfp4 global scale: out[j] = dec(c_j) · scale(block of j), j < d.
struct RowDecoder {
  mxk::Kind kind;
  int d, rb, nb, B;
  const float* scale_lut;

  KVB_FORCE_INLINE void operator()(const uint8_t* codes, const uint8_t* scales, float* out) const {
    if (mxk::is_fp4(kind)) {
      for (int b = 0; b < nb; ++b) {
        const float s = scale_lut[scales[b]];
        const int j0 = b * B, j1 = std::min(d, j0 + B);
        int j = j0;
        for (; j + 1 < j1; j += 2) {
          const float* p = kTables.fp4_pair[codes[j >> 1]];
          out[j] = p[0] * s;
          out[j + 1] = p[1] * s;
        }
        if (j < j1) out[j] = kTables.fp4_pair[codes[j >> 1]][0] * s;
      }
    } else {
      for (int b = 0; b < nb; ++b) {
        const float s = scale_lut[scales[b]];
        const int j0 = b * B, j1 = std::min(d, j0 + B);
        for (int j = j0; j < j1; ++j) out[j] = kTables.e4m3[codes[j]] * s;
      }
    }
  }
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KVB_MX_X86 1
#define KVB_MX_AVX2 __attribute__((target("avx2,fma,f16c")))

// AVX2 rows (d % 8 == 0, so every block is a whole number of 8-element groups), the same float values as the
// table path, so the two agree exactly on the decoded rows:
//  FP4: the 8 nibbles of 4 code bytes are shifted into 8 lanes, vpermps looks their magnitude up in E2M1's 8
//  values (it reads only the low 3 bits of each index) and the sign bit is XORed in; times the block's scale.
//  E4M3 (mxfp8): f16((sign << 15) | ((code & 0x7f) << 7)) = dec(code)·2^-8 exactly (fp8_cpu.cpp's shift
//  decode), times scale·2^8 (exact: E8M0 scales of mxfp8 blocks are at most 2^119). The NaN code 0x7f has no
//  such image, but it only occurs in a block whose scale is NaN (a NaN input), which decodes to NaN either way.

template <bool kFp4>
KVB_MX_AVX2 inline __m256 dec8_avx2(const uint8_t* codes, int j) {
  if constexpr (kFp4) {
    const __m256 mag = _mm256_setr_ps(0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f);
    uint32_t w;
    std::memcpy(&w, codes + j / 2, 4);
    const __m256i idx =
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(w)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(idx, _mm256_set1_epi32(8)), 28);
    return _mm256_xor_ps(_mm256_permutevar8x32_ps(mag, idx), _mm256_castsi256_ps(sign));
  } else {
    const __m128i c = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j)));
    return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(c, 7), _mm_set1_epi16(static_cast<short>(0xBF80))));
  }
}

/// out[0, d) = the decoded row (mx.h load_element up to nvfp4's global scale).
template <bool kFp4>
KVB_MX_AVX2 void row_avx2(const uint8_t* codes, const uint8_t* scales, int d, int B, const float* scale_lut,
                          float* out) {
  for (int j0 = 0, b = 0; j0 < d; j0 += B, ++b) {
    const __m256 s = _mm256_set1_ps(kFp4 ? scale_lut[scales[b]] : 256.f * scale_lut[scales[b]]);
    const int j1 = std::min(d, j0 + B);
    for (int j = j0; j < j1; j += 8) _mm256_storeu_ps(out + j, _mm256_mul_ps(dec8_avx2<kFp4>(codes, j), s));
  }
}

/// dots[t] = factor · <q, row t> through row_avx2.
template <bool kFp4>
KVB_MX_AVX2 void dots_avx2(const RowDecoder& dec, const float* q, const uint8_t* codes, const uint8_t* scales,
                           int64_t n, float factor, float* dots, float* tmp) {
  for (int64_t t = 0; t < n; ++t) {
    row_avx2<kFp4>(codes + t * dec.rb, scales + t * dec.nb, dec.d, dec.B, dec.scale_lut, tmp);
    dots[t] = factor * kernels::dot_f32_inline(q, tmp, dec.d);
  }
}

/// out[j] = factor · Σ_t w_t·row_t[j] through row_avx2.
template <bool kFp4>
KVB_MX_AVX2 void values_avx2(const RowDecoder& dec, const float* w, const uint8_t* codes, const uint8_t* scales,
                             int64_t n, float factor, float* out, float* tmp) {
  const int d = dec.d;
  for (int j = 0; j < d; ++j) out[j] = 0.f;
  for (int64_t t = 0; t < n; ++t) {
    if (w[t] == 0.f) continue;
    row_avx2<kFp4>(codes + t * dec.rb, scales + t * dec.nb, d, dec.B, dec.scale_lut, tmp);
    kernels::axpy_f32_inline(w[t], tmp, out, d);
  }
  for (int j = 0; j < d; ++j) out[j] *= factor;
}
#endif

/// dots[t] = factor · <q, row t>, t < n.
KVB_CPU_CLONES void mx_dots(const RowDecoder& dec, const float* q, const uint8_t* codes, const uint8_t* scales,
                            int64_t n, float factor, float* dots, float* tmp) {
  for (int64_t t = 0; t < n; ++t) {
    dec(codes + t * dec.rb, scales + t * dec.nb, tmp);
    dots[t] = factor * kernels::dot_f32_inline(q, tmp, dec.d);
  }
}

/// out[j] = factor · Σ_t w_t·row_t[j].
KVB_CPU_CLONES void mx_values(const RowDecoder& dec, const float* w, const uint8_t* codes, const uint8_t* scales,
                              int64_t n, float factor, float* out, float* tmp) {
  const int d = dec.d;
  for (int j = 0; j < d; ++j) out[j] = 0.f;
  for (int64_t t = 0; t < n; ++t) {
    if (w[t] == 0.f) continue;
    dec(codes + t * dec.rb, scales + t * dec.nb, tmp);
    kernels::axpy_f32_inline(w[t], tmp, out, d);
  }
  for (int j = 0; j < d; ++j) out[j] *= factor;
}

/// `rows` rows of x [rows][d] through mx.h's encode_row, the kind fixed per case so that each loop is
/// specialized for its format.
KVB_CPU_CLONES void encode_rows(mxk::Kind k, const float* x, int64_t rows, int d, float global, uint8_t* codes,
                                uint8_t* scales) {
  const int64_t rb = mxk::row_bytes(k, d), nb = mxk::blocks_per_row(k, d);
  switch (k) {
    case mxk::Kind::kNvfp4:
      for (int64_t t = 0; t < rows; ++t) mxk::encode_row(mxk::Kind::kNvfp4, x + t * d, d, global, codes + t * rb, scales + t * nb);
      break;
    case mxk::Kind::kMxfp4:
      for (int64_t t = 0; t < rows; ++t) mxk::encode_row(mxk::Kind::kMxfp4, x + t * d, d, global, codes + t * rb, scales + t * nb);
      break;
    case mxk::Kind::kMxfp8:
      for (int64_t t = 0; t < rows; ++t) mxk::encode_row(mxk::Kind::kMxfp8, x + t * d, d, global, codes + t * rb, scales + t * nb);
      break;
  }
}

/// One part (K or V) of all heads.
struct Part {
  std::vector<uint8_t> codes, scales;  // [head][token][rb], [head][token][nb]
  std::vector<float> global;           // nvfp4: [head]; empty otherwise
};

class MxLayer final : public BaselineLayer {
 public:
  MxLayer(const MxParams& p, const LayerKV& kv, const CodecContext& ctx)
      : BaselineLayer(kv.kv_heads, kv.tokens, kv.head_dim, ctx.attn), kind_(p.kind),
        dec_{p.kind, kv.head_dim, mxk::row_bytes(p.kind, kv.head_dim), mxk::blocks_per_row(p.kind, kv.head_dim),
             mxk::block_size(p.kind), p.kind == mxk::Kind::kNvfp4 ? kTables.e4m3 : kTables.e8m0} {
    for (Part* part : {&k_, &v_}) {
      part->codes.resize(static_cast<size_t>(kv_heads_) * C_ * dec_.rb);
      part->scales.resize(static_cast<size_t>(kv_heads_) * C_ * dec_.nb);
      if (kind_ == mxk::Kind::kNvfp4) part->global.resize(kv_heads_);
    }
    for_each_head(kv_heads_, [&](int g) {
      encode_head(kv.k_head(g), g, k_);
      encode_head(kv.v_head(g), g, v_);
    });
  }

  Storage storage() const override {
    StorageList st(kv_heads_, 2.0 * (dec_.rb + dec_.nb));
    for (const auto& [name, part] : {std::pair{"k", &k_}, std::pair{"v", &v_}}) {
      const std::string pre(name);
      st.add(pre + ".codes", StorageKind::kCompressed, bytes_of(part->codes), C_)
          .add(pre + ".scales", StorageKind::kCompressed, bytes_of(part->scales), C_);
      if (!part->global.empty()) st.add(pre + ".global", StorageKind::kFixed, bytes_of(part->global), 0);
    }
    return st.get();
  }

  std::vector<NamedBuffer> buffers() const override {
    std::vector<NamedBuffer> out;
    for (const auto& [name, part] : {std::pair{"k", &k_}, std::pair{"v", &v_}}) {
      const std::string pre(name);
      out.push_back(named_buffer(pre + ".codes", part->codes));
      out.push_back(named_buffer(pre + ".scales", part->scales));
      if (!part->global.empty()) out.push_back(named_buffer(pre + ".global", part->global));
    }
    return out;
  }

 protected:
  void key_dots(int g, const float* q, float* dots, Scratch& scratch) const override {
#if defined(KVB_MX_X86)
    if (avx2_rows()) {
      auto* f = mxk::is_fp4(kind_) ? dots_avx2<true> : dots_avx2<false>;
      return f(dec_, q, codes(k_, g), scales(k_, g), C_, key_factor(g), dots, scratch.floats2(d_));
    }
#endif
    mx_dots(dec_, q, codes(k_, g), scales(k_, g), C_, key_factor(g), dots, scratch.floats2(d_));
  }
  void weighted_values(int g, const float* w, float* out, Scratch& scratch) const override {
#if defined(KVB_MX_X86)
    if (avx2_rows()) {
      auto* f = mxk::is_fp4(kind_) ? values_avx2<true> : values_avx2<false>;
      return f(dec_, w, codes(v_, g), scales(v_, g), C_, value_factor(g), out, scratch.floats2(d_));
    }
#endif
    mx_values(dec_, w, codes(v_, g), scales(v_, g), C_, value_factor(g), out, scratch.floats2(d_));
  }
  void decode_keys(int g, int64_t t0, int n, float* out, float*) const override { decode(k_, g, t0, n, out); }
  void decode_values(int g, int64_t t0, int n, float* out, float*) const override { decode(v_, g, t0, n, out); }
  float key_factor(int g) const override { return k_.global.empty() ? 1.f : k_.global[g]; }
  float value_factor(int g) const override { return v_.global.empty() ? 1.f : v_.global[g]; }

 private:
  const uint8_t* codes(const Part& p, int g) const { return &p.codes[static_cast<size_t>(g) * C_ * dec_.rb]; }
  const uint8_t* scales(const Part& p, int g) const { return &p.scales[static_cast<size_t>(g) * C_ * dec_.nb]; }

  /// The AVX2 row decode applies: d % 8 == 0 and the AVX2 kernels switched on.
  bool avx2_rows() const {
#if defined(KVB_MX_X86)
    return d_ % 8 == 0 && kernels::simd_kernels_enabled();
#else
    return false;
#endif
  }

  void decode(const Part& p, int g, int64_t t0, int n, float* out) const {
    const uint8_t* c = codes(p, g) + t0 * dec_.rb;
    const uint8_t* s = scales(p, g) + t0 * dec_.nb;
#if defined(KVB_MX_X86)
    if (avx2_rows()) {
      auto* f = mxk::is_fp4(kind_) ? row_avx2<true> : row_avx2<false>;
      for (int r = 0; r < n; ++r)
        f(c + static_cast<int64_t>(r) * dec_.rb, s + static_cast<int64_t>(r) * dec_.nb, d_, dec_.B, dec_.scale_lut,
          out + static_cast<int64_t>(r) * d_);
      return;
    }
#endif
    for (int r = 0; r < n; ++r) dec_(c + static_cast<int64_t>(r) * dec_.rb, s + static_cast<int64_t>(r) * dec_.nb,
                                     out + static_cast<int64_t>(r) * d_);
  }

  void encode_head(const float* x, int g, Part& p) const {
    float global = 1.f;
    if (kind_ == mxk::Kind::kNvfp4) {
      float amax = 0.f;
      for (int64_t i = 0; i < C_ * d_; ++i) {
        const float a = mxk::amax_term(x[i]);
        amax = a > amax ? a : amax;
      }
      global = p.global[g] = mxk::nvfp4_global_scale(amax);
    }
    uint8_t* c = &p.codes[static_cast<size_t>(g) * C_ * dec_.rb];
    uint8_t* s = &p.scales[static_cast<size_t>(g) * C_ * dec_.nb];
    encode_rows(kind_, x, C_, d_, global, c, s);
  }

  mxk::Kind kind_;
  RowDecoder dec_;
  Part k_, v_;
};

}  // namespace

std::unique_ptr<EncodedLayer> mx_encode_cpu(const MxParams& p, const LayerKV& kv, const CodecContext& ctx) {
  return std::make_unique<MxLayer>(p, kv, ctx);
}

}  // namespace kvb::codecs
