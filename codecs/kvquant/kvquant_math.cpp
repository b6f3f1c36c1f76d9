/// KVQuant's quantizer (kvquant_codec.h): percentiles, 1-D weighted k-means, the nearest-level rule, and the
/// encode every backend stores (the reference and the CPU layer share it; they differ in how they attend).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "codecs/common/baseline.h"
#include "codecs/kvquant/kvquant_codec.h"
#include "kernels/formats/fp16.h"
#include "kernels/formats/uniform.h"
#include "kvb/core/half.h"
#include "kvb/core/json_text.h"

namespace kvb::codecs::kvquant {

double percentile(float* x, int64_t n, double q) {
  const double h = quantile_pos(q, n);
  const int64_t lo = quantile_lo(h, n);
  std::nth_element(x, x + lo, x + n);
  const double a = x[lo];
  if (lo + 1 >= n || h == static_cast<double>(lo)) return a;
  const double b = *std::min_element(x + lo + 1, x + n);  // the (lo+1)-th smallest
  return quantile_interp(a, b, h, lo);
}

int values_outliers_per_row(int d, double f) {
  if (f <= 0 || d < 1) return 0;
  // Upper side: values >= the linear quantile at h = (1 − f/2)(d − 1) are the sorted positions ceil(h)..d−1
  // (position h itself when h is whole); the lower side mirrors it. Distinct values assumed.
  const double h = (1.0 - f / 2) * (d - 1);
  const int64_t upper = d - static_cast<int64_t>(std::ceil(h));
  return static_cast<int>(std::min<int64_t>(d, 2 * upper));
}

int kmeans_1d(const float* y, const float* w, int64_t n, int k, std::vector<float>* levels) {
  levels->assign(static_cast<size_t>(k), 0.f);
  if (n <= 0) return 0;
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return y[a] < y[b] || (y[a] == y[b] && a < b); });
  std::vector<float> ys(static_cast<size_t>(n));
  std::vector<double> cw(static_cast<size_t>(n) + 1, 0.0), cwy(cw.size(), 0.0);  // prefix sums of w and w·y
  for (int64_t i = 0; i < n; ++i) {
    ys[i] = y[order[i]];
    const double wi = w ? static_cast<double>(w[order[i]]) : 1.0;
    cw[i + 1] = cw[i] + wi;
    cwy[i + 1] = cwy[i] + wi * ys[i];
  }
  const double W = cw[n];
  // Initial levels: weighted quantiles (j + 1/2)/k (plain quantiles when every weight is 0).
  for (int j = 0; j < k; ++j) {
    const double target = (j + 0.5) / k;
    int64_t i;
    if (W > 0) {
      i = std::lower_bound(cw.begin() + 1, cw.end(), target * W) - (cw.begin() + 1);
    } else {
      i = static_cast<int64_t>(target * static_cast<double>(n));
    }
    (*levels)[j] = ys[std::clamp<int64_t>(i, 0, n - 1)];
  }
  std::vector<int64_t> cut(static_cast<size_t>(k) + 1), prev;
  int it = 0;
  for (; it < 100; ++it) {
    const std::vector<float> b = bounds_of(*levels);
    // Segment j holds the points with nearest(y) == j: y > b[j-1] and y <= b[j].
    cut[0] = 0;
    cut[k] = n;
    for (int j = 0; j + 1 < k; ++j) cut[j + 1] = std::upper_bound(ys.begin(), ys.end(), b[j]) - ys.begin();
    if (cut == prev) break;
    prev = cut;
    for (int j = 0; j < k; ++j) {
      const double sw = cw[cut[j + 1]] - cw[cut[j]];
      if (sw > 0) (*levels)[j] = static_cast<float>((cwy[cut[j + 1]] - cwy[cut[j]]) / sw);
    }
    std::sort(levels->begin(), levels->end());
  }
  return it;
}

std::vector<float> bounds_of(const std::vector<float>& levels) {
  std::vector<float> b;
  for (size_t j = 0; j + 1 < levels.size(); ++j) b.push_back(0.5f * (levels[j] + levels[j + 1]));
  return b;
}

kernels::rope::Style key_rope(const KvquantParams& p, const CodecContext& ctx) {
  kernels::rope::Style st = kernels::rope::Style::kNone;
  if (!p.pre_rope || !ctx.rope.applied) return st;
  KVB_CHECK(kernels::rope::parse(ctx.rope.style, &st), DataError,
            "kvquant: rope_style \"{}\" is none of half, interleaved, none", excerpt(ctx.rope.style));
  return st;
}

uint64_t Part::first_outlier(int g, int64_t C, int64_t t) const {
  const int64_t b = t / 64;
  uint64_t i = heads[static_cast<size_t>(g)] + block[static_cast<size_t>(g) * blocks + b];
  for (int64_t r = 64 * b; r < t; ++r) i += static_cast<uint64_t>(count_at(g, C, r));
  return i;
}

namespace {

/// One head's rows of one part while encoding (concatenated over heads afterwards).
struct HeadRows {
  std::vector<uint8_t> count, index;
  std::vector<uint16_t> value;
  std::vector<uint32_t> block;
};

void put(std::vector<uint8_t>& v, int bytes, int x) {
  v.push_back(static_cast<uint8_t>(x & 0xff));
  if (bytes == 2) v.push_back(static_cast<uint8_t>(x >> 8));
}

void init_part(Part& P, int bits, int H, int64_t C, int d) {
  P.bits = bits;
  P.row_bytes = static_cast<int>(kernels::uq::row_bytes(d, bits));
  P.count_bytes = d > 255 ? 2 : 1;
  P.index_bytes = d > 256 ? 2 : 1;
  P.blocks = (C + 63) / 64;
  P.codes.assign(static_cast<size_t>(H) * C * P.row_bytes, 0);
}

void join(Part& P, std::vector<HeadRows>& rows) {
  P.heads.assign(1, 0);
  for (auto& r : rows) {
    P.count.insert(P.count.end(), r.count.begin(), r.count.end());
    P.block.insert(P.block.end(), r.block.begin(), r.block.end());
    P.index.insert(P.index.end(), r.index.begin(), r.index.end());
    P.value.insert(P.value.end(), r.value.begin(), r.value.end());
    P.heads.push_back(P.heads.back() + r.value.size());
  }
}

}  // namespace

void check_fits(const Trained& s, const LayerKV& kv, kernels::rope::Style rope) {
  KVB_CHECK(s.kv_heads == kv.kv_heads && s.d == kv.head_dim, DataError,
            "kvquant: the layer was fitted on [{} KV heads, head_dim {}] but the cache is [{}, {}]", s.kv_heads, s.d,
            kv.kv_heads, kv.head_dim);
  KVB_CHECK(s.pre_rope == (rope != kernels::rope::Style::kNone), UsageError,
            "kvquant: fitted {} RoPE un-rotation but encoding {} it", s.pre_rope ? "with" : "without",
            rope != kernels::rope::Style::kNone ? "with" : "without");
}

Encoded encode(const Trained& s, const LayerKV& kv, kernels::rope::Style rope, double theta) {
  check_fits(s, kv, rope);
  const KvquantParams& p = s.fitted_with;
  Encoded e;
  e.H = kv.kv_heads;
  e.d = kv.head_dim;
  e.C = kv.tokens;
  e.pos0 = kv.pos0;
  const int H = e.H, d = e.d;
  const int64_t C = e.C;
  init_part(e.k, p.k_bits, H, C, d);
  init_part(e.v, p.v_bits, H, C, d);
  e.v.scale.assign(static_cast<size_t>(H) * C * 2, 0);
  const bool sparse = p.outliers > 0;
  const kernels::rope::Table table(rope, d, theta, kv.pos0, rope == kernels::rope::Style::kNone ? 0 : C);
  std::vector<HeadRows> kr(static_cast<size_t>(H)), vr(static_cast<size_t>(H));
  const int kK = 1 << p.k_bits, kV = 1 << p.v_bits;
  for_each_head(H, [&](int g) {
    std::vector<float> x(static_cast<size_t>(d)), sorted(static_cast<size_t>(d));
    HeadRows& K = kr[static_cast<size_t>(g)];
    HeadRows& V = vr[static_cast<size_t>(g)];
    const float* nrm = &s.k_norm[static_cast<size_t>(g) * d * 2];
    for (int64_t t = 0; t < C; ++t) {
      if (t % 64 == 0) {
        K.block.push_back(static_cast<uint32_t>(K.value.size()));
        V.block.push_back(static_cast<uint32_t>(V.value.size()));
      }
      // Keys: un-rotate, normalize per channel with the calibrated offset/range, outliers beyond [-1, 1].
      std::copy_n(kv.k_head(g) + t * d, d, x.data());
      table.unapply(x.data(), t);
      uint8_t* krow = &e.k.codes[(static_cast<size_t>(g) * C + t) * e.k.row_bytes];
      int nk = 0;
      for (int c = 0; c < d; ++c) {
        const float y = key_normalized(x[c], nrm[2 * c], nrm[2 * c + 1]);
        if (key_outlier(sparse, y)) {
          put(K.index, e.k.index_bytes, c);
          K.value.push_back(kernels::f32_to_f16_sat(x[c]));
          ++nk;
          continue;
        }
        kernels::uq::pack_code(krow, c, p.k_bits, nearest(s.k_bounds.data(), kK, y));
      }
      put(K.count, e.k.count_bytes, nk);
      // Values: per-token outliers at the row's quantiles, offset/range from the rest and the median.
      const float* v = kv.v_head(g) + t * d;
      float mx = -std::numeric_limits<float>::infinity(), mn = std::numeric_limits<float>::infinity();
      float hi = std::numeric_limits<float>::infinity(), lo = -std::numeric_limits<float>::infinity();
      if (sparse) {
        std::copy_n(v, d, sorted.data());
        hi = static_cast<float>(percentile(sorted.data(), d, 1.0 - p.outliers / 2));
        lo = static_cast<float>(percentile(sorted.data(), d, p.outliers / 2));
        std::nth_element(sorted.begin(), sorted.begin() + (d - 1) / 2, sorted.end());
        const float med = sorted[static_cast<size_t>((d - 1) / 2)];  // torch.median: the lower middle value
        mx = mn = med;
      }
      auto is_out = [&](float a) { return value_outlier(sparse, a, hi, lo); };
      for (int c = 0; c < d; ++c)
        if (!is_out(v[c])) {
          mx = std::max(mx, v[c]);
          mn = std::min(mn, v[c]);
        }
      uint16_t* sc = &e.v.scale[(static_cast<size_t>(g) * C + t) * 2];
      value_scale(mx, mn, sc);
      const float off = f16_to_f32(sc[0]), rng = f16_to_f32(sc[1]);
      uint8_t* vrow = &e.v.codes[(static_cast<size_t>(g) * C + t) * e.v.row_bytes];
      int nv = 0;
      for (int c = 0; c < d; ++c) {
        if (is_out(v[c])) {
          put(V.index, e.v.index_bytes, c);
          V.value.push_back(kernels::f32_to_f16_sat(v[c]));
          ++nv;
          continue;
        }
        kernels::uq::pack_code(vrow, c, p.v_bits, nearest(s.v_bounds.data(), kV, value_normalized(v[c], off, rng)));
      }
      put(V.count, e.v.count_bytes, nv);
    }
  });
  join(e.k, kr);
  join(e.v, vr);
  return e;
}

namespace {

template <class F>
void for_each_item(const Trained& s, const Encoded& e, F&& f) {
  // f(name, kind, bytes pointer, byte count)
  auto part = [&](const char* pfx, const Part& P) {
    const std::string n(pfx);
    f(n + ".codes", StorageKind::kCompressed, P.codes.data(), bytes_of(P.codes));
    if (!P.scale.empty()) f(n + ".scale", StorageKind::kCompressed, P.scale.data(), bytes_of(P.scale));
    f(n + ".sp_count", StorageKind::kCompressed, P.count.data(), bytes_of(P.count));
    f(n + ".sp_block", StorageKind::kCompressed, P.block.data(), bytes_of(P.block));
    f(n + ".sp_index", StorageKind::kCompressed, P.index.data(), bytes_of(P.index));
    f(n + ".sp_value", StorageKind::kCompressed, P.value.data(), bytes_of(P.value));
  };
  part("k", e.k);
  part("v", e.v);
  f("k.channel_norm", StorageKind::kFixed, s.k_norm.data(), bytes_of(s.k_norm));
  const bool two = s.fitted_with.qnorm;
  f("k.levels", StorageKind::kFixed, s.k_levels.data(), bytes_of(s.k_levels) * (two ? 2 : 1));
  f("v.levels", StorageKind::kFixed, s.v_levels.data(), bytes_of(s.v_levels) * (two ? 2 : 1));
  f("k.sp_heads", StorageKind::kFixed, e.k.heads.data(), bytes_of(e.k.heads));
  f("v.sp_heads", StorageKind::kFixed, e.v.heads.data(), bytes_of(e.v.heads));
}

}  // namespace

Storage storage(const Trained& s, const Encoded& e) {
  double compressed = 0;
  std::vector<StorageItem> items;
  for_each_item(s, e, [&](const std::string& name, StorageKind kind, const void*, uint64_t bytes) {
    items.push_back(StorageItem{name, kind, bytes, kind == StorageKind::kCompressed ? e.C : 0});
    if (kind == StorageKind::kCompressed) compressed += static_cast<double>(bytes);
  });
  // The outliers are data-dependent (keys: what falls outside the calibrated thresholds), so the "formula" is
  // this encode's own count: codes, scales and counts per row, the block index at this C, and the outliers found.
  StorageList L(e.H, compressed / (static_cast<double>(e.H) * static_cast<double>(e.C)));
  for (auto& it : items) L.add(it.name, it.kind, it.bytes, it.tokens);
  return L.get();
}

std::vector<NamedBuffer> buffers(const Trained& s, const Encoded& e) {
  std::vector<NamedBuffer> out;
  const bool two = s.fitted_with.qnorm;
  for_each_item(s, e, [&](const std::string& name, StorageKind, const void* data, uint64_t bytes) {
    NamedBuffer b{name, {}};
    if (two && (name == "k.levels" || name == "v.levels")) {  // assignment then decode levels
      const auto& a = name[0] == 'k' ? s.k_assign : s.v_assign;
      const auto& l = name[0] == 'k' ? s.k_levels : s.v_levels;
      const auto* pa = reinterpret_cast<const uint8_t*>(a.data());
      const auto* pl = reinterpret_cast<const uint8_t*>(l.data());
      b.bytes.assign(pa, pa + bytes_of(a));
      b.bytes.insert(b.bytes.end(), pl, pl + bytes_of(l));
    } else {
      const auto* p = static_cast<const uint8_t*>(data);
      b.bytes.assign(p, p + bytes);
    }
    out.push_back(std::move(b));
  });
  return out;
}

}  // namespace kvb::codecs::kvquant
