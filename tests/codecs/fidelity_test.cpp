// Fidelity against exact float64 attention on LLM-like data, hostile inputs, and concurrent attend.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "codec_test_util.h"
#include "kvb/core/error.h"
#include "kvb/core/half.h"
#include "kvb/core/registry.h"

namespace kvb::test {
namespace {

std::unique_ptr<EncodedLayer> encode_cpu(const std::string& codec, const Json& params, const SynthLayer& L) {
  const CodecEntry& e = registry().at(codec);
  return e.make_cpu(resolve_params(e.info.params, params, codec), L.shape)->encode(0, L.kv, nullptr, L.ctx());
}

/// Mean cosine(ô, o_exact) over every query of every head.
double mean_cosine(const std::string& codec, const Json& params, const SynthLayer& L) {
  const auto enc = encode_cpu(codec, params, L);
  Scratch scratch;
  std::vector<float> o(L.shape.head_dim);
  double sum = 0;
  int n = 0;
  for (int h = 0; h < L.shape.n_heads; ++h)
    for (int i = 0; i < L.nq; ++i) {
      enc->attend(h / L.shape.group(), L.query(h, i), o.data(), scratch);
      const auto ex = exact_output(L, h, L.query(h, i));
      sum += cosine(o.data(), ex.data(), L.shape.head_dim);
      ++n;
    }
  return sum / n;
}

TEST(Fidelity, OrderingOnLlmLikeData) {
  SynthOptions o;
  o.head_dim = 128;
  o.tokens = 4096;
  o.kv_heads = 2;
  o.group = 2;
  o.queries = 8;
  o.outliers = 4;
  o.seed = 2024;
  const SynthLayer L = make_layer(o);
  SCOPED_TRACE(L.describe());
  std::map<std::string, double> cos;
  auto run = [&](const std::string& name, const std::string& codec, const Json& p) {
    cos[name] = mean_cosine(codec, p, L);
    std::printf("[ fidelity ] %-16s mean cosine %.7f\n", name.c_str(), cos[name]);
  };
  run("fp16", "fp16", Json::object());
  run("fp8-e4m3", "fp8", Json{{"format", "e4m3"}});
  run("fp8-e5m2", "fp8", Json{{"format", "e5m2"}});
  run("int8-g32", "int", Json{{"code_bits", 8}, {"group_size", 32}});
  run("int4-g32", "int", Json{{"code_bits", 4}, {"group_size", 32}});
  run("int4-g128", "int", Json{{"code_bits", 4}, {"group_size", 128}});
  run("int2-g32", "int", Json{{"code_bits", 2}, {"group_size", 32}});
  run("kivi4", "kivi", Json{{"code_bits", 4}});
  run("kivi2", "kivi", Json{{"code_bits", 2}});
  EXPECT_GE(cos["fp16"], 0.99999);
  EXPECT_GE(cos["int8-g32"], 0.999);
  EXPECT_GT(cos["int8-g32"], cos["int4-g32"]);
  EXPECT_GT(cos["int4-g32"], cos["int2-g32"]);
  EXPECT_GT(cos["int4-g32"], cos["int4-g128"]);  // smaller groups, finer scales
  EXPECT_GT(cos["kivi4"], cos["kivi2"]);
  EXPECT_GT(cos["fp8-e4m3"], cos["fp8-e5m2"]);  // one more mantissa bit
  EXPECT_GT(cos["fp16"], cos["fp8-e4m3"]);
  // KIVI's per-channel keys and fp16 window beat per-token INT2 at the same quantized-region b_eff (3.0).
  EXPECT_GT(cos["kivi2"], cos["int2-g32"]);
}

/// Every baseline configuration worth a hostile test: defaults, candidates, presets (those that fit).
std::vector<std::pair<std::string, Json>> baseline_configs(int d) {
  std::vector<std::pair<std::string, Json>> out;
  for (const char* codec : {"fp16", "fp8", "int", "kivi"}) {
    const CodecEntry& e = registry().at(codec);
    out.push_back({codec, Json::object()});
    for (const auto& c : e.candidates(d)) out.push_back({codec, c.params});
    for (const auto& [name, p] : e.info.presets) out.push_back({codec, p});
  }
  return out;
}

/// Encodes L with every baseline configuration (codec_test_util.h for_each_config).
template <class F>
void for_all_baselines(const SynthLayer& L, F&& check) {
  for_each_config(L, baseline_configs(L.shape.head_dim), check);
}

TEST(Hostile, AllZeroCache) {
  SynthOptions opt;
  opt.tokens = 300;
  opt.head_dim = 64;
  SynthLayer L = make_layer(opt);
  std::fill(L.kv.k.begin(), L.kv.k.end(), 0.f);
  std::fill(L.kv.v.begin(), L.kv.v.end(), 0.f);
  for_all_baselines(L, [](const std::string&, const Json&, int, int, const std::vector<float>& o) {
    for (float x : o) EXPECT_EQ(x, 0.f);
  });
}

TEST(Hostile, ConstantChannels) {
  // Every token identical (each channel constant along tokens, channels differ): every codec must
  // return (its reconstruction of) that row; per-channel KIVI keys hit scale == 0 in every block.
  SynthOptions opt;
  opt.tokens = 300;
  opt.head_dim = 64;
  SynthLayer L = make_layer(opt);
  for (int g = 0; g < L.kv.kv_heads; ++g)
    for (int64_t t = 1; t < L.kv.tokens; ++t)
      for (int j = 0; j < 64; ++j) {
        L.kv.k_head(g)[t * 64 + j] = L.kv.k_head(g)[j];
        L.kv.v_head(g)[t * 64 + j] = L.kv.v_head(g)[j];
      }
  for_all_baselines(L, [&](const std::string& codec, const Json& p, int h, int, const std::vector<float>& o) {
    const float* v0 = L.kv.v_head(h / L.shape.group());
    // fp16/fp8 and >= 4-bit quantizers reproduce the row closely; 1..3-bit per-token groups are coarse.
    const bool fine = codec == "fp16" || codec == "fp8" || p.at("code_bits").get<int>() >= 4;
    if (fine) {
      EXPECT_GE(cosine(o.data(), v0, 64), 0.99);
    }
  });
}

TEST(Hostile, HugeValuesStayFinite) {
  for (float big : {1e4f, 1e5f}) {  // 1e5 exceeds fp16: stored values saturate at 65504
    SynthOptions opt;
    opt.tokens = 300;
    opt.head_dim = 64;
    opt.queries = 2;
    SynthLayer L = make_layer(opt);
    for (size_t i = 0; i < L.kv.k.size(); ++i) {
      L.kv.k[i] *= big / 20;  // outlier channels reach ~big
      L.kv.v[i] *= big / 4;
    }
    L.kv.k[5] = big;
    L.kv.v[7] = -big;
    for_all_baselines(L, [](const std::string&, const Json&, int, int, const std::vector<float>&) {});
  }
}

TEST(Hostile, SingleTokenReturnsItsValue) {
  SynthOptions opt;
  opt.tokens = 1;
  opt.head_dim = 96;
  const SynthLayer L = make_layer(opt);
  for_all_baselines(L, [&](const std::string& codec, const Json& p, int h, int, const std::vector<float>& o) {
    const float* v0 = L.kv.v_head(h / L.shape.group());
    if (codec == "fp16" || codec == "kivi") {
      // fp16, and KIVI (whose value window holds the only token): exactly fp16(v0).
      for (int j = 0; j < 96; ++j) EXPECT_EQ(o[j], f16_to_f32(f32_to_f16(v0[j]))) << j;
    } else if (codec == "fp8" || p.at("code_bits").get<int>() >= 4) {
      EXPECT_GE(cosine(o.data(), v0, 96), 0.99);
    }
  });
}

TEST(Concurrency, AttendFromManyThreadsMatchesSerial) {
  SynthOptions opt;
  opt.tokens = 1000;
  opt.head_dim = 128;
  opt.group = 4;
  opt.queries = 4;
  const SynthLayer L = make_layer(opt);
  for (const auto& [codec, params] : std::vector<std::pair<std::string, Json>>{
           {"fp16", {}}, {"fp8", {}}, {"int", {}}, {"kivi", {}}}) {
    SCOPED_TRACE(codec);
    const auto enc = encode_cpu(codec, params, L);
    const int H = L.shape.n_heads, d = L.shape.head_dim;
    std::vector<float> serial(static_cast<size_t>(H) * L.nq * d), par(serial.size());
    Scratch s0;
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < L.nq; ++i)
        enc->attend(h / L.shape.group(), L.query(h, i), &serial[(h * L.nq + i) * d], s0);
    std::vector<std::thread> threads;
    for (int tid = 0; tid < 4; ++tid)
      threads.emplace_back([&, tid] {
        Scratch s;
        for (int k = tid; k < H * L.nq; k += 4)
          enc->attend(k / L.nq / L.shape.group(), L.query(k / L.nq, k % L.nq), &par[k * d], s);
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(serial, par);
  }
}

}  // namespace
}  // namespace kvb::test
