// `kvbench capture` on the real stories260K llama2.c checkpoint (../shared/models/stories260K). Every test
// skips when the model file is absent; the model is never copied into the repository.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvb/attention/exact.h"
#include "kvb/capture/capture.h"
#include "kvb/capture/llama2.h"
#include "kvb/core/error.h"
#include "kvb/io/kvdump.h"
#include "run/test_util.h"

namespace {

using kvbtest::TempDir;
namespace fs = std::filesystem;

const std::string kModel = KVB_SHARED_DIR "/models/stories260K/stories260K.bin";

#define REQUIRE_MODEL()                                                                               \
  do {                                                                                                \
    if (!fs::exists(kModel)) GTEST_SKIP() << "stories260K checkpoint not found at " << kModel         \
                                          << " (see ../shared/models/stories260K/README.md)";         \
  } while (0)

const kvb::Llama2Model& model() {
  static const kvb::Llama2Model m = kvb::Llama2Model::load(kModel);
  return m;
}

double rel_l2(const double* a, const float* b, int n) {
  double num = 0, den = 0;
  for (int i = 0; i < n; ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += a[i] * a[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(kvb::sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(kvb::sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(kvb::sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Llama2, HeaderMatchesReadme) {
  REQUIRE_MODEL();
  const auto& c = model().config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(kvb::sha256_file(kModel), "9414d5a285453a7eab631713d171753232c978f6f97654211469aff8be93c8d6");
}

TEST(Llama2, GreedyDecodingReproducesReadmeIds) {
  REQUIRE_MODEL();
  const std::vector<int32_t> expected = {461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435,
                                         299, 362, 409, 283, 264, 283, 452, 288, 13,  431};
  const auto ids = kvb::generate_tokens(model(), 1 + static_cast<int64_t>(expected.size()), 0.0, 0);
  ASSERT_EQ(ids.size(), expected.size() + 1);
  EXPECT_EQ(ids[0], kvb::kLlama2Bos);
  EXPECT_EQ(std::vector<int32_t>(ids.begin() + 1, ids.end()), expected);
}

TEST(Llama2, SamplingIsSeededAndDiffersFromGreedy) {
  REQUIRE_MODEL();
  const auto a = kvb::generate_tokens(model(), 40, 1.0, 7);
  const auto b = kvb::generate_tokens(model(), 40, 1.0, 7);
  const auto c = kvb::generate_tokens(model(), 40, 1.0, 8);
  const auto g = kvb::generate_tokens(model(), 40, 0.0, 7);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, g);
}

// The model's own attention output (run.c's forward, over tokens 0..p) equals exact attention of the recorded
// post-RoPE query over the recorded keys/values of KV head h / kv_mul: the recorded K/V/Q, scale and GQA
// mapping are what the model computes with.
TEST(Capture, GqaMappingMatchesModelForward) {
  REQUIRE_MODEL();
  const auto& c = model().config();
  ASSERT_EQ(c.kv_mul(), 2);
  const auto tokens = kvb::generate_tokens(model(), 48, 0.0, 0);
  kvb::ModelAttnOut attn;
  const kvb::SequenceData s = kvb::record_sequence(model(), tokens, 8, "s0", &attn);
  const int64_t T = s.n_tokens, C = s.context_len, Q = T - C;
  const int D = c.head_size(), H = c.n_heads;
  ASSERT_EQ(C, 40);
  std::vector<double> o(static_cast<size_t>(D));
  int wrong_mapping_mismatches = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& ly = s.layers[size_t(l)];
    for (int h = 0; h < H; ++h) {
      for (int64_t qi : {int64_t{0}, Q - 1}) {
        const int64_t p = C + qi;  // the model attends to tokens 0..p
        const float* q = &ly.queries[size_t((h * Q + qi) * D)];
        const float* model_o = &attn[size_t(l)][size_t((h * Q + qi) * D)];
        const int g = h / c.kv_mul();
        kvb::exact_attention_f64(&ly.keys[size_t(g * T * D)], &ly.values[size_t(g * T * D)], p + 1, D, q,
                                 1.0 / std::sqrt(double(D)), 0.0, nullptr, nullptr, o.data());
        EXPECT_LT(rel_l2(o.data(), model_o, D), 1e-5) << "layer " << l << " head " << h << " position " << p;
        // The other plausible mapping (h % n_kv_heads) must not also match, or this test proves nothing.
        const int g_wrong = h % c.n_kv_heads;
        if (g_wrong != g) {
          kvb::exact_attention_f64(&ly.keys[size_t(g_wrong * T * D)], &ly.values[size_t(g_wrong * T * D)], p + 1, D,
                                   q, 1.0 / std::sqrt(double(D)), 0.0, nullptr, nullptr, o.data());
          if (rel_l2(o.data(), model_o, D) > 1e-2) ++wrong_mapping_mismatches;
        }
      }
    }
  }
  EXPECT_GT(wrong_mapping_mismatches, 0);
}

// --obs-window W records the queries of the prompt positions C-W..C-1 as the forward computed them: the
// observation query at position p of a capture with context C is bit for bit the decode query a capture with
// context p records at p (same tokens, run.c's order). Nothing else changes, and W > C is clamped to C.
TEST(Capture, ObservationQueriesAreThePromptsOwnQueries) {
  REQUIRE_MODEL();
  const auto& c = model().config();
  const int H = c.n_heads, D = c.head_size();
  const auto tokens = kvb::generate_tokens(model(), 48, 1.0, 3);
  const int64_t T = 48, Q = 8, C = T - Q, W = 6;
  const kvb::SequenceData none = kvb::record_sequence(model(), tokens, Q, "s0", nullptr, 0);
  const kvb::SequenceData obs = kvb::record_sequence(model(), tokens, Q, "s0", nullptr, W);
  EXPECT_TRUE(none.obs_positions.empty());
  ASSERT_EQ(obs.obs_positions.size(), size_t(W));
  for (int64_t i = 0; i < W; ++i) EXPECT_EQ(obs.obs_positions[size_t(i)], C - W + i);
  for (int l = 0; l < c.n_layers; ++l) {
    const auto &a = none.layers[size_t(l)], &b = obs.layers[size_t(l)];
    EXPECT_TRUE(a.obs_queries.empty());
    ASSERT_EQ(b.obs_queries.size(), size_t(H * W * D));
    EXPECT_EQ(0, std::memcmp(a.keys.data(), b.keys.data(), a.keys.size() * sizeof(float))) << "layer " << l;
    EXPECT_EQ(0, std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float))) << "layer " << l;
    EXPECT_EQ(0, std::memcmp(a.queries.data(), b.queries.data(), a.queries.size() * sizeof(float))) << "layer " << l;
    EXPECT_EQ(0, std::memcmp(a.ref_out.data(), b.ref_out.data(), a.ref_out.size() * sizeof(float))) << "layer " << l;
  }
  for (int64_t i = 0; i < W; ++i) {
    const int64_t p = C - W + i;  // a capture with context p records its first decode query at p
    const kvb::SequenceData at = kvb::record_sequence(model(), tokens, T - p, "s0");
    ASSERT_EQ(at.query_positions.front(), p);
    for (int l = 0; l < c.n_layers; ++l)
      for (int h = 0; h < H; ++h)
        EXPECT_EQ(0, std::memcmp(&obs.layers[size_t(l)].obs_queries[size_t((h * W + i) * D)],
                                 &at.layers[size_t(l)].queries[size_t((h * (T - p)) * D)], size_t(D) * sizeof(float)))
            << "position " << p << " layer " << l << " head " << h;
  }
  const kvb::SequenceData all = kvb::record_sequence(model(), tokens, Q, "s0", nullptr, 1000);
  ASSERT_EQ(all.obs_positions.size(), size_t(C));
  EXPECT_EQ(all.obs_positions.front(), 0);
  EXPECT_EQ(0, std::memcmp(&all.layers[2].obs_queries[size_t((3 * C + C - W) * D)],
                           &obs.layers[2].obs_queries[size_t((3 * W) * D)], size_t(W * D) * sizeof(float)));
  EXPECT_THROW(kvb::record_sequence(model(), tokens, Q, "s0", nullptr, -1), kvb::UsageError);
}

// capture writes the observation queries record_sequence makes (float32: exactly), positions C-W..C-1, and the
// reader gives them back; --obs-window 0 writes none, a negative one is a usage error (exit 2).
TEST(Capture, ObservationQueriesWrittenAndReadBack) {
  REQUIRE_MODEL();
  TempDir tmp("capture-obs");
  kvb::CaptureOptions o;
  o.model_path = kModel;
  o.out_path = tmp / "obs.h5";
  o.tokens = 40;
  o.queries = 4;
  o.sequences = 2;
  o.obs_window = 10;
  ASSERT_EQ(kvb::capture_dump(o), 2);
  const kvb::KvDumpReader r(o.out_path);
  for (size_t s = 0; s < 2; ++s) {
    const auto& si = r.sequences()[s];
    ASSERT_TRUE(si.has_obs());
    ASSERT_EQ(si.obs_positions.size(), 10u);
    EXPECT_EQ(si.obs_positions.front(), 26);
    EXPECT_EQ(si.obs_positions.back(), 35);
    const kvb::SequenceData mem = kvb::record_sequence(model(), r.read_tokens(s), 4, "s", nullptr, 10);
    for (int l = 0; l < r.attrs().shape.n_layers; ++l) {
      const kvb::ObsQueries ob = r.read_obs(s, l, 0);
      ASSERT_EQ(ob.n, 10);
      EXPECT_EQ(ob.positions, mem.obs_positions);
      EXPECT_EQ(ob.q, mem.layers[size_t(l)].obs_queries) << "seq " << s << " layer " << l;
    }
  }
  auto run = kvbtest::kvbench("capture --model '" + kModel + "' --out '" + (tmp / "none.h5") +
                                  "' --tokens 24 --queries 4 --obs-window 0",
                              tmp);
  ASSERT_EQ(run.code, 0) << kvbtest::describe(run);
  EXPECT_FALSE(kvb::KvDumpReader((tmp / "none.h5")).sequences()[0].has_obs());
  run = kvbtest::kvbench(
      "capture --model '" + kModel + "' --out '" + (tmp / "neg.h5") + "' --tokens 24 --queries 4 --obs-window -1", tmp);
  EXPECT_EQ(run.code, 2) << kvbtest::describe(run);
  EXPECT_NE(run.err.find("--obs-window"), std::string::npos) << run.err;
}

TEST(Capture, DumpReadsBackAndRefOutIsExactOverContext) {
  REQUIRE_MODEL();
  TempDir tmp("capture-rt");
  kvb::CaptureOptions o;
  o.model_path = kModel;
  o.out_path = tmp / "s.h5";
  o.tokens = 64;
  o.queries = 8;
  o.sequences = 2;
  ASSERT_EQ(kvb::capture_dump(o), 2);

  kvb::KvDumpReader r(o.out_path);
  const auto& a = r.attrs();
  EXPECT_EQ(a.model, "stories260K");
  EXPECT_EQ(a.model_revision, "sha256:9414d5a285453a7eab631713d171753232c978f6f97654211469aff8be93c8d6");
  EXPECT_EQ(a.source.rfind("kvbench capture ", 0), 0u) << a.source;
  EXPECT_EQ(a.shape.n_layers, 5);
  EXPECT_EQ(a.shape.n_heads, 8);
  EXPECT_EQ(a.shape.n_kv_heads, 4);
  EXPECT_EQ(a.shape.head_dim, 8);
  EXPECT_EQ(a.rope_applied, 1);
  EXPECT_EQ(a.rope_style, "interleaved");
  EXPECT_DOUBLE_EQ(a.rope_theta, 10000.0);
  EXPECT_EQ(a.qk_norm, 0);
  EXPECT_NEAR(a.softmax_scale, 1.0 / std::sqrt(8.0), 1e-12);
  EXPECT_EQ(a.attn_softcap, 0.0);
  EXPECT_EQ(a.orig_dtype, "float32");
  ASSERT_TRUE(a.seed.has_value());
  EXPECT_EQ(*a.seed, 1234);
  EXPECT_EQ(r.dtype(), kvb::DType::kFloat32);
  ASSERT_EQ(r.sequences().size(), 2u);

  // Sequence 0 is plain greedy decoding from BOS; sequence 1 differs.
  const auto t0 = r.read_tokens(0), t1 = r.read_tokens(1);
  ASSERT_EQ(t0.size(), 64u);
  EXPECT_EQ(t0, kvb::generate_tokens(model(), 64, 0.0, 0));
  EXPECT_NE(t0, t1);

  for (size_t s = 0; s < 2; ++s) {
    const auto& si = r.sequences()[s];
    EXPECT_EQ(si.n_tokens, 64);
    EXPECT_EQ(si.context_len, 56);
    EXPECT_TRUE(si.has_ref_out);
    EXPECT_TRUE(si.has_tokens);
    ASSERT_EQ(si.query_positions.size(), 8u);
    EXPECT_EQ(si.query_positions.front(), 56);
    EXPECT_EQ(si.query_positions.back(), 63);
    for (int l = 0; l < a.shape.n_layers; ++l) {
      const kvb::LayerKV kv = r.read_kv(s, l, 0, si.context_len);
      const kvb::LayerQueries lq = r.read_queries(s, l, 0);
      ASSERT_EQ(lq.n, 8);
      ASSERT_FALSE(lq.ref_out.empty());
      std::vector<double> out(8);
      for (int h = 0; h < a.shape.n_heads; ++h)
        for (int64_t i = 0; i < lq.n; ++i) {
          const int g = h / a.shape.group();
          kvb::exact_attention_f64(kv.k_head(g), kv.v_head(g), kv.tokens, 8, lq.query(h, i), a.softmax_scale, 0.0,
                                   nullptr, nullptr, out.data());
          EXPECT_LT(rel_l2(out.data(), lq.ref(h, i), 8), 1e-6) << "seq " << s << " layer " << l << " head " << h;
        }
    }
  }
}

TEST(Capture, TokenFileWindowsAreRecorded) {
  REQUIRE_MODEL();
  TempDir tmp("capture-ids");
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back((i * 37 + 1) % 512);
  std::string text;
  for (int32_t v : ids) text += std::to_string(v) + (ids.size() % 7 ? " " : "\n");
  kvbtest::spit(tmp.path / "ids.txt", text);
  kvb::CaptureOptions o;
  o.model_path = kModel;
  o.out_path = tmp / "ids.h5";
  o.tokens = 20;
  o.queries = 4;
  o.sequences = 2;
  o.token_file = tmp / "ids.txt";
  kvb::capture_dump(o);
  kvb::KvDumpReader r(o.out_path);
  EXPECT_EQ(r.read_tokens(0), std::vector<int32_t>(ids.begin(), ids.begin() + 20));
  EXPECT_EQ(r.read_tokens(1), std::vector<int32_t>(ids.begin() + 20, ids.end()));

  o.sequences = 3;  // needs 60 ids, the file has 40
  EXPECT_THROW(kvb::capture_dump(o), kvb::DataError);
  kvbtest::spit(tmp.path / "bad.txt", "1 2 999 4");
  o.token_file = tmp / "bad.txt";
  o.sequences = 1;
  o.tokens = 4;
  o.queries = 1;
  EXPECT_THROW(kvb::capture_dump(o), kvb::DataError);
}

TEST(Capture, TruncatedOrMissingCheckpointIsDataError) {
  REQUIRE_MODEL();
  TempDir tmp("capture-trunc");
  std::ifstream in(kModel, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), 1056540u);
  const fs::path cut = tmp.path / "cut.bin";
  {
    std::ofstream out(cut, std::ios::binary);
    out.write(bytes.data(), 500000);
  }
  try {
    kvb::Llama2Model::load(cut.string());
    FAIL() << "truncated checkpoint was accepted";
  } catch (const kvb::DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(cut.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("1056540"), std::string::npos) << msg;
    EXPECT_NE(msg.find("500000"), std::string::npos) << msg;
  }
  const fs::path tiny = tmp.path / "tiny.bin";
  {
    std::ofstream out(tiny, std::ios::binary);
    out.write(bytes.data(), 10);
  }
  EXPECT_THROW(kvb::Llama2Model::load(tiny.string()), kvb::DataError);
  // A garbled header (n_heads = 0) is rejected before any size arithmetic.
  std::vector<char> garbled = bytes;
  const int32_t zero = 0;
  std::memcpy(garbled.data() + 12, &zero, 4);
  const fs::path bad = tmp.path / "garbled.bin";
  {
    std::ofstream out(bad, std::ios::binary);
    out.write(garbled.data(), static_cast<std::streamsize>(garbled.size()));
  }
  EXPECT_THROW(kvb::Llama2Model::load(bad.string()), kvb::DataError);
  EXPECT_THROW(kvb::Llama2Model::load((tmp.path / "missing.bin").string()), kvb::DataError);

  // Through the executable: exit 3, the file named, nothing written.
  auto r = kvbtest::kvbench("capture --model '" + cut.string() + "' --out '" + (tmp / "x.h5") + "'", tmp);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("cut.bin"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp.path / "x.h5"));
  r = kvbtest::kvbench("capture --model '" + (tmp / "missing.bin") + "' --out '" + (tmp / "x.h5") + "'", tmp);
  EXPECT_EQ(r.code, 3) << kvbtest::describe(r);
  r = kvbtest::kvbench("capture --model '" + kModel + "' --out '" + (tmp / "x.h5") + "' --tokens 600", tmp);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
  EXPECT_NE(r.err.find("512"), std::string::npos) << r.err;
  r = kvbtest::kvbench("capture --model '" + kModel + "' --out '" + (tmp / "x.h5") + "' --tokens 16 --queries 16", tmp);
  EXPECT_EQ(r.code, 2) << kvbtest::describe(r);
}

// The OS's reason, not "not found", for a checkpoint that exists but cannot be read (no model needed).
TEST(Capture, CheckpointOsErrorsAreReportedForWhatTheyAre) {
  TempDir tmp("capture-os");
  auto expect_msg = [](const std::string& path, const std::vector<std::string>& parts) {
    try {
      kvb::Llama2Model::load(path);
      ADD_FAILURE() << path << " was accepted";
    } catch (const kvb::DataError& e) {
      for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  expect_msg((tmp.path / "missing.bin").string(), {"missing.bin", "no such file"});
  expect_msg(tmp.path.string(), {"is a directory"});
  fs::create_symlink(tmp.path / "b.bin", tmp.path / "a.bin");
  fs::create_symlink(tmp.path / "a.bin", tmp.path / "b.bin");
  expect_msg((tmp.path / "a.bin").string(), {"a.bin", "symlink loop"});
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: a mode-000 file is readable, permission test skipped";
  const fs::path locked = tmp.path / "locked.bin";
  std::ofstream(locked) << "0123456789012345678901234567890123456789";
  fs::permissions(locked, fs::perms::none);
  expect_msg(locked.string(), {"locked.bin", "permission denied"});
  fs::permissions(locked, fs::perms::owner_all);
}

// capture -> run through the executable with configs/stories260K.json pointed at the captured dump.
TEST(Capture, RunOnCapturedDumpPassesSelfCheck) {
  REQUIRE_MODEL();
  TempDir tmp("capture-run");
  auto r = kvbtest::kvbench("capture --model '" + kModel + "' --out '" + (tmp / "st.h5") +
                                "' --tokens 128 --queries 16 --sequences 2 --temperature 1.0 --seed 5",
                            tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  nlohmann::json cfg = nlohmann::json::parse(kvbtest::slurp(fs::path(KVB_SOURCE_DIR) / "configs" / "stories260K.json"));
  cfg["datasets"][0]["path"] = tmp / "st.h5";
  cfg["repeats"] = 1;
  cfg["min_time_s"] = 0.0;
  kvbtest::spit(tmp.path / "cfg.json", cfg.dump());
  r = kvbtest::kvbench("run '" + (tmp / "cfg.json") + "' --output '" + (tmp / "out") + "'", tmp);
  ASSERT_EQ(r.code, 0) << kvbtest::describe(r);
  const auto doc = nlohmann::json::parse(kvbtest::slurp(tmp.path / "out" / "results.json"));
  EXPECT_EQ(doc["datasets"][0]["ref_out_check"]["status"], "passed") << doc["datasets"][0].dump();
  int ok = 0;
  for (const auto& c : doc["cells"]) {
    EXPECT_NE(c["status"], "error") << c.dump();
    if (c["status"] == "ok") {
      ++ok;
      if (c["label"] == "fp16") EXPECT_GE(c["fidelity"]["cosine"]["mean"].get<double>(), 0.9999);
    }
  }
  EXPECT_GE(ok, 8);
}

}  // namespace
