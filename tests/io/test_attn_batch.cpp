// The batched, vectorized exact attention used by the generator (ref_out) and inspect must give the
// numbers of kvb::exact_attention_f64 (the same operations in the same order).
#include "io_test_util.h"
#include "kvb/attention/exact.h"
#include "kvb/attention/exact_batch.h"

using namespace kvbtest;

TEST(AttnBatch, MatchesExactAttentionF64) {
  kvb::Rng rng(1234);
  for (int d : {1, 3, 16, 32, 64, 100, 128}) {
    for (int64_t C : {1, 2, 15, 16, 17, 64, 65, 200}) {
      for (int64_t nq : {1, 2, 3, 5, 8}) {
        for (double cap : {0.0, 30.0}) {
          SCOPED_TRACE(fmt::format("d={} C={} nq={} softcap={}", d, C, nq, cap));
          std::vector<float> K(static_cast<size_t>(C) * d), V(K.size()), Q(static_cast<size_t>(nq) * d);
          for (auto& x : K) x = static_cast<float>(3 * rng.normal());
          for (auto& x : V) x = static_cast<float>(rng.normal());
          for (auto& x : Q) x = static_cast<float>(rng.normal());
          const double scale = 1.0 / std::sqrt(static_cast<double>(d));
          std::vector<double> o(static_cast<size_t>(nq) * d), p(static_cast<size_t>(nq) * C), s(p.size());
          kvb::exact_attention_batch_f64(K.data(), V.data(), C, d, Q.data(), nq, scale, cap, o.data(), p.data());
          kvb::exact_logits_batch_f64(K.data(), C, d, Q.data(), nq, scale, cap, s.data());
          std::vector<double> o1(static_cast<size_t>(d)), p1(static_cast<size_t>(C)), s1(p1.size());
          for (int64_t i = 0; i < nq; ++i) {
            kvb::exact_attention_f64(K.data(), V.data(), C, d, Q.data() + i * d, scale, cap, s1.data(), p1.data(),
                                     o1.data());
            // Same arithmetic in the same order: equal up to FMA contraction in -march=native builds.
            for (int64_t t = 0; t < C; ++t) {
              ASSERT_NEAR(s[i * C + t], s1[t], 1e-12 * (1 + std::abs(s1[t]))) << "logit " << t;
              ASSERT_NEAR(p[i * C + t], p1[t], 1e-12) << "p " << t;
            }
            for (int j = 0; j < d; ++j) ASSERT_NEAR(o[i * d + j], o1[j], 1e-12 * (1 + std::abs(o1[j]))) << "o " << j;
          }
        }
      }
    }
  }
}

TEST(AttnBatch, NullOutputsAndEmptyInputs) {
  std::vector<float> K(64, 1.f), V(64, 1.f), Q(64, 1.f);
  std::vector<double> o(64, -1);
  kvb::exact_attention_batch_f64(K.data(), V.data(), 4, 16, Q.data(), 0, 0.25, 0, o.data(), nullptr);
  EXPECT_EQ(o[0], -1);
  kvb::exact_attention_batch_f64(K.data(), V.data(), 4, 16, Q.data(), 2, 0.25, 0, nullptr, nullptr);
  kvb::exact_attention_batch_f64(K.data(), V.data(), 4, 16, Q.data(), 2, 0.25, 0, o.data(), nullptr);
  EXPECT_NEAR(o[0], 1.0, 1e-15);
}
