// Hostile dumps (issue 20): memory proportional to what the file holds, OS and HDF5 errors reported for what
// they are, bounded excerpts of echoed values, and the in-memory image entry point the fuzzer uses.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <algorithm>

#include "io/io_test_util.h"
#include "kvb/core/json_text.h"

namespace {

using namespace kvbtest;
namespace fs = std::filesystem;

const SmallDumpSpec kSpec{};  // 2 layers, 4 heads, 2 KV heads, head_dim 16, T = 40, 2 sequences

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Sets an environment variable for one scope.
struct ScopedEnv {
  std::string name;
  ScopedEnv(const char* n, const char* v) : name(n) { setenv(n, v, 1); }
  ~ScopedEnv() { unsetenv(name.c_str()); }
};

/// A chunked, never-written dataset [d0, d1, d2] of `ftype` (reads as fill values; no storage in the file).
void replace_unwritten_chunked(H5Edit& e, const std::string& path, hid_t ftype, std::vector<hsize_t> dims) {
  e.remove(path);
  kvb::h5::Hid space(H5Screate_simple(3, dims.data(), nullptr));
  kvb::h5::Hid dcpl(H5Pcreate(H5P_DATASET_CREATE));
  const hsize_t chunk[3] = {1, 1024, dims[2]};
  ASSERT_GE(H5Pset_chunk(dcpl, 3, chunk), 0);
  kvb::h5::Hid ds(H5Dcreate2(e.file, path.c_str(), ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  ASSERT_TRUE(ds.valid()) << path;
}

TEST(KvDumpHostile, ImageReaderMatchesPathReader) {
  const std::string path = scratch("image.h5");
  write_small_dump(path, kSpec);
  const std::string img = bytes_of(path);
  kvb::KvDumpReader a(path);
  kvb::KvDumpReader b("image.h5", img.data(), img.size());
  EXPECT_EQ(a.checksum(), b.checksum()) << kSpec.describe();
  ASSERT_EQ(a.sequences().size(), b.sequences().size());
  const auto ka = a.read_kv(1, 1, 0, kSpec.tokens), kb = b.read_kv(1, 1, 0, kSpec.tokens);
  EXPECT_EQ(ka.k, kb.k);
  EXPECT_EQ(ka.v, kb.v);
  EXPECT_EQ(a.read_queries(0, 1, 0).q, b.read_queries(0, 1, 0).q);
  // The same checks: a cut image is rejected like a cut file, naming the image.
  expect_data_error([&] { kvb::KvDumpReader r("cut.h5", img.data(), img.size() / 2); }, {"cut.h5"});
  expect_data_error([&] { kvb::KvDumpReader r("junk.h5", "not hdf5", 8); }, {"junk.h5", "not an HDF5 file"});
}

// A 2-layer dump whose sequence s0 declares 2M tokens in a file of a few KB: rejected at open, naming the
// dataset, the declared shape and what the file holds, before anything of that size is allocated.
TEST(KvDumpHostile, DeclaredShapeLargerThanTheFileIsRejectedAtOpen) {
  const std::string path = scratch("forged_shape.h5");
  write_small_dump(path, kSpec);
  const int64_t T = 2'000'000;
  {
    H5Edit e(path);
    e.set_int("/sequences/s0", "n_tokens", T);
    for (int l = 0; l < kSpec.layers; ++l)
      for (const char* n : {"keys", "values"})
        replace_unwritten_chunked(e, fmt::format("/sequences/s0/layers/{}/{}", l, n), H5T_IEEE_F32LE,
                                  {hsize_t(kSpec.kv_heads), hsize_t(T), hsize_t(kSpec.head_dim)});
    e.remove("/sequences/s0/tokens");
  }
  ASSERT_LT(fs::file_size(path), 200u * 1024) << "the forged file should stay small";
  const std::vector<std::string> want = {path, "/sequences/s0/layers/0/keys", "[2, 2000000, 16]", "holds only"};
  expect_data_error([&] { kvb::KvDumpReader r(path); }, want);
  const std::string img = bytes_of(path);
  expect_data_error([&] { kvb::KvDumpReader r("forged.h5", img.data(), img.size()); },
                    {"forged.h5", "/sequences/s0/layers/0/keys", "holds only"});
}

TEST(KvDumpHostile, MemoryCeilingFromTheEnvironment) {
  const std::string path = scratch("ceiling.h5");
  write_small_dump(path, kSpec);
  {
    // keys [2, 40, 16] float32 = 5120 bytes once read: above a 4 KiB ceiling.
    ScopedEnv env("KVB_MAX_ALLOC_GB", "0.000004");
    expect_data_error([&] { kvb::KvDumpReader r(path); },
                      {path, "/sequences/s0/layers/0/keys", "KVB_MAX_ALLOC_GB", "[2, 40, 16]"});
  }
  {
    ScopedEnv env("KVB_MAX_ALLOC_GB", "lots");
    EXPECT_THROW(kvb::KvDumpReader r(path), kvb::UsageError);
  }
  kvb::KvDumpReader ok(path);  // the default ceiling (16 GiB)
  EXPECT_EQ(ok.sequences().size(), 2u);
}

TEST(KvDumpHostile, CompressedDumpsStillOpen) {
  // Deflate-compressed zeros shrink far below the declared size; the 1/1032 bound of deflate still holds.
  const std::string path = scratch("deflate.h5");
  SmallDumpSpec s = kSpec;
  s.tokens = 2048;
  s.context = 2040;
  auto seqs = small_sequences(s);
  for (auto& sd : seqs)
    for (auto& l : sd.layers) {
      std::fill(l.keys.begin(), l.keys.end(), 0.f);
      std::fill(l.values.begin(), l.values.end(), 0.f);
    }
  kvb::WriterOptions wo;
  wo.deflate = 9;
  kvb::KvDumpWriter w(path, small_attrs(s), wo);
  for (const auto& sd : seqs) w.write_sequence(sd);
  w.close();
  kvb::KvDumpReader r(path);
  EXPECT_EQ(r.read_kv(0, 0, 0, s.tokens).k.size(), size_t(s.kv_heads) * s.tokens * s.head_dim);
}

TEST(KvDumpHostile, OsErrorsAreReportedForWhatTheyAre) {
  const std::string dir = scratch("os_errors");
  fs::create_directories(dir);
  const std::string good = dir + "/good.h5";
  write_small_dump(good, kSpec);
  expect_data_error([&] { kvb::KvDumpReader r(dir + "/missing.h5"); }, {"missing.h5", "no such file"});
  expect_data_error([&] { kvb::KvDumpReader r(dir); }, {dir, "is a directory"});
  const std::string a = dir + "/loop_a.h5", b = dir + "/loop_b.h5";
  fs::create_symlink(b, a);
  fs::create_symlink(a, b);
  expect_data_error([&] { kvb::KvDumpReader r(a); }, {a, "symlink loop"});
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: a mode-000 file is readable, permission test skipped";
  const std::string locked = dir + "/locked.h5";
  fs::copy_file(good, locked);
  ASSERT_EQ(::chmod(locked.c_str(), 0), 0);
  expect_data_error([&] { kvb::KvDumpReader r(locked); }, {locked, "permission denied"});
  ::chmod(locked.c_str(), 0644);
}

TEST(KvDumpHostile, MissingFilterIsNamed) {
  // lzf (h5py's filter 32000) is not in Debian's libhdf5: an optional filter lets HDF5 create the dataset.
  if (H5Zfilter_avail(32000) > 0) GTEST_SKIP() << "this HDF5 has the lzf filter";
  const std::string path = scratch("lzf.h5");
  write_small_dump(path, kSpec);
  {
    H5Edit e(path);
    const std::string dp = "/sequences/s1/layers/1/values";
    e.remove(dp);
    const hsize_t dims[3] = {hsize_t(kSpec.kv_heads), hsize_t(kSpec.tokens), hsize_t(kSpec.head_dim)};
    kvb::h5::Hid space(H5Screate_simple(3, dims, nullptr));
    kvb::h5::Hid dcpl(H5Pcreate(H5P_DATASET_CREATE));
    const hsize_t chunk[3] = {1, 8, hsize_t(kSpec.head_dim)};
    ASSERT_GE(H5Pset_chunk(dcpl, 3, chunk), 0);
    ASSERT_GE(H5Pset_filter(dcpl, 32000, H5Z_FLAG_OPTIONAL, 0, nullptr), 0);
    kvb::h5::Hid ds(H5Dcreate2(e.file, dp.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    ASSERT_TRUE(ds.valid());
    std::vector<float> v(size_t(dims[0] * dims[1] * dims[2]), 1.f);
    ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), 0);
  }
  expect_data_error([&] { kvb::KvDumpReader r(path); },
                    {path, "/sequences/s1/layers/1/values", "filter 32000", "lzf", "does not have"});
}

TEST(KvDumpHostile, HugeAttributeValueIsNotEchoedWhole) {
  const std::string path = scratch("huge_attr.h5");
  write_small_dump(path, kSpec);
  const std::string huge(1 << 20, 'x');
  {
    H5Edit e(path);
    e.set_string("/", "rope_style", huge);
  }
  try {
    kvb::KvDumpReader r(path);
    FAIL() << "a 1 MiB rope_style was accepted";
  } catch (const kvb::DataError& e) {
    const std::string msg = e.what();
    EXPECT_LT(msg.size(), 600u) << msg.substr(0, 600);
    EXPECT_NE(msg.find("rope_style"), std::string::npos) << msg;
    EXPECT_NE(msg.find("\"xxxxxxxx"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1048576 bytes"), std::string::npos) << msg;
  }
}

// fuzz_kvdump finding (CI, 2026-12-03): a string attribute holding bytes that are not UTF-8 made
// `inspect --json` (and any results file naming the model) throw from the JSON serializer. Now a DataError
// naming the attribute, the byte and its offset; sequence group names likewise.
TEST(KvDumpHostile, NonUtf8StringAttributeIsADataError) {
  const std::string path = scratch("non_utf8_attr.h5");
  write_small_dump(path, kSpec);
  {
    H5Edit e(path);
    e.set_string("/", "model", std::string("llama\xff\xfe-3", 9));
  }
  try {
    kvb::KvDumpReader r(path);
    FAIL() << "a model name with bytes 0xff 0xfe was accepted";
  } catch (const kvb::DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model"), std::string::npos) << msg;
    EXPECT_NE(msg.find("UTF-8"), std::string::npos) << msg;
    EXPECT_NE(msg.find("0xff at offset 5"), std::string::npos) << msg;
  }
  // Valid multi-byte UTF-8 is kept; an overlong form (C0 AF), a surrogate (ED A0 80) and a code point above
  // U+10FFFF (F4 90 80 80) are not UTF-8 (what the JSON writer rejects).
  EXPECT_EQ(kvb::first_invalid_utf8("caf\xc3\xa9 \xe2\x80\xa6 \xf0\x9f\x98\x80"), std::string::npos);
  EXPECT_EQ(kvb::first_invalid_utf8("a\xc0\xaf"), 1u);
  EXPECT_EQ(kvb::first_invalid_utf8("ab\xed\xa0\x80"), 2u);
  EXPECT_EQ(kvb::first_invalid_utf8("\xf4\x90\x80\x80"), 0u);
  EXPECT_EQ(kvb::first_invalid_utf8("\xe2\x80"), 0u);  // truncated sequence
  // The fuzzer's own input (tests/fuzz/corpus/fuzz_kvdump/non_utf8_attr.h5, group name "s0\xff\xff\xfft") is
  // refused at open with a DataError, before anything reaches the serializer.
  const std::string img = bytes_of(std::string(KVB_SOURCE_DIR) + "/tests/fuzz/corpus/fuzz_kvdump/non_utf8_attr.h5");
  ASSERT_FALSE(img.empty());
  EXPECT_THROW(kvb::KvDumpReader("fuzz.h5", img.data(), img.size()), kvb::DataError);
}

}  // namespace

namespace {

// fuzz_kvdump finding: a global heap (where variable-length string attributes live) whose first object is a
// zero-size free-space record makes HDF5 1.10's parser loop forever. Refused before HDF5 reads it, from a
// file and from an image.
TEST(KvDumpHostile, GlobalHeapThatWouldHangHdf5IsRejected) {
  const std::string path = scratch("gcol.h5");
  write_small_dump(path, kSpec);
  std::string img = bytes_of(path);
  const size_t g = img.find("GCOL");
  ASSERT_NE(g, std::string::npos) << "kvbench's string attributes are variable-length: expected a global heap";
  std::fill(img.begin() + static_cast<std::ptrdiff_t>(g + 16), img.begin() + static_cast<std::ptrdiff_t>(g + 32), '\0');
  expect_data_error([&] { kvb::KvDumpReader r("gcol.h5", img.data(), img.size()); }, {"gcol.h5", "global heap"});
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(img.data(), static_cast<std::streamsize>(img.size()));
  }
  expect_data_error([&] { kvb::KvDumpReader r(path); }, {path, "global heap", fmt::format("offset {}", g)});
}

}  // namespace
