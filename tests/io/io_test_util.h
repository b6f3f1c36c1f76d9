#pragma once
// Shared helpers of the kvdump tests: scratch paths, a small random dump, and HDF5 C API surgery to
// build malformed files on purpose.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/core/half.h"
#include "kvb/core/rng.h"
#include "kvb/io/h5util.h"
#include "kvb/io/kvdump.h"

namespace kvbtest {

/// A fresh scratch directory per process; files are left for post-mortem and wiped on the next run.
inline std::string scratch_dir() {
  static const std::string dir = [] {
    const std::string d = fmt::format("{}/kvb_test_io_{}", ::testing::TempDir(), static_cast<long>(::getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string scratch(const std::string& name) { return scratch_dir() + "/" + name; }

/// Round a float through the dtype (what the file keeps).
inline float round_dtype(kvb::DType dt, float x) {
  switch (dt) {
    case kvb::DType::kFloat16: return kvb::round_f16(x);
    case kvb::DType::kBFloat16: return kvb::bf16_to_f32(kvb::f32_to_bf16(x));
    case kvb::DType::kFloat32: return x;
  }
  return x;
}

struct SmallDumpSpec {
  int layers = 2, heads = 4, kv_heads = 2, head_dim = 16;
  int64_t tokens = 40, context = 32;  // queries at positions context .. tokens-1
  int sequences = 2;
  uint64_t seed = 7;
  bool ref_out = true;
  bool tokens_ds = true;
  int64_t obs_window = 0;  // > 0: observation queries at positions context-W .. context-1 (docs/dump-format.md §1.2)
  std::string describe() const {
    return fmt::format("layers={} heads={} kv_heads={} head_dim={} T={} C={} seqs={} seed={} obs_window={}", layers,
                       heads, kv_heads, head_dim, tokens, context, sequences, seed, obs_window);
  }
};

inline kvb::DumpAttrs small_attrs(const SmallDumpSpec& s) {
  kvb::DumpAttrs a;
  a.model = "test:small";
  a.model_revision = "none";
  a.source = "test_io";
  a.shape = kvb::ModelShape{s.layers, s.heads, s.kv_heads, s.head_dim};
  a.rope_style = "half";
  a.rope_theta = 10000;
  a.softmax_scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  a.orig_dtype = "float16";
  a.seed = static_cast<int64_t>(s.seed);
  return a;
}

/// Random sequences (normal values, seeded) matching `s`.
inline std::vector<kvb::SequenceData> small_sequences(const SmallDumpSpec& s) {
  std::vector<kvb::SequenceData> out;
  kvb::Rng rng(s.seed);
  const int64_t Q = s.tokens - s.context;
  for (int i = 0; i < s.sequences; ++i) {
    kvb::SequenceData sd;
    sd.id = fmt::format("s{}", i);
    sd.n_tokens = s.tokens;
    sd.context_len = s.context;
    for (int64_t q = 0; q < Q; ++q) sd.query_positions.push_back(s.context + q);
    for (int64_t w = 0; w < s.obs_window; ++w) sd.obs_positions.push_back(s.context - s.obs_window + w);
    if (s.tokens_ds)
      for (int64_t t = 0; t < s.tokens; ++t) sd.tokens.push_back(static_cast<int32_t>(rng.below(1000)));
    for (int l = 0; l < s.layers; ++l) {
      kvb::SequenceData::Layer L;
      auto fill = [&](std::vector<float>& v, size_t n, double scale) {
        v.resize(n);
        for (auto& x : v) x = static_cast<float>(scale * rng.normal());
      };
      const size_t nkv = static_cast<size_t>(s.kv_heads) * s.tokens * s.head_dim;
      const size_t nq = static_cast<size_t>(s.heads) * Q * s.head_dim;
      fill(L.keys, nkv, 2.0);
      fill(L.values, nkv, 1.0);
      fill(L.queries, nq, 1.0);
      if (s.ref_out) fill(L.ref_out, nq, 0.5);
      // Drawn only when asked for, so dumps without observation queries keep their values.
      if (s.obs_window > 0) fill(L.obs_queries, static_cast<size_t>(s.heads) * s.obs_window * s.head_dim, 1.0);
      sd.layers.push_back(std::move(L));
    }
    out.push_back(std::move(sd));
  }
  return out;
}

/// Writes a valid small dump and returns the sequences written (float32, before dtype rounding).
inline std::vector<kvb::SequenceData> write_small_dump(const std::string& path, const SmallDumpSpec& s,
                                                       kvb::WriterOptions wo = {}) {
  auto seqs = small_sequences(s);
  kvb::KvDumpWriter w(path, small_attrs(s), wo);
  for (const auto& sd : seqs) w.write_sequence(sd);
  w.close();
  return seqs;
}

// --- HDF5 surgery ---------------------------------------------------------------------------------

/// Opens a file read-write for modification (closed at scope exit).
struct H5Edit {
  kvb::h5::Hid file;
  explicit H5Edit(const std::string& path) {
    kvb::h5::silence_errors();
    file = kvb::h5::Hid(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    EXPECT_TRUE(file.valid()) << "cannot open " << path;
  }
  hid_t obj(const std::string& p) const { return H5Oopen(file, p.c_str(), H5P_DEFAULT); }
  void delete_attr(const std::string& obj_path, const char* name) {
    kvb::h5::Hid o(obj(obj_path));
    ASSERT_GE(H5Adelete(o, name), 0) << obj_path << " " << name;
  }
  void set_int(const std::string& obj_path, const char* name, int64_t v) {
    kvb::h5::Hid o(obj(obj_path));
    kvb::h5::write_attr_int(o, obj_path, name, v);
  }
  void set_double(const std::string& obj_path, const char* name, double v) {
    kvb::h5::Hid o(obj(obj_path));
    kvb::h5::write_attr_double(o, obj_path, name, v);
  }
  void set_string(const std::string& obj_path, const char* name, const std::string& v) {
    kvb::h5::Hid o(obj(obj_path));
    kvb::h5::write_attr_string(o, obj_path, name, v);
  }
  void remove(const std::string& path) { ASSERT_GE(H5Ldelete(file, path.c_str(), H5P_DEFAULT), 0) << path; }
  /// Replaces dataset `path` by one of file type `ftype`, shape `dims`, filled from `data` (memory type
  /// `mtype`; may be null for an unwritten dataset).
  void replace(const std::string& path, hid_t ftype, const std::vector<hsize_t>& dims, hid_t mtype, const void* data) {
    if (kvb::h5::link_exists(file, path.c_str()) || H5Lexists(file, path.c_str(), H5P_DEFAULT) > 0) remove(path);
    kvb::h5::Hid space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    kvb::h5::Hid ds(H5Dcreate2(file, path.c_str(), ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_TRUE(ds.valid()) << path;
    if (data) {
      ASSERT_GE(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0) << path;
    }
  }
  /// Overwrites one float element of a float32/float16 dataset (index = flat position).
  void poke_float(const std::string& path, const std::vector<hsize_t>& index, float v) {
    kvb::h5::Hid ds(H5Dopen2(file, path.c_str(), H5P_DEFAULT));
    kvb::h5::Hid fs(H5Dget_space(ds));
    ASSERT_GE(H5Sselect_elements(fs, H5S_SELECT_SET, 1, index.data()), 0);
    const hsize_t one = 1;
    kvb::h5::Hid ms(H5Screate_simple(1, &one, nullptr));
    kvb::h5::Hid ft(H5Dget_type(ds));
    if (H5Tget_size(ft) == 2 && H5Tget_class(ft) == H5T_FLOAT) {
      const uint16_t bits = kvb::f32_to_f16(v);
      ASSERT_GE(H5Dwrite(ds, ft, ms, fs, H5P_DEFAULT, &bits), 0);
    } else {
      ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v), 0);
    }
  }
};

/// Expects `fn` to throw kvb::DataError whose message contains every string in `parts`.
template <class Fn>
void expect_data_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected kvb::DataError, nothing was thrown";
  } catch (const kvb::DataError& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message lacks '" << p << "': " << msg;
    EXPECT_EQ(e.code(), kvb::ExitCode::kData);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected kvb::DataError, got another exception: " << e.what();
  }
}

}  // namespace kvbtest
