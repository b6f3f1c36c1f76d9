// polarquant (codecs/polar): the polar transform and its inverse, the preconditioned reconstruction with no
// level quantized, the per-level codebooks against their densities, the packed row layout, the storage
// accounting, the bit-list parameter, and seeded fidelity against int. The registry-wide tests
// (registry_codecs_test.cpp, attend_many_test.cpp, attend_lse_test.cpp) cover odd shapes and CPU vs reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "codec_test_util.h"
#include "codecs/polar/polar_codec.h"
#include "codecs/polar/polar_math.h"
#include "kernels/cpu/lloyd_max.h"
#include "kernels/cpu/orthogonal.h"
#include "kernels/cpu/orthogonal.h"
#include "kvb/core/half.h"

namespace kvb::test {
namespace {

namespace pm = codecs::polar;

std::vector<int> repeat_bits(int levels, int first, int rest) {
  std::vector<int> b(static_cast<size_t>(levels), rest);
  b[0] = first;
  return b;
}

// ---- the shared Haar generator ----------------------------------------------------------------------------

TEST(Polar, HaarGeneratorIsOrthogonalDeterministicAndMemoized) {
  for (int d : {1, 2, 3, 16, 64, 96, 127, 128, 256}) {
    const uint64_t seed = 1000 + d;
    SCOPED_TRACE(fmt::format("d {} seed {}", d, seed));
    const auto a = kernels::orthogonal::haar_orthogonal(d, seed);
    const auto b = kernels::orthogonal::memoized(kernels::orthogonal::Kind::kHaar, d, seed);
    ASSERT_EQ(a.size(), b->size());
    EXPECT_EQ(std::memcmp(a.data(), b->data(), a.size() * sizeof(double)), 0);
    EXPECT_EQ(b.get(), kernels::orthogonal::memoized(kernels::orthogonal::Kind::kHaar, d, seed).get());
    double worst = 0;
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) {
        double s = 0;
        for (int k = 0; k < d; ++k) s += a[static_cast<size_t>(i) * d + k] * a[static_cast<size_t>(j) * d + k];
        worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_LT(worst, 1e-12);
  }
}

// ---- transform and inverse --------------------------------------------------------------------------------

struct Shape {
  int d, levels;
};

TEST(Polar, TransformRoundTripsAndKeepsTheNorm) {
  for (const Shape sh : {Shape{2, 1}, Shape{16, 4}, Shape{128, 4}, Shape{128, 7}, Shape{96, 5}, Shape{1024, 10}}) {
    const pm::Layout lay = pm::make_layout(sh.d, sh.levels, repeat_bits(sh.levels, 4, 2));
    ASSERT_EQ(lay.dp, sh.d);
    const uint64_t seed = 77 + sh.d * 13 + sh.levels;
    SCOPED_TRACE(fmt::format("dp {} L {} seed {}", lay.dp, sh.levels, seed));
    Rng rng(seed);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<double> y(lay.dp), ang(lay.angles), rad(lay.radii), work(lay.dp / 2);
      double n2 = 0;
      for (auto& v : y) n2 += (v = rng.normal() * (rep == 0 ? 1e-3 : 3.0)) * v;
      pm::forward(lay, y.data(), ang.data(), rad.data(), work.data());
      for (int l = 1; l <= lay.levels; ++l)
        for (int i = 0; i < lay.count[l - 1]; ++i) {
          const double a = ang[lay.angle_off[l - 1] + i];
          EXPECT_GE(a, 0.0);
          EXPECT_LE(a, l == 1 ? pm::kTwoPi : pm::kPi / 2);
        }
      double r2 = 0;
      for (double r : rad) r2 += r * r;
      EXPECT_NEAR(std::sqrt(r2), std::sqrt(n2), 1e-14 * std::sqrt(n2));
      // Inverse with the exact angles: float64 to rounding, and in float32 (the CPU decode's arithmetic).
      std::vector<double> back(lay.dp);
      std::vector<float> backf(lay.dp);
      for (int i = 0; i < lay.radii; ++i) back[i] = rad[i], backf[i] = static_cast<float>(rad[i]);
      pm::inverse_in_place(lay, back.data(), [&](int l, int i, double& c, double& s) {
        const double a = ang[lay.angle_off[l - 1] + i];
        c = std::cos(a), s = std::sin(a);
      });
      pm::inverse_in_place(lay, backf.data(), [&](int l, int i, float& c, float& s) {
        const double a = ang[lay.angle_off[l - 1] + i];
        c = static_cast<float>(std::cos(a)), s = static_cast<float>(std::sin(a));
      });
      double e = 0, ef = 0;
      for (int j = 0; j < lay.dp; ++j) {
        e = std::max(e, std::fabs(back[j] - y[j]));
        ef = std::max(ef, std::fabs(backf[j] - y[j]));
      }
      EXPECT_LE(e, 1e-13 * std::sqrt(n2));
      EXPECT_LE(ef, (sh.levels + 2) * 0x1p-23 * std::sqrt(n2));
    }
  }
}

/// PolarQuant's reconstruction with no level quantized: x -> y = Π [x; 0] -> polar transform -> inverse with the
/// exact angles and float64 radii -> Πᵀ ŷ gives x back to float64 rounding, the padding zeros included.
TEST(Polar, PreconditionedReconstructionIsExactWithoutQuantization) {
  for (const Shape sh : {Shape{128, 4}, Shape{64, 6}, Shape{96, 6} /* padded to 128 */, Shape{7, 2} /* to 8 */,
                         Shape{1, 4} /* to 16 */}) {
    const pm::Layout lay = pm::make_layout(sh.d, sh.levels, repeat_bits(sh.levels, 4, 2));
    const uint64_t seed = pm::rotation_seed(5, 3, 1, 0);
    SCOPED_TRACE(fmt::format("d {} dp {} L {} matrix seed {}", sh.d, lay.dp, sh.levels, seed));
    const auto rot = pm::rotation(lay.dp, seed);
    Rng rng(seed ^ 99);
    std::vector<double> x(sh.d), y(lay.dp), ang(lay.angles), rad(lay.radii), work(lay.dp / 2), yh(lay.dp), xh(lay.dp);
    double xn = 0;
    for (auto& v : x) xn += (v = rng.normal()) * v;
    xn = std::sqrt(xn);
    for (int i = 0; i < lay.dp; ++i) {
      y[i] = 0;
      for (int j = 0; j < sh.d; ++j) y[i] += rot->m64[static_cast<size_t>(i) * lay.dp + j] * x[j];
    }
    pm::forward(lay, y.data(), ang.data(), rad.data(), work.data());
    for (int i = 0; i < lay.radii; ++i) yh[i] = rad[i];
    pm::inverse_in_place(lay, yh.data(), [&](int l, int i, double& c, double& s) {
      c = std::cos(ang[lay.angle_off[l - 1] + i]), s = std::sin(ang[lay.angle_off[l - 1] + i]);
    });
    for (int j = 0; j < lay.dp; ++j) {
      xh[j] = 0;
      for (int i = 0; i < lay.dp; ++i) xh[j] += rot->m64[static_cast<size_t>(i) * lay.dp + j] * yh[i];
    }
    for (int j = 0; j < lay.dp; ++j) EXPECT_NEAR(xh[j], j < sh.d ? x[j] : 0.0, 1e-13 * xn) << "coordinate " << j;
  }
}

// ---- codebooks ----------------------------------------------------------------------------------------------

TEST(Polar, LevelOneCodebookIsTheUniformGridTheSolverAlsoFinds) {
  for (int b = 1; b <= 6; ++b) {
    SCOPED_TRACE(fmt::format("bits {}", b));
    const pm::Codebook& cb = pm::codebook(1, b);
    const int n = 1 << b;
    ASSERT_EQ(static_cast<int>(cb.centroids.size()), n);
    for (int j = 0; j < n; ++j) EXPECT_NEAR(cb.centroids[j], (j + 0.5) * pm::kTwoPi / n, 1e-15);
    // Lloyd–Max on the uniform density over [0, 2π) (midpoint quadrature) lands on the same grid.
    const int N = 1 << 16;
    std::vector<double> x(N), w(N, 1.0);
    for (int i = 0; i < N; ++i) x[i] = (i + 0.5) * pm::kTwoPi / N;
    const auto s = kernels::lloyd::solve(x, w, n);
    for (int j = 0; j < n; ++j) EXPECT_NEAR(s.centroids[j], cb.centroids[j], 1e-9);
    // Nearest level on the circle: the bins, wrap-around included.
    const double step = pm::kTwoPi / n;
    EXPECT_EQ(pm::quantize_angle(cb, 0.0), 0);
    EXPECT_EQ(pm::quantize_angle(cb, 0.49 * step), 0);
    EXPECT_EQ(pm::quantize_angle(cb, pm::kTwoPi - 0.01 * step), n - 1);  // nearer the last center than the first
    EXPECT_EQ(pm::quantize_angle(cb, 1.5 * step), 1);
  }
}

TEST(Polar, HigherLevelCodebooksAreSymmetricAboutPiOver4AndMatchTheirDensity) {
  for (int l = 2; l <= 7; ++l)
    for (int b = 1; b <= 4; ++b) {
      SCOPED_TRACE(fmt::format("level {} bits {}", l, b));
      const pm::Codebook& cb = pm::codebook(l, b);
      const int n = 1 << b;
      ASSERT_EQ(static_cast<int>(cb.centroids.size()), n);
      for (int j = 0; j < n; ++j) {
        EXPECT_GT(cb.centroids[j], 0.0);
        EXPECT_LT(cb.centroids[j], pm::kPi / 2);
        if (j) EXPECT_GT(cb.centroids[j], cb.centroids[j - 1]);
        EXPECT_NEAR(cb.centroids[j] + cb.centroids[n - 1 - j], pm::kPi / 2, 1e-12) << "centroid " << j;
      }
      // The solver's own result is symmetric to its quadrature's resolution, and the codebook within it.
      std::vector<double> x, w;
      const int N = 1 << 16;
      pm::angle_quadrature(l, N, x, w);
      const auto raw = kernels::lloyd::solve(x, w, n);
      const double h = (pm::kPi / 2) / N;
      for (int j = 0; j < n; ++j) {
        EXPECT_NEAR(raw.centroids[j] + raw.centroids[n - 1 - j], pm::kPi / 2, 4 * h) << "solver centroid " << j;
        EXPECT_NEAR(raw.centroids[j], cb.centroids[j], 2 * h) << "solver centroid " << j;
      }
      if (b > 1) EXPECT_LT(cb.distortion, pm::codebook(l, b - 1).distortion);
      if (l > 2) EXPECT_LT(cb.distortion, pm::codebook(l - 1, b).distortion);  // the density narrows with ℓ
    }
  // The density is the right one: the level-ℓ angles of Gaussian vectors (any rotation of them is Gaussian
  // too), quantized with the codebook, show the codebook's own distortion E (ψ − Q(ψ))².
  const int dp = 128, L = 6;
  const pm::Layout lay = pm::make_layout(dp, L, std::vector<int>(L, 2));
  const uint64_t seed = 4242;
  Rng rng(seed);
  std::vector<double> sum(L, 0.0), sum2(L, 0.0);
  std::vector<int64_t> cnt(L, 0);
  std::vector<double> y(dp), ang(lay.angles), rad(lay.radii), work(dp / 2);
  for (int rep = 0; rep < 4000; ++rep) {
    for (auto& v : y) v = rng.normal();
    pm::forward(lay, y.data(), ang.data(), rad.data(), work.data());
    for (int l = 2; l <= L; ++l) {
      const pm::Codebook& cb = pm::codebook(l, 2);
      for (int i = 0; i < lay.count[l - 1]; ++i) {
        const double a = ang[lay.angle_off[l - 1] + i];
        const double e = a - cb.centroids[pm::quantize_angle(cb, a)];
        sum[l - 1] += e * e, sum2[l - 1] += e * e * e * e, ++cnt[l - 1];
      }
    }
  }
  for (int l = 2; l <= L; ++l) {
    // Within 4 standard errors of the sample mean of (ψ − Q(ψ))² (a wrong exponent of the density, e.g.
    // sin^{2^{ℓ−1}}, moves the distortion by > 10 standard errors at every level here).
    const double n = static_cast<double>(cnt[l - 1]), emp = sum[l - 1] / n, want = pm::codebook(l, 2).distortion;
    const double se = std::sqrt((sum2[l - 1] / n - emp * emp) / n);
    EXPECT_NEAR(emp, want, 4 * se) << fmt::format("level {} ({} angles, seed {}, standard error {:.3g})", l, cnt[l - 1],
                                                  seed, se);
  }
}

// ---- packed rows and storage ----------------------------------------------------------------------------

TEST(Polar, CodesRoundTripThroughTheBitstream) {
  const uint64_t seed = 31337;
  Rng rng(seed);
  for (int rep = 0; rep < 200; ++rep) {
    std::vector<int> widths;
    std::vector<unsigned> codes;
    int bits = 0;
    for (int i = 0; i < 40; ++i) {
      const int b = 1 + static_cast<int>(rng.below(8));
      widths.push_back(b), codes.push_back(static_cast<unsigned>(rng.below(1u << b))), bits += b;
    }
    std::vector<uint8_t> row((bits + 7) / 8, 0);
    for (int i = 0, pos = 0; i < 40; pos += widths[i], ++i) pm::put_code(row.data(), pos, widths[i], codes[i]);
    for (int i = 0, pos = 0; i < 40; pos += widths[i], ++i)
      ASSERT_EQ(pm::get_code(row.data(), pos, widths[i]), codes[i]) << "rep " << rep << " code " << i << " seed " << seed;
  }
}

/// The encoders' code decision (angle_code: sign tests of the pair against the boundaries' cos/sin, no atan2,
/// so every backend decides alike) is the nearest level of atan2's angle away from the boundaries, either side
/// of every boundary and on the edge cases (zero pair, the negative axis, just below 2π).
TEST(Polar, AngleCodesFromPairsAreTheNearestLevelOfTheAngle) {
  const uint64_t seed = 2024;
  Rng rng(seed);
  for (int l = 1; l <= 7; ++l)
    for (int b = 1; b <= 8; ++b) {
      SCOPED_TRACE(fmt::format("level {} bits {} seed {}", l, b, seed));
      const pm::Layout lay = pm::make_layout(1 << l, l, std::vector<int>(static_cast<size_t>(l), b));
      const pm::Tables tab = pm::make_tables(lay);
      const pm::Codebook& cb = pm::codebook(l, b);
      const double* bcs = tab.bcs.data() + 2 * lay.cb_off[l - 1];
      const int nb = (1 << b) - 1;
      ASSERT_EQ(static_cast<int>(cb.boundaries.size()), nb);
      for (int rep = 0; rep < 1000; ++rep) {
        double a = rng.normal(), y = rng.normal();
        if (l >= 2) a = std::fabs(a), y = std::fabs(y);
        double psi = std::atan2(y, a);
        if (psi < 0) psi += pm::kTwoPi;
        bool near = false;  // within 1e-12 rad of a boundary: either code is right
        for (double bd : cb.boundaries) near = near || std::fabs(psi - bd) < 1e-12;
        if (near) continue;
        EXPECT_EQ(pm::angle_code(l, a, y, bcs, nb), pm::quantize_angle(cb, psi)) << "pair " << a << ", " << y;
      }
      for (int j = 0; j < nb; ++j) {
        const double bd = cb.boundaries[static_cast<size_t>(j)], r = 0.5 + j;
        EXPECT_EQ(pm::angle_code(l, r * std::cos(bd - 1e-9), r * std::sin(bd - 1e-9), bcs, nb), j) << "boundary " << j;
        EXPECT_EQ(pm::angle_code(l, r * std::cos(bd + 1e-9), r * std::sin(bd + 1e-9), bcs, nb), j + 1) << "boundary " << j;
      }
      EXPECT_EQ(pm::angle_code(l, 0.0, 0.0, bcs, nb), 0);
      EXPECT_EQ(pm::angle_code(l, 1.0, 0.0, bcs, nb), 0);
      if (l == 1) {
        EXPECT_EQ(pm::angle_code(l, 1.0, -1e-300, bcs, nb), nb);  // just below 2π: the last bin (atan2 + 2π too)
        EXPECT_EQ(pm::angle_code(l, -1.0, 0.0, bcs, nb), (nb + 1) / 2);  // ψ = π: the first bin of the lower half
      } else {
        EXPECT_EQ(pm::angle_code(l, 0.0, 1.0, bcs, nb), nb);  // ψ = π/2
      }
    }
}

/// decode_elem (the CUDA kernels' decode, one element at a time) is the CPU path's top-down tree decode over
/// the same float32 tables, bit for bit.
TEST(Polar, ElementDecodeIsTheTreeDecode) {
  const uint64_t seed = 4711;
  Rng rng(seed);
  for (const Shape sh : {Shape{16, 4}, Shape{128, 4}, Shape{128, 6}, Shape{8, 2}, Shape{1024, 10}}) {
    const pm::Layout lay = pm::make_layout(sh.d, sh.levels, repeat_bits(sh.levels, 4, 2));
    const pm::Tables tab = pm::make_tables(lay);
    SCOPED_TRACE(fmt::format("dp {} L {} seed {}", lay.dp, sh.levels, seed));
    std::vector<uint8_t> row(static_cast<size_t>(lay.row_bytes), 0);
    std::vector<unsigned> codes(static_cast<size_t>(lay.angles));
    for (int l = 1; l <= lay.levels; ++l)
      for (int i = 0; i < lay.count[l - 1]; ++i) {
        const unsigned c = static_cast<unsigned>(rng.below(1u << lay.bits[l - 1]));
        codes[static_cast<size_t>(lay.angle_off[l - 1] + i)] = c;
        pm::put_code(row.data(), lay.bit_off[l - 1] + i * lay.bits[l - 1], lay.bits[l - 1], c);
      }
    std::vector<uint16_t> rad(static_cast<size_t>(lay.radii));
    for (auto& h : rad) h = f32_to_f16(static_cast<float>(std::fabs(rng.normal()) * 4));
    std::vector<float> tree(static_cast<size_t>(lay.dp));
    for (int i = 0; i < lay.radii; ++i) tree[static_cast<size_t>(i)] = f16_to_f32(rad[static_cast<size_t>(i)]);
    pm::inverse_in_place(lay, tree.data(), [&](int l, int i, float& c, float& s) {
      const int k = lay.cb_off[l - 1] + static_cast<int>(codes[static_cast<size_t>(lay.angle_off[l - 1] + i)]);
      c = tab.cs[2 * static_cast<size_t>(k)], s = tab.cs[2 * static_cast<size_t>(k) + 1];
    });
    for (int j = 0; j < lay.dp; ++j)
      EXPECT_EQ(pm::decode_elem(lay, row.data(), rad.data(), tab.cs.data(), j), tree[static_cast<size_t>(j)]) << "element " << j;
  }
}

SynthLayer gaussian_layer(int H, int64_t C, int d, int nq, uint64_t seed, float q_scale) {
  SynthLayer L;
  L.shape = ModelShape{1, H, H, d};
  L.attn.softmax_scale = 1.f / std::sqrt(static_cast<float>(d));
  L.kv.kv_heads = H, L.kv.tokens = C, L.kv.head_dim = d;
  L.kv.k.resize(static_cast<size_t>(H) * C * d), L.kv.v.resize(L.kv.k.size());
  Rng rng(seed);
  for (auto& x : L.kv.k) x = static_cast<float>(rng.normal());
  for (auto& x : L.kv.v) x = static_cast<float>(rng.normal());
  L.nq = nq;
  L.q.resize(static_cast<size_t>(H) * nq * d);
  for (auto& x : L.q) x = q_scale * static_cast<float>(rng.normal());
  return L;
}

std::unique_ptr<EncodedLayer> encode(const std::string& codec, const Json& params, const SynthLayer& L, int layer = 0) {
  const CodecEntry& e = registry().at(codec);
  return e.make_cpu(resolve_params(e.info.params, params, codec), L.shape)->encode(layer, L.kv, nullptr, L.ctx());
}

TEST(Polar, PaperPresetStoresThreePointEightSevenFiveBitsAndEveryBuffer) {
  const SynthLayer L = gaussian_layer(2, 33, 128, 1, 8, 1.f);
  const auto enc = encode("polarquant", Json{{"levels", 4}, {"bits", "4,2,2,2"}}, L);
  const Storage st = enc->storage();
  // 64·4 + 32·2 + 16·2 + 8·2 = 368 code bits = 46 bytes, + 8 fp16 radii = 62 bytes per part = 496 bits.
  EXPECT_DOUBLE_EQ(st.nominal_bytes_per_token, 124.0);
  EXPECT_DOUBLE_EQ(8 * st.nominal_bytes_per_token / (2 * 128), 3.875);
  const auto bufs = enc->buffers();
  ASSERT_EQ(bufs.size(), st.items.size());
  const std::map<std::string, std::pair<StorageKind, uint64_t>> want{
      {"k.angles", {StorageKind::kCompressed, 2 * 33 * 46}}, {"k.radii", {StorageKind::kCompressed, 2 * 33 * 16}},
      {"k.rotation_seed", {StorageKind::kFixed, 16}},       {"v.angles", {StorageKind::kCompressed, 2 * 33 * 46}},
      {"v.radii", {StorageKind::kCompressed, 2 * 33 * 16}}, {"v.rotation_seed", {StorageKind::kFixed, 16}},
      {"codebook", {StorageKind::kFixed, 4 * (16 + 4 + 4 + 4)}}};
  ASSERT_EQ(st.items.size(), want.size());
  for (size_t i = 0; i < st.items.size(); ++i) {
    SCOPED_TRACE(st.items[i].name);
    ASSERT_TRUE(want.count(st.items[i].name));
    EXPECT_EQ(st.items[i].kind, want.at(st.items[i].name).first);
    EXPECT_EQ(st.items[i].bytes, want.at(st.items[i].name).second);
    EXPECT_EQ(bufs[i].name, st.items[i].name);
    EXPECT_EQ(bufs[i].bytes.size(), st.items[i].bytes);  // storage() is the real buffers, byte for byte
  }
  // The seeds are the rotation seeds of (layer 0, head, part); the codebook the float32 centroids, level 1 first.
  uint64_t s0 = 0;
  std::memcpy(&s0, bufs[2].bytes.data() + 8, 8);
  EXPECT_EQ(s0, pm::rotation_seed(L.ctx().seed, 0, 1, 0));
  float c0 = 0;
  std::memcpy(&c0, bufs[6].bytes.data() + 16 * 4, 4);
  EXPECT_EQ(c0, static_cast<float>(pm::codebook(2, 2).centroids[0]));
  // Every budget candidate's bits equal the measured storage.
  const CodecEntry& e = registry().at("polarquant");
  for (int d : {64, 96, 128, 256}) {
    const SynthLayer Ld = gaussian_layer(1, 5, d, 1, 9, 1.f);
    for (const auto& c : e.candidates(d)) {
      SCOPED_TRACE(fmt::format("d {} {}", d, c.params.dump()));
      const Storage s = encode("polarquant", c.params, Ld)->storage();
      EXPECT_DOUBLE_EQ(8 * s.nominal_bytes_per_token / (2.0 * d), c.bits);
    }
  }
  ASSERT_FALSE(e.candidates(128).empty());
  EXPECT_DOUBLE_EQ(e.candidates(128)[0].bits, 3.875);
  EXPECT_TRUE(e.candidates(7).empty());  // no (L, bits) without padding at an odd head_dim
}

/// The stored row is the documented bitstream: level-major codes, little-endian, of the float64 angles.
TEST(Polar, StoredRowIsTheDocumentedBitstream) {
  const int d = 96, L = 5;  // 48·3 + 24·2 + 12·2 + 6·2 + 3·2 = 234 bits: a partial last byte
  const SynthLayer Ls = gaussian_layer(1, 3, d, 1, 10, 1.f);
  const auto enc = encode("polarquant", Json{{"levels", L}, {"bits", "3,2"}}, Ls, 2);
  const auto bufs = enc->buffers();
  const pm::Layout lay = pm::make_layout(d, L, {3, 2, 2, 2, 2});
  ASSERT_EQ(lay.row_bytes, 30);
  ASSERT_EQ(bufs[0].bytes.size(), 3u * 30u);
  const auto rot = pm::rotation(lay.dp, pm::rotation_seed(Ls.ctx().seed, 2, 0, 0));
  for (int t = 0; t < 3; ++t) {
    std::vector<double> y(lay.dp, 0.0), ang(lay.angles), rad(lay.radii), work(lay.dp / 2);
    for (int j = 0; j < d; ++j)
      for (int i = 0; i < lay.dp; ++i) y[i] += rot->m64[static_cast<size_t>(i) * lay.dp + j] * Ls.kv.k[t * d + j];
    pm::forward(lay, y.data(), ang.data(), rad.data(), work.data());
    const uint8_t* row = bufs[0].bytes.data() + t * 30;
    int pos = 0;
    for (int l = 1; l <= L; ++l)
      for (int i = 0; i < lay.count[l - 1]; ++i) {
        const int b = lay.bits[l - 1];
        unsigned code = 0;
        for (int k = 0; k < b; ++k, ++pos) code |= ((row[pos / 8] >> (pos % 8)) & 1u) << k;
        EXPECT_EQ(code, static_cast<unsigned>(pm::quantize_angle(pm::codebook(l, b), ang[lay.angle_off[l - 1] + i])))
            << "token " << t << " level " << l << " angle " << i;
      }
    EXPECT_EQ(row[29] >> (234 % 8), 0) << "padding bits are zero";
    for (int i = 0; i < lay.radii; ++i) {
      uint16_t h = 0;
      std::memcpy(&h, bufs[1].bytes.data() + (t * lay.radii + i) * 2, 2);
      EXPECT_EQ(h, f32_to_f16(static_cast<float>(rad[i])));
    }
  }
}

TEST(Polar, BitListParameter) {
  const CodecEntry& e = registry().at("polarquant");
  auto label = [&](const Json& p) { return e.label(resolve_params(e.info.params, p, "polarquant")); };
  EXPECT_EQ(label(Json::object()), "polarquant-L4-b4222");
  EXPECT_EQ(label(Json{{"levels", 6}}), "polarquant-L6-b422222");
  EXPECT_EQ(label(Json{{"levels", 3}, {"bits", "5/3/1"}}), "polarquant-L3-b531");
  for (const char* bad : {"", "4,,2", "9", "0,2", "4,2,2,2,2", "a", "12"})
    EXPECT_THROW(label(Json{{"levels", 4}, {"bits", bad}}), UsageError) << bad;
  EXPECT_THROW(e.make_cpu(Json{{"levels", 11}}, ModelShape{1, 1, 1, 128}), UsageError);
  // Every head_dim is supported (zero padding): head_dim 7 at L = 4 is stored as 16 coordinates.
  const SynthLayer L7 = gaussian_layer(1, 4, 7, 1, 11, 1.f);
  const Storage s = encode("polarquant", Json::object(), L7)->storage();
  EXPECT_DOUBLE_EQ(s.nominal_bytes_per_token, 2.0 * (std::ceil((8 * 4 + 4 * 2 + 2 * 2 + 2) / 8.0) + 2));
}

// ---- fidelity -----------------------------------------------------------------------------------------------

struct Fidelity {
  double bits, key_rel_mse, out_rel_l2;
};

/// Key relative MSE Σ‖k̂ − k‖² / Σ‖k‖² (k̂ read back through scores() with the basis queries e_j) and the
/// attention-output relative L2 over the layer's queries against exact float64 attention.
Fidelity measure(const std::string& codec, const Json& params, const SynthLayer& L) {
  const auto enc = encode(codec, params, L);
  const Storage st = enc->storage();
  const int d = L.kv.head_dim, H = L.kv.kv_heads;
  const int64_t C = L.kv.tokens;
  Scratch sc;
  std::vector<float> s(C), o(d), e(d, 0.f);
  std::vector<double> sx(C), ox(d);
  double ke = 0, kn = 0, oe = 0, on = 0;
  for (int g = 0; g < H; ++g) {
    const float* K = L.kv.k_head(g);
    for (int j = 0; j < d; ++j) {
      e.assign(d, 0.f), e[j] = 1.f;
      enc->scores(g, e.data(), s.data(), sc);
      for (int64_t t = 0; t < C; ++t) {
        const double kh = s[t] / L.attn.softmax_scale, k = K[t * d + j];
        ke += (kh - k) * (kh - k), kn += k * k;
      }
    }
    for (int i = 0; i < L.nq; ++i) {
      const float* q = L.query(g, i);
      enc->attend(g, q, o.data(), sc);
      exact_attention_f64(L.kv.k_head(g), L.kv.v_head(g), C, d, q, L.attn.softmax_scale, 0.f, sx.data(), nullptr,
                          ox.data());
      for (int j = 0; j < d; ++j) oe += (o[j] - ox[j]) * (o[j] - ox[j]), on += ox[j] * ox[j];
    }
  }
  return {8 * st.nominal_bytes_per_token / (2.0 * d), ke / kn, std::sqrt(oe / on)};
}

TEST(Polar, FidelityAgainstIntOnGaussianAndOutlierKeys) {
  const Json polar = Json::object();  // the paper preset: 3.875 bits
  const Json int3 = Json{{"code_bits", 3}, {"group_size", 32}};   // 4.0 bits
  const Json int3w = Json{{"code_bits", 3}, {"group_size", 64}};  // 3.5 bits
  // (a) i.i.d. Gaussian keys and values, d = 128.
  {
    const uint64_t seed = 12345;
    const SynthLayer L = gaussian_layer(2, 1024, 128, 8, seed, 2.f);
    const Fidelity p = measure("polarquant", polar, L), i3 = measure("int", int3, L), i3w = measure("int", int3w, L);
    const std::string cfg = fmt::format("gaussian H=2 C=1024 d=128 seed {}: polarquant {:.4g} bits key_rel_mse {:.4g} "
                                        "out_rel_l2 {:.4g}; int3-g32 {:.4g} / {:.4g} / {:.4g}; int3-g64 {:.4g} / {:.4g} / {:.4g}",
                                        seed, p.bits, p.key_rel_mse, p.out_rel_l2, i3.bits, i3.key_rel_mse, i3.out_rel_l2,
                                        i3w.bits, i3w.key_rel_mse, i3w.out_rel_l2);
    std::printf("%s\n", cfg.c_str());
    // The key error is the sum of the levels' angle distortions (each level's angles move energy between
    // the two halves of every node: relative error ≈ E ε² per level), fp16 radii adding ~nothing.
    double sum_d = 0;
    for (int l = 1; l <= 4; ++l) sum_d += pm::codebook(l, l == 1 ? 4 : 2).distortion;
    EXPECT_NEAR(p.key_rel_mse, sum_d, 0.1 * sum_d) << cfg << " Σ_ℓ D_ℓ = " << sum_d;
    // Measured (seed above): polarquant's keys (3.875 bits) beat int3-g64 (3.5 bits) but not int3-g32 (4.0 bits),
    // whose 8 levels over 32 Gaussians err slightly less than the 4/2/2/2 angles (0.032 vs 0.028); the output
    // comparison follows the key error and the seed (not asserted, printed above).
    EXPECT_LT(p.key_rel_mse, 0.95 * i3w.key_rel_mse) << cfg;
  }
  // (b) LLM-like keys with outlier channels (codec_test_util make_layer): the rotation spreads the outliers,
  // so polarquant (3.875 bits) beats int3-g32 (4.0 bits) on both keys and outputs.
  {
    SynthOptions o;
    o.head_dim = 128, o.tokens = 1024, o.kv_heads = 2, o.queries = 8, o.seed = 5;
    const SynthLayer L = make_layer(o);
    const Fidelity p = measure("polarquant", polar, L), i3 = measure("int", int3, L);
    const std::string cfg = fmt::format("outlier keys ({}) seed {}: polarquant {:.4g} bits key_rel_mse {:.4g} out_rel_l2 "
                                        "{:.4g}; int3-g32 {:.4g} / {:.4g} / {:.4g}",
                                        L.describe(), o.seed, p.bits, p.key_rel_mse, p.out_rel_l2, i3.bits,
                                        i3.key_rel_mse, i3.out_rel_l2);
    std::printf("%s\n", cfg.c_str());
    EXPECT_LT(p.key_rel_mse, 0.8 * i3.key_rel_mse) << cfg;
    EXPECT_LT(p.out_rel_l2, 0.95 * i3.out_rel_l2) << cfg;
  }
}

}  // namespace
}  // namespace kvb::test
