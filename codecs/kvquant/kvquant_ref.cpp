/// KVQuant's naive reference: the quantizer of kvquant_codec.h written out literally from the trained state
/// (not through kvquant::encode, the packed layout or kernels/cpu/rope.h): un-rotate each key with cos/sin of
/// its position, normalize, keep outliers in fp16, otherwise the level whose midpoints bracket y; values per
/// token with sorted-array percentiles and the lower median; then a dense K̂ (RoPE re-applied in float64) and V̂
/// attended in float64 (codecs/common/ref_dense.h). Storage from the byte-count formulas and the outliers this
/// reference itself found.
#include <algorithm>
#include <cmath>
#include <limits>

#include "codecs/common/baseline.h"
#include "codecs/common/ref_dense.h"
#include "codecs/kvquant/kvquant_codec.h"

namespace kvb::codecs {
namespace {

/// numpy.percentile(linear) of a sorted array.
double pct_sorted(const std::vector<float>& x, double q) {
  const double h = q * static_cast<double>(x.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(h));
  if (lo + 1 >= x.size()) return x[lo];
  return x[lo] + (h - static_cast<double>(lo)) * (static_cast<double>(x[lo + 1]) - x[lo]);
}

/// Index of the level whose midpoints (float) bracket y: #{j : y > (L_j + L_{j+1})/2}.
int level_index(const std::vector<float>& L, float y) {
  int c = 0;
  for (size_t j = 0; j + 1 < L.size(); ++j)
    if (y > 0.5f * (L[j] + L[j + 1])) ++c;
  return c;
}

/// Pair channels of RoPE style st at head_dim d.
void pair_channels(kernels::rope::Style st, int d, int i, int* a, int* b) {
  if (st == kernels::rope::Style::kInterleaved) {
    *a = 2 * i;
    *b = 2 * i + 1;
  } else {
    *a = i;
    *b = i + d / 2;
  }
}

}  // namespace

std::unique_ptr<EncodedLayer> kvquant_encode_ref(const KvquantParams& p, std::shared_ptr<const kvquant::Trained> s,
                                                 const LayerKV& kv, const CodecContext& ctx) {
  const kernels::rope::Style rope = kvquant::key_rope(p, ctx);
  KVB_CHECK(s->kv_heads == kv.kv_heads && s->d == kv.head_dim && s->pre_rope == (rope != kernels::rope::Style::kNone),
            DataError, "kvquant ref: the trained state does not match the cache");
  const int H = kv.kv_heads, d = kv.head_dim;
  const int64_t C = kv.tokens;
  const bool sparse = p.outliers > 0;
  std::vector<float> k(kv.k.size()), v(kv.v.size());
  uint64_t k_nnz = 0, v_nnz = 0;
  std::vector<float> x(static_cast<size_t>(d)), sorted;
  for (int g = 0; g < H; ++g)
    for (int64_t t = 0; t < C; ++t) {
      const size_t r = (static_cast<size_t>(g) * C + t) * d;
      const int64_t pos = kv.pos0 + t;
      // Keys: R(pos)ᵀ k with float cos/sin of the float64 angle, as the dump's keys were rotated.
      std::copy_n(&kv.k[r], d, x.begin());
      if (rope != kernels::rope::Style::kNone)
        for (int i = 0; i < d / 2; ++i) {
          int a, b;
          pair_channels(rope, d, i, &a, &b);
          const double ang = static_cast<double>(pos) * std::pow(ctx.rope.theta, -2.0 * i / d);
          const float c = static_cast<float>(std::cos(ang)), sn = static_cast<float>(std::sin(ang));
          const float xa = x[a], xb = x[b];
          x[a] = xa * c + xb * sn;
          x[b] = xb * c - xa * sn;
        }
      for (int c = 0; c < d; ++c) {
        const float off = s->k_norm[(static_cast<size_t>(g) * d + c) * 2];
        const float rng = s->k_norm[(static_cast<size_t>(g) * d + c) * 2 + 1];
        const float diff = x[c] - off;
        const float y = rng > 0.f ? diff / rng
                                  : (diff == 0.f ? 0.f : std::copysign(std::numeric_limits<float>::infinity(), diff));
        if (sparse && (y > 1.f || y < -1.f)) {
          k[r + c] = ref::round_f16_sat(x[c]);
          ++k_nnz;
        } else {
          k[r + c] = off + rng * s->k_levels[static_cast<size_t>(level_index(s->k_assign, y))];
        }
      }
      // RoPE again, in float64, on the decoded pre-RoPE key.
      if (rope != kernels::rope::Style::kNone)
        for (int i = 0; i < d / 2; ++i) {
          int a, b;
          pair_channels(rope, d, i, &a, &b);
          const double ang = static_cast<double>(pos) * std::pow(ctx.rope.theta, -2.0 * i / d);
          const double xa = k[r + a], xb = k[r + b];
          k[r + a] = static_cast<float>(xa * std::cos(ang) - xb * std::sin(ang));
          k[r + b] = static_cast<float>(xb * std::cos(ang) + xa * std::sin(ang));
        }
      // Values: the row's quantiles (inclusive), offset/range from the other channels and the lower median.
      const float* vr = &kv.v[r];
      sorted.assign(vr, vr + d);
      std::sort(sorted.begin(), sorted.end());
      float hi = std::numeric_limits<float>::infinity(), lo = -hi, mx = -hi, mn = hi;
      if (sparse) {
        hi = static_cast<float>(pct_sorted(sorted, 1.0 - p.outliers / 2));
        lo = static_cast<float>(pct_sorted(sorted, p.outliers / 2));
        mx = mn = sorted[static_cast<size_t>((d - 1) / 2)];
      }
      for (int c = 0; c < d; ++c)
        if (!(sparse && (vr[c] >= hi || vr[c] <= lo))) {
          mx = std::max(mx, vr[c]);
          mn = std::min(mn, vr[c]);
        }
      const float off = ref::round_f16_sat(0.5f * (mx + mn)), rng = ref::round_f16_sat(0.5f * (mx - mn));
      for (int c = 0; c < d; ++c) {
        if (sparse && (vr[c] >= hi || vr[c] <= lo)) {
          v[r + c] = ref::round_f16_sat(vr[c]);
          ++v_nnz;
          continue;
        }
        const float y = rng > 0.f ? (vr[c] - off) / rng : 0.f;
        v[r + c] = off + rng * s->v_levels[static_cast<size_t>(level_index(s->v_assign, y))];
      }
    }
  // Storage from the formulas (kvquant_codec.h layout).
  const uint64_t rows = static_cast<uint64_t>(H) * C, blocks = static_cast<uint64_t>(H) * ((C + 63) / 64);
  const uint64_t cnt = d > 255 ? 2 : 1, idx = d > 256 ? 2 : 1;
  const uint64_t kc = rows * ((static_cast<uint64_t>(d) * p.k_bits + 7) / 8);
  const uint64_t vc = rows * ((static_cast<uint64_t>(d) * p.v_bits + 7) / 8);
  const double compressed = static_cast<double>(kc + vc + rows * 4 + 2 * (rows * cnt + blocks * 4) +
                                                (k_nnz + v_nnz) * (idx + 2));
  const uint64_t levels = p.qnorm ? 2 : 1;
  Storage st = StorageList(H, compressed / static_cast<double>(rows))
                   .add("k.codes", StorageKind::kCompressed, kc, C)
                   .add("k.sp_count", StorageKind::kCompressed, rows * cnt, C)
                   .add("k.sp_block", StorageKind::kCompressed, blocks * 4, C)
                   .add("k.sp_index", StorageKind::kCompressed, k_nnz * idx, C)
                   .add("k.sp_value", StorageKind::kCompressed, k_nnz * 2, C)
                   .add("v.codes", StorageKind::kCompressed, vc, C)
                   .add("v.scale", StorageKind::kCompressed, rows * 4, C)
                   .add("v.sp_count", StorageKind::kCompressed, rows * cnt, C)
                   .add("v.sp_block", StorageKind::kCompressed, blocks * 4, C)
                   .add("v.sp_index", StorageKind::kCompressed, v_nnz * idx, C)
                   .add("v.sp_value", StorageKind::kCompressed, v_nnz * 2, C)
                   .add("k.channel_norm", StorageKind::kFixed, static_cast<uint64_t>(H) * d * 8, 0)
                   .add("k.levels", StorageKind::kFixed, levels * 4 * (uint64_t{1} << p.k_bits), 0)
                   .add("v.levels", StorageKind::kFixed, levels * 4 * (uint64_t{1} << p.v_bits), 0)
                   .add("k.sp_heads", StorageKind::kFixed, 8 * (static_cast<uint64_t>(H) + 1), 0)
                   .add("v.sp_heads", StorageKind::kFixed, 8 * (static_cast<uint64_t>(H) + 1), 0)
                   .get();
  return ref::dense_layer(kv, std::move(k), std::move(v), ctx, std::move(st));
}

}  // namespace kvb::codecs
