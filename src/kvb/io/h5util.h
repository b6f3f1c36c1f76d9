#pragma once
/// Small RAII and error helpers over the HDF5 C API, shared by the kvdump reader/writer and the tests
/// that build malformed files on purpose. Only the C API is used (`#include <hdf5.h>`).
#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace kvb::h5 {

/// The Debian HDF5 build is not thread-safe: every call into the library holds this lock.
std::recursive_mutex& lock();

/// Turn off HDF5's automatic error-stack printing (kvbench reports errors itself, with context).
void silence_errors();

/// The innermost description on HDF5's current error stack (empty when none); clears the stack.
std::string last_error();
/// " (HDF5: <last_error()>)" or "" when the stack is empty: appended to failure messages.
std::string error_suffix();

/// Owns one HDF5 identifier of any kind (file, group, dataset, attribute, datatype, dataspace,
/// property list) and closes it with the matching H5*close. Negative ids are "invalid".
class Hid {
 public:
  Hid() = default;
  explicit Hid(hid_t id) : id_(id) {}
  ~Hid() { reset(); }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  Hid(Hid&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      o.id_ = -1;
    }
    return *this;
  }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: pass straight to the C API
  bool valid() const { return id_ >= 0; }
  /// Closes now; returns false when HDF5 reported a failure while closing (e.g. a failed flush).
  bool reset();

 private:
  hid_t id_ = -1;
};

/// Human name of a datatype: "float16", "float32", "float64", "int32", "uint16", "string",
/// "compound", "enum", "16-bit float (non-IEEE layout)", ...
std::string describe_type(hid_t type);
/// Shape of a dataspace as "[2, 528, 64]" ("scalar" for rank 0).
std::string dims_str(const std::vector<hsize_t>& dims);

/// IEEE binary16, little endian: the type numpy/h5py call float16 (built the way h5py builds it).
/// The caller owns the returned id.
hid_t make_f16_type();
/// True when `type` is an IEEE binary16 layout (any byte order).
bool is_ieee_f16(hid_t type);
/// A variable-length UTF-8 string type, as h5py writes Python str attributes. Caller owns it.
hid_t make_vlen_str_type();

/// Scalar attribute writers (throw kvb::RuntimeError naming `where` on failure).
/// Strings are variable-length UTF-8, integers int64, floats float64 — what h5py writes for str/int/float.
void write_attr_string(hid_t obj, const std::string& where, const char* name, const std::string& v);
void write_attr_int(hid_t obj, const std::string& where, const char* name, int64_t v);
void write_attr_double(hid_t obj, const std::string& where, const char* name, double v);

/// Whether a single-component link `name` exists under `loc` (false on any error).
bool link_exists(hid_t loc, const char* name);

}  // namespace kvb::h5
