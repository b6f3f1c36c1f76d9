// The eviction codecs' CUDA backend (codecs/evict/evict_gpu.cpp) against their CPU layer (label gpu): both plan on
// the host with evict_plan, so the kept rows must agree exactly (buffers byte for byte, storage, held_tokens), and
// the device attention over the packed rows (kernels/cuda LayerView::row_off) must give the CPU's logits and
// outputs within kSelftestScoreTol / kSelftestAttendTol, and attend_lse the CPU's log-normalizer over the KEPT
// rows only. Two kinds of cases:
//  - the selftest matrix (C = 1, 7, 129; d = 64, 96, 128, 256; and C = 4097 at d = 96) with small windows, so the
//    observation scoring selects rows at every length (the defaults keep only the window up to C = 128; the
//    default matrix runs in gpu_parity_test.cpp);
//  - hand-made caches whose KV heads attend differently (one head's observation queries aimed at two tokens,
//    one uniform, one random), so AdaKV gives the heads unequal row counts, one head very few.
// Skips without a CUDA backend or device; runs on the emulator build (ctest -L gpu) and on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvb/bench/selftest.h"
#include "kvb/core/codec.h"
#include "kvb/core/registry.h"
#include "kvb/core/rng.h"
#include "kvb/run/device_api.h"

namespace kvb {
namespace {

const char* const kEvict[] = {"streamingllm", "h2o", "snapkv", "pyramidkv", "adakv"};

bool cuda_ready(const std::string& codec, std::string* why) {
  const CodecEntry* e = registry().find(codec);
  if (!e || !e->make_cuda) {
    *why = codec + ": this build has no CUDA backend (nvcc not found or KVB_ENABLE_CUDA=OFF)";
    return false;
  }
  std::string err;
  if (cuda::device_count(&err) == 0) {
    *why = "no usable CUDA device: " + err;
    return false;
  }
  return true;
}

TEST(EvictGpuParity, SelftestMatrixWithSmallWindows) {
  std::string why;
  if (!cuda_ready("snapkv", &why)) GTEST_SKIP() << why;
  int ran = 0;
  for (const char* codec : kEvict) {
    std::vector<Json> variants;
    if (std::string(codec) == "streamingllm") variants = {Json{{"keep", 0.5}, {"sink", 2}}};
    else if (std::string(codec) == "h2o") variants = {Json{{"keep", 0.3}, {"recent", 0.25}, {"gqa", "max"}}};
    else variants = {Json{{"keep", 0.3}, {"window", 4}}, Json{{"keep", 0.2}, {"window", 2}, {"pooling", "avg"}, {"kernel", 5}}};
    if (std::string(codec) == "adakv") variants.push_back(Json{{"keep", 0.25}, {"window", 3}, {"alpha", 0.0}});
    for (const Json& v : variants)
      for (auto c : selftest_cases("cuda", false)) {
        if (c.codec != codec || (c.tokens > 4097 / 2 && c.head_dim != 96)) continue;  // 4097 tokens at d = 96 only
        c.params = v;
        SCOPED_TRACE(c.describe());
        const SelftestResult r = run_selftest_case(c, "cuda");
        ASSERT_FALSE(r.skipped) << r.reason;
        ++ran;
        for (const auto& k : r.checks) EXPECT_TRUE(k.pass) << k.name << " = " << k.value << " > " << k.tol << " " << k.detail;
      }
  }
  EXPECT_GT(ran, 50);
}

// ---- hand-made caches ----

struct EvictCase {
  std::string codec;
  Json params;
  int H = 3, G = 2, d = 64;
  int64_t C = 300, W = 16;
  int layer = 0, n_layers = 1;
  uint64_t seed = 1;
  std::string describe() const {
    return fmt::format("{}{} H={}x{} C={} W={} d={} layer {}/{} seed={}", codec, params.dump(), H, G, C, W, d, layer,
                       n_layers, seed);
  }
};

/// Gaussian K and V; observation queries at the last W positions: KV head 0's query heads aim at token 1 or 2
/// (6·k_t: those logits dominate, so its scores concentrate on two tokens), head 1's are zero (uniform attention:
/// flat scores), the others' random.
LayerKV make_cache(const EvictCase& c) {
  Rng r(c.seed);
  LayerKV kv;
  kv.kv_heads = c.H, kv.tokens = c.C, kv.head_dim = c.d;
  kv.k.resize(static_cast<size_t>(c.H) * c.C * c.d);
  kv.v.resize(kv.k.size());
  for (auto& x : kv.k) x = static_cast<float>(r.normal());
  for (auto& x : kv.v) x = static_cast<float>(r.normal());
  ObsQueries& ob = kv.obs;
  ob.heads = c.H * c.G, ob.n = std::min(c.W, c.C), ob.head_dim = c.d;
  for (int64_t i = 0; i < ob.n; ++i) ob.positions.push_back(c.C - ob.n + i);
  ob.q.assign(static_cast<size_t>(ob.heads) * ob.n * c.d, 0.f);
  for (int h = 0; h < ob.heads; ++h)
    for (int64_t i = 0; i < ob.n; ++i) {
      float* q = ob.q.data() + (static_cast<size_t>(h) * ob.n + i) * c.d;
      const int g = h / c.G;
      if (g == 0) {
        const int64_t t = std::min<int64_t>(1 + i % 2, ob.positions[i]);
        for (int j = 0; j < c.d; ++j) q[j] = 6.f * kv.k_head(0)[t * c.d + j];
      } else if (g >= 2) {
        for (int j = 0; j < c.d; ++j) q[j] = static_cast<float>(r.normal());
      }
    }
  return kv;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t j = 0; j < a.size(); ++j) num += (double(a[j]) - b[j]) * (double(a[j]) - b[j]), den += double(b[j]) * b[j];
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// Rows kept per KV head (from held_tokens).
std::vector<int64_t> row_counts(const EncodedLayer& L, int H) {
  std::vector<int64_t> n;
  for (int g = 0; g < H; ++g) {
    const auto m = L.held_tokens(g);
    n.push_back(std::accumulate(m.begin(), m.end(), int64_t{0}));
  }
  return n;
}

/// Encodes c on both backends and compares everything; *rows (when set): the CPU layer's row counts per head.
void compare(const EvictCase& c, bool timing = false, std::vector<int64_t>* rows = nullptr) {
  SCOPED_TRACE(c.describe());
  const CodecEntry& e = registry().at(c.codec);
  ModelShape shape;
  shape.n_layers = c.n_layers, shape.n_kv_heads = c.H, shape.n_heads = c.H * c.G, shape.head_dim = c.d;
  CodecContext ctx;
  ctx.shape = shape;
  ctx.attn.softmax_scale = 1.f / std::sqrt(static_cast<float>(c.d));
  ctx.seed = c.seed;
  const LayerKV kv = make_cache(c);
  const auto cpu = e.make_cpu(c.params, shape)->encode(c.layer, kv, nullptr, ctx);
  const auto gpu = e.make_cuda(c.params, shape)->encode(c.layer, kv, nullptr, ctx);

  std::map<std::string, std::vector<uint8_t>> bc;
  for (auto& b : cpu->buffers()) bc[b.name] = b.bytes;
  const auto bg = gpu->buffers();
  EXPECT_EQ(bg.size(), bc.size());
  for (const auto& b : bg) {
    ASSERT_TRUE(bc.count(b.name)) << b.name;
    EXPECT_TRUE(b.bytes == bc[b.name]) << b.name << " differs (" << b.bytes.size() << " vs " << bc[b.name].size() << " bytes)";
  }
  const Storage sc = cpu->storage(), sg = gpu->storage();
  ASSERT_EQ(sc.items.size(), sg.items.size());
  for (size_t i = 0; i < sc.items.size(); ++i) {
    EXPECT_EQ(sc.items[i].name, sg.items[i].name);
    EXPECT_EQ(sc.items[i].bytes, sg.items[i].bytes) << sc.items[i].name;
    EXPECT_EQ(sc.items[i].tokens, sg.items[i].tokens) << sc.items[i].name;
  }
  for (int g = 0; g < c.H; ++g) EXPECT_EQ(cpu->held_tokens(g), gpu->held_tokens(g)) << "head " << g;

  Rng rq(c.seed + 99);
  Scratch s1, s2;
  const int d = c.d;
  for (int g = 0; g < c.H; ++g) {
    const auto held = cpu->held_tokens(g);
    std::vector<std::vector<float>> qs(static_cast<size_t>(c.G), std::vector<float>(d));
    std::vector<std::vector<float>> ref(static_cast<size_t>(c.G), std::vector<float>(d));
    for (int i = 0; i < c.G; ++i) {
      for (auto& x : qs[i]) x = static_cast<float>(rq.normal() * 1.5);
      std::vector<float> lc(static_cast<size_t>(c.C)), lg(lc.size()), og(d), olc(d), olg(d);
      ASSERT_TRUE(cpu->scores(g, qs[i].data(), lc.data(), s1));
      ASSERT_TRUE(gpu->scores(g, qs[i].data(), lg.data(), s2));
      double err = 0, mx = 0;
      for (int64_t t = 0; t < c.C; ++t) {
        mx = std::max(mx, std::fabs(double(lc[t])));
        err = std::max(err, std::fabs(double(lg[t]) - lc[t]));
        if (!held[t]) {
          EXPECT_EQ(lg[t], 0.f) << "dropped token " << t << " of head " << g;
        }
      }
      EXPECT_LE(err / (1 + mx), kSelftestScoreTol) << "scores, head " << g;
      cpu->attend(g, qs[i].data(), ref[i].data(), s1);
      gpu->attend(g, qs[i].data(), og.data(), s2);
      EXPECT_LE(rel_l2(og, ref[i]), kSelftestAttendTol) << "attend, head " << g;
      double lse_c = 0, lse_g = 0;
      cpu->attend_lse(g, qs[i].data(), olc.data(), &lse_c, s1);
      gpu->attend_lse(g, qs[i].data(), olg.data(), &lse_g, s2);
      EXPECT_LE(rel_l2(olg, olc), kSelftestAttendTol) << "attend_lse output, head " << g;
      EXPECT_LE(std::fabs(lse_g - lse_c), kSelftestScoreTol * (1 + std::fabs(lse_c))) << "lse, head " << g;
      // The normalizer is the kept rows' alone: ln Σ_{held t} e^{ŝ_t} (not over all C tokens).
      std::vector<float> kept;
      for (int64_t t = 0; t < c.C; ++t)
        if (held[t]) kept.push_back(lc[t]);
      EXPECT_NEAR(lse_g, logsumexp_logits(kept.data(), static_cast<int64_t>(kept.size())),
                  kSelftestScoreTol * (1 + std::fabs(lse_c)))
          << "head " << g;
    }
    std::vector<const float*> qp;
    std::vector<std::vector<float>> outs(static_cast<size_t>(c.G), std::vector<float>(d));
    std::vector<float*> op;
    for (int i = 0; i < c.G; ++i) qp.push_back(qs[i].data()), op.push_back(outs[i].data());
    gpu->attend_many(g, qp.data(), c.G, op.data(), s2);
    for (int i = 0; i < c.G; ++i) EXPECT_LE(rel_l2(outs[i], ref[i]), kSelftestAttendTol) << "attend_many, head " << g;
  }
  if (timing) {
    LayerQueries q;
    q.heads = c.H * c.G, q.n = 2, q.head_dim = d;
    q.q.resize(static_cast<size_t>(q.heads) * q.n * d);
    for (auto& x : q.q) x = static_cast<float>(rq.normal());
    DeviceTimes t;
    EXPECT_TRUE(gpu->device_timing(kv, q, 1, 0.0, &t));
    EXPECT_GT(t.encode_samples, 0);
    EXPECT_GT(t.attend_samples, 0);
    EXPECT_FALSE(t.device.empty());
    // Re-encoding (inside the timing) rewrote identical rows.
    for (const auto& b : gpu->buffers()) EXPECT_TRUE(b.bytes == bc[b.name]) << b.name << " after device_timing";
  }
  if (rows) *rows = row_counts(*cpu, c.H);
}

TEST(EvictGpuParity, EveryPolicyOddShapes) {
  std::string why;
  if (!cuda_ready("snapkv", &why)) GTEST_SKIP() << why;
  uint64_t seed = 100;
  for (const char* codec : kEvict)
    for (int d : {64, 96})
      for (int64_t C : {int64_t{1}, int64_t{7}, int64_t{300}}) {
        EvictCase c;
        c.codec = codec, c.d = d, c.C = C, c.seed = ++seed;
        c.params = std::string(codec) == "streamingllm" ? Json{{"keep", 0.4}, {"sink", 2}}
                   : std::string(codec) == "h2o"        ? Json{{"keep", 0.4}}
                                                        : Json{{"keep", 0.4}, {"window", 2}};
        if (std::string(codec) == "pyramidkv") c.layer = 2, c.n_layers = 4;
        compare(c, C == 7);
      }
}

TEST(EvictGpuParity, AdaKvUnequalHeadsAndAHeadWithVeryFewRows) {
  std::string why;
  if (!cuda_ready("adakv", &why)) GTEST_SKIP() << why;
  uint64_t seed = 200;
  for (int d : {64, 96})
    for (const Json& p : {Json{{"keep", 0.25}, {"window", 2}, {"alpha", 0.0}, {"pooling", "none"}},
                          Json{{"keep", 0.25}, {"window", 4}, {"alpha", 0.2}},
                          Json{{"keep", 0.1}, {"window", 1}, {"alpha", 0.0}, {"pooling", "avg"}, {"kernel", 3}}}) {
      EvictCase c;
      c.codec = "adakv", c.params = p, c.d = d, c.C = 300, c.seed = ++seed;
      std::vector<int64_t> n;
      compare(c, false, &n);
      ASSERT_EQ(n.size(), 3u);
      SCOPED_TRACE(c.describe() + fmt::format(" rows per head [{}]", fmt::join(n, ",")));
      EXPECT_NE(*std::min_element(n.begin(), n.end()), *std::max_element(n.begin(), n.end())) << "heads equal";
      if (p.at("alpha").get<double>() == 0.0 && p.at("pooling") == "none") {
        EXPECT_LE(n[0], 2 + 2) << "head 0 (two target tokens + the window) should keep very few rows";
      }
    }
  // PyramidKV's layers differ in budget: first and last layer of four.
  for (int layer : {0, 3}) {
    EvictCase c;
    c.codec = "pyramidkv", c.params = Json{{"keep", 0.2}, {"window", 2}}, c.C = 129, c.d = 96;
    c.layer = layer, c.n_layers = 4, c.seed = 300 + layer;
    compare(c);
  }
}

}  // namespace
}  // namespace kvb
