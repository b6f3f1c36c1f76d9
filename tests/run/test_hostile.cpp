// Hostile inputs through `kvbench run` (docs/errors.md §4): degenerate shapes run or skip cleanly with no
// NaN in the results; malformed dumps and configs give their exit codes. Never a crash.
#include <gtest/gtest.h>

#include <cmath>

#include "kvb/core/rng.h"
#include "kvb/io/kvdump.h"
#include "test_util.h"

namespace {

using kvbtest::TempDir;
using nlohmann::json;

/// Write a float32 dump with random K/V/Q of the given shape (one sequence, one layer).
void write_dump(const std::string& path, int heads, int kv_heads, int head_dim, int64_t C, int64_t Q, uint64_t seed,
                float scale = 1.f) {
  kvb::DumpAttrs at;
  at.model = "hostile";
  at.shape = {1, heads, kv_heads, head_dim};
  at.softmax_scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at.rope_style = "none";
  at.rope_applied = 0;
  at.orig_dtype = "float32";
  kvb::SequenceData s;
  s.id = "s0";
  s.n_tokens = C + Q;
  s.context_len = C;
  for (int64_t i = 0; i < Q; ++i) s.query_positions.push_back(C + i);
  s.layers.resize(1);
  kvb::Rng rng(seed);
  auto fill = [&](std::vector<float>& v, size_t n) {
    v.resize(n);
    for (auto& x : v) x = static_cast<float>(rng.normal()) * scale;
  };
  fill(s.layers[0].keys, static_cast<size_t>(kv_heads) * (C + Q) * head_dim);
  fill(s.layers[0].values, static_cast<size_t>(kv_heads) * (C + Q) * head_dim);
  fill(s.layers[0].queries, static_cast<size_t>(heads) * Q * head_dim);
  kvb::WriterOptions wo;
  wo.dtype = kvb::DType::kFloat32;
  kvb::KvDumpWriter w(path, at, wo);
  w.write_sequence(s);
  w.close();
}

json all_codecs_cfg(const std::string& dump, int64_t topk) {
  return json{{"name", "hostile"},
              {"datasets", {{{"path", dump}}}},
              {"codecs",
               {{{"codec", "fp16"}},
                {{"codec", "fp8"}, {"params", {{"format", "e5m2"}}}},
                {{"codec", "fp8"}},
                {{"codec", "int"}, {"bits", {3, 5, 9}}},
                {{"codec", "int"}, {"params", {{"code_bits", 4}, {"group_size", 32}}}},
                {{"codec", "kivi"}, {"bits", {3, 5}}},
                {{"codec", "kivi"}, {"preset", "paper-2"}}}},
              {"metrics", {{"topk", topk}}},
              {"repeats", 1},
              {"min_time_s", 0.0}};
}

/// Every number in the results must be finite (nlohmann writes NaN/Inf as null, so look for nulls in
/// numeric fields of ok cells) and every cell ok or skipped with a reason.
void expect_clean_results(const json& doc) {
  for (const auto& c : doc.at("cells")) {
    SCOPED_TRACE(c.at("label").get<std::string>());
    const std::string st = c.at("status");
    ASSERT_TRUE(st == "ok" || st == "skipped") << c.dump();
    if (st == "skipped") {
      EXPECT_FALSE(c.at("reason").get<std::string>().empty());
      continue;
    }
    for (const auto& [name, agg] : c.at("fidelity").items()) {
      if (agg.is_null()) continue;
      for (const auto& [k, v] : agg.items()) EXPECT_TRUE(v.is_number()) << name << "." << k << " = " << v.dump();
    }
    for (const char* k : {"bytes_per_token", "bits_per_element", "bits_per_element_with_fixed", "compression_ratio"})
      EXPECT_TRUE(c["storage"][k].is_number()) << k;
  }
}

struct Shape {
  int heads, kv_heads, head_dim;
  int64_t C, Q;
  float scale;
};

TEST(Hostile, DegenerateShapesRunCleanly) {
  const Shape shapes[] = {
      {1, 1, 1, 5, 1, 1.f},        // head_dim 1
      {2, 1, 1024, 40, 2, 1.f},    // head_dim 1024 (the largest the reader accepts)
      {3, 3, 96, 1, 1, 1.f},       // C = 1
      {4, 1, 64, 7, 3, 1.f},       // C = 7, GQA 4:1
      {2, 2, 64, 130, 2, 300.f},   // huge values: logits of order 1e4 * 8
      {2, 2, 64, 130, 2, 1e-20f},  // tiny values (fp16/fp8 underflow)
  };
  for (const auto& s : shapes) {
    const std::string cfgs = "heads " + std::to_string(s.heads) + " kv " + std::to_string(s.kv_heads) + " d " +
                             std::to_string(s.head_dim) + " C " + std::to_string(s.C) + " Q " + std::to_string(s.Q) +
                             " scale " + std::to_string(s.scale);
    SCOPED_TRACE(cfgs);
    TempDir tmp("hostile");
    write_dump(tmp / "d.h5", s.heads, s.kv_heads, s.head_dim, s.C, s.Q, 17);
    kvbtest::spit(tmp.path / "cfg.json", all_codecs_cfg(tmp / "d.h5", 1).dump());
    const auto r = kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' -q --output '" + (tmp / "out") + "'", tmp);
    ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
    expect_clean_results(json::parse(kvbtest::slurp(tmp.path / "out" / "results.json")));
  }
}

TEST(Hostile, WrongJsonTypesAtEveryLevelExit2) {
  TempDir tmp("hostile-json");
  for (const char* text : {"[]", "3", "\"x\"", "null", "{\"datasets\": 1, \"codecs\": []}",
                           "{\"datasets\": [3], \"codecs\": [{\"codec\": \"int\"}]}",
                           "{\"datasets\": [{\"path\": 1}], \"codecs\": [{\"codec\": \"int\"}]}",
                           "{\"datasets\": [{\"path\": \"x\"}], \"codecs\": [\"int\"]}",
                           "{\"datasets\": [{\"path\": \"x\"}], \"codecs\": [{\"codec\": 5}]}",
                           "{\"datasets\": [{\"path\": \"x\", \"max_queries\": -1}], \"codecs\": [{\"codec\": \"int\"}]}",
                           "{\"datasets\": [{\"path\": \"x\"}], \"codecs\": [{\"codec\": \"int\", \"params\": []}]}"}) {
    SCOPED_TRACE(text);
    kvbtest::spit(tmp.path / "c.json", text);
    const auto r = kvbtest::kvbench("run '" + (tmp / "c.json") + "'", tmp);
    EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
    EXPECT_FALSE(r.err.empty());
  }
}

}  // namespace
