#pragma once
/// The format-traits table of the device backend: every stored element format that a device-resident cache
/// (kernels/cuda/layer_view.h) can hold, described once — its name, buffer sizes, how one
/// stored element is loaded and dequantized (host and device: KVB_HD), and its encode kernel — in the spirit
/// of ggml's type traits. The attention kernel is instantiated for every (K format, V format) pair of the
/// table and the device layer (codecs/common/gpu_layer.cpp) sizes, encodes and names buffers through it, so
/// adding a format is one traits struct here (plus its math in kernels/formats/ and its encode kernel in
/// kernels/cuda/encode_*.cu) and one entry of `Formats`.
///
/// Every format stores one of K or V of all KV heads as a token-major range [0, q_tokens) per head; the rest
/// of each head's rows [q_tokens, C) are verbatim fp16 (the part's `tail`, handled outside the table).
/// Plain data and KVB_HD functions only (nvcc compiles this as C++17); the encode launchers are declared only
/// in builds with the CUDA backend.
#include <cstdint>

#include "kernels/formats/fp8.h"
#include "kernels/formats/mx.h"
#include "kernels/formats/uniform.h"
#include "kvb/core/half.h"
#include "kvb/core/hd.h"

#ifdef KVB_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvb::kernels::gpu {

/// Format ids (stable: tests and device layers name formats by them).
enum class Fmt : int {
  kF16 = 0,           ///< no quantized range (q_tokens = 0): every row fp16
  kFp8E4M3 = 1,       ///< codes [head][t][d], one fp32 scale per head
  kFp8E5M2 = 2,
  kTokenQuant = 3,    ///< int / kivi values: codes [head][t][row_bytes], sm [head][t][d/group]
  kChannelQuant = 4,  ///< kivi keys: codes [head][t][row_bytes], sm [head][t/group][d] (per channel per block)
  kNvfp4 = 5,         ///< microscaling (mx.h): codes [head][t][row_bytes], block scales [head][t][blocks],
  kMxfp4 = 6,         ///< nvfp4 also one fp32 scale per head
  kMxfp8 = 7,
};

/// One of K or V, all KV heads of the layer, as the kernels read it.
struct Part {
  Fmt fmt = Fmt::kF16;
  int bits = 0;          ///< code width (quant formats)
  int group = 0;         ///< channels per group (token quant) or tokens per block (channel quant)
  int64_t q_tokens = 0;  ///< tokens per head in the quantized range
  const uint8_t* codes = nullptr;
  const uq::GroupParams* sm = nullptr;
  const float* head_scale = nullptr;  ///< fp8, nvfp4: [heads]
  const uint8_t* block_scale = nullptr;  ///< microscaling: [heads][q_tokens][blocks] E4M3 / E8M0 codes
  const uint16_t* tail = nullptr;     ///< fp16 rows [heads][C - q_tokens][d]
};

/// Bytes of a part's format buffers over all heads (the fp16 tail is sized by the caller).
struct PartBytes {
  int64_t codes = 0, sm = 0, scale = 0;
  int64_t block_scale = 0;  ///< microscaling block scales
};

/// Where an encode kernel writes a part: the buffers PartBytes sized, and the part's parameters.
struct EncodeTarget {
  int bits = 0, group = 0;
  int64_t q_tokens = 0;
  uint8_t* codes = nullptr;
  uq::GroupParams* sm = nullptr;
  float* head_scale = nullptr;
  uint8_t* block_scale = nullptr;
};

// ---- the traits: one struct per format -------------------------------------------------------------------
// Each has kId, kName, bytes(heads, q, d, bits, group),
// load(p, d, g, t, j) (element j of token t < q_tokens of head g, dequantized exactly as the CPU decodes it)
// and, with the CUDA backend, encode(x, heads, C, d, target, stream) writing the CPU's bytes from float rows
// x [heads][C][d] (the first q_tokens of each head).

/// fp16 rows only: the format of a part without a quantized range.
struct F16Rows {
  static constexpr Fmt kId = Fmt::kF16;
  static constexpr const char* kName = "f16";
  static inline PartBytes bytes(int64_t, int64_t, int, int, int) { return {}; }
  static KVB_HD_INLINE float load(const Part&, int, int, int64_t, int) { return 0.f; }  // no quantized range
#ifdef KVB_WITH_CUDA
  static inline cudaError_t encode(const float*, int, int64_t, int, const EncodeTarget&, cudaStream_t) {
    return cudaSuccess;
  }
#endif
};

/// OCP FP8 codes of x / scale with one fp32 scale per head (kernels/formats/fp8.h).
template <fp8::Format F>
struct Fp8Codes {
  static constexpr Fmt kId = F == fp8::Format::kE4M3 ? Fmt::kFp8E4M3 : Fmt::kFp8E5M2;
  static constexpr const char* kName = F == fp8::Format::kE4M3 ? "fp8-e4m3" : "fp8-e5m2";
  static inline PartBytes bytes(int64_t heads, int64_t q, int d, int, int) {
    return {heads * q * d, 0, heads * static_cast<int64_t>(sizeof(float))};
  }
  static KVB_HD_INLINE float load(const Part& p, int d, int g, int64_t t, int j) {
    const uint8_t c = p.codes[(static_cast<int64_t>(g) * p.q_tokens + t) * d + j];
    return (F == fp8::Format::kE4M3 ? fp8::decode_e4m3(c) : fp8::decode_e5m2(c)) * p.head_scale[g];
  }
#ifdef KVB_WITH_CUDA
  static cudaError_t encode(const float* x, int heads, int64_t C, int d, const EncodeTarget& t, cudaStream_t s);
#endif
};

/// Element j of token t of head g of a min-max uniform part (token-major packed code rows), given the
/// (scale, min) pair that covers it: what TokenQuant and ChannelQuant share.
KVB_HD_INLINE float uniform_element(const Part& p, int d, int g, int64_t t, int j, uq::GroupParams s) {
  const int64_t rb = uq::row_bytes(d, p.bits);
  const uint32_t c = uq::unpack_code(p.codes + (static_cast<int64_t>(g) * p.q_tokens + t) * rb, j, p.bits);
  return uq::dequantize(static_cast<float>(c), f16_to_f32(s.scale), f16_to_f32(s.min));
}

/// Min-max uniform codes per token in groups of `group` channels (kernels/formats/uniform.h).
struct TokenQuant {
  static constexpr Fmt kId = Fmt::kTokenQuant;
  static constexpr const char* kName = "uniform-token";
  static inline PartBytes bytes(int64_t heads, int64_t q, int d, int bits, int group) {
    return {heads * q * uq::row_bytes(d, bits),
            heads * q * (d / group) * static_cast<int64_t>(sizeof(uq::GroupParams)), 0};
  }
  static KVB_HD_INLINE float load(const Part& p, int d, int g, int64_t t, int j) {
    const int ng = d / p.group;
    return uniform_element(p, d, g, t, j, p.sm[(static_cast<int64_t>(g) * p.q_tokens + t) * ng + j / p.group]);
  }
#ifdef KVB_WITH_CUDA
  static cudaError_t encode(const float* x, int heads, int64_t C, int d, const EncodeTarget& t, cudaStream_t s);
#endif
};

/// KIVI keys: min-max uniform codes per channel over blocks of `group` tokens, codes token-major.
struct ChannelQuant {
  static constexpr Fmt kId = Fmt::kChannelQuant;
  static constexpr const char* kName = "uniform-channel";
  static inline PartBytes bytes(int64_t heads, int64_t q, int d, int bits, int group) {
    return {heads * q * uq::row_bytes(d, bits),
            heads * (q / group) * d * static_cast<int64_t>(sizeof(uq::GroupParams)), 0};
  }
  static KVB_HD_INLINE float load(const Part& p, int d, int g, int64_t t, int j) {
    const int64_t blocks = p.q_tokens / p.group;
    return uniform_element(p, d, g, t, j, p.sm[(static_cast<int64_t>(g) * blocks + t / p.group) * d + j]);
  }
#ifdef KVB_WITH_CUDA
  static cudaError_t encode(const float* x, int heads, int64_t C, int d, const EncodeTarget& t, cudaStream_t s);
#endif
};

/// Microscaling block formats (kernels/formats/mx.h): per token row, element codes (FP4 packed two per byte,
/// or E4M3 bytes) and one scale byte per block of 16 / 32 channels; nvfp4 adds one fp32 scale per head.
template <mx::Kind K>
struct MxBlocks {
  static constexpr Fmt kId = K == mx::Kind::kNvfp4 ? Fmt::kNvfp4 : K == mx::Kind::kMxfp4 ? Fmt::kMxfp4 : Fmt::kMxfp8;
  static constexpr const char* kName = K == mx::Kind::kNvfp4 ? "nvfp4" : K == mx::Kind::kMxfp4 ? "mxfp4" : "mxfp8";
  static inline PartBytes bytes(int64_t heads, int64_t q, int d, int, int) {
    PartBytes b;
    b.codes = heads * q * mx::row_bytes(K, d);
    b.scale = K == mx::Kind::kNvfp4 ? heads * static_cast<int64_t>(sizeof(float)) : 0;
    b.block_scale = heads * q * mx::blocks_per_row(K, d);
    return b;
  }
  static KVB_HD_INLINE float load(const Part& p, int d, int g, int64_t t, int j) {
    const int64_t row = static_cast<int64_t>(g) * p.q_tokens + t;
    const float x = mx::load_element(K, p.codes + row * mx::row_bytes(K, d), p.block_scale + row * mx::blocks_per_row(K, d), j);
    return K == mx::Kind::kNvfp4 ? x * p.head_scale[g] : x;
  }
#ifdef KVB_WITH_CUDA
  static cudaError_t encode(const float* x, int heads, int64_t C, int d, const EncodeTarget& t, cudaStream_t s);
#endif
};

// ---- the table ---------------------------------------------------------------------------------------------

template <class... Fs>
struct FormatList {};

/// Every format of the device backend. The attention kernel is built for each (K, V) pair of this list.
using Formats = FormatList<F16Rows, Fp8Codes<fp8::Format::kE4M3>, Fp8Codes<fp8::Format::kE5M2>, TokenQuant,
                           ChannelQuant, MxBlocks<mx::Kind::kNvfp4>, MxBlocks<mx::Kind::kMxfp4>,
                           MxBlocks<mx::Kind::kMxfp8>>;

/// Calls fn(Traits{}) with the traits of format f; false when f is not in the table (fn not called).
/// Host code only (sizing, encode dispatch, kernel selection); device code goes through load_format.
template <class Fn, class... Fs>
inline bool visit_format(FormatList<Fs...>, Fmt f, Fn&& fn) {
  return ((f == Fs::kId ? (fn(Fs{}), true) : false) || ...);
}
template <class Fn>
inline bool visit_format(Fmt f, Fn&& fn) {
  return visit_format(Formats{}, f, static_cast<Fn&&>(fn));
}

/// Traits::load of p's format (0 for an id outside the table), host and device: the same fold as
/// visit_format without a callable, so nvcc sees no host lambda called from device code.
template <class... Fs>
KVB_HD_INLINE float load_format(FormatList<Fs...>, const Part& p, int d, int g, int64_t t, int j) {
  float x = 0.f;
  (void)((p.fmt == Fs::kId ? (x = Fs::load(p, d, g, t, j), true) : false) || ...);
  return x;
}

}  // namespace kvb::kernels::gpu
