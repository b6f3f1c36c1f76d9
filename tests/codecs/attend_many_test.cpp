// EncodedLayer::attend_many (one pass over the compressed cache for the nq queries of a GQA group) against
// per-query attend(), for every registered codec (its default and every budget candidate) on odd shapes,
// with the hand-written AVX2 kernels on and off. Plus an opt-in timing (KVB_BENCH=1).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "codec_test_util.h"
#include "kernels/cpu/row_kernels.h"
#include "kvb/core/error.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

// ---- tolerance (attend_many vs attend) ---------------------------------------------------------------
// Both read the SAME stored bytes; they differ only in float32 rounding:
//  * logits: attend_many dots the query with the decoded row x̂ (one float rounding per element, ≤ u·|x̂|)
//    where attend folds scales into partial sums; both are float32 sums of d terms in different orders, so
//    |δŝ| ≲ 2·(d + 16)·u·scale·Σ_j|q_j||x̂_j| — the same bound registry_codecs_test uses for cpu vs ref,
//    doubled because both sides now round.
//  * outputs: the softmax turns δŝ into a relative change ≲ 2·max|δŝ|, and the value sums are float32 sums
//    over C tokens in different orders (blocks of 16 rows vs the codec's own blocking): a random walk of
//    ~sqrt(C)·u per element. cpu (float32) vs ref (float64) is observed at <= 4.9e-6 rel_l2 at C = 4099, so
//    two float32 evaluations stay below ~1e-5. The worst observed here is printed (see the test log).
//  kRelL2 = 2e-5 leaves margin for that and still catches any indexing, blocking or weighting bug (a single
//  wrong token weight at these shapes moves the output by > 1e-3; a wrong scale by O(1)).
constexpr double kRelL2 = 2e-5;

struct SimdGuard {
  ~SimdGuard() { kernels::set_simd_kernels(true); }
};

/// Every configuration of a codec worth checking at head_dim d: its defaults and its budget candidates.
std::vector<Json> configs(const CodecEntry& e, int d) {
  std::vector<Json> out{Json::object()};
  if (e.candidates)
    for (const auto& c : e.candidates(d)) out.push_back(c.params);
  return out;
}

TEST(AttendMany, EqualsPerQueryAttendForEveryCodec) {
  SimdGuard guard;
  const bool simd_available = kernels::simd_kernels_enabled();
  std::map<std::string, double> worst;
  std::map<std::string, int> ran;
  FitStore fits;
  // One layer and one encode per (C, d, codec configuration): the GQA group holds kMaxNq query heads and each
  // nq takes the first nq of them (attend_many takes any nq queries of a KV head), so the encode, which
  // dominates at C = 4099, is not repeated for every nq.
  constexpr int kMaxNq = 11;  // more than one chunk of kManyQueries
  for (int64_t C : {1, 7, 127, 4099})
    for (int d : {8, 64, 96, 128, 256}) {
      SynthOptions o;
      o.tokens = C;
      o.head_dim = d;
      o.group = kMaxNq;
      o.queries = 1;
      o.seed = 1000 + C * 7 + d * 3;
      const SynthLayer L = make_layer(o);
      for (const auto& e : registry().all())
        for (const Json& params : configs(e, d)) {
          // kvcar runs its defaults only, up to C = 127 (two of its 64-token decode blocks): its decoder
          // runs over every cached token per call, so every candidate at C = 4099 would add minutes
          // without covering new code.
          if (e.info.name == "kvcar" && (C > 127 || !params.empty())) continue;
          // turboquant's and polarquant's float64 encodes cost 2–4·d² per vector (dense rotations): at
          // C = 4099 their defaults only (the attend path is the same code at every bit width; their
          // candidates run at the smaller C).
          if ((e.info.name == "turboquant" || e.info.name == "polarquant") && C > 127 && !params.empty()) continue;
          const Json p = resolve_params(e.info.params, params, e.info.name);
          std::unique_ptr<Codec> codec;
          try {
            codec = e.make_cpu(p, L.shape);
          } catch (const Unsupported&) {
            continue;
          }
          if (e.info.trainable) {
            // Any fitted state will do here: a calibration cache of at most 256 tokens (a seed of its own),
            // with which lookat's codebooks are its points.
            SynthOptions co = o;
            co.group = 1;
            co.kv_heads = L.shape.n_kv_heads;
            co.tokens = std::min<int64_t>(C, 256);
            co.seed = 99991 + C * 7 + d * 3;
            const SynthLayer calib = make_layer(co);
            fits.fit(*codec, e.info.name, fmt::format("{} {}", co.seed, calib.describe()), 0, {&calib.kv}, L.ctx());
          }
          const auto enc = codec->encode(0, L.kv, nullptr, L.ctx());
          for (int nq : {1, 3, 4, 8, kMaxNq}) {
            SCOPED_TRACE(fmt::format("{} on {} nq {}", e.label(p), L.describe(), nq));
            for (bool simd : {true, false}) {
              if (simd && !simd_available) continue;
              kernels::set_simd_kernels(simd);
              Scratch s1, s2;
              for (int g = 0; g < L.shape.n_kv_heads; ++g) {
                std::vector<const float*> qs(nq);
                std::vector<std::vector<float>> ref(nq, std::vector<float>(d)), got(nq, std::vector<float>(d, -1.f));
                std::vector<float*> outs(nq);
                for (int i = 0; i < nq; ++i) {
                  qs[i] = L.query(g * kMaxNq + i, 0);
                  outs[i] = got[i].data();
                  enc->attend(g, qs[i], ref[i].data(), s1);
                }
                enc->attend_many(g, qs.data(), nq, outs.data(), s2);
                for (int i = 0; i < nq; ++i) {
                  ASSERT_TRUE(all_finite(got[i].data(), d)) << "query " << i << (simd ? " simd" : " portable");
                  const double r = rel_l2(got[i].data(), ref[i].data(), d);
                  worst[e.info.name] = std::max(worst[e.info.name], r);
                  ASSERT_LE(r, kRelL2) << "query " << i << (simd ? " simd" : " portable");
                }
              }
              ++ran[e.info.name];
            }
          }
        }
    }
  for (const auto& [name, w] : worst)
    std::printf("[ %s ] %d configurations, worst attend_many vs attend rel_l2 %.3g\n", name.c_str(), ran[name], w);
  EXPECT_EQ(ran.size(), registry().all().size()) << "every registered codec must have run";
}

// ---- opt-in timing: KVB_BENCH=1 ./test_codecs --gtest_filter='AttendMany.Timing*' ----------------------
TEST(AttendMany, TimingGqaGroupOf4) {
  const char* env = std::getenv("KVB_BENCH");
  if (!env || std::string(env) != "1") GTEST_SKIP() << "timing only with KVB_BENCH=1";
  constexpr int kG = 4, kD = 128;
  const std::vector<std::pair<std::string, Json>> cells{
      {"fp16", Json::object()},
      {"fp8", Json{{"format", "e4m3"}}},
      {"int", Json{{"code_bits", 8}, {"group_size", 32}}},
      {"int", Json{{"code_bits", 4}, {"group_size", 32}}},
      {"int", Json{{"code_bits", 2}, {"group_size", 32}}},
      {"kivi", Json{{"code_bits", 4}, {"group_size", 32}, {"residual", 128}}},
      {"kivi", Json{{"code_bits", 2}, {"group_size", 32}, {"residual", 128}}},
  };
  using Clock = std::chrono::steady_clock;
  for (int64_t C : {4096, 32768}) {
    SynthOptions o;
    o.tokens = C;
    o.head_dim = kD;
    o.group = kG;
    o.queries = 1;
    o.kv_heads = 1;
    const SynthLayer L = make_layer(o);
    for (const auto& [name, params] : cells) {
      const CodecEntry& e = registry().at(name);
      const Json p = resolve_params(e.info.params, params, name);
      const auto enc = e.make_cpu(p, L.shape)->encode(0, L.kv, nullptr, L.ctx());
      std::vector<const float*> qs(kG);
      std::vector<std::vector<float>> o1(kG, std::vector<float>(kD));
      std::vector<float*> outs(kG);
      for (int i = 0; i < kG; ++i) qs[i] = L.query(i, 0), outs[i] = o1[i].data();
      Scratch s;
      const int reps = static_cast<int>(std::max<int64_t>(3, (1 << 23) / C));
      auto time = [&](auto&& f) {
        f();  // warm-up
        double best = 1e30;
        for (int trial = 0; trial < 3; ++trial) {
          const auto t0 = Clock::now();
          for (int r = 0; r < reps; ++r) f();
          best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / reps);
        }
        return best;
      };
      const double sep = time([&] {
        for (int i = 0; i < kG; ++i) enc->attend(0, qs[i], outs[i], s);
      });
      const double many = time([&] { enc->attend_many(0, qs.data(), kG, outs.data(), s); });
      std::printf("[ timing ] C=%-6lld %-22s 4x attend %8.1f us   attend_many %8.1f us   speedup %.2fx\n",
                  static_cast<long long>(C), e.label(p).c_str(), sep * 1e6, many * 1e6, sep / many);
    }
  }
}

}  // namespace
}  // namespace kvb::test
