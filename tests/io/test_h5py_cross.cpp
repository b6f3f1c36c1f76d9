// Cross-tool check: a dump written by h5py + numpy (scripts/make_h5py_dump.py) reads correctly, and a
// dump written by kvbench reads correctly in h5py (float16 as numpy float16, bfloat16 as uint16 + attr);
// both ways also for the optional observation queries (obs_positions / obs_queries, docs/dump-format.md §1.2).
#include <cstdlib>
#include <fstream>

#include "io_test_util.h"
#include "kvb/attention/exact.h"
#include "kvb/gen/generator.h"

using namespace kvbtest;

namespace {

const char* kPython = "/usr/bin/python3";

std::string script() { return std::string(KVB_SOURCE_DIR) + "/scripts/make_h5py_dump.py"; }

/// Empty when python3 with h5py and numpy can run; otherwise why not.
std::string python_unavailable() {
  if (!std::filesystem::exists(kPython)) return std::string(kPython) + " not found";
  const std::string cmd = std::string(kPython) + " -c 'import h5py, numpy' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) return std::string(kPython) + " has no h5py/numpy (apt install python3-h5py)";
  return {};
}

int run(const std::string& cmd) {
  const int rc = std::system((cmd + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/// Recompute exact attention from the tensors kvbench read and compare with the numpy ref_out.
void check_ref_out(const kvb::KvDumpReader& r) {
  const auto& a = r.attrs();
  const int D = a.shape.head_dim, gs = a.shape.group();
  for (size_t s = 0; s < r.sequences().size(); ++s) {
    const int64_t C = r.sequences()[s].context_len;
    for (int l = 0; l < a.shape.n_layers; ++l) {
      const auto kv = r.read_kv(s, l, 0, C);
      const auto lq = r.read_queries(s, l, 0);
      ASSERT_FALSE(lq.ref_out.empty());
      std::vector<double> o(static_cast<size_t>(D));
      for (int h = 0; h < a.shape.n_heads; ++h)
        for (int64_t i = 0; i < lq.n; ++i) {
          const int g = h / gs;
          kvb::exact_attention_f64(kv.k_head(g), kv.v_head(g), C, D, lq.query(h, i), a.softmax_scale, a.attn_softcap,
                                   nullptr, nullptr, o.data());
          double num = 0, den = 0;
          for (int j = 0; j < D; ++j) {
            num += (o[j] - lq.ref(h, i)[j]) * (o[j] - lq.ref(h, i)[j]);
            den += o[j] * o[j];
          }
          EXPECT_LT(std::sqrt(num / den), 1e-6) << "seq " << s << " layer " << l << " head " << h << " query " << i;
        }
    }
  }
}

}  // namespace

TEST(H5pyCross, ReadsDumpsWrittenByH5py) {
  const std::string why = python_unavailable();
  if (!why.empty()) GTEST_SKIP() << "cross-tool test skipped: " << why;
  struct Case {
    const char* flags;
    kvb::DType dtype;
  };
  for (const Case& c : {Case{"", kvb::DType::kFloat16}, Case{"--bf16", kvb::DType::kBFloat16},
                        Case{"--dtype float32 --fixed-strings", kvb::DType::kFloat32}}) {
    SCOPED_TRACE(std::string("make_h5py_dump.py ") + c.flags);
    const std::string path = scratch(fmt::format("h5py_{}.h5", static_cast<int>(c.dtype)));
    ASSERT_EQ(run(fmt::format("{} {} {} {} --seed 5", kPython, script(), path, c.flags)), 0);
    const kvb::KvDumpReader r(path);
    EXPECT_EQ(r.dtype(), c.dtype);
    EXPECT_EQ(r.attrs().model, "h5py:random");
    EXPECT_EQ(r.attrs().shape.n_heads, 4);
    EXPECT_EQ(r.attrs().shape.n_kv_heads, 2);
    EXPECT_EQ(r.attrs().shape.head_dim, 16);
    ASSERT_EQ(r.sequences().size(), 2u);
    EXPECT_EQ(r.sequences()[0].context_len, 32);
    EXPECT_EQ(r.read_tokens(0).size(), 40u);
    // The keys as numpy stored them (sidecar float32 [G, T, D] of s0 layer 0).
    const auto kv = r.read_kv(0, 0, 0, 40);
    std::vector<float> expect(kv.k.size());
    std::ifstream in(path + ".keys.f32", std::ios::binary);
    in.read(reinterpret_cast<char*>(expect.data()), static_cast<std::streamsize>(expect.size() * sizeof(float)));
    ASSERT_TRUE(in.good());
    EXPECT_EQ(kv.k, expect);
    check_ref_out(r);
  }
}

TEST(H5pyCross, ReadsObservationQueriesWrittenByH5py) {
  const std::string why = python_unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  struct Case {
    const char* flags;
    kvb::DType dtype;
  };
  for (const Case& c : {Case{"", kvb::DType::kFloat16}, Case{"--bf16", kvb::DType::kBFloat16},
                        Case{"--dtype float32", kvb::DType::kFloat32}}) {
    SCOPED_TRACE(std::string("make_h5py_dump.py --obs-window 5 ") + c.flags);
    const std::string path = scratch(fmt::format("h5py_obs_{}.h5", static_cast<int>(c.dtype)));
    ASSERT_EQ(run(fmt::format("{} {} {} {} --seed 6 --obs-window 5", kPython, script(), path, c.flags)), 0);
    const kvb::KvDumpReader r(path);
    EXPECT_EQ(r.dtype(), c.dtype);
    for (const auto& s : r.sequences()) EXPECT_EQ(s.obs_positions, (std::vector<int64_t>{27, 28, 29, 30, 31}));
    // obs_queries of s0 layer 0 as numpy stored them (sidecar float32 [H, W, D]).
    const kvb::ObsQueries o = r.read_obs(0, 0, 0);
    ASSERT_EQ(o.n, 5);
    EXPECT_EQ(o.heads, 4);
    EXPECT_EQ(o.head_dim, 16);
    std::vector<float> expect(o.q.size());
    std::ifstream in(path + ".obs.f32", std::ios::binary);
    in.read(reinterpret_cast<char*>(expect.data()), static_cast<std::streamsize>(expect.size() * sizeof(float)));
    ASSERT_TRUE(in.good());
    EXPECT_EQ(o.q, expect);
    // Cache-relative from a later start, and every layer readable (layer 1 is chunked by h5py).
    const kvb::ObsQueries tail = r.read_obs(0, 0, 29);
    EXPECT_EQ(tail.positions, (std::vector<int64_t>{0, 1, 2}));
    EXPECT_EQ(tail.q[0], expect[2 * 16]);
    for (size_t s = 0; s < r.sequences().size(); ++s)
      for (int l = 0; l < r.attrs().shape.n_layers; ++l) EXPECT_EQ(r.read_obs(s, l, 0).n, 5);
    check_ref_out(r);
  }
}

TEST(H5pyCross, H5pyReadsObservationQueriesWrittenByKvbench) {
  const std::string why = python_unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  for (kvb::DType dt : {kvb::DType::kFloat16, kvb::DType::kBFloat16, kvb::DType::kFloat32}) {
    SCOPED_TRACE(kvb::to_string(dt));
    SmallDumpSpec spec;
    spec.seed = 8;
    spec.ref_out = false;  // random ref_out would not match numpy's attention
    spec.obs_window = 3;
    const std::string path = scratch(fmt::format("obs_for_h5py_{}.h5", kvb::to_string(dt)));
    kvb::WriterOptions wo;
    wo.dtype = dt;
    wo.chunk_tokens = 2;
    write_small_dump(path, spec, wo);
    EXPECT_EQ(run(fmt::format("{} {} --verify {}", kPython, script(), path)), 0);
    // numpy sees the values kvbench wrote (s1, layer 1, head 3, obs query 2, channel 5).
    const kvb::KvDumpReader r(path);
    const float want = r.read_obs(1, 1, 0).query(3, 2)[5];
    const std::string cmd = fmt::format(
        "{} -c \"import h5py, numpy as np, sys; d = h5py.File('{}')['sequences/s1/layers/1/obs_queries']; "
        "x = d[3, 2, 5]; x = (np.array([x]).astype(np.uint32) << 16).view(np.float32)[0] if d.dtype == np.uint16 "
        "else x; p = h5py.File('{}')['sequences/s1/obs_positions'][()].tolist(); "
        "sys.exit(0 if np.float32(x) == np.float32({:.9g}) and p == [29, 30, 31] else 1)\"",
        kPython, path, path, want);
    EXPECT_EQ(run(cmd), 0) << cmd;
  }
}

TEST(H5pyCross, H5pyReadsDumpsWrittenByKvbench) {
  const std::string why = python_unavailable();
  if (!why.empty()) GTEST_SKIP() << "cross-tool test skipped: " << why;
  for (kvb::DType dt : {kvb::DType::kFloat16, kvb::DType::kBFloat16, kvb::DType::kFloat32}) {
    SCOPED_TRACE(kvb::to_string(dt));
    kvb::GenOptions o = kvb::gen_preset("tiny");
    o.dtype = dt;
    o.deflate = dt == kvb::DType::kBFloat16 ? 4 : 0;
    o.tokens = 128 + 8;
    o.queries = 8;
    const std::string path = scratch(fmt::format("for_h5py_{}.h5", kvb::to_string(dt)));
    kvb::generate_dump(path, o);
    EXPECT_EQ(run(fmt::format("{} {} --verify {}", kPython, script(), path)), 0);
    const std::string want = dt == kvb::DType::kFloat16 ? "float16" : dt == kvb::DType::kBFloat16 ? "uint16" : "float32";
    const std::string cmd = fmt::format(
        "{} -c \"import h5py, sys; f = h5py.File('{}'); d = f['sequences/s0/layers/0/keys']; "
        "sys.exit(0 if str(d.dtype) == '{}' else 1)\"",
        kPython, path, want);
    EXPECT_EQ(run(cmd), 0) << "h5py does not see keys as " << want;
  }
}
