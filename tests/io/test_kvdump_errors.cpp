// Malformed dumps: every case is a kvb::DataError (exit 3) whose message names the file and the HDF5
// path, with what was expected vs found — never a crash.
#include <fstream>
#include <functional>

#include "io_test_util.h"

using namespace kvbtest;

namespace {

const SmallDumpSpec kSpec = [] {
  SmallDumpSpec s;
  s.seed = 21;
  return s;
}();

/// A fresh valid dump named after the case, modified by `edit` through the HDF5 C API.
std::string spoiled(const std::string& name, const std::function<void(H5Edit&)>& edit) {
  const std::string path = scratch("bad_" + name + ".h5");
  write_small_dump(path, kSpec);
  {
    H5Edit e(path);
    edit(e);
  }
  return path;
}

void expect_open_fails(const std::string& path, const std::vector<std::string>& parts) {
  std::vector<std::string> all = parts;
  all.push_back(path);
  expect_data_error([&] { kvb::KvDumpReader r(path); }, all);
}

void copy_truncated(const std::string& from, const std::string& to, std::uintmax_t size) {
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(to, size);
}

const std::string kL1 = "/sequences/s0/layers/1";

}  // namespace

TEST(KvDumpErrors, MissingFile) {
  const std::string path = scratch("does_not_exist.h5");
  expect_data_error([&] { kvb::KvDumpReader r(path); }, {path, "no such file"});
  expect_data_error([&] { kvb::KvDumpReader r(scratch_dir()); }, {scratch_dir(), "directory"});
}

TEST(KvDumpErrors, NotHdf5) {
  const std::string path = scratch("text.h5");
  std::ofstream(path) << "this is not an HDF5 file\n";
  expect_data_error([&] { kvb::KvDumpReader r(path); }, {path, "not an HDF5 file"});
  const std::string empty = scratch("empty.h5");
  std::ofstream(empty).flush();
  expect_data_error([&] { kvb::KvDumpReader r(empty); }, {empty});
}

TEST(KvDumpErrors, TruncatedFile) {
  const std::string good = scratch("trunc_src.h5");
  kvb::WriterOptions wo;
  wo.chunk_tokens = 8;
  wo.deflate = 2;
  write_small_dump(good, kSpec, wo);
  const auto size = std::filesystem::file_size(good);
  for (double frac : {0.5, 0.1, 0.9, 0.99}) {
    const auto cut = static_cast<std::uintmax_t>(frac * static_cast<double>(size));
    SCOPED_TRACE(fmt::format("cut to {} of {} bytes", cut, size));
    const std::string path = scratch(fmt::format("trunc_{}.h5", cut));
    copy_truncated(good, path, cut);
    expect_data_error([&] { kvb::KvDumpReader r(path); }, {path});
  }
  // One byte short.
  const std::string path = scratch("trunc_minus1.h5");
  copy_truncated(good, path, size - 1);
  expect_data_error([&] { kvb::KvDumpReader r(path); }, {path, "truncated"});
}

TEST(KvDumpErrors, CorruptBytesNeverCrash) {
  const std::string good = scratch("corrupt_src.h5");
  kvb::WriterOptions wo;
  wo.chunk_tokens = 8;
  wo.deflate = 3;
  write_small_dump(good, kSpec, wo);
  const auto size = std::filesystem::file_size(good);
  kvb::Rng rng(99);
  for (int trial = 0; trial < 24; ++trial) {
    const auto off = static_cast<std::streamoff>(rng.below(size - 64));
    SCOPED_TRACE(fmt::format("trial {}: 64 garbage bytes at offset {} of {}", trial, off, size));
    const std::string path = scratch(fmt::format("corrupt_{}.h5", trial));
    std::filesystem::copy_file(good, path, std::filesystem::copy_options::overwrite_existing);
    {
      std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(off);
      for (int i = 0; i < 64; ++i) f.put(static_cast<char>(rng.below(256)));
    }
    try {
      const kvb::KvDumpReader r(path);
      for (size_t s = 0; s < r.sequences().size(); ++s)
        for (int l = 0; l < r.attrs().shape.n_layers; ++l) {
          const auto kv = r.read_kv(s, l, 0, r.sequences()[s].n_tokens);
          const auto q = r.read_queries(s, l, 0);
          for (float x : kv.k) ASSERT_TRUE(std::isfinite(x));
          for (float x : q.q) ASSERT_TRUE(std::isfinite(x));
          r.read_tokens(s);
        }
    } catch (const kvb::DataError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST(KvDumpErrors, RootAttributes) {
  struct Case {
    const char* name;
    std::function<void(H5Edit&)> edit;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"missing_n_heads", [](H5Edit& e) { e.delete_attr("/", "n_heads"); }, {"/", "'n_heads'", "missing"}},
      {"missing_format", [](H5Edit& e) { e.delete_attr("/", "format"); }, {"'format'", "missing"}},
      {"missing_softmax_scale", [](H5Edit& e) { e.delete_attr("/", "softmax_scale"); }, {"'softmax_scale'", "missing"}},
      {"format_version_2", [](H5Edit& e) { e.set_int("/", "format_version", 2); },
       {"/ (attribute 'format_version')", "expected 1", "found 2"}},
      {"wrong_format", [](H5Edit& e) { e.set_string("/", "format", "kvcache"); }, {"format", "\"kvcache\""}},
      {"format_version_as_string", [](H5Edit& e) { e.set_string("/", "format_version", "1"); },
       {"format_version", "expected an integer, found string"}},
      {"model_as_int", [](H5Edit& e) { e.set_int("/", "model", 5); }, {"'model'", "expected a string"}},
      {"heads_not_divisible", [](H5Edit& e) { e.set_int("/", "n_heads", 3); },
       {"n_heads", "(3)", "multiple of n_kv_heads (2)"}},
      {"head_dim_1025", [](H5Edit& e) { e.set_int("/", "head_dim", 1025); }, {"head_dim", "[1, 1024]", "1025"}},
      {"head_dim_0", [](H5Edit& e) { e.set_int("/", "head_dim", 0); }, {"head_dim", "found 0"}},
      {"n_layers_0", [](H5Edit& e) { e.set_int("/", "n_layers", 0); }, {"n_layers", "found 0"}},
      {"rope_style", [](H5Edit& e) { e.set_string("/", "rope_style", "sideways"); }, {"rope_style", "sideways"}},
      {"softmax_scale_0", [](H5Edit& e) { e.set_double("/", "softmax_scale", 0.0); }, {"softmax_scale", "> 0"}},
      {"softmax_scale_nan", [](H5Edit& e) { e.set_double("/", "softmax_scale", NAN); }, {"softmax_scale"}},
      {"orig_dtype", [](H5Edit& e) { e.set_string("/", "orig_dtype", "int8"); }, {"orig_dtype", "int8"}},
      {"rope_applied_2", [](H5Edit& e) { e.set_int("/", "rope_applied", 2); }, {"rope_applied", "0 or 1"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    expect_open_fails(spoiled(c.name, c.edit), c.parts);
  }
}

TEST(KvDumpErrors, SequenceStructure) {
  struct Case {
    const char* name;
    std::function<void(H5Edit&)> edit;
    std::vector<std::string> parts;
  };
  const hsize_t Q = static_cast<hsize_t>(kSpec.tokens - kSpec.context);
  const std::vector<Case> cases = {
      {"no_sequences_group", [](H5Edit& e) { e.remove("/sequences"); }, {"/sequences", "missing"}},
      {"empty_sequences",
       [](H5Edit& e) {
         e.remove("/sequences/s0");
         e.remove("/sequences/s1");
       },
       {"/sequences", "at least 1 sequence"}},
      {"context_len_0", [](H5Edit& e) { e.set_int("/sequences/s0", "context_len", 0); },
       {"/sequences/s0", "context_len", "found 0"}},
      {"context_len_gt_T", [](H5Edit& e) { e.set_int("/sequences/s1", "context_len", 41); },
       {"/sequences/s1", "context_len", "found 41"}},
      {"n_tokens_0", [](H5Edit& e) { e.set_int("/sequences/s0", "n_tokens", 0); }, {"/sequences/s0", "n_tokens"}},
      {"missing_n_tokens", [](H5Edit& e) { e.delete_attr("/sequences/s1", "n_tokens"); },
       {"/sequences/s1", "'n_tokens'", "missing"}},
      {"query_position_before_context",
       [](H5Edit& e) {
         std::vector<int64_t> qp = {31, 33, 34, 35, 36, 37, 38, 39};
         e.replace("/sequences/s0/query_positions", H5T_STD_I64LE, {qp.size()}, H5T_NATIVE_INT64, qp.data());
       },
       {"/sequences/s0/query_positions", "query_positions[0] = 31", "< context_len 32"}},
      {"q_zero",
       [](H5Edit& e) { e.replace("/sequences/s0/query_positions", H5T_STD_I64LE, {0}, H5T_NATIVE_INT64, nullptr); },
       {"/sequences/s0/query_positions", "Q = 0"}},
      {"query_positions_float",
       [&](H5Edit& e) {
         std::vector<double> qp(Q, 35.0);
         e.replace("/sequences/s0/query_positions", H5T_IEEE_F64LE, {Q}, H5T_NATIVE_DOUBLE, qp.data());
       },
       {"/sequences/s0/query_positions", "expected int64, found float64"}},
      {"tokens_wrong_length",
       [](H5Edit& e) {
         std::vector<int32_t> t(39, 1);
         e.replace("/sequences/s1/tokens", H5T_STD_I32LE, {39}, H5T_NATIVE_INT32, t.data());
       },
       {"/sequences/s1/tokens", "expected shape [40]", "found [39]"}},
      {"missing_layer", [&](H5Edit& e) { e.remove(kL1); }, {kL1, "missing"}},
      {"missing_keys", [&](H5Edit& e) { e.remove(kL1 + "/keys"); }, {kL1 + "/keys", "missing"}},
      {"sliding_window_negative", [&](H5Edit& e) { e.set_int(kL1, "sliding_window", -1); },
       {kL1, "sliding_window", ">= 0"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    expect_open_fails(spoiled(c.name, c.edit), c.parts);
  }
}

TEST(KvDumpErrors, TensorShapesAndDtypes) {
  struct Case {
    const char* name;
    std::function<void(H5Edit&)> edit;
    std::vector<std::string> parts;
  };
  const hsize_t G = 2, H = 4, T = 40, D = 16, Q = 8;
  std::vector<float> f32(H * T * D, 0.5f);
  std::vector<double> f64(H * T * D, 0.5);
  std::vector<int32_t> i32(H * T * D, 1);
  std::vector<uint16_t> u16(H * T * D, 0x3f80);  // bfloat16 1.0
  kvb::h5::Hid f16(kvb::h5::make_f16_type());
  const std::vector<Case> cases = {
      {"keys_wrong_shape",
       [&](H5Edit& e) { e.replace(kL1 + "/keys", f16, {G, T, 8}, f16, u16.data()); },
       {kL1 + "/keys", "expected shape [2, 40, 16]", "found [2, 40, 8]"}},
      {"keys_rank2",
       [&](H5Edit& e) { e.replace(kL1 + "/keys", f16, {G * T, D}, f16, u16.data()); },
       {kL1 + "/keys", "expected shape [2, 40, 16]", "found [80, 16]"}},
      {"queries_repeated_per_query_head",
       [&](H5Edit& e) { e.replace(kL1 + "/keys", f16, {H, T, D}, f16, u16.data()); },
       {kL1 + "/keys", "found [4, 40, 16]"}},
      {"values_dtype_differs",
       [&](H5Edit& e) { e.replace(kL1 + "/values", H5T_IEEE_F32LE, {G, T, D}, H5T_NATIVE_FLOAT, f32.data()); },
       {kL1 + "/values", "float32 differs from the keys' dtype float16"}},
      {"int32_keys",
       [&](H5Edit& e) { e.replace(kL1 + "/keys", H5T_STD_I32LE, {G, T, D}, H5T_NATIVE_INT32, i32.data()); },
       {kL1 + "/keys", "unsupported dtype", "found int32"}},
      {"float64_queries",
       [&](H5Edit& e) { e.replace(kL1 + "/queries", H5T_IEEE_F64LE, {H, Q, D}, H5T_NATIVE_DOUBLE, f64.data()); },
       {kL1 + "/queries", "unsupported dtype", "found float64"}},
      {"uint16_without_bf16_attr",
       [&](H5Edit& e) { e.replace(kL1 + "/keys", H5T_STD_U16LE, {G, T, D}, H5T_NATIVE_UINT16, u16.data()); },
       {kL1 + "/keys", "uint16 without the attribute dtype=\"bfloat16\""}},
      {"ref_out_wrong_shape",
       [&](H5Edit& e) { e.replace(kL1 + "/ref_out", H5T_IEEE_F32LE, {H, Q - 1, D}, H5T_NATIVE_FLOAT, f32.data()); },
       {kL1 + "/ref_out", "expected shape [4, 8, 16]", "found [4, 7, 16]"}},
      {"ref_out_int",
       [&](H5Edit& e) { e.replace(kL1 + "/ref_out", H5T_STD_I32LE, {H, Q, D}, H5T_NATIVE_INT32, i32.data()); },
       {kL1 + "/ref_out", "expected float32, found int32"}},
      {"dtype_differs_across_layers",
       [&](H5Edit& e) {
         for (const char* n : {"keys", "values"})
           e.replace(kL1 + "/" + n, H5T_IEEE_F32LE, {G, T, D}, H5T_NATIVE_FLOAT, f32.data());
         e.replace(kL1 + "/queries", H5T_IEEE_F32LE, {H, Q, D}, H5T_NATIVE_FLOAT, f32.data());
       },
       {kL1 + "/keys", "float32 differs from the dump's dtype float16"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    expect_open_fails(spoiled(c.name, c.edit), c.parts);
  }
}

TEST(KvDumpErrors, NonFiniteValuesNamePathAndIndex) {
  {
    const std::string path = spoiled("nan_keys", [](H5Edit& e) {
      e.poke_float("/sequences/s1/layers/1/keys", {1, 17, 5}, NAN);
    });
    const kvb::KvDumpReader r(path);  // the schema is fine; the value check happens on read
    EXPECT_NO_THROW(r.read_kv(0, 1, 0, kSpec.tokens));
    expect_data_error([&] { r.read_kv(1, 1, 0, kSpec.tokens); },
                      {path, "/sequences/s1/layers/1/keys", "non-finite value (NaN)", "[head 1, token 17, channel 5]"});
    // A hyperslab that excludes the bad token reads fine; one that includes it reports the absolute index.
    std::vector<float> k(static_cast<size_t>(kSpec.tokens) * kSpec.head_dim), v(k.size());
    EXPECT_NO_THROW(r.read_kv_head(1, 1, 1, 0, 17, k.data(), v.data()));
    EXPECT_NO_THROW(r.read_kv_head(1, 1, 0, 0, kSpec.tokens, k.data(), v.data()));
    expect_data_error([&] { r.read_kv_head(1, 1, 1, 10, 20, k.data(), v.data()); },
                      {"/sequences/s1/layers/1/keys", "[head 1, token 17, channel 5]"});
  }
  {
    const std::string path = spoiled("inf_values", [](H5Edit& e) {
      e.poke_float("/sequences/s0/layers/0/values", {0, 3, 0}, -INFINITY);
    });
    const kvb::KvDumpReader r(path);
    expect_data_error([&] { r.read_kv(0, 0, 0, 4); },
                      {path, "/sequences/s0/layers/0/values", "-Inf", "[head 0, token 3, channel 0]"});
  }
  {
    const std::string path = spoiled("inf_queries", [](H5Edit& e) {
      e.poke_float("/sequences/s0/layers/1/queries", {2, 6, 15}, INFINITY);
    });
    const kvb::KvDumpReader r(path);
    EXPECT_NO_THROW(r.read_queries(0, 1, 6));
    expect_data_error([&] { r.read_queries(0, 1, 0); },
                      {path, "/sequences/s0/layers/1/queries", "+Inf", "[head 2, query 6, channel 15]"});
  }
  {
    const std::string path = spoiled("nan_ref_out", [](H5Edit& e) {
      e.poke_float("/sequences/s0/layers/0/ref_out", {3, 0, 1}, NAN);
    });
    const kvb::KvDumpReader r(path);
    expect_data_error([&] { r.read_queries(0, 0, 0); }, {path, "/sequences/s0/layers/0/ref_out", "NaN"});
  }
}

TEST(KvDumpErrors, ErrorExitCodeIsData) {
  try {
    kvb::KvDumpReader r(scratch("missing_again.h5"));
    FAIL() << "no exception";
  } catch (const kvb::Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), 3);
  }
}
