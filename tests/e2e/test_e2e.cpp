// kvbench e2e: the batched prefill and the split (compressed prompt ⊕ exact continuation) attention against
// llama2.c's own forward pass, fp16 in the loop against the exact model, an exactly-storing codec through the
// log-sum-exp merge, config and data errors with their exit codes, and a small run on stories260K.
// The models come from ../shared/models (KVB_SHARED_DIR); a test that needs a missing one is skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "kvb/capture/llama2.h"
#include "kvb/core/codec.h"
#include "kvb/core/registry.h"
#include "kvb/e2e/decode.h"
#include "kvb/e2e/e2e_config.h"
#include "kvb/e2e/e2e_runner.h"
#include "kvb/e2e/text.h"
#include "run/test_util.h"

namespace {

namespace fs = std::filesystem;
using kvbtest::TempDir;
using nlohmann::json;

std::string model_path(const std::string& name) {
  return std::string(KVB_SHARED_DIR) + "/models/" + name + "/" + name + ".bin";
}

#define REQUIRE_MODEL(name)                                                        \
  if (!fs::exists(model_path(name))) GTEST_SKIP() << "no " << model_path(name);

/// A window of `n` tokens sampled from the model (seeded), split as C prompt + the rest.
kvb::e2e::Window sampled_window(const kvb::Llama2Model& m, int n, uint64_t seed) {
  kvb::e2e::ModelSpec s;
  s.text.format = "generate";
  s.text.seed = seed;
  s.prompt_len = n / 2;
  s.continuation_len = n - n / 2 - 1;
  s.windows = 1;
  s.calibration_windows = 0;
  return kvb::e2e::load_windows(s, m).at(0);
}

double max_abs(const float* a, const float* b, int n, double* scale) {
  double d = 0;
  for (int i = 0; i < n; ++i) d = std::max(d, std::fabs(double(a[i]) - b[i])), *scale = std::max(*scale, std::fabs(double(b[i])));
  return d;
}

// The batched prefill leaves the cache run.c's token-by-token forward leaves, to float reassociation: the
// matrix products sum in another order (dots_many vs run.c's sequential loop) and attention is the SIMD dense
// path. Relative tolerance 1e-4 of the largest |value|: float32 rounding (~1e-7 per op) accumulated over 5 layers.
TEST(E2ePrefill, BatchedEqualsTokenByToken) {
  REQUIRE_MODEL("stories260K");
  const auto m = kvb::Llama2Model::load(model_path("stories260K"));
  const auto w = sampled_window(m, 41, 5);
  const int C = 20;
  const kvb::e2e::Prefill P = kvb::e2e::run_prefill(m, w, C);
  kvb::Llama2Runner ref(m);
  for (int p = 0; p < C; ++p) ref.forward(w.tokens[p], p);
  const auto& c = m.config();
  for (int l = 0; l < c.n_layers; ++l)
    for (int t = 0; t < C; ++t) {
      SCOPED_TRACE(testing::Message() << "layer " << l << " position " << t);
      double sk = 0, sv = 0;
      const double dk = max_abs(P.runner->key(l, t), ref.key(l, t), c.kv_dim(), &sk);
      const double dv = max_abs(P.runner->value(l, t), ref.value(l, t), c.kv_dim(), &sv);
      EXPECT_LE(dk, 1e-4 * std::max(sk, 1.0));
      EXPECT_LE(dv, 1e-4 * std::max(sv, 1.0));
      // and what codecs see is the same cache, per KV head
      for (int g = 0; g < c.n_kv_heads; ++g)
        EXPECT_EQ(P.kv[l].k_head(g)[t * c.head_size()], P.runner->key(l, t)[g * c.head_size()]);
    }
}

// The observation queries handed to the codecs with the prompt (LayerKV::obs, model.obs_window W) are the
// prefill's own queries of positions C-W..C-1: the last one bit for bit the runner's query at C-1 after the
// prefill, every one within 1e-4 (relative to the largest |value|, float reassociation as above) of the query
// run.c's token-by-token forward computes there. W = 0 gives none, W > C is clamped to C, and the prompt's K/V
// are bit-identical whatever W is.
TEST(E2ePrefill, ObservationQueriesAreThePrefillsQueries) {
  REQUIRE_MODEL("stories260K");
  const auto m = kvb::Llama2Model::load(model_path("stories260K"));
  const auto& c = m.config();
  const auto w = sampled_window(m, 41, 5);
  const int C = 20, W = 6, d = c.head_size();
  const kvb::e2e::Prefill none = kvb::e2e::run_prefill(m, w, C, 0);
  const kvb::e2e::Prefill P = kvb::e2e::run_prefill(m, w, C, W);
  const kvb::e2e::Prefill all = kvb::e2e::run_prefill(m, w, C, 1000);
  kvb::Llama2Runner ref(m);
  std::vector<std::vector<float>> q_at(static_cast<size_t>(C));  // [position][layer * dim]: forward()'s query of each layer
  for (int p = 0; p < C; ++p) {
    ref.forward(w.tokens[p], p);
    for (int l = 0; l < c.n_layers; ++l) q_at[p].insert(q_at[p].end(), ref.query(l), ref.query(l) + c.dim);
  }
  for (int l = 0; l < c.n_layers; ++l) {
    SCOPED_TRACE(testing::Message() << "layer " << l);
    EXPECT_TRUE(none.kv[l].obs.empty());
    EXPECT_EQ(none.kv[l].k, P.kv[l].k);
    EXPECT_EQ(none.kv[l].v, P.kv[l].v);
    const kvb::ObsQueries& ob = P.kv[l].obs;
    ASSERT_EQ(ob.n, W);
    ASSERT_EQ(ob.heads, c.n_heads);
    ASSERT_EQ(ob.head_dim, d);
    ASSERT_EQ(ob.q.size(), size_t(c.n_heads) * W * d);
    ASSERT_EQ(ob.positions.size(), size_t(W));
    for (int i = 0; i < W; ++i) EXPECT_EQ(ob.positions[i], C - W + i);
    for (int h = 0; h < c.n_heads; ++h) {
      EXPECT_EQ(0, std::memcmp(ob.query(h, W - 1), P.runner->query(l) + h * d, d * sizeof(float))) << "head " << h;
      for (int i = 0; i < W; ++i) {
        double sc = 0;
        const double dq = max_abs(ob.query(h, i), q_at[C - W + i].data() + l * c.dim + h * d, d, &sc);
        EXPECT_LE(dq, 1e-4 * std::max(sc, 1.0)) << "head " << h << " position " << C - W + i;
        EXPECT_EQ(0, std::memcmp(ob.query(h, i), all.kv[l].obs.query(h, C - W + i), d * sizeof(float)));
      }
    }
    ASSERT_EQ(all.kv[l].obs.n, C);
    EXPECT_EQ(all.kv[l].obs.positions.front(), 0);
  }
}

// The exact e2e decode (dense prompt ⊕ dense continuation, merged by log-sum-exp) gives run.c's next-token
// distribution: logits within 1e-4 absolute (float reassociation; logits are O(10)).
TEST(E2eDecode, ExactSplitEqualsRunC) {
  REQUIRE_MODEL("stories260K");
  const auto m = kvb::Llama2Model::load(model_path("stories260K"));
  for (int C : {1, 7, 30}) {
    SCOPED_TRACE(testing::Message() << "C = " << C);
    auto w = sampled_window(m, C + 12, 11);
    const kvb::e2e::Prefill P = kvb::e2e::run_prefill(m, w, C);
    const kvb::e2e::DecodeResult ex = kvb::e2e::decode_window(m, P, nullptr, nullptr, nullptr);
    kvb::Llama2Runner ref(m);
    const int V = m.config().vocab_size, N = int(w.tokens.size()) - C - 1;
    ASSERT_EQ(int(ex.steps.size()), N);
    for (int p = 0; p < C + N; ++p) {
      const float* lg = ref.forward(w.tokens[p], p);
      if (p < C) continue;
      double s = 0;
      EXPECT_LE(max_abs(ex.logits.data() + size_t(p - C) * V, lg, V, &s), 1e-4) << "position " << p;
    }
  }
}

/// A codec layer that stores the prompt exactly (float32) and attends densely in double: attend_lse's
/// default (scores() then logsumexp) must make the compressed run equal the exact one.
class ExactLayer final : public kvb::EncodedLayer {
 public:
  ExactLayer(const kvb::LayerKV& kv, float scale) : kv_(kv), scale_(scale) {}
  int64_t tokens() const override { return kv_.tokens; }
  kvb::Storage storage() const override { return {}; }
  bool scores(int g, const float* q, float* s, kvb::Scratch&) const override {
    for (int64_t t = 0; t < kv_.tokens; ++t) {
      double d = 0;
      for (int j = 0; j < kv_.head_dim; ++j) d += double(q[j]) * kv_.k_head(g)[t * kv_.head_dim + j];
      s[t] = float(scale_ * d);
    }
    return true;
  }
  void attend(int g, const float* q, float* o, kvb::Scratch& sc) const override {
    std::vector<float> s(kv_.tokens);
    scores(g, q, s.data(), sc);
    const double lse = kvb::logsumexp_logits(s.data(), kv_.tokens);
    std::vector<double> acc(kv_.head_dim, 0.0);
    for (int64_t t = 0; t < kv_.tokens; ++t) {
      const double p = std::exp(s[t] - lse);
      for (int j = 0; j < kv_.head_dim; ++j) acc[j] += p * kv_.v_head(g)[t * kv_.head_dim + j];
    }
    for (int j = 0; j < kv_.head_dim; ++j) o[j] = float(acc[j]);
  }

 private:
  const kvb::LayerKV& kv_;
  float scale_;
};

// The log-sum-exp merge of an exactly-storing "codec" with the exact continuation is the exact model:
// next-token KL below 1e-9 nats, identical argmax and the same NLL at every step, for prompts of 1, 7 and 25.
TEST(E2eDecode, ExactCodecThroughMergeIsExact) {
  REQUIRE_MODEL("stories260K");
  const auto m = kvb::Llama2Model::load(model_path("stories260K"));
  for (int C : {1, 7, 25}) {
    SCOPED_TRACE(testing::Message() << "C = " << C);
    auto w = sampled_window(m, C + 10, 3);
    const kvb::e2e::Prefill P = kvb::e2e::run_prefill(m, w, C);
    const auto ex = kvb::e2e::decode_window(m, P, nullptr, nullptr, nullptr);
    std::vector<std::unique_ptr<kvb::EncodedLayer>> enc;
    for (const auto& kv : P.kv) enc.push_back(std::make_unique<ExactLayer>(kv, kvb::e2e::model_attn(m.config()).softmax_scale));
    const auto r = kvb::e2e::decode_window(m, P, &enc, &ex, nullptr);
    for (size_t i = 0; i < r.steps.size(); ++i) {
      EXPECT_LT(r.steps[i].kl, 1e-9) << "step " << i;
      EXPECT_EQ(r.steps[i].top1, 1.0) << "step " << i;
      // float32 logits of O(10) through 5 layers: ~1e-5 of rounding between the two summation orders
      EXPECT_NEAR(r.steps[i].nll, ex.steps[i].nll, 5e-5) << "step " << i;
    }
  }
}

json stories_config(const std::string& codecs_json) {
  json c = json::parse(R"({"name": "t", "model": {"text": {"generate": {"temperature": 1.0, "seed": 2}},
      "prompt_len": 96, "continuation_len": 24, "windows": 3, "calibration_windows": 1},
      "metrics": {"topk": 8, "bootstrap": 200}, "seed": 5, "threads": 2})");
  c["model"]["checkpoint"] = model_path("stories260K");
  c["codecs"] = json::parse(codecs_json);
  return c;
}

/// Writes `cfg` and runs `kvbench e2e` on it into dir/out.
kvbtest::CmdResult run_e2e(const json& cfg, const TempDir& dir, const std::string& extra = "") {
  kvbtest::spit(dir / "c.json", cfg.dump());
  return kvbtest::kvbench("e2e '" + (dir / "c.json") + "' -o '" + (dir / "out") + "' " + extra, dir);
}

// A small run on stories260K, as CI runs it: every cell ok, the tables printed, and the e2e numbers behave:
// fp16 (head_dim 8: fp16 rounding of K and V is ~5e-4 relative) stays within 1e-4 nats of the exact model,
// and INT gets worse as its code width falls (1-bit codes lose far more than 4-bit ones).
TEST(E2eRun, Stories260KSmallRun) {
  REQUIRE_MODEL("stories260K");
  TempDir dir("e2e-run");
  const auto r = run_e2e(stories_config(R"([{"codec": "fp16"}, {"codec": "int", "bits": [5, 8, 12]},
      {"codec": "kivi", "bits": [5]}, {"codec": "balancekv", "bits": [4]}, {"codec": "lookat", "bits": [8.2]}])"), dir);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("which layer metric predicts"), std::string::npos) << r.out;
  const json doc = json::parse(kvbtest::slurp(dir / "out/results.json"));
  ASSERT_TRUE(doc.contains("e2e"));
  EXPECT_GT(doc["e2e"]["exact"]["perplexity"].get<double>(), 1.0);
  std::map<std::string, double> kl;
  for (const auto& c : doc["cells"]) {
    SCOPED_TRACE(c["label"].get<std::string>());
    ASSERT_EQ(c["status"], "ok") << c.value("reason", "");
    kl[c["label"]] = c["e2e"]["kl"]["mean"];
    EXPECT_TRUE(c["fidelity"]["cosine"].is_object());
    EXPECT_EQ(c["per_layer"].size(), 5u);
  }
  EXPECT_LT(kl["fp16"], 1e-4);
  EXPECT_GT(kl["int1-g8"], kl["int4-g8"]);
  EXPECT_GT(kl["int4-g8"], kl["int8-g8"]);
  EXPECT_FALSE(doc["e2e"]["proxy_correlation"].empty());
  EXPECT_NE(kvbtest::slurp(dir / "out/results.csv").find("int4-g8"), std::string::npos);
}

// --resume of e2e records (docs/results.md §5): intact records are reused; one whose e2e block lost a field the
// tables read (e2e.kl.ci95) is recomputed and named, never a raw "key not found"; the fidelity is unchanged.
TEST(E2eRun, ResumeChecksTheE2eBlock) {
  REQUIRE_MODEL("stories260K");
  TempDir dir("e2e-resume");
  const json cfg = stories_config(R"([{"codec": "fp16"}, {"codec": "int", "bits": [8]}, {"codec": "kivi", "bits": [5]}])");
  auto r = run_e2e(cfg, dir, "-q");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const json first = json::parse(kvbtest::slurp(dir / "out/results.json"));
  r = run_e2e(cfg, dir, "-q --resume");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("resumed 3 cells"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("recomputed"), std::string::npos) << r.err;
  json cell = json::parse(kvbtest::slurp(dir / "out/cells/1.json"));
  cell["cell"]["e2e"]["kl"].erase("ci95");
  kvbtest::spit(dir / "out/cells/1.json", cell.dump());
  r = run_e2e(cfg, dir, "-q --resume");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("cells/1.json: recomputed: cell.e2e.kl.ci95: missing"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("resumed 2 cells"), std::string::npos) << r.err;
  const json again = json::parse(kvbtest::slurp(dir / "out/results.json"));
  ASSERT_EQ(again["cells"].size(), first["cells"].size());
  for (size_t i = 0; i < first["cells"].size(); ++i) {
    EXPECT_EQ(again["cells"][i]["fidelity"], first["cells"][i]["fidelity"]) << i;
    EXPECT_EQ(again["cells"][i]["e2e"]["kl"], first["cells"][i]["e2e"]["kl"]) << i;
  }
}

// pylm (head_dim 128): fp16 in the loop is the exact model to float rounding: next-token KL below 1e-6 nats and
// the same perplexity to 1e-5 relative.
TEST(E2eRun, PylmFp16IsExact) {
  REQUIRE_MODEL("pylm");
  TempDir dir("e2e-pylm");
  json c = json::parse(R"({"name": "p", "model": {"prompt_len": 192, "continuation_len": 32, "windows": 2,
      "calibration_windows": 0}, "codecs": [{"codec": "fp16"}], "metrics": {"bootstrap": 100}, "threads": 1})");
  c["model"]["checkpoint"] = model_path("pylm");
  c["model"]["text"] = std::string(KVB_SHARED_DIR) + "/models/pylm/heldout.ids";
  const auto r = run_e2e(c, dir, "-q");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const json doc = json::parse(kvbtest::slurp(dir / "out/results.json"));
  const json& e = doc["cells"][0]["e2e"];
  EXPECT_LT(e["kl"]["mean"].get<double>(), 1e-6);
  EXPECT_LT(std::fabs(e["perplexity"]["rel_change"].get<double>()), 1e-5);
  EXPECT_EQ(e["top1_agreement"]["mean"].get<double>(), 1.0);
}

// Observation-window eviction in the loop: with model.obs_window 0 a codec that needs the prompt's observation
// queries (snapkv, h2o) is a skipped cell naming the key, while one that does not (streamingllm) runs; with the
// default (32) they all run. Skipped on a build without the eviction codecs.
TEST(E2eRun, ObservationQueriesReachTheCodecs) {
  REQUIRE_MODEL("stories260K");
  if (!kvb::registry().find("snapkv") || !kvb::registry().find("streamingllm"))
    GTEST_SKIP() << "no snapkv / streamingllm registered in this build (codecs/evict)";
  TempDir dir("e2e-obs");
  for (int W : {0, 32}) {
    SCOPED_TRACE(testing::Message() << "obs_window " << W);
    json cfg = stories_config(R"([{"codec": "snapkv", "bits": [8]}, {"codec": "streamingllm", "bits": [8]}])");
    if (W == 0) cfg["model"]["obs_window"] = 0;  // else the default
    const auto r = run_e2e(cfg, dir, "-q");
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    const json doc = json::parse(kvbtest::slurp(dir / "out/results.json"));
    EXPECT_EQ(doc["config"]["model"]["obs_window"], W);
    ASSERT_EQ(doc["cells"].size(), 2u);
    for (const auto& c : doc["cells"]) {
      const std::string label = c["label"];
      SCOPED_TRACE(label);
      if (W == 0 && label.rfind("snapkv", 0) == 0) {
        EXPECT_EQ(c["status"], "skipped");
        EXPECT_NE(c.value("reason", "").find("model.obs_window is 0"), std::string::npos) << c.dump();
      } else {
        ASSERT_EQ(c["status"], "ok") << c.value("reason", "");
        EXPECT_TRUE(std::isfinite(c["e2e"]["kl"]["mean"].get<double>()));
      }
    }
  }
}

// Bad model and text inputs: data errors (exit 3) name the file; config errors (exit 2) name the key.
TEST(E2eErrors, ExitCodesAndMessages) {
  REQUIRE_MODEL("stories260K");
  TempDir dir("e2e-err");
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    int code;
    std::string needle;
  };
  kvbtest::spit(dir / "short.ids", "1 2 3");
  kvbtest::spit(dir / "bad.ids", "1 2 9999");
  kvbtest::spit(dir / "garbage.bin", "not a checkpoint");
  const std::vector<Case> cases = {
      {"missing checkpoint", [&](json& c) { c["model"]["checkpoint"] = dir / "nope.bin"; }, 3, "nope.bin"},
      {"garbage checkpoint", [&](json& c) { c["model"]["checkpoint"] = dir / "garbage.bin"; }, 3, "garbage.bin"},
      {"text too short", [&](json& c) { c["model"]["text"] = dir / "short.ids"; }, 3, "short.ids"},
      {"token out of vocabulary", [&](json& c) { c["model"]["text"] = json{{"path", dir / "bad.ids"}}; }, 3, "9999"},
      {"missing text file", [&](json& c) { c["model"]["text"] = dir / "none.ids"; }, 3, "none.ids"},
      {"context too long", [](json& c) { c["model"]["prompt_len"] = 500; }, 2, "seq_len"},
      {"unknown model key", [](json& c) { c["model"]["prompt"] = 5; }, 2, "model: unknown key \"prompt\""},
      {"unknown codec", [](json& c) { c["codecs"] = json::parse(R"([{"codec": "nope"}])"); }, 2, "nope"},
      {"topk above C", [](json& c) { c["metrics"]["topk"] = 1000; }, 2, "metrics.topk"},
      {"negative obs_window", [](json& c) { c["model"]["obs_window"] = -1; }, 2, "model.obs_window"},
      {"obs_window not an integer", [](json& c) { c["model"]["obs_window"] = "all"; }, 2, "model.obs_window"},
      {"bad text format", [&](json& c) { c["model"]["text"] = json{{"path", dir / "bad.ids"}, {"format", "utf8"}}; }, 2, "model.text.format"},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.what);
    json c = stories_config(R"([{"codec": "fp16"}])");
    k.edit(c);
    const auto r = run_e2e(c, dir, "-q");
    EXPECT_EQ(r.code, k.code) << r.err;
    EXPECT_NE(r.err.find(k.needle), std::string::npos) << r.err;
    EXPECT_LT(r.err.size(), 2000u) << r.err;
  }
  // A directory as the config file.
  const auto r = kvbtest::kvbench("e2e '" + dir.path.string() + "'", dir);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("Is a directory"), std::string::npos) << r.err;
}

}  // namespace
