#include "kernels/cpu/uniform_rows.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/row_kernels.h"
#include "kvb/core/error.h"

namespace kvb::kernels::uq {

void bad_code_width(int bits) {
  throw RuntimeError(fmt::format("internal error: code width {} reached a bit-width dispatch (supported: 1..8)", bits));
}
namespace {

template <int B>
KVB_FORCE_INLINE void pack_row_t(const uint32_t* codes, int n, uint8_t* row) {
  std::memset(row, 0, static_cast<size_t>(row_bytes(n, B)));
  int j = 0;
  for (; j + 8 <= n; j += 8) pack8<B>(codes + j, row + (j / 8) * B);
  for (; j < n; ++j) pack_code(row, j, B, codes[j]);
}

}  // namespace

void pack_row(const uint32_t* codes, int n, int bits, uint8_t* row) {
  dispatch_bits(bits, [&](auto b) { pack_row_t<decltype(b)::value>(codes, n, row); });
}

namespace {

/// min and max of x[0, n) with 8 independent lanes (vectorizes without fast-math).
KVB_FORCE_INLINE void min_max(const float* x, int n, float* mn_out, float* mx_out) {
  float mn[8], mx[8];
  for (int k = 0; k < 8; ++k) mn[k] = mx[k] = x[0];
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) {
      mn[k] = x[j + k] < mn[k] ? x[j + k] : mn[k];
      mx[k] = x[j + k] > mx[k] ? x[j + k] : mx[k];
    }
  for (; j < n; ++j) {
    mn[0] = x[j] < mn[0] ? x[j] : mn[0];
    mx[0] = x[j] > mx[0] ? x[j] : mx[0];
  }
  for (int k = 1; k < 8; ++k) {
    mn[0] = mn[k] < mn[0] ? mn[k] : mn[0];
    mx[0] = mx[k] > mx[0] ? mx[k] : mx[0];
  }
  *mn_out = mn[0];
  *mx_out = mx[0];
}

template <int B>
KVB_FORCE_INLINE void encode_rows_b(const RowFormat& f, const float* x, int64_t n, uint8_t* codes, GroupParams* sm,
                                    uint32_t* c) {
  const uint32_t qmax = max_code(B);
  const int d = f.d, G = f.group, ng = f.groups();  // locals: stores to c[] could alias f's fields
  const int64_t rb = f.bytes();
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * d;
    GroupParams* smt = sm + t * ng;
    for (int gi = 0; gi < ng; ++gi) {
      const float* xg = xt + gi * G;
      uint32_t* cg = c + gi * G;
      float mn, mx;
      min_max(xg, G, &mn, &mx);
      smt[gi] = make_group(mn, mx, B);
      const float scale = f16_to_f32(smt[gi].scale), lo = f16_to_f32(smt[gi].min);
      for (int j = 0; j < G; ++j) cg[j] = quantize(xg[j], scale, lo, qmax);
    }
    pack_row_t<B>(c, d, codes + t * rb);
  }
}

KVB_CPU_CLONES void encode_rows_impl(const RowFormat& f, const float* x, int64_t n, uint8_t* codes, GroupParams* sm,
                                     uint32_t* c) {
  KVB_DISPATCH_BITS(f.bits, encode_rows_b, f, x, n, codes, sm, c)
}

}  // namespace

void encode_rows(const RowFormat& f, const float* x, int64_t n, uint8_t* codes, GroupParams* sm) {
  std::vector<uint32_t> c(static_cast<size_t>(f.d));
  encode_rows_impl(f, x, n, codes, sm, c.data());
}

// Both loops work on the codes directly instead of dequantizing a row first, in the centred form of
// uniform.h (c0 = code_center, mid = group_mid):
//   <q, x̂_t> = Σ_g scale_g·Σ_{j∈g} q_j·(code_j - c0) + Σ_g mid_g·Σ_{j∈g} q_j
//   Σ_t w_t·x̂_tj = Σ_t (w_t·scale_tg)·(code_tj - c0) + Σ_t w_t·mid_tg        (g = j's group)
// which saves a pass over every row (2x faster than dequantize-then-dot on x86-64).

template <int B>
KVB_FORCE_INLINE void dot_rows_b(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm,
                                 int64_t n, float* dots, float* tmp) {
  const int G = f.group, ng = f.groups();
  const float c0 = code_center(B);
  float* qsum = tmp + f.d;  // [groups] Σ q_j over each group
  for (int gi = 0; gi < ng; ++gi) {
    float s = 0.f;
    for (int j = gi * G; j < (gi + 1) * G; ++j) s += q[j];
    qsum[gi] = s;
  }
  for (int64_t t = 0; t < n; ++t) {
    unpack_row<B>(codes + t * f.bytes(), f.d, tmp, c0);
    const GroupParams* p = sm + t * ng;
    float acc = 0.f;
    for (int gi = 0; gi < ng; ++gi) {
      const float scale = f16_to_f32(p[gi].scale);
      acc += scale * dot_f32_inline(q + gi * G, tmp + gi * G, G) + group_mid(scale, f16_to_f32(p[gi].min), B) * qsum[gi];
    }
    dots[t] = acc;
  }
}

template <int B>
KVB_FORCE_INLINE void accumulate_rows_b(const RowFormat& f, const float* w, const uint8_t* codes,
                                        const GroupParams* sm, int64_t n, float* out, float* tmp) {
  const int G = f.group, ng = f.groups();
  const float c0 = code_center(B);
  float* macc = tmp + f.d;  // [groups] Σ_t w_t·mid_tg
  for (int gi = 0; gi < ng; ++gi) macc[gi] = 0.f;
  for (int64_t t = 0; t < n; ++t) {
    if (w[t] == 0.f) continue;
    unpack_row<B>(codes + t * f.bytes(), f.d, tmp, c0);
    const GroupParams* p = sm + t * ng;
    for (int gi = 0; gi < ng; ++gi) {
      const float scale = f16_to_f32(p[gi].scale);
      axpy_f32_inline(w[t] * scale, tmp + gi * G, out + gi * G, G);
      macc[gi] += w[t] * group_mid(scale, f16_to_f32(p[gi].min), B);
    }
  }
  for (int gi = 0; gi < ng; ++gi)
    for (int j = gi * G; j < (gi + 1) * G; ++j) out[j] += macc[gi];
}

KVB_CPU_CLONES void dot_rows_portable(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm,
                             int64_t n, float* dots, float* tmp) {
  KVB_DISPATCH_BITS(f.bits, dot_rows_b, f, q, codes, sm, n, dots, tmp)
}

KVB_CPU_CLONES void accumulate_rows_portable(const RowFormat& f, const float* w, const uint8_t* codes, const GroupParams* sm,
                                    int64_t n, float* out, float* tmp) {
  KVB_DISPATCH_BITS(f.bits, accumulate_rows_b, f, w, codes, sm, n, out, tmp)
}

template <int B>
KVB_FORCE_INLINE void decode_rows_b(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n, float* out) {
  const int d = f.d, G = f.group, ng = f.groups();
  const int64_t rb = f.bytes();
  for (int r = 0; r < n; ++r) {
    float* o = out + static_cast<int64_t>(r) * d;
    unpack_row<B>(codes + r * rb, d, o);
    const GroupParams* p = sm + static_cast<int64_t>(r) * ng;
    for (int gi = 0; gi < ng; ++gi) {
      const float scale = f16_to_f32(p[gi].scale), mn = f16_to_f32(p[gi].min);
      for (int j = gi * G; j < (gi + 1) * G; ++j) o[j] = dequantize(o[j], scale, mn);
    }
  }
}

template <int B>
KVB_FORCE_INLINE void decode_rows_channel_b(const uint8_t* codes, int n, int d, const float* scale, const float* mn,
                                            float* out) {
  const int64_t rb = row_bytes(d, B);
  for (int r = 0; r < n; ++r) {
    float* o = out + static_cast<int64_t>(r) * d;
    unpack_row<B>(codes + r * rb, d, o);
    for (int j = 0; j < d; ++j) o[j] = dequantize(o[j], scale[j], mn[j]);
  }
}

KVB_CPU_CLONES void decode_rows_portable(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n,
                                         float* out) {
  KVB_DISPATCH_BITS(f.bits, decode_rows_b, f, codes, sm, n, out)
}

KVB_CPU_CLONES void decode_rows_channel_portable(int bits, const uint8_t* codes, int n, int d, const float* scale,
                                                 const float* mn, float* out) {
  KVB_DISPATCH_BITS(bits, decode_rows_channel_b, codes, n, d, scale, mn, out)
}

void decode_rows(const RowFormat& f, const uint8_t* codes, const GroupParams* sm, int n, float* out, float* tmp) {
  if (simd_kernels_enabled() && avx2_rows_ok(f)) decode_rows_avx2(f, codes, sm, n, out, tmp);
  else decode_rows_portable(f, codes, sm, n, out);
}

void decode_rows_channel(int bits, const uint8_t* codes, int n, int d, const float* scale, const float* mn, float* out,
                         float* tmp) {
  if (simd_kernels_enabled() && d % 8 == 0) decode_rows_channel_avx2(bits, codes, n, d, scale, mn, out, tmp);
  else decode_rows_channel_portable(bits, codes, n, d, scale, mn, out);
}

void dot_rows(const RowFormat& f, const float* q, const uint8_t* codes, const GroupParams* sm, int64_t n,
              float* dots, float* tmp) {
  if (simd_kernels_enabled() && avx2_rows_ok(f)) dot_rows_avx2(f, q, codes, sm, n, dots, tmp);
  else dot_rows_portable(f, q, codes, sm, n, dots, tmp);
}

void accumulate_rows(const RowFormat& f, const float* w, const uint8_t* codes, const GroupParams* sm, int64_t n,
                     float* out, float* tmp) {
  if (simd_kernels_enabled() && avx2_rows_ok(f)) accumulate_rows_avx2(f, w, codes, sm, n, out, tmp);
  else accumulate_rows_portable(f, w, codes, sm, n, out, tmp);
}

}  // namespace kvb::kernels::uq
