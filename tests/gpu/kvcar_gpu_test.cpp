// kvcar on CUDA against the CPU path (label gpu; skips without a CUDA backend or device). Both fit the same
// deterministic model; the GPU layer holds the CPU encoder's latents (bytes compared exactly) and decodes
// them with its own kernels at every call.
#include <gtest/gtest.h>

#include <cmath>

#include "codecs/codec_test_util.h"
#include "kvb/core/registry.h"
#include "kvb/run/device_api.h"

namespace kvb::test {
namespace {

// Tolerances (cuda vs cpu): the same folded float32 weights and latents; the decoder's sums run in another
// order (tiled kernel vs Eigen), the logit dot products too, and the GPU sums the softmax normalizer in
// float32 where the CPU uses double. Per decoded element that is a few (d_lat + h)·u relative to the terms'
// magnitudes, the same effect registry_codecs_test's kvcar row bounds for cpu vs ref (worst there 1.1e-4
// rel_l2 with float64 on one side); kRelL2 = 1e-3 keeps that margin and catches layout errors (a wrong head
// slice or latent row gives rel_l2 of order 1).
constexpr double kRelL2 = 1e-3;
constexpr double kLogitAbs = 1e-3;  ///< |ŝ| is O(10) here; float32 reordering moves it by ~1e-5

TEST(KvcarGpu, MatchesCpu) {
  const CodecEntry& e = registry().at("kvcar");
  if (!e.make_cuda) GTEST_SKIP() << "this build has no CUDA backend";
  std::string err;
  if (cuda::device_count(&err) == 0) GTEST_SKIP() << "no usable CUDA device: " << err;
  for (bool int8 : {false, true})
    for (int d : {7, 64, 128}) {
      SynthOptions o;
      o.kv_heads = 2, o.group = 2, o.head_dim = d, o.tokens = 300, o.seed = 90 + d;
      const SynthLayer L = make_layer(o);
      o.seed += 1;
      const SynthLayer C = make_layer(o);
      const Json p = resolve_params(e.info.params, Json{{"int8", int8}}, "kvcar");
      SCOPED_TRACE(fmt::format("{} on {}", e.label(p), L.describe()));
      auto cpu = e.make_cpu(p, L.shape), gpu = e.make_cuda(p, L.shape);
      cpu->fit(0, {&C.kv}, C.ctx());
      fit_like(*gpu, *cpu, 0, {&C.kv}, C.ctx());  // the CUDA codec encodes from the CPU codec's model
      const auto ec = cpu->encode(0, L.kv, nullptr, L.ctx()), eg = gpu->encode(0, L.kv, nullptr, L.ctx());
      const auto bc = ec->buffers(), bg = eg->buffers();
      ASSERT_EQ(bc.size(), bg.size());
      for (size_t i = 0; i < bc.size(); ++i) {
        EXPECT_EQ(bc[i].name, bg[i].name);
        EXPECT_EQ(bc[i].bytes, bg[i].bytes) << bc[i].name;
      }
      Scratch sc, sg;
      std::vector<float> oc(d), og(d), lc(300), lgv(300);
      for (int h = 0; h < L.shape.n_heads; ++h) {
        const int g = h / L.shape.group();
        ec->attend(g, L.query(h, 0), oc.data(), sc);
        eg->attend(g, L.query(h, 0), og.data(), sg);
        ASSERT_TRUE(all_finite(og.data(), d));
        EXPECT_LE(rel_l2(og.data(), oc.data(), d), kRelL2) << "query head " << h;
        ASSERT_TRUE(eg->scores(g, L.query(h, 0), lgv.data(), sg));
        ec->scores(g, L.query(h, 0), lc.data(), sc);
        for (int t = 0; t < 300; ++t) EXPECT_NEAR(lgv[t], lc[t], kLogitAbs) << "token " << t;
      }
    }
}

}  // namespace
}  // namespace kvb::test
