// lookat (codecs/pq) against faiss's ProductQuantizer / IndexPQ — the reference implementation of product
// quantization with asymmetric (lookup-table) distance computation. faiss is a test and benchmark
// dependency only (Debian libfaiss-dev); without it this executable holds one skipping test.
#include <gtest/gtest.h>

#ifdef KVB_HAVE_FAISS

#include <faiss/IndexPQ.h>
#include <faiss/impl/ProductQuantizer.h>

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "codecs/codec_test_util.h"
#include "codecs/pq/lookat_codec.h"

namespace kvb::test {
namespace {

// One OpenMP thread: faiss's parallel regions and lookat's training alternate here, and on a small shared
// machine their spin-waiting threads starve each other (20x slower); the checks do not depend on threads.
const int kOneThread = [] {
  omp_set_num_threads(1);
  return 1;
}();

/// Keys of one KV head of a synthetic layer (codec_test_util.h: per-channel means, outlier channels, a
/// sink token), n tokens of head_dim d, plus `nq` of its decode queries.
struct Keys {
  std::vector<float> x, q;
  int64_t n;
  int d, nq;
};

Keys keys(int64_t n, int d, int nq, uint64_t seed) {
  SynthOptions o;
  o.kv_heads = 1;
  o.tokens = n;
  o.head_dim = d;
  o.queries = nq;
  o.seed = seed;
  const SynthLayer L = make_layer(o);
  return Keys{L.kv.k, L.q, n, d, nq};
}

codecs::LookatCodebooks train_lookat(const Keys& k, int m, int iters) {
  codecs::LookatParams p;
  p.subspaces = m;
  p.iters = iters;
  p.train_points = static_cast<int>(k.n);
  LayerKV kv;
  kv.kv_heads = 1;
  kv.tokens = k.n;
  kv.head_dim = k.d;
  kv.k = k.x;
  kv.v = k.x;
  return codecs::pq::train(p, {&kv}, 0, 2024);
}

struct Shape {
  int d, m;
};

class LookatFaiss : public ::testing::TestWithParam<Shape> {};

// Given LOOKAT's codebooks, faiss computes the same codes, the same inner-product tables and — through
// IndexPQ with METRIC_INNER_PRODUCT over LOOKAT's codes — the same table-sum scores.
TEST_P(LookatFaiss, SameCodebooksGiveSameCodesTablesAndScores) {
  const auto [d, m] = GetParam();
  const Keys cal = keys(6000, d, 1, 100 + d + m), ev = keys(3000, d, 16, 200 + d + m);
  SCOPED_TRACE(fmt::format("d={} m={} calibration 6000 keys, evaluation 3000 keys, 16 queries", d, m));
  const auto cb = train_lookat(cal, m, 10);
  const int K = 256, dsub = d / m;
  faiss::ProductQuantizer pq(d, m, 8);
  ASSERT_EQ(pq.centroids.size(), cb.c.size());
  std::copy(cb.c.begin(), cb.c.end(), pq.centroids.begin());  // faiss layout (M, ksub, dsub) = LOOKAT's [m][K][dsub]

  // Codes. faiss assigns in float32 (‖x‖² + ‖c‖² − 2<x, c> by BLAS when d_sub >= 16), LOOKAT in float64
  // ‖x − c‖²: they may differ only where two centroids are equally near up to float32 rounding. Every
  // differing code must be such a tie: its exact distance within 1e-4 (relative) of LOOKAT's.
  std::vector<uint8_t> ours(ev.n * m), theirs(ev.n * m);
  codecs::pq::encode_codes(ev.x.data(), ev.n, d, m, K, cb.c.data(), ours.data());
  pq.compute_codes(ev.x.data(), theirs.data(), ev.n);
  int64_t differ = 0;
  for (int64_t t = 0; t < ev.n; ++t)
    for (int i = 0; i < m; ++i) {
      const size_t at = t * m + i;
      if (ours[at] == theirs[at]) continue;
      ++differ;
      auto dist = [&](int c) {
        double s = 0;
        for (int j = 0; j < dsub; ++j) {
          const double e = static_cast<double>(ev.x[t * d + i * dsub + j]) - cb.sub(0, i)[c * dsub + j];
          s += e * e;
        }
        return s;
      };
      EXPECT_LE(dist(ours[at]), dist(theirs[at])) << "LOOKAT's code is the nearest centroid";
      EXPECT_LE(dist(theirs[at]) - dist(ours[at]), 1e-4 * dist(ours[at]) + 1e-6) << "token " << t << " subspace " << i;
    }
  EXPECT_LE(differ, ev.n * m / 1000) << "codes differing beyond float32 ties";
  std::printf("[ lookat/faiss ] d=%d m=%d: %lld of %lld codes differ (float32 ties)\n", d, m,
              static_cast<long long>(differ), static_cast<long long>(ev.n * m));

  // Tables: lut[i][c] = <q_i, C_i[c]>. faiss forms them with sgemm (another summation order): each entry
  // within 2·d_sub float32 roundings of Σ_j |q_j·c_j| (Higham's bound for either order, γ_dsub ≈ dsub·u).
  std::vector<float> lut(m * K), flut(m * K), s_ours(ev.n);
  std::vector<float> dist(ev.n);
  std::vector<faiss::Index::idx_t> lab(ev.n);
  faiss::IndexPQ index(d, m, 8, faiss::METRIC_INNER_PRODUCT);
  index.pq.centroids = pq.centroids;
  index.is_trained = true;
  index.codes = ours;
  index.ntotal = ev.n;
  for (int qi = 0; qi < ev.nq; ++qi) {
    const float* q = ev.q.data() + static_cast<size_t>(qi) * d;
    codecs::pq::build_luts(q, d, m, K, cb.c.data(), lut.data());
    pq.compute_inner_prod_table(q, flut.data());
    for (int i = 0; i < m; ++i)
      for (int c = 0; c < K; ++c) {
        double abs = 0;
        for (int j = 0; j < dsub; ++j) abs += std::fabs(q[i * dsub + j] * cb.sub(0, i)[c * dsub + j]);
        ASSERT_LE(std::fabs(lut[i * K + c] - flut[i * K + c]), 2.0 * dsub * 0x1p-24 * abs + 1e-30)
            << "query " << qi << " table " << i << " centroid " << c;
      }
    // Scores: IndexPQ (inner product) over LOOKAT's codes returns every key's table sum, best first.
    codecs::pq::table_sums(lut.data(), ours.data(), ev.n, m, K, s_ours.data());
    index.search(1, q, ev.n, dist.data(), lab.data());
    double scale = 0;  // Σ_i max_c |lut_i[c]|: the table sums' float32 rounding is a few ulps of this
    for (int i = 0; i < m; ++i) {
      float mx = 0;
      for (int c = 0; c < K; ++c) mx = std::max(mx, std::fabs(lut[i * K + c]));
      scale += mx;
    }
    for (int64_t r = 0; r < ev.n; ++r) {
      ASSERT_GE(lab[r], 0);
      ASSERT_LE(std::fabs(dist[r] - s_ours[lab[r]]), (2.0 * m + 2 * dsub) * 0x1p-24 * scale)
          << "query " << qi << " key " << lab[r];
    }
  }
}

// LOOKAT's trainer (k-means++ and 25 Lloyd iterations) against faiss's own PQ training (random seeding,
// 25 iterations) on the same calibration keys: the distortion of LOOKAT's stored (fp16) codebooks is within
// 5% of faiss's, on the training keys and on held-out keys. 40 training keys per centroid (faiss warns
// below 39): 10240 keys for K = 256 (the paper's LOOKAT-4 at GPT-2's head_dim 64), 2560 for K = 64.
struct TrainShape {
  int d, m, nbits;
};
class LookatFaissTraining : public ::testing::TestWithParam<TrainShape> {};

TEST_P(LookatFaissTraining, DistortionWithinFivePercentOfFaiss) {
  const auto [d, m, nbits] = GetParam();
  const int K = 1 << nbits;
  const int64_t n = 40 * K;
  // One synthetic head: the first n keys calibrate, the next 4000 (same statistics, other tokens) are held out.
  const Keys all = keys(n + 4000, d, 1, 300 + d + m);
  Keys cal = all, held = all;
  cal.n = n, held.n = 4000;
  cal.x.assign(all.x.begin(), all.x.begin() + n * d);
  held.x.assign(all.x.begin() + n * d, all.x.end());
  SCOPED_TRACE(fmt::format("d={} m={} K={} {} calibration keys, 25 iterations", d, m, K, n));
  codecs::LookatParams p;
  p.subspaces = m;
  p.nbits = nbits;
  p.iters = 25;
  p.train_points = static_cast<int>(n);
  LayerKV kv;
  kv.kv_heads = 1, kv.tokens = n, kv.head_dim = d, kv.k = cal.x, kv.v = cal.x;
  const auto cb = codecs::pq::train(p, {&kv}, 0, 2024);
  faiss::ProductQuantizer pq(d, m, nbits);
  pq.cp.niter = 25;
  pq.cp.seed = 2024;
  pq.train(cal.n, cal.x.data());
  auto mse = [&](const Keys& k, const float* centroids) {
    std::vector<uint8_t> codes(k.n * m);
    codecs::pq::encode_codes(k.x.data(), k.n, d, m, K, centroids, codes.data());
    return codecs::pq::distortion(k.x.data(), k.n, d, m, K, centroids, codes.data());
  };
  const double ours_train = mse(cal, cb.c.data()), faiss_train = mse(cal, pq.centroids.data());
  const double ours_held = mse(held, cb.c.data()), faiss_held = mse(held, pq.centroids.data());
  std::printf("[ lookat/faiss ] d=%d m=%d K=%d distortion per key: train lookat %.5g faiss %.5g (ratio %.4f), "
              "held-out lookat %.5g faiss %.5g (ratio %.4f)\n",
              d, m, K, ours_train, faiss_train, ours_train / faiss_train, ours_held, faiss_held, ours_held / faiss_held);
  EXPECT_LE(ours_train, 1.05 * faiss_train);
  EXPECT_LE(ours_held, 1.05 * faiss_held);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LookatFaiss, ::testing::Values(Shape{64, 2}, Shape{64, 4}, Shape{128, 8}, Shape{128, 32}),
                         [](const auto& info) { return fmt::format("d{}_m{}", info.param.d, info.param.m); });
INSTANTIATE_TEST_SUITE_P(Shapes, LookatFaissTraining,
                         ::testing::Values(TrainShape{64, 4, 8}, TrainShape{128, 8, 6}, TrainShape{64, 16, 6}),
                         [](const auto& info) {
                           return fmt::format("d{}_m{}_k{}", info.param.d, info.param.m, 1 << info.param.nbits);
                         });

}  // namespace
}  // namespace kvb::test

#else

TEST(LookatFaiss, SkippedWithoutFaiss) {
  GTEST_SKIP() << "faiss was not found at configure time (Debian libfaiss-dev: faiss/IndexPQ.h, libfaiss, BLAS, "
                  "LAPACK); the lookat/faiss cross-check did not build";
}

#endif
