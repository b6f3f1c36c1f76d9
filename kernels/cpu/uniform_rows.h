#pragma once
/// CPU loops over packed uniform-quantized rows (math in uniform.h), shared by `int` (keys and values)
/// and `kivi` (values; its per-channel keys reuse unpack_rows). Token-major layout throughout:
///   codes [n][row_bytes(d, bits)]   one packed row per token
///   sm    [n][d / group]            GroupParams (fp16 scale, fp16 min) per token and channel group
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/cpu/row_kernels.h"
#include "kernels/formats/uniform.h"

namespace kvb::kernels::uq {

static_assert(sizeof(GroupParams) == 4, "GroupParams is stored as two binary16 values");

/// Reports a code width outside 1..8 reaching a dispatch (params validation rejects such widths first, so
/// this is an internal error): throws kvb::RuntimeError naming the width. Never falls back to another width.
[[noreturn]] void bad_code_width(int bits);

/// Calls f(std::integral_constant<int, B>{}) for B = bits (1..8), so loops get compile-time shifts.
template <class F>
decltype(auto) dispatch_bits(int bits, F&& f) {
  switch (bits) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    case 8: return f(std::integral_constant<int, 8>{});
    default: bad_code_width(bits);
  }
}

/// Same, as a statement calling fn<B>(args...) — for hot loops compiled with KVB_CPU_CLONES, where the
/// per-width body must be inlined into the cloned function (mark it KVB_FORCE_INLINE).
#define KVB_DISPATCH_BITS(bits, fn, ...)                       \
  switch (bits) {                                              \
    case 1: fn<1>(__VA_ARGS__); break;                         \
    case 2: fn<2>(__VA_ARGS__); break;                         \
    case 3: fn<3>(__VA_ARGS__); break;                         \
    case 4: fn<4>(__VA_ARGS__); break;                         \
    case 5: fn<5>(__VA_ARGS__); break;                         \
    case 6: fn<6>(__VA_ARGS__); break;                         \
    case 7: fn<7>(__VA_ARGS__); break;                         \
    case 8: fn<8>(__VA_ARGS__); break;                         \
    default: ::kvb::kernels::uq::bad_code_width(bits);         \
  }

/// Unpacks the n codes of one packed row into floats, minus `offset`: out[j] = code_j - offset (exact for
/// the half-integer offsets used here). Widths dividing 8 go byte by byte (a loop the compiler vectorizes:
/// ~4x faster than the generic path); the others assemble 8 codes from B bytes at a time (unpack8).
template <int B>
KVB_FORCE_INLINE void unpack_row(const uint8_t* row, int n, float* out, float offset = 0.f) {
  int j = 0;
  if constexpr (8 % B == 0) {
    constexpr int kPerByte = 8 / B;
    constexpr uint32_t kMask = (1u << B) - 1u;
    const int full = n / kPerByte;
    for (int i = 0; i < full; ++i) {
      const uint32_t byte = row[i];
      for (int k = 0; k < kPerByte; ++k)
        out[i * kPerByte + k] = static_cast<float>((byte >> (k * B)) & kMask) - offset;
    }
    j = full * kPerByte;
  } else {
    for (; j + 8 <= n; j += 8) {
      uint32_t c[8];
      unpack8<B>(row + (j / 8) * B, c);
      for (int k = 0; k < 8; ++k) out[j + k] = static_cast<float>(c[k]) - offset;
    }
  }
  for (; j < n; ++j) out[j] = static_cast<float>(unpack_code(row, j, B)) - offset;
}

/// Token rows quantized per token in groups of `group` channels.
struct RowFormat {
  int d = 0;      ///< channels per row (head_dim)
  int bits = 0;   ///< code width, 1..8
  int group = 0;  ///< channels per (scale, min) group; divides d
  int64_t bytes() const { return row_bytes(d, bits); }
  int groups() const { return d / group; }
  /// Floats of scratch dot_rows and accumulate_rows need (either path: the AVX2 one unpacks a block of
  /// kRowBlock rows to bytes and converts their (scale, min) pairs).
  size_t scratch_floats() const { return static_cast<size_t>(16 * d / 4 + 2 * 16 * groups() + 2 * groups() + d + 64); }
};

/// Quantizes rows x[n][d]: writes codes[n][f.bytes()] (fully, padding bits zero) and sm[n][f.groups()].
void encode_rows(const RowFormat& f, const float* x, int64_t n, uint8_t* codes, GroupParams* sm);
/// dots[t] = <q, x̂_t> for t < n. tmp: scratch of d + d/group floats.
void dot_rows(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm, int64_t n,
              float* dots, float* tmp);
/// out[j] += Σ_t w[t]·x̂_tj for t < n (tokens with w[t] == 0 are skipped). tmp: scratch of d + d/group
/// floats.
void accumulate_rows(const RowFormat& f, const float* w, const uint8_t* codes, const GroupParams* sm, int64_t n,
                     float* out, float* tmp);

/// The portable loops behind dot_rows / accumulate_rows (centred form; compiled for AVX2 and the baseline).
void dot_rows_portable(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm, int64_t n,
                       float* dots, float* tmp);
void accumulate_rows_portable(const RowFormat& f, const float* w, const uint8_t* codes, const GroupParams* sm,
                              int64_t n, float* out, float* tmp);

/// Hand-written AVX2/FMA/F16C kernels (uniform_avx2.cpp). They need d % 8 == 0 and group % 8 == 0
/// (avx2_rows_ok) and a CPU with those extensions (simd_kernels_enabled()); dot_rows / accumulate_rows
/// pick them by themselves. Same math up to float reassociation:
///   <q, x̂_t> = Σ_g scale_g·(Σ_{j∈g} q_j·code_j) + Σ_g min_g·(Σ_{j∈g} q_j)
///   Σ_t w_t·x̂_tj = Σ_blocks [Σ_{t∈block} (w_t·scale_tg)·code_tj + Σ_{t∈block} w_t·min_tg]
/// The value sum is formed per block of kRowBlock tokens before it joins the output, so the large
/// opposite-signed code and min totals only ever cancel within a block (that cancellation over whole
/// 4k-token sums is what uniform.h's centred form avoids in the portable loop).
constexpr int kRowBlock = 16;
bool avx2_rows_ok(const RowFormat& f);
void dot_rows_avx2(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm, int64_t n,
                   float* dots, float* tmp);
void accumulate_rows_avx2(const RowFormat& f, const float* w, const uint8_t* codes, const GroupParams* sm,
                          int64_t n, float* out, float* tmp);
/// KIVI keys (per-channel (scale, min) of blocks of G tokens, codes token-major, d % 8 == 0):
/// dots[b·G + t] = Σ_j (q_j·scale_bj)·code_tj + Σ_j q_j·min_bj. tmp: key_block_scratch_floats(d).
void key_block_dots_avx2(int bits, const float* q, const uint8_t* codes, const GroupParams* sm, int64_t blocks,
                         int G, int d, float* dots, float* tmp);
inline size_t key_block_scratch_floats(int d) { return static_cast<size_t>(2 * d + 4 * d / 4 + 64); }

/// attend_many's row decoding: out[r·d + j] = x̂_rj = dequantize(code_rj, scale, min) (uniform.h), r < n
/// rows of format f starting at codes / sm. n <= 16; tmp: decode_scratch_floats(d). Picks the AVX2 loop
/// when simd_kernels_enabled() and avx2_rows_ok(f).
void decode_rows(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n, float* out, float* tmp);
/// Same for KIVI key rows with per-channel parameters scale[d], mn[d] (floats): x̂_rj = code_rj·scale_j + mn_j.
void decode_rows_channel(int bits, const uint8_t* codes, int n, int d, const float* scale, const float* mn, float* out,
                         float* tmp);
inline size_t decode_scratch_floats(int d) { return static_cast<size_t>(6 * d + 64); }
void decode_rows_portable(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n, float* out);
void decode_rows_channel_portable(int bits, const uint8_t* codes, int n, int d, const float* scale, const float* mn,
                                  float* out);
void decode_rows_avx2(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n, float* out, float* tmp);
void decode_rows_channel_avx2(int bits, const uint8_t* codes, int n, int d, const float* scale, const float* mn,
                              float* out, float* tmp);

/// Packs n codes (each < 2^bits) into a row of row_bytes(n, bits) bytes (written fully).
void pack_row(const uint32_t* codes, int n, int bits, uint8_t* row);

}  // namespace kvb::kernels::uq
