// The optional observation queries of kvdump v1 (docs/dump-format.md §1.2): `/sequences/<id>/obs_positions`
// int64 [W] and `layers/<l>/obs_queries` [n_heads, W, head_dim] in the keys' dtype. Round trips in every dtype
// (values exact after dtype rounding), read_obs relative to a cache start t0, dumps without them (backward
// compatible), and every malformed case as a DataError naming the file, the HDF5 path and expected vs found.
#include <functional>

#include "io_test_util.h"

using namespace kvbtest;

namespace {

const kvb::DType kDtypes[] = {kvb::DType::kFloat16, kvb::DType::kBFloat16, kvb::DType::kFloat32};

/// C = 32, T = 40, W = 5: observation queries at 27..31.
SmallDumpSpec obs_spec(uint64_t seed) {
  SmallDumpSpec s;
  s.seed = seed;
  s.obs_window = 5;
  return s;
}

/// Expects read_obs(seq, layer, t0) to hold the written obs_queries of positions >= t0, rounded through dt.
void expect_obs(const kvb::KvDumpReader& r, const kvb::SequenceData& sd, size_t seq, int layer, int64_t t0,
                kvb::DType dt, const SmallDumpSpec& spec) {
  SCOPED_TRACE(fmt::format("sequence {} layer {} t0 {}", seq, layer, t0));
  const kvb::ObsQueries o = r.read_obs(seq, layer, t0);
  const int64_t W = static_cast<int64_t>(sd.obs_positions.size());
  int64_t i0 = 0;
  while (i0 < W && sd.obs_positions[static_cast<size_t>(i0)] < t0) ++i0;
  ASSERT_EQ(o.n, W - i0);
  ASSERT_EQ(o.positions.size(), static_cast<size_t>(W - i0));
  if (o.n == 0) {
    EXPECT_TRUE(o.empty());
    EXPECT_TRUE(o.q.empty());
    return;
  }
  EXPECT_EQ(o.heads, spec.heads);
  EXPECT_EQ(o.head_dim, spec.head_dim);
  ASSERT_EQ(o.q.size(), static_cast<size_t>(spec.heads) * o.n * spec.head_dim);
  for (int64_t i = 0; i < o.n; ++i) EXPECT_EQ(o.positions[i], sd.obs_positions[i0 + i] - t0) << "i=" << i;
  const auto& L = sd.layers[static_cast<size_t>(layer)];
  size_t bad = 0;
  for (int h = 0; h < spec.heads; ++h)
    for (int64_t i = 0; i < o.n; ++i)
      for (int j = 0; j < spec.head_dim; ++j) {
        const float want = round_dtype(dt, L.obs_queries[(static_cast<size_t>(h) * W + (i0 + i)) * spec.head_dim + j]);
        if (o.query(h, i)[j] != want && bad++ < 3)
          ADD_FAILURE() << "head " << h << " obs query " << i << " channel " << j << ": got " << o.query(h, i)[j]
                        << ", want " << want;
      }
  EXPECT_EQ(bad, 0u);
}

}  // namespace

TEST(KvDumpObs, RoundTripEveryDtypeAndLayout) {
  struct Layout {
    const char* name;
    int64_t chunk_tokens;
    int deflate;
  };
  for (kvb::DType dt : kDtypes) {
    for (const Layout& lay : {Layout{"contiguous", 0, 0}, Layout{"chunked3-deflate2", 3, 2}}) {
      const SmallDumpSpec spec = obs_spec(41);
      SCOPED_TRACE(fmt::format("dtype={} layout={} {}", kvb::to_string(dt), lay.name, spec.describe()));
      const std::string path = scratch(fmt::format("obs_rt_{}_{}.h5", kvb::to_string(dt), lay.name));
      kvb::WriterOptions wo;
      wo.dtype = dt;
      wo.chunk_tokens = lay.chunk_tokens;
      wo.deflate = lay.deflate;
      const auto seqs = write_small_dump(path, spec, wo);
      const kvb::KvDumpReader r(path);
      ASSERT_EQ(r.sequences().size(), seqs.size());
      for (size_t s = 0; s < seqs.size(); ++s) {
        const kvb::SequenceInfo& si = r.sequences()[s];
        EXPECT_TRUE(si.has_obs());
        EXPECT_EQ(si.obs_positions, (std::vector<int64_t>{27, 28, 29, 30, 31}));
        EXPECT_EQ(si.obs_positions, seqs[s].obs_positions);
        for (int l = 0; l < spec.layers; ++l) expect_obs(r, seqs[s], s, l, 0, dt, spec);
        // The other tensors are untouched by the extension.
        const kvb::LayerQueries lq = r.read_queries(s, 1, 0);
        EXPECT_EQ(lq.q[3], round_dtype(dt, seqs[s].layers[1].queries[3]));
      }
    }
  }
}

TEST(KvDumpObs, ReadObsRelativeToTheCacheStart) {
  const SmallDumpSpec spec = obs_spec(42);
  SCOPED_TRACE(spec.describe());
  const std::string path = scratch("obs_t0.h5");
  kvb::WriterOptions wo;
  wo.chunk_tokens = 2;  // the kept suffix straddles chunks
  const auto seqs = write_small_dump(path, spec, wo);
  const kvb::KvDumpReader r(path);
  // A sliding-window cache [t0, C): positions become cache-relative, queries before t0 are dropped.
  for (int64_t t0 : {0, 10, 27, 28, 29, 31, 32}) expect_obs(r, seqs[1], 1, 1, t0, kvb::DType::kFloat16, spec);
  const kvb::ObsQueries o = r.read_obs(0, 0, 29);
  EXPECT_EQ(o.positions, (std::vector<int64_t>{0, 1, 2}));
  // t0 = C: a cache of no tokens keeps no observation query.
  EXPECT_TRUE(r.read_obs(0, 0, spec.context).empty());
  EXPECT_THROW(r.read_obs(0, 0, -1), kvb::UsageError);
  EXPECT_THROW(r.read_obs(0, 0, spec.context + 1), kvb::UsageError);
  EXPECT_THROW(r.read_obs(2, 0, 0), kvb::UsageError);
  EXPECT_THROW(r.read_obs(0, 2, 0), kvb::UsageError);
}

TEST(KvDumpObs, StreamingWriterAndPerSequenceChoice) {
  // begin_sequence / write_layer carry obs_positions from the header; one sequence may have them and another not.
  const SmallDumpSpec spec = obs_spec(43);
  SCOPED_TRACE(spec.describe());
  auto seqs = small_sequences(spec);
  seqs[1].obs_positions.clear();
  for (auto& L : seqs[1].layers) L.obs_queries.clear();
  seqs[0].obs_positions = {3, 17, 31};  // any strictly increasing prompt positions are valid
  for (auto& L : seqs[0].layers) L.obs_queries.resize(static_cast<size_t>(spec.heads) * 3 * spec.head_dim);
  const std::string path = scratch("obs_stream.h5");
  {
    kvb::KvDumpWriter w(path, small_attrs(spec));
    for (const auto& sd : seqs) {
      w.begin_sequence(sd);
      for (size_t l = 0; l < sd.layers.size(); ++l) w.write_layer(static_cast<int>(l), sd.layers[l]);
      w.end_sequence();
    }
    w.close();
  }
  const kvb::KvDumpReader r(path);
  EXPECT_EQ(r.sequences()[0].obs_positions, (std::vector<int64_t>{3, 17, 31}));
  EXPECT_FALSE(r.sequences()[1].has_obs());
  expect_obs(r, seqs[0], 0, 1, 0, kvb::DType::kFloat16, spec);
  expect_obs(r, seqs[0], 0, 1, 17, kvb::DType::kFloat16, spec);
  EXPECT_TRUE(r.read_obs(1, 0, 0).empty());
}

TEST(KvDumpObs, DumpsWithoutObservationQueriesStillRead) {
  SmallDumpSpec spec;
  spec.seed = 44;
  SCOPED_TRACE(spec.describe());
  const std::string path = scratch("obs_none.h5");
  write_small_dump(path, spec);
  {
    // Nothing new is written: the file holds no obs_* link.
    H5Edit e(path);
    EXPECT_EQ(H5Lexists(e.file, "/sequences/s0/obs_positions", H5P_DEFAULT), 0);
    EXPECT_EQ(H5Lexists(e.file, "/sequences/s0/layers/0/obs_queries", H5P_DEFAULT), 0);
  }
  const kvb::KvDumpReader r(path);
  for (size_t s = 0; s < r.sequences().size(); ++s) {
    EXPECT_FALSE(r.sequences()[s].has_obs());
    EXPECT_TRUE(r.sequences()[s].obs_positions.empty());
    for (int l = 0; l < spec.layers; ++l)
      for (int64_t t0 : {0, 5}) {
        const kvb::ObsQueries o = r.read_obs(s, l, t0);
        EXPECT_TRUE(o.empty());
        EXPECT_TRUE(o.q.empty());
        EXPECT_TRUE(o.positions.empty());
      }
  }
}

TEST(KvDumpObs, WriterValidates) {
  const SmallDumpSpec spec = obs_spec(45);
  const auto seqs = small_sequences(spec);
  const std::string path = scratch("obs_writer_bad.h5");
  struct Case {
    const char* name;
    std::function<void(kvb::SequenceData&)> spoil;
    bool data_error;  // DataError (a value) rather than UsageError (shape, order, range)
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"not increasing", [](kvb::SequenceData& s) { s.obs_positions = {27, 29, 28, 30, 31}; }, false,
       {"/sequences/s0/obs_positions", "strictly increasing", "obs_positions[2] = 28"}},
      {"repeated position", [](kvb::SequenceData& s) { s.obs_positions = {27, 28, 28, 30, 31}; }, false,
       {"/sequences/s0/obs_positions", "strictly increasing"}},
      {"position = C", [](kvb::SequenceData& s) { s.obs_positions = {28, 29, 30, 31, 32}; }, false,
       {"/sequences/s0/obs_positions", "obs_positions[4] = 32", "[0, context_len = 32)"}},
      {"negative position", [](kvb::SequenceData& s) { s.obs_positions = {-1, 28, 29, 30, 31}; }, false,
       {"obs_positions[0] = -1"}},
      {"W mismatch", [](kvb::SequenceData& s) { s.obs_positions = {28, 29, 30, 31}; }, false,
       {"/sequences/s0/layers/0/obs_queries", "320 floats given", "expected 256"}},
      {"missing in one layer", [](kvb::SequenceData& s) { s.layers[1].obs_queries.clear(); }, false,
       {"/sequences/s0/layers/1/obs_queries", "0 floats given", "expected 320"}},
      {"obs_queries without positions", [](kvb::SequenceData& s) { s.obs_positions.clear(); }, false,
       {"/sequences/s0/layers/0/obs_queries", "no obs_positions"}},
      {"NaN", [](kvb::SequenceData& s) { s.layers[1].obs_queries[16 + 7] = NAN; }, true,
       {"/sequences/s0/layers/1/obs_queries", "not finite", "obs query 1"}},
      {"float16 overflow", [](kvb::SequenceData& s) { s.layers[0].obs_queries[0] = 1e6f; }, true,
       {"/sequences/s0/layers/0/obs_queries", "not finite in float16"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto bad = seqs[0];
    c.spoil(bad);
    std::vector<std::string> parts = c.parts;
    parts.push_back(path);
    for (int streaming = 0; streaming < 2; ++streaming) {
      SCOPED_TRACE(streaming ? "begin_sequence/write_layer" : "write_sequence");
      kvb::KvDumpWriter w(path, small_attrs(spec));
      try {
        if (streaming) {
          w.begin_sequence(bad);
          for (size_t l = 0; l < bad.layers.size(); ++l) w.write_layer(static_cast<int>(l), bad.layers[l]);
          w.end_sequence();
        } else {
          w.write_sequence(bad);
        }
        ADD_FAILURE() << "nothing was thrown";
      } catch (const kvb::Error& e) {
        const std::string msg = e.what();
        EXPECT_EQ(e.code(), c.data_error ? kvb::ExitCode::kData : kvb::ExitCode::kUsage) << msg;
        for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message lacks '" << p << "': " << msg;
      }
    }
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

// --- malformed files ------------------------------------------------------------------------------

namespace {

const SmallDumpSpec kObs = obs_spec(46);
const std::string kS0 = "/sequences/s0";
const std::string kL0 = "/sequences/s0/layers/0";
const std::string kL1 = "/sequences/s0/layers/1";

std::string spoiled_obs(const std::string& name, const SmallDumpSpec& spec,
                        const std::function<void(H5Edit&)>& edit) {
  const std::string path = scratch("bad_obs_" + name + ".h5");
  write_small_dump(path, spec);
  {
    H5Edit e(path);
    edit(e);
  }
  return path;
}

void set_positions(H5Edit& e, const std::vector<int64_t>& p) {
  e.replace(kS0 + "/obs_positions", H5T_STD_I64LE, {p.size()}, H5T_NATIVE_INT64, p.empty() ? nullptr : p.data());
}

}  // namespace

TEST(KvDumpObsErrors, MalformedFilesNamePathAndExpectedVsFound) {
  struct Case {
    const char* name;
    bool with_obs;  // start from a dump with observation queries (W = 5) or without
    std::function<void(H5Edit&)> edit;
    std::vector<std::string> parts;
  };
  const hsize_t H = 4, D = 16, W = 5;
  std::vector<float> f32(H * W * D, 0.5f);
  std::vector<int32_t> i32(H * W * D, 1);
  std::vector<uint16_t> u16(H * W * D, 0x3c00);  // float16 1.0
  std::vector<double> f64(W, 30.0);
  kvb::h5::Hid f16(kvb::h5::make_f16_type());
  const std::vector<Case> cases = {
      {"not_increasing", true, [](H5Edit& e) { set_positions(e, {27, 28, 30, 29, 31}); },
       {kS0 + "/obs_positions", "expected strictly increasing",
        "found obs_positions[3] = 29 after obs_positions[2] = 30"}},
      {"repeated", true, [](H5Edit& e) { set_positions(e, {27, 28, 28, 30, 31}); },
       {kS0 + "/obs_positions", "strictly increasing", "obs_positions[2] = 28"}},
      {"position_ge_C", true, [](H5Edit& e) { set_positions(e, {28, 29, 30, 31, 32}); },
       {kS0 + "/obs_positions", "obs_positions[4] = 32", "outside [0, context_len = 32)"}},
      {"negative_position", true, [](H5Edit& e) { set_positions(e, {-3, 28, 29, 30, 31}); },
       {kS0 + "/obs_positions", "obs_positions[0] = -3", "outside [0, context_len = 32)"}},
      {"W_zero", true, [](H5Edit& e) { set_positions(e, {}); },
       {kS0 + "/obs_positions", "expected W >= 1", "found W = 0"}},
      {"positions_rank2", true,
       [](H5Edit& e) {
         std::vector<int64_t> p = {27, 28, 29, 30};
         e.replace(kS0 + "/obs_positions", H5T_STD_I64LE, {2, 2}, H5T_NATIVE_INT64, p.data());
       },
       {kS0 + "/obs_positions", "expected shape [W]", "found [2, 2]"}},
      {"positions_float", true,
       [&](H5Edit& e) { e.replace(kS0 + "/obs_positions", H5T_IEEE_F64LE, {W}, H5T_NATIVE_DOUBLE, f64.data()); },
       {kS0 + "/obs_positions", "expected int64, found float64"}},
      {"W_mismatch_positions", true, [](H5Edit& e) { set_positions(e, {28, 29, 30, 31}); },
       {kL0 + "/obs_queries", "expected shape [4, 4, 16]", "found [4, 5, 16]"}},
      {"W_mismatch_layer", true,
       [&](H5Edit& e) { e.replace(kL1 + "/obs_queries", f16, {H, W - 2, D}, f16, u16.data()); },
       {kL1 + "/obs_queries", "expected shape [4, 5, 16]", "found [4, 3, 16]"}},
      {"per_kv_head", true,
       [&](H5Edit& e) { e.replace(kL1 + "/obs_queries", f16, {2, W, D}, f16, u16.data()); },
       {kL1 + "/obs_queries", "expected shape [4, 5, 16] (n_heads", "found [2, 5, 16]"}},
      {"missing_in_one_layer", true, [](H5Edit& e) { e.remove(kL1 + "/obs_queries"); },
       {kL1 + "/obs_queries", "required dataset is missing", "W = 5"}},
      {"queries_without_positions", true, [](H5Edit& e) { e.remove(kS0 + "/obs_positions"); },
       {kL0 + "/obs_queries", "found obs_queries", kS0 + "/obs_positions is missing"}},
      {"queries_in_a_dump_without_obs", false,
       [&](H5Edit& e) { e.replace(kL1 + "/obs_queries", f16, {H, W, D}, f16, u16.data()); },
       {kL1 + "/obs_queries", "found obs_queries", "obs_positions is missing"}},
      {"positions_in_a_dump_without_obs", false, [](H5Edit& e) { set_positions(e, {30, 31}); },
       {kL0 + "/obs_queries", "required dataset is missing", "W = 2"}},
      {"wrong_dtype_float32", true,
       [&](H5Edit& e) { e.replace(kL1 + "/obs_queries", H5T_IEEE_F32LE, {H, W, D}, H5T_NATIVE_FLOAT, f32.data()); },
       {kL1 + "/obs_queries", "dtype float32 differs from the keys' dtype float16"}},
      {"wrong_dtype_int32", true,
       [&](H5Edit& e) { e.replace(kL1 + "/obs_queries", H5T_STD_I32LE, {H, W, D}, H5T_NATIVE_INT32, i32.data()); },
       {kL1 + "/obs_queries", "unsupported dtype", "found int32"}},
      {"uint16_without_bf16_attr", true,
       [&](H5Edit& e) { e.replace(kL1 + "/obs_queries", H5T_STD_U16LE, {H, W, D}, H5T_NATIVE_UINT16, u16.data()); },
       {kL1 + "/obs_queries", "uint16 without the attribute dtype=\"bfloat16\""}},
  };
  SmallDumpSpec none = kObs;
  none.obs_window = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = spoiled_obs(c.name, c.with_obs ? kObs : none, c.edit);
    std::vector<std::string> parts = c.parts;
    parts.push_back(path);
    expect_data_error([&] { kvb::KvDumpReader r(path); }, parts);
  }
}

TEST(KvDumpObsErrors, NonFiniteObsQueriesFailOnRead) {
  for (float bad : {NAN, INFINITY}) {
    SCOPED_TRACE(bad);
    const std::string path = spoiled_obs(std::isnan(bad) ? "nan" : "inf", kObs,
                                         [&](H5Edit& e) { e.poke_float(kL1 + "/obs_queries", {2, 3, 9}, bad); });
    const kvb::KvDumpReader r(path);  // the schema is fine; the value check happens on read
    EXPECT_NO_THROW(r.read_obs(0, 0, 0));
    EXPECT_NO_THROW(r.read_kv(0, 1, 0, kObs.context));
    // Dropping the bad query (position 27 + 3 = 30) by the cache start reads fine; keeping it reports the
    // absolute index in the dataset.
    EXPECT_NO_THROW(r.read_obs(0, 1, 31));
    for (int64_t t0 : {0, 29})
      expect_data_error([&] { r.read_obs(0, 1, t0); },
                        {path, kL1 + "/obs_queries", std::isnan(bad) ? "non-finite value (NaN)" : "+Inf",
                         "[head 2, obs query 3, channel 9]"});
  }
}
