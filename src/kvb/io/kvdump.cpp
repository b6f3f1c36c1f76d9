#include "kvb/io/kvdump.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "kvb/core/error.h"
#include "kvb/core/json_text.h"
#include "kvb/core/file_check.h"
#include "kvb/core/half.h"
#include "kvb/core/hash.h"
#include "kvb/core/tempfile.h"
#include "kvb/io/h5util.h"

namespace kvb {

using h5::Hid;
using Lock = std::lock_guard<std::recursive_mutex>;

const char* to_string(DType t) {
  switch (t) {
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
  }
  return "?";
}

DType parse_dtype(const std::string& s) {
  if (s == "float16") return DType::kFloat16;
  if (s == "bfloat16") return DType::kBFloat16;
  if (s == "float32") return DType::kFloat32;
  throw UsageError(fmt::format("unknown dtype '{}' (allowed: float16, bfloat16, float32)", s));
}

namespace {

constexpr int kMaxHeadDim = 1024;
/// The memory ceiling of one tensor read when KVB_MAX_ALLOC_GB is not set (docs/dump-format.md §1.4).
constexpr uint64_t kDefaultMaxAllocGiB = 16;
/// deflate's best case (a long run of one byte): 1032 to 1. A filtered dataset must store at least 1/1032 of
/// its declared bytes.
constexpr uint64_t kMaxDeflateRatio = 1032;
constexpr size_t kMaxIdBytes = 255;                  ///< a sequence group name (it appears in every message)
constexpr size_t kMaxStringAttrBytes = size_t(16) << 20;  ///< a fixed-length string attribute

/// "s2" < "s10": compare digit runs numerically, everything else bytewise.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      std::string x = a.substr(i, i2 - i), y = b.substr(j, j2 - j);
      x.erase(0, std::min(x.find_first_not_of('0'), x.size()));
      y.erase(0, std::min(y.find_first_not_of('0'), y.size()));
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

/// Error context: every message is "FILE: HDF5PATH: what (expected vs found)".
struct Ctx {
  const std::string& file;
  [[noreturn]] void fail(const std::string& h5path, const std::string& msg) const {
    throw DataError(fmt::format("{}: {}: {}", file, h5path, msg));
  }
};

std::string attr_where(const std::string& opath, const char* name) {
  return fmt::format("{} (attribute '{}')", opath, name);
}

bool attr_exists(const Ctx& c, hid_t obj, const std::string& opath, const char* name) {
  const htri_t e = H5Aexists(obj, name);
  if (e < 0) c.fail(attr_where(opath, name), "cannot query attribute" + h5::error_suffix());
  return e > 0;
}

/// Opens a required scalar attribute; checks it holds exactly one element.
Hid open_scalar_attr(const Ctx& c, hid_t obj, const std::string& opath, const char* name, const char* expect) {
  if (!attr_exists(c, obj, opath, name))
    c.fail(opath, fmt::format("required attribute '{}' ({}) is missing", name, expect));
  Hid a(H5Aopen(obj, name, H5P_DEFAULT));
  if (!a.valid()) c.fail(attr_where(opath, name), "cannot open attribute" + h5::error_suffix());
  Hid sp(H5Aget_space(a));
  const hssize_t n = sp.valid() ? H5Sget_simple_extent_npoints(sp) : -1;
  if (n != 1) c.fail(attr_where(opath, name), fmt::format("expected a single {}, found {} elements", expect, n));
  return a;
}

std::string read_string_attr_raw(const Ctx& c, hid_t obj, const std::string& opath, const char* name);

/// A string attribute, which must be UTF-8 (it goes into results.json and `inspect --json`).
std::string read_string_attr(const Ctx& c, hid_t obj, const std::string& opath, const char* name) {
  std::string s = read_string_attr_raw(c, obj, opath, name);
  const size_t bad = first_invalid_utf8(s);
  if (bad != std::string::npos)
    c.fail(attr_where(opath, name), fmt::format("expected UTF-8 text, found byte 0x{:02x} at offset {} of {}",
                                                static_cast<unsigned char>(s[bad]), bad, excerpt(s)));
  return s;
}

std::string read_string_attr_raw(const Ctx& c, hid_t obj, const std::string& opath, const char* name) {
  Hid a = open_scalar_attr(c, obj, opath, name, "string");
  Hid t(H5Aget_type(a));
  if (H5Tget_class(t) != H5T_STRING)
    c.fail(attr_where(opath, name), fmt::format("expected a string, found {}", h5::describe_type(t)));
  if (H5Tis_variable_str(t) > 0) {
    Hid mt(H5Tcopy(H5T_C_S1));
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(t));
    char* p = nullptr;
    if (H5Aread(a, mt, &p) < 0) c.fail(attr_where(opath, name), "cannot read string" + h5::error_suffix());
    std::string s = p ? p : "";
    if (p) H5free_memory(p);
    return s;
  }
  const size_t n = H5Tget_size(t);
  if (n > kMaxStringAttrBytes)
    c.fail(attr_where(opath, name), fmt::format("fixed-length string of {} bytes, expected at most {}", n,
                                                kMaxStringAttrBytes));
  std::string buf(n, '\0');
  if (H5Aread(a, t, buf.data()) < 0) c.fail(attr_where(opath, name), "cannot read string" + h5::error_suffix());
  buf.resize(std::min(buf.find('\0'), buf.size()));
  if (H5Tget_strpad(t) == H5T_STR_SPACEPAD) {
    while (!buf.empty() && buf.back() == ' ') buf.pop_back();
  }
  return buf;
}

int64_t read_int_attr(const Ctx& c, hid_t obj, const std::string& opath, const char* name) {
  Hid a = open_scalar_attr(c, obj, opath, name, "integer");
  Hid t(H5Aget_type(a));
  const H5T_class_t cls = H5Tget_class(t);
  if (cls == H5T_ENUM && H5Tget_size(t) == 1) {  // numpy bool written by h5py (FALSE/TRUE enum of int8)
    int8_t raw = 0;
    if (H5Aread(a, t, &raw) < 0) c.fail(attr_where(opath, name), "cannot read value" + h5::error_suffix());
    return raw;
  }
  if (cls != H5T_INTEGER)
    c.fail(attr_where(opath, name), fmt::format("expected an integer, found {}", h5::describe_type(t)));
  int64_t v = 0;
  if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0)
    c.fail(attr_where(opath, name), "cannot read integer" + h5::error_suffix());
  return v;
}

double read_float_attr(const Ctx& c, hid_t obj, const std::string& opath, const char* name) {
  Hid a = open_scalar_attr(c, obj, opath, name, "number");
  Hid t(H5Aget_type(a));
  const H5T_class_t cls = H5Tget_class(t);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER)
    c.fail(attr_where(opath, name), fmt::format("expected a number, found {}", h5::describe_type(t)));
  double v = 0;
  if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0)
    c.fail(attr_where(opath, name), "cannot read number" + h5::error_suffix());
  return v;
}

std::vector<hsize_t> dataset_dims(const Ctx& c, hid_t ds, const std::string& dpath) {
  Hid sp(H5Dget_space(ds));
  const int rank = sp.valid() ? H5Sget_simple_extent_ndims(sp) : -1;
  if (rank < 0) c.fail(dpath, "cannot read the dataspace" + h5::error_suffix());
  std::vector<hsize_t> d(static_cast<size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(sp, d.data(), nullptr) < 0)
    c.fail(dpath, "cannot read the dataspace" + h5::error_suffix());
  return d;
}

Hid open_group(const Ctx& c, hid_t loc, const char* name, const std::string& gpath) {
  if (!h5::link_exists(loc, name)) c.fail(gpath, "required group is missing");
  Hid g(H5Gopen2(loc, name, H5P_DEFAULT));
  if (!g.valid()) c.fail(gpath, "expected a group (cannot open it as one)" + h5::error_suffix());
  return g;
}

Hid open_dataset(const Ctx& c, hid_t loc, const char* name, const std::string& dpath) {
  if (!h5::link_exists(loc, name)) c.fail(dpath, "required dataset is missing");
  Hid d(H5Dopen2(loc, name, H5P_DEFAULT));
  if (!d.valid()) c.fail(dpath, "expected a dataset (cannot open it as one)" + h5::error_suffix());
  return d;
}

/// How a K/V/Q dataset is stored.
struct TensorType {
  DType dtype = DType::kFloat32;
  bool bf16_signed = false;  ///< bfloat16 bits stored in an int16 (rather than uint16) dataset
};

TensorType classify_tensor(const Ctx& c, hid_t ds, const std::string& dpath) {
  Hid t(H5Dget_type(ds));
  if (!t.valid()) c.fail(dpath, "cannot read the datatype" + h5::error_suffix());
  const H5T_class_t cls = H5Tget_class(t);
  const size_t size = H5Tget_size(t);
  const bool has_dtype_attr = attr_exists(c, ds, dpath, "dtype");
  std::string dtype_attr;
  if (has_dtype_attr) {
    Hid a(H5Aopen(ds, "dtype", H5P_DEFAULT));
    Hid at(H5Aget_type(a));
    if (H5Tget_class(at) == H5T_STRING) dtype_attr = read_string_attr(c, ds, dpath, "dtype");
  }
  TensorType tt;
  if (cls == H5T_FLOAT && size == 2 && h5::is_ieee_f16(t)) {
    tt.dtype = DType::kFloat16;
  } else if (cls == H5T_FLOAT && size == 4) {
    tt.dtype = DType::kFloat32;
  } else if (cls == H5T_INTEGER && size == 2 && dtype_attr == "bfloat16") {
    tt.dtype = DType::kBFloat16;
    tt.bf16_signed = H5Tget_sign(t) != H5T_SGN_NONE;
  } else {
    std::string found = h5::describe_type(t);
    if (cls == H5T_INTEGER && size == 2)
      found += has_dtype_attr ? fmt::format(" with attribute dtype={}", excerpt(dtype_attr))
                              : " without the attribute dtype=\"bfloat16\"";
    c.fail(dpath, fmt::format("unsupported dtype: expected float16, float32 or bfloat16 (uint16 with attribute "
                              "dtype=\"bfloat16\"), found {}",
                              found));
  }
  return tt;
}

struct LayerMeta {
  bool has_ref = false;
  TensorType tt;
  TensorType obs_tt;  ///< how obs_queries is stored (when the sequence has obs_positions)
};

struct SeqMeta {
  std::vector<LayerMeta> layers;
};

void check_finite_or_throw(const Ctx& c, const std::string& dpath, const float* x, size_t n, int64_t inner,
                           int64_t mid, int64_t head0, int64_t mid0, const char* mid_name) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      const int64_t ch = static_cast<int64_t>(i) % inner;
      const int64_t row = static_cast<int64_t>(i) / inner;
      const int64_t m = row % mid;
      const int64_t h = row / mid;
      const char* what = std::isnan(x[i]) ? "NaN" : (x[i] > 0 ? "+Inf" : "-Inf");
      c.fail(dpath, fmt::format("non-finite value ({}) at [head {}, {} {}, channel {}]", what, head0 + h, mid_name,
                                mid0 + m, ch));
    }
  }
}

/// Product of `dims` times `elem`, saturating at UINT64_MAX (a forged shape must not wrap around).
uint64_t sat_bytes(const std::vector<hsize_t>& dims, uint64_t elem) {
  uint64_t n = elem;
  for (hsize_t d : dims)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::numeric_limits<uint64_t>::max();
  return n;
}

std::string gib(uint64_t bytes) { return fmt::format("{:.3g} GiB", static_cast<double>(bytes) / (1ull << 30)); }

/// Names of filters h5py and common plugins write, for datasets whose pipeline stores no name.
const char* known_filter_name(H5Z_filter_t id) {
  switch (id) {
    case 1: return "deflate";
    case 2: return "shuffle";
    case 3: return "fletcher32";
    case 4: return "szip";
    case 5: return "nbit";
    case 6: return "scaleoffset";
    case 307: return "bzip2";
    case 32000: return "lzf";
    case 32001: return "blosc";
    case 32004: return "lz4";
    case 32008: return "bitshuffle";
    case 32013: return "zfp";
    case 32015: return "zstd";
    case 32026: return "blosc2";
    default: return nullptr;
  }
}

/// The memory ceiling: KVB_MAX_ALLOC_GB GiB, or kDefaultMaxAllocGiB.
uint64_t max_alloc_bytes() {
  const char* env = std::getenv("KVB_MAX_ALLOC_GB");
  if (env == nullptr || *env == '\0') return kDefaultMaxAllocGiB << 30;
  char* end = nullptr;
  const double gb = std::strtod(env, &end);
  if (end == env || *end != '\0' || !std::isfinite(gb) || gb <= 0 || gb > 1e6)
    throw UsageError(fmt::format("environment variable KVB_MAX_ALLOC_GB: expected a number of GiB in (0, 1e6], found "
                                 "{}",
                                 excerpt(env, 32)));
  return static_cast<uint64_t>(gb * static_cast<double>(1ull << 30));
}

/// HDF5 1.10's global-heap reader (H5HG__cache_heap_deserialize) steps from object to object by each one's
/// size; a free-space object (index 0) of size 0, or one whose size wraps the pointer, makes it loop forever
/// (found by fuzz_kvdump; fixed in later HDF5). Variable-length strings (h5py's str attributes, kvbench's)
/// live in these collections, so before HDF5 parses any, every collection in the file ("GCOL", version 1) is
/// walked the same way here, and one that would loop is a data error. Returns "" or what is wrong.
std::string check_global_heaps(const unsigned char* data, size_t n) {
  constexpr size_t kHdr = 16, kObjHdr = 16;  // collection header; object header (8-byte lengths)
  auto u16 = [](const unsigned char* p) { return static_cast<uint64_t>(p[0]) | static_cast<uint64_t>(p[1]) << 8; };
  auto u64 = [](const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
    return v;
  };
  const unsigned char* end = data + n;
  for (const unsigned char* g = data; g + kHdr <= end;) {
    const void* hit = memmem(g, static_cast<size_t>(end - g), "GCOL", 4);
    if (hit == nullptr) break;
    g = static_cast<const unsigned char*>(hit);
    const uint64_t off = static_cast<uint64_t>(g - data);
    if (g + kHdr > end || g[4] != 1 || g[5] != 0 || g[6] != 0 || g[7] != 0) {
      ++g;
      continue;
    }
    const uint64_t size = u64(g + 8);
    if (size < 4096 || size > n - off) {  // not a collection HDF5 would read this far (H5HG_MINSIZE = 4096)
      ++g;
      continue;
    }
    const unsigned char* p = g + kHdr;
    const unsigned char* cend = g + size;
    while (p + kObjHdr <= cend) {
      const uint64_t idx = u16(p), osize = u64(p + 8);
      const uint64_t need = idx > 0 ? kObjHdr + ((osize + 7) & ~uint64_t(7)) : osize;
      if (need == 0 || (idx > 0 && osize > size) || need > static_cast<uint64_t>(cend - p))
        return fmt::format("corrupt HDF5 global heap (variable-length strings) at byte offset {}: object {} at "
                           "offset {} has size {}, which does not fit the {}-byte collection",
                           off, idx, static_cast<uint64_t>(p - data), osize, size);
      p += need;
    }
    g += 4;
  }
  return "";
}

/// Where HDF5 looks for a superblock: offset 0, then 512, 1024, 2048, ... (a user block before it).
bool has_hdf5_signature(const void* data, size_t size) {
  static const char kSig[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  const char* p = static_cast<const char*>(data);
  for (size_t off = 0; off + 8 <= size; off = off == 0 ? 512 : off * 2)
    if (std::memcmp(p + off, kSig, 8) == 0) return true;
  return false;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Reader
// ------------------------------------------------------------------------------------------------

struct KvDumpReader::Impl {
  std::string path;
  Hid file;
  Hid f16_type;
  DumpAttrs attrs;
  DType dtype = DType::kFloat32;
  std::vector<SequenceInfo> seqs;
  std::vector<SeqMeta> meta;
  mutable std::vector<uint16_t> scratch16;

  Ctx ctx() const { return Ctx{path}; }
  std::string layer_path(size_t s, int l) const { return fmt::format("/sequences/{}/layers/{}", seqs[s].id, l); }

  uint64_t file_bytes = 0;      ///< size of the file (or image): what the declared shapes are checked against
  uint64_t max_alloc = 0;       ///< the memory ceiling (max_alloc_bytes())
  std::string image_checksum;   ///< in-memory images: checksum() of the bytes given

  void open_path();
  /// check_global_heaps over the file (mapped, read once sequentially).
  void check_heaps_of_file() const;
  void open_image(const void* data, size_t size);
  /// The schema checks, shared by both: the HDF5 file is open.
  void validate();
  void read_root_attrs();
  void read_sequence(hid_t seqs_group, const std::string& id);
  /// Before anything is allocated from a dataset's declared shape `dims` (elements of `mem_elem` bytes once
  /// read): its filters must be available, it must live in this file (no external or virtual storage), the
  /// file must hold its bytes (docs/dump-format.md §1.4) and the allocation must stay under max_alloc.
  void check_storage(hid_t ds, const std::string& dpath, const std::vector<hsize_t>& dims, uint64_t mem_elem) const;

  /// Reads the hyperslab [start, start+count) of a rank-3 dataset into `out` (row-major) as float32,
  /// then checks every value for NaN/Inf.
  void read_block(const std::string& dpath, const TensorType& tt, const hsize_t start[3], const hsize_t count[3],
                  float* out, const char* mid_name) const;
  void check_indices(size_t seq, int layer) const;
};

void KvDumpReader::Impl::open_path() {
  require_readable_file(path, "a kvdump HDF5 file");  // OS errors (permission, directory, loop) as such
  Lock g(h5::lock());
  h5::silence_errors();
  const htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 <= 0)
    throw DataError(fmt::format("cannot open {}: not an HDF5 file (no HDF5 signature; wrong file or corrupt){}",
                                path, h5::error_suffix()));
  std::error_code ec;
  file_bytes = std::filesystem::file_size(path, ec);
  if (ec) throw DataError(fmt::format("cannot open {}: cannot read the file size: {}", path, ec.message()));
  check_heaps_of_file();
  file = Hid(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid())
    throw DataError(fmt::format("cannot open {}: corrupt or truncated HDF5 file{}", path, h5::error_suffix()));
  validate();
}

void KvDumpReader::Impl::check_heaps_of_file() const {
  if (file_bytes == 0) return;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw DataError(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  void* m = ::mmap(nullptr, static_cast<size_t>(file_bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw DataError(fmt::format("cannot open {}: cannot map it: {}", path, std::strerror(errno)));
  ::madvise(m, static_cast<size_t>(file_bytes), MADV_SEQUENTIAL);
  const std::string heap = check_global_heaps(static_cast<const unsigned char*>(m), static_cast<size_t>(file_bytes));
  ::munmap(m, static_cast<size_t>(file_bytes));
  if (!heap.empty()) throw DataError(fmt::format("cannot open {}: {}", path, heap));
}

void KvDumpReader::Impl::open_image(const void* data, size_t size) {
  Lock g(h5::lock());
  h5::silence_errors();
  file_bytes = size;
  image_checksum = fmt::format("{:016x}", fnv1a_bytes(data, size, kFnvOffset));
  if (!has_hdf5_signature(data, size))
    throw DataError(fmt::format("cannot open {}: not an HDF5 file (no HDF5 signature; wrong file or corrupt)", path));
  const std::string heap = check_global_heaps(static_cast<const unsigned char*>(data), size);
  if (!heap.empty()) throw DataError(fmt::format("cannot open {}: {}", path, heap));
  // The core (in-memory) driver over a copy of the image: after H5Fopen the same calls as for a file on disk.
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS));
  if (!fapl.valid() || H5Pset_fapl_core(fapl, 1 << 16, 0) < 0 ||
      H5Pset_file_image(fapl, const_cast<void*>(data), size) < 0)
    throw DataError(fmt::format("cannot open {}: cannot set up an in-memory HDF5 image of {} bytes{}", path, size,
                                h5::error_suffix()));
  file = Hid(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl));
  if (!file.valid())
    throw DataError(fmt::format("cannot open {}: corrupt or truncated HDF5 file{}", path, h5::error_suffix()));
  validate();
}

void KvDumpReader::Impl::validate() {
  const Ctx c = ctx();
  max_alloc = max_alloc_bytes();
  f16_type = Hid(h5::make_f16_type());
  read_root_attrs();

  Hid sg = open_group(c, file, "sequences", "/sequences");
  std::vector<std::string> ids;
  H5G_info_t info;
  if (H5Gget_info(sg, &info) < 0) c.fail("/sequences", "cannot list the group" + h5::error_suffix());
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n = H5Lget_name_by_idx(sg, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0) c.fail("/sequences", "cannot list the group" + h5::error_suffix());
    std::string name(static_cast<size_t>(n) + 1, '\0');
    if (H5Lget_name_by_idx(sg, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT) < 0)
      c.fail("/sequences", "cannot list the group" + h5::error_suffix());
    name.resize(static_cast<size_t>(n));
    if (name.size() > kMaxIdBytes)
      c.fail("/sequences", fmt::format("sequence group name of {} bytes, expected at most {}: {}", name.size(),
                                       kMaxIdBytes, excerpt(name)));
    if (const size_t bad = first_invalid_utf8(name); bad != std::string::npos)
      c.fail("/sequences", fmt::format("sequence group name is not UTF-8 text (byte 0x{:02x} at offset {}): {}",
                                       static_cast<unsigned char>(name[bad]), bad, excerpt(name)));
    ids.push_back(name);
  }
  if (ids.empty()) c.fail("/sequences", "expected at least 1 sequence group, found 0");
  std::sort(ids.begin(), ids.end(), natural_less);
  for (const auto& id : ids) read_sequence(sg, id);
}

void KvDumpReader::Impl::read_root_attrs() {
  const Ctx c = ctx();
  const hid_t f = file.get();
  Hid root(H5Gopen2(f, "/", H5P_DEFAULT));
  if (!root.valid()) c.fail("/", "cannot open the root group" + h5::error_suffix());
  const std::string r = "/";
  const std::string format = read_string_attr(c, root, r, "format");
  if (format != "kvdump")
    c.fail(attr_where(r, "format"), fmt::format("expected \"kvdump\", found {}", excerpt(format)));
  const int64_t version = read_int_attr(c, root, r, "format_version");
  if (version != 1)
    c.fail(attr_where(r, "format_version"), fmt::format("expected 1 (this kvbench reads kvdump version 1), found {}",
                                                        version));
  DumpAttrs& a = attrs;
  a.model = read_string_attr(c, root, r, "model");
  a.model_revision = read_string_attr(c, root, r, "model_revision");
  a.source = read_string_attr(c, root, r, "source");

  auto int_in = [&](const char* name, int64_t lo, int64_t hi, const char* what) {
    const int64_t v = read_int_attr(c, root, r, name);
    if (v < lo || v > hi) c.fail(attr_where(r, name), fmt::format("expected {} in [{}, {}], found {}", what, lo, hi, v));
    return v;
  };
  a.shape.n_layers = static_cast<int>(int_in("n_layers", 1, 100000, "n_layers"));
  a.shape.n_heads = static_cast<int>(int_in("n_heads", 1, 100000, "n_heads"));
  a.shape.n_kv_heads = static_cast<int>(int_in("n_kv_heads", 1, 100000, "n_kv_heads"));
  a.shape.head_dim = static_cast<int>(int_in("head_dim", 1, kMaxHeadDim, "head_dim"));
  if (a.shape.n_heads % a.shape.n_kv_heads != 0)
    c.fail(attr_where(r, "n_heads"),
           fmt::format("n_heads ({}) must be a multiple of n_kv_heads ({}) for grouped-query attention",
                       a.shape.n_heads, a.shape.n_kv_heads));
  a.rope_applied = static_cast<int>(int_in("rope_applied", 0, 1, "0 or 1"));
  a.rope_style = read_string_attr(c, root, r, "rope_style");
  if (a.rope_style != "half" && a.rope_style != "interleaved" && a.rope_style != "none")
    c.fail(attr_where(r, "rope_style"),
           fmt::format("expected \"half\", \"interleaved\" or \"none\", found {}", excerpt(a.rope_style)));
  a.rope_theta = read_float_attr(c, root, r, "rope_theta");
  if (!std::isfinite(a.rope_theta) || a.rope_theta < 0)
    c.fail(attr_where(r, "rope_theta"), fmt::format("expected a finite number >= 0, found {}", a.rope_theta));
  a.qk_norm = static_cast<int>(int_in("qk_norm", 0, 1, "0 or 1"));
  a.softmax_scale = read_float_attr(c, root, r, "softmax_scale");
  if (!std::isfinite(a.softmax_scale) || a.softmax_scale <= 0)
    c.fail(attr_where(r, "softmax_scale"),
           fmt::format("expected a finite number > 0 (usually 1/sqrt(head_dim) = {:.6g}), found {}",
                       1.0 / std::sqrt(static_cast<double>(a.shape.head_dim)), a.softmax_scale));
  a.attn_softcap = read_float_attr(c, root, r, "attn_softcap");
  if (!std::isfinite(a.attn_softcap) || a.attn_softcap < 0)
    c.fail(attr_where(r, "attn_softcap"), fmt::format("expected a finite number >= 0 (0 = none), found {}",
                                                      a.attn_softcap));
  a.orig_dtype = read_string_attr(c, root, r, "orig_dtype");
  if (a.orig_dtype != "bfloat16" && a.orig_dtype != "float16" && a.orig_dtype != "float32")
    c.fail(attr_where(r, "orig_dtype"),
           fmt::format("expected \"bfloat16\", \"float16\" or \"float32\", found {}", excerpt(a.orig_dtype)));
  if (attr_exists(c, root, r, "seed")) a.seed = read_int_attr(c, root, r, "seed");
  if (attr_exists(c, root, r, "created_utc")) a.created_utc = read_string_attr(c, root, r, "created_utc");
}

void KvDumpReader::Impl::read_sequence(hid_t seqs_group, const std::string& id) {
  const Ctx c = ctx();
  const std::string sp = "/sequences/" + id;
  const ModelShape& ms = attrs.shape;
  Hid g = open_group(c, seqs_group, id.c_str(), sp);
  SequenceInfo si;
  si.id = id;
  si.n_tokens = read_int_attr(c, g, sp, "n_tokens");
  if (si.n_tokens < 1) c.fail(attr_where(sp, "n_tokens"), fmt::format("expected n_tokens >= 1, found {}", si.n_tokens));
  si.context_len = read_int_attr(c, g, sp, "context_len");
  if (si.context_len < 1 || si.context_len > si.n_tokens)
    c.fail(attr_where(sp, "context_len"),
           fmt::format("expected 1 <= context_len <= n_tokens ({}), found {}", si.n_tokens, si.context_len));
  const int64_t T = si.n_tokens;

  // query_positions int64 [Q], Q >= 1, each >= C.
  {
    const std::string dp = sp + "/query_positions";
    Hid d = open_dataset(c, g, "query_positions", dp);
    Hid t(H5Dget_type(d));
    if (H5Tget_class(t) != H5T_INTEGER) c.fail(dp, fmt::format("expected int64, found {}", h5::describe_type(t)));
    const auto dims = dataset_dims(c, d, dp);
    if (dims.size() != 1) c.fail(dp, fmt::format("expected shape [Q], found {}", h5::dims_str(dims)));
    if (dims[0] == 0) c.fail(dp, "expected Q >= 1 recorded queries, found Q = 0 (nothing to evaluate)");
    check_storage(d, dp, dims, sizeof(int64_t));
    si.n_queries = static_cast<int64_t>(dims[0]);
    si.query_positions.resize(dims[0]);
    if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, si.query_positions.data()) < 0)
      c.fail(dp, "cannot read" + h5::error_suffix());
    for (size_t i = 0; i < si.query_positions.size(); ++i) {
      if (si.query_positions[i] < si.context_len)
        c.fail(dp, fmt::format("query_positions[{}] = {} is < context_len {} (a recorded query must come after "
                               "the cached context)",
                               i, si.query_positions[i], si.context_len));
    }
  }
  const int64_t Q = si.n_queries;

  // obs_positions int64 [W] (optional, §1.2): W >= 1, strictly increasing, each in [0, C).
  if (h5::link_exists(g, "obs_positions")) {
    const std::string dp = sp + "/obs_positions";
    Hid d = open_dataset(c, g, "obs_positions", dp);
    Hid t(H5Dget_type(d));
    if (H5Tget_class(t) != H5T_INTEGER) c.fail(dp, fmt::format("expected int64, found {}", h5::describe_type(t)));
    const auto dims = dataset_dims(c, d, dp);
    if (dims.size() != 1) c.fail(dp, fmt::format("expected shape [W], found {}", h5::dims_str(dims)));
    if (dims[0] == 0)
      c.fail(dp, "expected W >= 1 observation query positions, found W = 0 (leave obs_positions out instead)");
    check_storage(d, dp, dims, sizeof(int64_t));
    si.obs_positions.resize(dims[0]);
    if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, si.obs_positions.data()) < 0)
      c.fail(dp, "cannot read" + h5::error_suffix());
    for (size_t i = 0; i < si.obs_positions.size(); ++i) {
      const int64_t p = si.obs_positions[i];
      if (p < 0 || p >= si.context_len)
        c.fail(dp, fmt::format("obs_positions[{}] = {} is outside [0, context_len = {}) (an observation query is a "
                               "prompt token)",
                               i, p, si.context_len));
      if (i > 0 && p <= si.obs_positions[i - 1])
        c.fail(dp, fmt::format("expected strictly increasing positions, found obs_positions[{}] = {} after "
                               "obs_positions[{}] = {}",
                               i, p, i - 1, si.obs_positions[i - 1]));
    }
  }
  const int64_t W = static_cast<int64_t>(si.obs_positions.size());

  // tokens int32 [T] (optional).
  if (h5::link_exists(g, "tokens")) {
    const std::string dp = sp + "/tokens";
    Hid d = open_dataset(c, g, "tokens", dp);
    Hid t(H5Dget_type(d));
    if (H5Tget_class(t) != H5T_INTEGER) c.fail(dp, fmt::format("expected int32, found {}", h5::describe_type(t)));
    const auto dims = dataset_dims(c, d, dp);
    if (dims.size() != 1 || static_cast<int64_t>(dims[0]) != T)
      c.fail(dp, fmt::format("expected shape [{}] (n_tokens), found {}", T, h5::dims_str(dims)));
    check_storage(d, dp, dims, sizeof(int32_t));
    si.has_tokens = true;
  }

  Hid lg = open_group(c, g, "layers", sp + "/layers");
  SeqMeta sm;
  si.has_ref_out = true;
  si.sliding_window.assign(static_cast<size_t>(ms.n_layers), 0);
  for (int l = 0; l < ms.n_layers; ++l) {
    const std::string lp = fmt::format("{}/layers/{}", sp, l);
    const std::string lname = std::to_string(l);
    Hid lgr = open_group(c, lg, lname.c_str(), lp);
    if (attr_exists(c, lgr, lp, "sliding_window")) {
      const int64_t w = read_int_attr(c, lgr, lp, "sliding_window");
      if (w < 0) c.fail(attr_where(lp, "sliding_window"), fmt::format("expected >= 0 (0 = global), found {}", w));
      si.sliding_window[static_cast<size_t>(l)] = w;
    }
    LayerMeta lm;
    struct Want {
      const char* name;
      std::vector<hsize_t> dims;
      const char* axes;
    };
    const Want wants[3] = {
        {"keys", {hsize_t(ms.n_kv_heads), hsize_t(T), hsize_t(ms.head_dim)}, "n_kv_heads, n_tokens, head_dim"},
        {"values", {hsize_t(ms.n_kv_heads), hsize_t(T), hsize_t(ms.head_dim)}, "n_kv_heads, n_tokens, head_dim"},
        {"queries", {hsize_t(ms.n_heads), hsize_t(Q), hsize_t(ms.head_dim)}, "n_heads, Q, head_dim"},
    };
    for (int k = 0; k < 3; ++k) {
      const std::string dp = lp + "/" + wants[k].name;
      Hid d = open_dataset(c, lgr, wants[k].name, dp);
      const auto dims = dataset_dims(c, d, dp);
      if (dims != wants[k].dims)
        c.fail(dp, fmt::format("expected shape {} ({}), found {}", h5::dims_str(wants[k].dims), wants[k].axes,
                               h5::dims_str(dims)));
      const TensorType tt = classify_tensor(c, d, dp);
      check_storage(d, dp, dims, sizeof(float));
      if (k == 0) {
        lm.tt = tt;
      } else if (tt.dtype != lm.tt.dtype) {
        c.fail(dp, fmt::format("dtype {} differs from the keys' dtype {} (keys, values and queries must share one "
                               "dtype)",
                               to_string(tt.dtype), to_string(lm.tt.dtype)));
      }
    }
    if (seqs.empty() && l == 0) {
      dtype = lm.tt.dtype;
    } else if (lm.tt.dtype != dtype) {
      c.fail(lp + "/keys", fmt::format("dtype {} differs from the dump's dtype {} (from /sequences/{}/layers/0/keys)",
                                       to_string(lm.tt.dtype), to_string(dtype),
                                       seqs.empty() ? id : seqs.front().id));
    }
    // obs_queries [n_heads, W, head_dim], keys' dtype: in every layer iff the sequence has obs_positions.
    {
      const std::string dp = lp + "/obs_queries";
      const bool present = h5::link_exists(lgr, "obs_queries");
      if (present && W == 0)
        c.fail(dp, fmt::format("found obs_queries but {}/obs_positions is missing (expected both or neither)", sp));
      if (!present && W > 0)
        c.fail(dp, fmt::format("required dataset is missing: {}/obs_positions has W = {} positions, so every layer "
                               "needs obs_queries [n_heads, W, head_dim]",
                               sp, W));
      if (present) {
        Hid d = open_dataset(c, lgr, "obs_queries", dp);
        const auto dims = dataset_dims(c, d, dp);
        const std::vector<hsize_t> want = {hsize_t(ms.n_heads), hsize_t(W), hsize_t(ms.head_dim)};
        if (dims != want)
          c.fail(dp, fmt::format("expected shape {} (n_heads, W = len(obs_positions), head_dim), found {}",
                                 h5::dims_str(want), h5::dims_str(dims)));
        lm.obs_tt = classify_tensor(c, d, dp);
        check_storage(d, dp, dims, sizeof(float));
        if (lm.obs_tt.dtype != lm.tt.dtype)
          c.fail(dp, fmt::format("dtype {} differs from the keys' dtype {} (obs_queries must share the keys' dtype)",
                                 to_string(lm.obs_tt.dtype), to_string(lm.tt.dtype)));
      }
    }
    if (h5::link_exists(lgr, "ref_out")) {
      const std::string dp = lp + "/ref_out";
      Hid d = open_dataset(c, lgr, "ref_out", dp);
      Hid t(H5Dget_type(d));
      if (H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) < 4)
        c.fail(dp, fmt::format("expected float32, found {}", h5::describe_type(t)));
      const auto dims = dataset_dims(c, d, dp);
      const std::vector<hsize_t> want = {hsize_t(ms.n_heads), hsize_t(Q), hsize_t(ms.head_dim)};
      if (dims != want)
        c.fail(dp, fmt::format("expected shape {} (n_heads, Q, head_dim), found {}", h5::dims_str(want),
                               h5::dims_str(dims)));
      check_storage(d, dp, dims, sizeof(float));
      lm.has_ref = true;
    } else {
      si.has_ref_out = false;
    }
    sm.layers.push_back(lm);
  }
  seqs.push_back(std::move(si));
  meta.push_back(std::move(sm));
}

void KvDumpReader::Impl::check_storage(hid_t ds, const std::string& dpath, const std::vector<hsize_t>& dims,
                                       uint64_t mem_elem) const {
  const Ctx c = ctx();
  Hid dcpl(H5Dget_create_plist(ds));
  if (!dcpl.valid()) c.fail(dpath, "cannot read the storage properties" + h5::error_suffix());
  const H5D_layout_t layout = H5Pget_layout(dcpl);
  if (layout == H5D_VIRTUAL)
    c.fail(dpath, "virtual dataset (data mapped from other files): a kvdump holds its tensors itself");
  if (H5Pget_external_count(dcpl) > 0)
    c.fail(dpath, "external storage (data in other files): a kvdump holds its tensors itself");
  const int nf = H5Pget_nfilters(dcpl);
  if (nf < 0) c.fail(dpath, "cannot read the filter pipeline" + h5::error_suffix());
  for (int i = 0; i < nf; ++i) {
    unsigned flags = 0, cfg = 0;
    size_t nvals = 0;
    char name[64] = {0};
    const H5Z_filter_t id = H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &nvals, nullptr, sizeof(name),
                                           name, &cfg);
    if (id < 0) c.fail(dpath, "cannot read the filter pipeline" + h5::error_suffix());
    if (H5Zfilter_avail(id) <= 0) {
      std::string nm(name, strnlen(name, sizeof(name)));
      if (nm.empty() && known_filter_name(id)) nm = known_filter_name(id);
      c.fail(dpath, fmt::format("compressed with HDF5 filter {} ({}), which this HDF5 library does not have: install "
                                "the filter plugin (HDF5_PLUGIN_PATH) or rewrite the dump with deflate or no "
                                "compression",
                                id, nm.empty() ? "unnamed" : excerpt(nm, 40)));
    }
  }
  h5::last_error();  // clear the stack
  Hid t(H5Dget_type(ds));
  const size_t elem = t.valid() ? H5Tget_size(t) : 0;
  if (elem == 0) c.fail(dpath, "cannot read the datatype" + h5::error_suffix());
  const uint64_t declared = sat_bytes(dims, elem);
  const uint64_t mem = sat_bytes(dims, mem_elem);
  if (mem > max_alloc)
    c.fail(dpath, fmt::format("declared shape {} needs {} of memory once read, above the memory ceiling of {} "
                              "(environment variable KVB_MAX_ALLOC_GB, default {}; the file holds {} bytes)",
                              h5::dims_str(dims), gib(mem), gib(max_alloc), kDefaultMaxAllocGiB, file_bytes));
  // Unfiltered data is stored byte for byte; deflate compresses at most kMaxDeflateRatio to 1.
  const uint64_t need = nf == 0 ? declared : declared / kMaxDeflateRatio;
  const uint64_t storage = static_cast<uint64_t>(H5Dget_storage_size(ds));
  const uint64_t held = std::min(storage, file_bytes);
  if (held < need)
    c.fail(dpath, fmt::format("declared shape {} of {}-byte elements is {} bytes{}, but the file holds only {} bytes "
                              "of it (file size {} bytes): truncated file, missing chunks or a forged shape",
                              h5::dims_str(dims), elem, declared,
                              nf == 0 ? "" : fmt::format(" (at least {} compressed)", need), held, file_bytes));
}

void KvDumpReader::Impl::check_indices(size_t seq, int layer) const {
  if (seq >= seqs.size())
    throw UsageError(fmt::format("{}: sequence index {} out of range (the dump has {} sequences)", path, seq,
                                 seqs.size()));
  if (layer < 0 || layer >= attrs.shape.n_layers)
    throw UsageError(fmt::format("{}: layer {} out of range (the dump has {} layers)", path, layer,
                                 attrs.shape.n_layers));
}

void KvDumpReader::Impl::read_block(const std::string& dpath, const TensorType& tt, const hsize_t start[3],
                                    const hsize_t count[3], float* out, const char* mid_name) const {
  const Ctx c = ctx();
  const size_t n = static_cast<size_t>(count[0] * count[1] * count[2]);
  if (n == 0) return;
  Lock g(h5::lock());
  Hid d(H5Dopen2(file, dpath.c_str(), H5P_DEFAULT));
  if (!d.valid()) c.fail(dpath, "cannot open dataset" + h5::error_suffix());
  Hid fs(H5Dget_space(d));
  if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr) < 0)
    c.fail(dpath, "cannot select hyperslab" + h5::error_suffix());
  // A memory space of the selection's own shape lets HDF5 take its fast "same shape" path (a 1-D
  // memory space makes it map every element to its chunk one by one).
  Hid ms(H5Screate_simple(3, count, nullptr));
  herr_t rc = 0;
  switch (tt.dtype) {
    case DType::kFloat32:
      rc = H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out);
      break;
    case DType::kFloat16:
      scratch16.resize(n);
      rc = H5Dread(d, f16_type, ms, fs, H5P_DEFAULT, scratch16.data());
      if (rc >= 0)
        for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(scratch16[i]);
      break;
    case DType::kBFloat16:
      scratch16.resize(n);
      rc = H5Dread(d, tt.bf16_signed ? H5T_NATIVE_INT16 : H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, scratch16.data());
      if (rc >= 0)
        for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(scratch16[i]);
      break;
  }
  if (rc < 0)
    c.fail(dpath, fmt::format("cannot read [{}:{}, {}:{}, {}:{}] (corrupt or truncated file?){}", start[0],
                              start[0] + count[0], start[1], start[1] + count[1], start[2], start[2] + count[2],
                              h5::error_suffix()));
  check_finite_or_throw(c, dpath, out, n, static_cast<int64_t>(count[2]), static_cast<int64_t>(count[1]),
                        static_cast<int64_t>(start[0]), static_cast<int64_t>(start[1]), mid_name);
}

KvDumpReader::KvDumpReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->open_path();
}

KvDumpReader::KvDumpReader(const std::string& name, const void* image, size_t size) : impl_(std::make_unique<Impl>()) {
  impl_->path = name;
  impl_->open_image(image, size);
}

KvDumpReader::~KvDumpReader() {
  if (impl_) {
    Lock g(h5::lock());
    impl_.reset();
  }
}

const std::string& KvDumpReader::path() const { return impl_->path; }
const DumpAttrs& KvDumpReader::attrs() const { return impl_->attrs; }
DType KvDumpReader::dtype() const { return impl_->dtype; }
const std::vector<SequenceInfo>& KvDumpReader::sequences() const { return impl_->seqs; }

void KvDumpReader::read_kv_head(size_t seq, int layer, int kv_head, int64_t t0, int64_t t1, float* k_out,
                                float* v_out) const {
  impl_->check_indices(seq, layer);
  const ModelShape& ms = impl_->attrs.shape;
  const int64_t T = impl_->seqs[seq].n_tokens;
  if (kv_head < 0 || kv_head >= ms.n_kv_heads)
    throw UsageError(fmt::format("{}: KV head {} out of range (n_kv_heads = {})", impl_->path, kv_head, ms.n_kv_heads));
  if (t0 < 0 || t1 < t0 || t1 > T)
    throw UsageError(fmt::format("{}: token range [{}, {}) outside [0, {}) of sequence {}", impl_->path, t0, t1, T,
                                 impl_->seqs[seq].id));
  const LayerMeta& lm = impl_->meta[seq].layers[static_cast<size_t>(layer)];
  const std::string lp = impl_->layer_path(seq, layer);
  const hsize_t start[3] = {hsize_t(kv_head), hsize_t(t0), 0};
  const hsize_t count[3] = {1, hsize_t(t1 - t0), hsize_t(ms.head_dim)};
  if (k_out) impl_->read_block(lp + "/keys", lm.tt, start, count, k_out, "token");
  if (v_out) impl_->read_block(lp + "/values", lm.tt, start, count, v_out, "token");
}

LayerKV KvDumpReader::read_kv(size_t seq, int layer, int64_t t0, int64_t t1) const {
  impl_->check_indices(seq, layer);
  const ModelShape& ms = impl_->attrs.shape;
  const int64_t T = impl_->seqs[seq].n_tokens;
  if (t0 < 0 || t1 < t0 || t1 > T)
    throw UsageError(fmt::format("{}: token range [{}, {}) outside [0, {}) of sequence {}", impl_->path, t0, t1, T,
                                 impl_->seqs[seq].id));
  LayerKV kv;
  kv.kv_heads = ms.n_kv_heads;
  kv.tokens = t1 - t0;
  kv.head_dim = ms.head_dim;
  kv.pos0 = t0;
  const size_t n = static_cast<size_t>(ms.n_kv_heads) * static_cast<size_t>(t1 - t0) * ms.head_dim;
  kv.k.resize(n);
  kv.v.resize(n);
  for (int g = 0; g < ms.n_kv_heads; ++g) read_kv_head(seq, layer, g, t0, t1, kv.k_head(g), kv.v_head(g));
  return kv;
}

LayerQueries KvDumpReader::read_queries(size_t seq, int layer, int64_t max_queries) const {
  impl_->check_indices(seq, layer);
  const ModelShape& ms = impl_->attrs.shape;
  const SequenceInfo& si = impl_->seqs[seq];
  const int64_t n = (max_queries <= 0 || max_queries > si.n_queries) ? si.n_queries : max_queries;
  LayerQueries lq;
  lq.heads = ms.n_heads;
  lq.n = n;
  lq.head_dim = ms.head_dim;
  const size_t total = static_cast<size_t>(ms.n_heads) * static_cast<size_t>(n) * ms.head_dim;
  lq.q.resize(total);
  const LayerMeta& lm = impl_->meta[seq].layers[static_cast<size_t>(layer)];
  const std::string lp = impl_->layer_path(seq, layer);
  const hsize_t start[3] = {0, 0, 0};
  const hsize_t count[3] = {hsize_t(ms.n_heads), hsize_t(n), hsize_t(ms.head_dim)};
  impl_->read_block(lp + "/queries", lm.tt, start, count, lq.q.data(), "query");
  if (lm.has_ref) {
    lq.ref_out.resize(total);
    TensorType f32;
    f32.dtype = DType::kFloat32;
    impl_->read_block(lp + "/ref_out", f32, start, count, lq.ref_out.data(), "query");
  }
  return lq;
}

ObsQueries KvDumpReader::read_obs(size_t seq, int layer, int64_t t0) const {
  impl_->check_indices(seq, layer);
  const ModelShape& ms = impl_->attrs.shape;
  const SequenceInfo& si = impl_->seqs[seq];
  if (t0 < 0 || t0 > si.context_len)
    throw UsageError(fmt::format("{}: cache start {} outside [0, context_len = {}] of sequence {}", impl_->path, t0,
                                 si.context_len, si.id));
  ObsQueries oq;
  if (!si.has_obs()) return oq;
  // Positions are strictly increasing: the kept queries are the suffix from the first position >= t0.
  const auto first = std::lower_bound(si.obs_positions.begin(), si.obs_positions.end(), t0);
  const int64_t i0 = first - si.obs_positions.begin();
  const int64_t n = static_cast<int64_t>(si.obs_positions.size()) - i0;
  oq.heads = ms.n_heads;
  oq.head_dim = ms.head_dim;
  oq.n = n;
  if (n == 0) return oq;
  for (auto it = first; it != si.obs_positions.end(); ++it) oq.positions.push_back(*it - t0);
  oq.q.resize(static_cast<size_t>(ms.n_heads) * static_cast<size_t>(n) * ms.head_dim);
  const LayerMeta& lm = impl_->meta[seq].layers[static_cast<size_t>(layer)];
  const hsize_t start[3] = {0, hsize_t(i0), 0};
  const hsize_t count[3] = {hsize_t(ms.n_heads), hsize_t(n), hsize_t(ms.head_dim)};
  impl_->read_block(impl_->layer_path(seq, layer) + "/obs_queries", lm.obs_tt, start, count, oq.q.data(),
                    "obs query");
  return oq;
}

std::vector<int32_t> KvDumpReader::read_tokens(size_t seq) const {
  impl_->check_indices(seq, 0);
  const SequenceInfo& si = impl_->seqs[seq];
  if (!si.has_tokens) return {};
  const std::string dp = "/sequences/" + si.id + "/tokens";
  std::vector<int32_t> out(static_cast<size_t>(si.n_tokens));
  Lock g(h5::lock());
  Hid d(H5Dopen2(impl_->file, dp.c_str(), H5P_DEFAULT));
  if (!d.valid() || H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    impl_->ctx().fail(dp, "cannot read (corrupt or truncated file?)" + h5::error_suffix());
  return out;
}

std::string KvDumpReader::checksum() const {
  if (!impl_->image_checksum.empty()) return impl_->image_checksum;
  std::ifstream in(impl_->path, std::ios::binary);
  if (!in) throw DataError(fmt::format("cannot open {} to checksum it", impl_->path));
  uint64_t h = kFnvOffset;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = fnv1a_bytes(buf.data(), static_cast<size_t>(in.gcount()), h);
  }
  return fmt::format("{:016x}", h);
}

// ------------------------------------------------------------------------------------------------
// Writer
// ------------------------------------------------------------------------------------------------

struct KvDumpWriter::Impl {
  std::string path, tmp;
  std::optional<TempFileGuard> tmp_guard;  // SIGINT/SIGTERM remove tmp
  DumpAttrs attrs;
  WriterOptions opts;
  Hid file, seqs_group, f16_type;
  Hid gcpl, dcpl_plain;  // creation properties without modification times (reproducible files)
  std::set<std::string> ids;
  int n_written = 0;
  bool closed = false;
  // The sequence being written.
  bool in_seq = false;
  std::string seq_id;
  int64_t T = 0, C = 0, Q = 0, W = 0;
  Hid seq_group, layers_group;
  int next_layer = 0;
  std::vector<uint16_t> buf16;

  void write_tensor(hid_t loc, const char* name, const std::string& where, const float* x, hsize_t d0, hsize_t d1,
                    hsize_t d2, DType dt);
  void discard() noexcept;
};

void KvDumpWriter::Impl::write_tensor(hid_t loc, const char* name, const std::string& where, const float* x,
                                      hsize_t d0, hsize_t d1, hsize_t d2, DType dt) {
  const size_t n = static_cast<size_t>(d0 * d1 * d2);
  // Convert first (and check), so a bad value never leaves a half-written dataset behind.
  if (dt == DType::kFloat16 || dt == DType::kBFloat16) buf16.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    bool bad = !std::isfinite(v);
    if (!bad && dt == DType::kFloat16) {
      buf16[i] = f32_to_f16(v);
      bad = (buf16[i] & 0x7c00u) == 0x7c00u;
    } else if (!bad && dt == DType::kBFloat16) {
      buf16[i] = f32_to_bf16(v);
      bad = (buf16[i] & 0x7f80u) == 0x7f80u;
    }
    if (bad) {
      const size_t ch = i % d2, row = i / d2;
      const std::string nm = name;
      const char* mid = nm == "keys" || nm == "values" ? "token" : nm == "obs_queries" ? "obs query" : "query";
      throw DataError(fmt::format("{}: {}: value {} at [head {}, {} {}, channel {}] is not finite{}", path, where, v,
                                  row / d1, mid, row % d1, ch,
                                  std::isfinite(v) ? fmt::format(" in {}", to_string(dt)) : ""));
    }
  }
  Lock g(h5::lock());
  const hsize_t dims[3] = {d0, d1, d2};
  Hid space(H5Screate_simple(3, dims, nullptr));
  Hid dcpl(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_obj_track_times(dcpl, 0);  // no modification times: the same content gives the same bytes
  const bool chunked = (opts.chunk_tokens > 0 || opts.deflate > 0) && n > 0;
  if (chunked) {
    const hsize_t ct = static_cast<hsize_t>(opts.chunk_tokens > 0 ? opts.chunk_tokens : 1024);
    const hsize_t chunk[3] = {1, std::min(ct, d1), d2};
    H5Pset_chunk(dcpl, 3, chunk);
    if (opts.deflate > 0) {
      H5Pset_shuffle(dcpl);
      H5Pset_deflate(dcpl, static_cast<unsigned>(std::min(opts.deflate, 9)));
    }
  }
  hid_t ftype = H5T_IEEE_F32LE, mtype = H5T_NATIVE_FLOAT;
  const void* data = x;
  if (dt == DType::kFloat16) {
    ftype = mtype = f16_type;
    data = buf16.data();
  } else if (dt == DType::kBFloat16) {
    ftype = H5T_STD_U16LE;
    mtype = H5T_NATIVE_UINT16;
    data = buf16.data();
  }
  Hid ds(H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  if (!ds.valid()) throw RuntimeError(fmt::format("{}: {}: cannot create dataset{}", path, where, h5::error_suffix()));
  if (n > 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw RuntimeError(fmt::format("{}: {}: cannot write dataset (disk full?){}", path, where, h5::error_suffix()));
  if (dt == DType::kBFloat16) h5::write_attr_string(ds, path + ": " + where, "dtype", "bfloat16");
}

namespace {
void check_layer_shape(const std::string& path, const std::string& lp, const ModelShape& s, int64_t T, int64_t Q,
                       int64_t W, const SequenceData::Layer& d) {
  const size_t nkv = size_t(s.n_kv_heads) * size_t(T) * size_t(s.head_dim);
  const size_t nq = size_t(s.n_heads) * size_t(Q) * size_t(s.head_dim);
  const size_t nobs = size_t(s.n_heads) * size_t(W) * size_t(s.head_dim);
  auto check_size = [&](const char* name, size_t got, size_t want, const char* shape) {
    KVB_CHECK(got == want, UsageError, "{}: {}/{}: {} floats given, expected {} = {}", path, lp, name, got, want,
              shape);
  };
  check_size("keys", d.keys.size(), nkv, "n_kv_heads * n_tokens * head_dim");
  check_size("values", d.values.size(), nkv, "n_kv_heads * n_tokens * head_dim");
  check_size("queries", d.queries.size(), nq, "n_heads * Q * head_dim");
  if (!d.ref_out.empty()) check_size("ref_out", d.ref_out.size(), nq, "n_heads * Q * head_dim");
  if (W > 0) {
    check_size("obs_queries", d.obs_queries.size(), nobs, "n_heads * W * head_dim, W = len(obs_positions)");
  } else {
    KVB_CHECK(d.obs_queries.empty(), UsageError,
              "{}: {}/obs_queries: {} floats given but the sequence has no obs_positions (give both or neither)",
              path, lp, d.obs_queries.size());
  }
  KVB_CHECK(d.sliding_window >= 0, UsageError, "{}: {}: sliding_window must be >= 0, got {}", path, lp,
            d.sliding_window);
}
}  // namespace

void KvDumpWriter::Impl::discard() noexcept {
  Lock g(h5::lock());
  layers_group.reset();
  seq_group.reset();
  seqs_group.reset();
  f16_type.reset();
  gcpl.reset();
  dcpl_plain.reset();
  file.reset();
  std::error_code ec;
  if (!tmp.empty()) std::filesystem::remove(tmp, ec);
  tmp_guard.reset();
}

KvDumpWriter::KvDumpWriter(const std::string& path, const DumpAttrs& attrs, WriterOptions opts)
    : impl_(std::make_unique<Impl>()) {
  Impl& w = *impl_;
  w.path = path;
  w.attrs = attrs;
  w.opts = opts;
  const ModelShape& s = attrs.shape;
  KVB_CHECK(s.n_layers >= 1 && s.n_heads >= 1 && s.n_kv_heads >= 1 && s.n_heads % s.n_kv_heads == 0, UsageError,
            "{}: invalid model shape: n_layers {}, n_heads {}, n_kv_heads {} (need >= 1 each and n_heads a multiple "
            "of n_kv_heads)",
            path, s.n_layers, s.n_heads, s.n_kv_heads);
  KVB_CHECK(s.head_dim >= 1 && s.head_dim <= kMaxHeadDim, UsageError, "{}: head_dim must be in [1, {}], got {}", path,
            kMaxHeadDim, s.head_dim);
  KVB_CHECK(attrs.rope_style == "half" || attrs.rope_style == "interleaved" || attrs.rope_style == "none", UsageError,
            "{}: rope_style must be half, interleaved or none, got '{}'", path, attrs.rope_style);
  KVB_CHECK(attrs.orig_dtype == "bfloat16" || attrs.orig_dtype == "float16" || attrs.orig_dtype == "float32",
            UsageError, "{}: orig_dtype must be bfloat16, float16 or float32, got '{}'", path, attrs.orig_dtype);
  if (w.attrs.softmax_scale == 0) w.attrs.softmax_scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  KVB_CHECK(std::isfinite(w.attrs.softmax_scale) && w.attrs.softmax_scale > 0, UsageError,
            "{}: softmax_scale must be finite and > 0, got {}", path, w.attrs.softmax_scale);
  KVB_CHECK(std::isfinite(attrs.attn_softcap) && attrs.attn_softcap >= 0, UsageError,
            "{}: attn_softcap must be finite and >= 0, got {}", path, attrs.attn_softcap);
  KVB_CHECK(opts.deflate >= 0 && opts.deflate <= 9, UsageError, "{}: deflate level must be in [0, 9], got {}", path,
            opts.deflate);
  KVB_CHECK(opts.chunk_tokens >= 0, UsageError, "{}: chunk_tokens must be >= 0, got {}", path, opts.chunk_tokens);

  sweep_stale_temps(path);
  w.tmp = temp_path_for(path);
  w.tmp_guard.emplace(w.tmp);
  Lock g(h5::lock());
  h5::silence_errors();
  w.file = Hid(H5Fcreate(w.tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  if (!w.file.valid())
    throw UsageError(fmt::format("cannot create {} (temporary file for {}): check the directory exists and is "
                                 "writable{}",
                                 w.tmp, path, h5::error_suffix()));
  w.f16_type = Hid(h5::make_f16_type());
  w.gcpl = Hid(H5Pcreate(H5P_GROUP_CREATE));
  H5Pset_obj_track_times(w.gcpl, 0);
  w.dcpl_plain = Hid(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_obj_track_times(w.dcpl_plain, 0);
  try {
    Hid root(H5Gopen2(w.file, "/", H5P_DEFAULT));
    const std::string where = path + ": /";
    const DumpAttrs& a = w.attrs;
    h5::write_attr_string(root, where, "format", "kvdump");
    h5::write_attr_int(root, where, "format_version", 1);
    h5::write_attr_string(root, where, "model", a.model);
    h5::write_attr_string(root, where, "model_revision", a.model_revision);
    h5::write_attr_string(root, where, "source", a.source);
    h5::write_attr_int(root, where, "n_layers", s.n_layers);
    h5::write_attr_int(root, where, "n_heads", s.n_heads);
    h5::write_attr_int(root, where, "n_kv_heads", s.n_kv_heads);
    h5::write_attr_int(root, where, "head_dim", s.head_dim);
    h5::write_attr_int(root, where, "rope_applied", a.rope_applied);
    h5::write_attr_string(root, where, "rope_style", a.rope_style);
    h5::write_attr_double(root, where, "rope_theta", a.rope_theta);
    h5::write_attr_int(root, where, "qk_norm", a.qk_norm);
    h5::write_attr_double(root, where, "softmax_scale", a.softmax_scale);
    h5::write_attr_double(root, where, "attn_softcap", a.attn_softcap);
    h5::write_attr_string(root, where, "orig_dtype", a.orig_dtype);
    if (a.seed) h5::write_attr_int(root, where, "seed", *a.seed);
    if (!a.created_utc.empty()) h5::write_attr_string(root, where, "created_utc", a.created_utc);
    w.seqs_group = Hid(H5Gcreate2(w.file, "sequences", H5P_DEFAULT, w.gcpl, H5P_DEFAULT));
    if (!w.seqs_group.valid())
      throw RuntimeError(fmt::format("{}: /sequences: cannot create group{}", path, h5::error_suffix()));
  } catch (...) {
    w.discard();
    throw;
  }
}

KvDumpWriter::~KvDumpWriter() {
  if (impl_ && !impl_->closed) impl_->discard();
}

void KvDumpWriter::begin_sequence(const SequenceData& seq) {
  Impl& w = *impl_;
  KVB_CHECK(!w.closed, UsageError, "{}: writer already closed", w.path);
  KVB_CHECK(!w.in_seq, UsageError, "{}: begin_sequence('{}') while sequence '{}' is still open", w.path, seq.id,
            w.seq_id);
  KVB_CHECK(!seq.id.empty() && seq.id.find('/') == std::string::npos && seq.id != "." && seq.id != "..", UsageError,
            "{}: invalid sequence id '{}' (non-empty, no '/')", w.path, seq.id);
  KVB_CHECK(!w.ids.count(seq.id), UsageError, "{}: sequence id '{}' written twice", w.path, seq.id);
  const int64_t T = seq.n_tokens, C = seq.context_len, Q = static_cast<int64_t>(seq.query_positions.size());
  const std::string sp = "/sequences/" + seq.id;
  KVB_CHECK(T >= 1, UsageError, "{}: {}: n_tokens must be >= 1, got {}", w.path, sp, T);
  KVB_CHECK(C >= 1 && C <= T, UsageError, "{}: {}: context_len must be in [1, n_tokens = {}], got {}", w.path, sp, T,
            C);
  KVB_CHECK(Q >= 1, UsageError, "{}: {}: at least one query position is required", w.path, sp);
  for (size_t i = 0; i < seq.query_positions.size(); ++i)
    KVB_CHECK(seq.query_positions[i] >= C, UsageError, "{}: {}: query_positions[{}] = {} is < context_len {}", w.path,
              sp, i, seq.query_positions[i], C);
  KVB_CHECK(seq.tokens.empty() || static_cast<int64_t>(seq.tokens.size()) == T, UsageError,
            "{}: {}: tokens has {} entries, expected n_tokens = {} (or none)", w.path, sp, seq.tokens.size(), T);
  const int64_t W = static_cast<int64_t>(seq.obs_positions.size());
  for (size_t i = 0; i < seq.obs_positions.size(); ++i) {
    const int64_t p = seq.obs_positions[i];
    KVB_CHECK(p >= 0 && p < C, UsageError,
              "{}: {}/obs_positions: obs_positions[{}] = {} is outside [0, context_len = {})", w.path, sp, i, p, C);
    KVB_CHECK(i == 0 || p > seq.obs_positions[i - 1], UsageError,
              "{}: {}/obs_positions: must be strictly increasing, found obs_positions[{}] = {} after {}", w.path, sp, i,
              p, seq.obs_positions[i - 1]);
  }
  Lock g(h5::lock());
  w.seq_group = Hid(H5Gcreate2(w.seqs_group, seq.id.c_str(), H5P_DEFAULT, w.gcpl, H5P_DEFAULT));
  if (!w.seq_group.valid()) throw RuntimeError(fmt::format("{}: {}: cannot create group{}", w.path, sp, h5::error_suffix()));
  const std::string where = w.path + ": " + sp;
  h5::write_attr_int(w.seq_group, where, "n_tokens", T);
  h5::write_attr_int(w.seq_group, where, "context_len", C);
  auto write_1d = [&](const char* name, hid_t ftype, hid_t mtype, const void* data, hsize_t n) {
    Hid space(H5Screate_simple(1, &n, nullptr));
    Hid ds(H5Dcreate2(w.seq_group, name, ftype, space, H5P_DEFAULT, w.dcpl_plain, H5P_DEFAULT));
    if (!ds.valid() || H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
      throw RuntimeError(fmt::format("{}: {}/{}: cannot write dataset{}", w.path, sp, name, h5::error_suffix()));
  };
  if (!seq.tokens.empty()) write_1d("tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, seq.tokens.data(), hsize_t(T));
  write_1d("query_positions", H5T_STD_I64LE, H5T_NATIVE_INT64, seq.query_positions.data(), hsize_t(Q));
  if (W > 0) write_1d("obs_positions", H5T_STD_I64LE, H5T_NATIVE_INT64, seq.obs_positions.data(), hsize_t(W));
  w.layers_group = Hid(H5Gcreate2(w.seq_group, "layers", H5P_DEFAULT, w.gcpl, H5P_DEFAULT));
  if (!w.layers_group.valid())
    throw RuntimeError(fmt::format("{}: {}/layers: cannot create group{}", w.path, sp, h5::error_suffix()));
  w.ids.insert(seq.id);
  w.in_seq = true;
  w.seq_id = seq.id;
  w.T = T;
  w.C = C;
  w.Q = Q;
  w.W = W;
  w.next_layer = 0;
}

void KvDumpWriter::write_layer(int layer, const SequenceData::Layer& d) {
  Impl& w = *impl_;
  KVB_CHECK(w.in_seq, UsageError, "{}: write_layer({}) outside begin_sequence/end_sequence", w.path, layer);
  KVB_CHECK(layer == w.next_layer, UsageError, "{}: sequence '{}': layers must be written in order: expected layer {}, "
            "got {}", w.path, w.seq_id, w.next_layer, layer);
  const ModelShape& s = w.attrs.shape;
  KVB_CHECK(layer < s.n_layers, UsageError, "{}: sequence '{}': layer {} >= n_layers {}", w.path, w.seq_id, layer,
            s.n_layers);
  const std::string lp = fmt::format("/sequences/{}/layers/{}", w.seq_id, layer);
  check_layer_shape(w.path, lp, s, w.T, w.Q, w.W, d);
  Lock g(h5::lock());
  const std::string lname = std::to_string(layer);
  Hid lg(H5Gcreate2(w.layers_group, lname.c_str(), H5P_DEFAULT, w.gcpl, H5P_DEFAULT));
  if (!lg.valid()) throw RuntimeError(fmt::format("{}: {}: cannot create group{}", w.path, lp, h5::error_suffix()));
  h5::write_attr_int(lg, w.path + ": " + lp, "sliding_window", d.sliding_window);
  const hsize_t G = hsize_t(s.n_kv_heads), H = hsize_t(s.n_heads), D = hsize_t(s.head_dim);
  w.write_tensor(lg, "keys", lp + "/keys", d.keys.data(), G, hsize_t(w.T), D, w.opts.dtype);
  w.write_tensor(lg, "values", lp + "/values", d.values.data(), G, hsize_t(w.T), D, w.opts.dtype);
  w.write_tensor(lg, "queries", lp + "/queries", d.queries.data(), H, hsize_t(w.Q), D, w.opts.dtype);
  if (w.W > 0)
    w.write_tensor(lg, "obs_queries", lp + "/obs_queries", d.obs_queries.data(), H, hsize_t(w.W), D, w.opts.dtype);
  if (!d.ref_out.empty())
    w.write_tensor(lg, "ref_out", lp + "/ref_out", d.ref_out.data(), H, hsize_t(w.Q), D, DType::kFloat32);
  ++w.next_layer;
}

void KvDumpWriter::end_sequence() {
  Impl& w = *impl_;
  KVB_CHECK(w.in_seq, UsageError, "{}: end_sequence() without begin_sequence()", w.path);
  KVB_CHECK(w.next_layer == w.attrs.shape.n_layers, UsageError, "{}: sequence '{}': {} of {} layers written", w.path,
            w.seq_id, w.next_layer, w.attrs.shape.n_layers);
  Lock g(h5::lock());
  w.layers_group.reset();
  w.seq_group.reset();
  w.in_seq = false;
  ++w.n_written;
}

void KvDumpWriter::write_sequence(const SequenceData& seq) {
  KVB_CHECK(static_cast<int>(seq.layers.size()) == impl_->attrs.shape.n_layers, UsageError,
            "{}: sequence '{}' has {} layers, expected n_layers = {}", impl_->path, seq.id, seq.layers.size(),
            impl_->attrs.shape.n_layers);
  // Check every layer's shape first, so a shape error leaves nothing half written.
  for (size_t l = 0; l < seq.layers.size(); ++l)
    check_layer_shape(impl_->path, fmt::format("/sequences/{}/layers/{}", seq.id, l), impl_->attrs.shape,
                      seq.n_tokens, static_cast<int64_t>(seq.query_positions.size()),
                      static_cast<int64_t>(seq.obs_positions.size()), seq.layers[l]);
  begin_sequence(seq);
  for (size_t l = 0; l < seq.layers.size(); ++l) write_layer(static_cast<int>(l), seq.layers[l]);
  end_sequence();
}

void KvDumpWriter::close() {
  Impl& w = *impl_;
  KVB_CHECK(!w.closed, UsageError, "{}: writer already closed", w.path);
  KVB_CHECK(!w.in_seq, UsageError, "{}: close() while sequence '{}' is still open", w.path, w.seq_id);
  KVB_CHECK(w.n_written >= 1, UsageError, "{}: a kvdump needs at least one sequence; none was written", w.path);
  {
    Lock g(h5::lock());
    w.seqs_group.reset();
    w.f16_type.reset();
    w.gcpl.reset();
    w.dcpl_plain.reset();
    if (H5Fflush(w.file, H5F_SCOPE_GLOBAL) < 0 || !w.file.reset())
      throw RuntimeError(fmt::format("{}: cannot finish writing {} (disk full?){}", w.path, w.tmp, h5::error_suffix()));
  }
  std::error_code ec;
  std::filesystem::rename(w.tmp, w.path, ec);
  if (ec) throw RuntimeError(fmt::format("cannot rename {} to {}: {}", w.tmp, w.path, ec.message()));
  w.tmp_guard.reset();
  w.closed = true;
}

}  // namespace kvb
