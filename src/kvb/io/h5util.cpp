#include "kvb/io/h5util.h"

#include <fmt/format.h>

#include "kvb/core/error.h"

namespace kvb::h5 {

std::recursive_mutex& lock() {
  static std::recursive_mutex m;
  return m;
}

void silence_errors() {
  std::lock_guard<std::recursive_mutex> g(lock());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

namespace {
herr_t walk_cb(unsigned /*n*/, const H5E_error2_t* e, void* data) {
  // Walking downward visits the API call first and the innermost (most specific) cause last.
  if (e != nullptr && e->desc != nullptr && e->desc[0] != '\0') *static_cast<std::string*>(data) = e->desc;
  return 0;
}
}  // namespace

std::string last_error() {
  std::lock_guard<std::recursive_mutex> g(lock());
  std::string out;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_cb, &out);
  H5Eclear2(H5E_DEFAULT);
  return out;
}

std::string error_suffix() {
  const std::string e = last_error();
  return e.empty() ? std::string() : " (HDF5: " + e + ")";
}

bool Hid::reset() {
  if (id_ < 0) return true;
  std::lock_guard<std::recursive_mutex> g(lock());
  herr_t rc = 0;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: rc = H5Fclose(id_); break;
    case H5I_GROUP: rc = H5Gclose(id_); break;
    case H5I_DATASET: rc = H5Dclose(id_); break;
    case H5I_ATTR: rc = H5Aclose(id_); break;
    case H5I_DATATYPE: rc = H5Tclose(id_); break;
    case H5I_DATASPACE: rc = H5Sclose(id_); break;
    case H5I_GENPROP_LST: rc = H5Pclose(id_); break;
    default: rc = H5Idec_ref(id_) < 0 ? -1 : 0; break;
  }
  id_ = -1;
  return rc >= 0;
}

bool is_ieee_f16(hid_t type) {
  if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 2) return false;
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
  return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(type) == 15;
}

std::string describe_type(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  switch (cls) {
    case H5T_INTEGER:
      return fmt::format("{}int{}", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", 8 * size);
    case H5T_FLOAT:
      if (size == 2 && !is_ieee_f16(type)) return "16-bit float (non-IEEE layout)";
      return fmt::format("float{}", 8 * size);
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "vlen";
    case H5T_OPAQUE: return "opaque";
    case H5T_BITFIELD: return "bitfield";
    case H5T_REFERENCE: return "reference";
    case H5T_TIME: return "time";
    default: return "unknown type";
  }
}

std::string dims_str(const std::vector<hsize_t>& dims) {
  if (dims.empty()) return "scalar";
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(static_cast<unsigned long long>(dims[i]));
  }
  return s + "]";
}

hid_t make_f16_type() {
  std::lock_guard<std::recursive_mutex> g(lock());
  // h5py's construction of numpy float16 (h5py/h5t.pyx), so h5py reads it back as float16.
  const hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, 15, 10, 5, 0, 10);
  H5Tset_size(t, 2);
  H5Tset_ebias(t, 15);
  return t;
}

hid_t make_vlen_str_type() {
  std::lock_guard<std::recursive_mutex> g(lock());
  const hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

namespace {
void write_scalar_attr(hid_t obj, const std::string& where, const char* name, hid_t file_type, hid_t mem_type,
                       const void* value) {
  std::lock_guard<std::recursive_mutex> g(lock());
  if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
  Hid space(H5Screate(H5S_SCALAR));
  Hid a(H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid() || H5Awrite(a, mem_type, value) < 0)
    throw RuntimeError(fmt::format("{}: cannot write attribute '{}'{}", where, name, error_suffix()));
}
}  // namespace

void write_attr_string(hid_t obj, const std::string& where, const char* name, const std::string& v) {
  Hid t(make_vlen_str_type());
  const char* p = v.c_str();
  write_scalar_attr(obj, where, name, t, t, &p);
}

void write_attr_int(hid_t obj, const std::string& where, const char* name, int64_t v) {
  write_scalar_attr(obj, where, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

void write_attr_double(hid_t obj, const std::string& where, const char* name, double v) {
  write_scalar_attr(obj, where, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

bool link_exists(hid_t loc, const char* name) {
  std::lock_guard<std::recursive_mutex> g(lock());
  const htri_t e = H5Lexists(loc, name, H5P_DEFAULT);
  if (e < 0) H5Eclear2(H5E_DEFAULT);
  return e > 0;
}

}  // namespace kvb::h5
