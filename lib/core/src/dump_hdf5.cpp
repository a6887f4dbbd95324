#include "dump_hdf5.h"

#include <fmt/format.h>

#include <mutex>

#include "reprocheck/version.h"

namespace reprocheck {

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return fmt::format("{}.{}.{}", major, minor, release);
}

namespace hdf5 {

std::string last_error() {
  std::string msg;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &msg);
  return msg.empty() ? "HDF5 error" : msg;
}

void quiet() {
  // HDF5 keeps the printing switch per thread in thread-safe builds: every thread that calls
  // HDF5 turns it off for itself.
  // HDF5 would also close what is still open at exit, flushing to storage that may be full or gone
  // by then: reprocheck closes its files itself.
  static std::once_flag once;
  std::call_once(once, [] { H5dont_atexit(); });
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

Handle vlen_string_type() {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

Handle file_type(DType dtype) {
  auto copy = [](hid_t t) { return Handle(H5Tcopy(t), H5Tclose); };
  switch (dtype) {
    case DType::float32:
      return copy(H5T_IEEE_F32LE);
    case DType::float64:
      return copy(H5T_IEEE_F64LE);
    case DType::float16: {  // IEEE half, as h5py and numpy read it
      Handle t = copy(H5T_IEEE_F32LE);
      H5Tset_fields(t, 15, 10, 5, 0, 10);
      H5Tset_size(t, 2);
      H5Tset_ebias(t, 15);
      return t;
    }
    case DType::bfloat16:  // raw bits; the index's dtype says bfloat16
      return copy(H5T_STD_U16LE);
    case DType::int8:
      return copy(H5T_STD_I8LE);
    case DType::uint8:
      return copy(H5T_STD_U8LE);
    case DType::int16:
      return copy(H5T_STD_I16LE);
    case DType::int32:
      return copy(H5T_STD_I32LE);
    case DType::int64:
      return copy(H5T_STD_I64LE);
    case DType::bool_: {  // the enum h5py maps to numpy bool
      Handle t(H5Tenum_create(H5T_NATIVE_INT8), H5Tclose);
      int8_t f = 0, tr = 1;
      H5Tenum_insert(t, "FALSE", &f);
      H5Tenum_insert(t, "TRUE", &tr);
      return t;
    }
  }
  return {};
}

Handle index_type() {
  Handle str = vlen_string_type();
  Handle shape(H5Tvlen_create(H5T_NATIVE_INT64), H5Tclose);
  Handle t(H5Tcreate(H5T_COMPOUND, sizeof(IndexRow)), H5Tclose);
  H5Tinsert(t, "order", HOFFSET(IndexRow, order), H5T_NATIVE_INT64);
  H5Tinsert(t, "step", HOFFSET(IndexRow, step), H5T_NATIVE_INT32);
  H5Tinsert(t, "phase", HOFFSET(IndexRow, phase), str);
  H5Tinsert(t, "layer", HOFFSET(IndexRow, layer), str);
  H5Tinsert(t, "layer_type", HOFFSET(IndexRow, layer_type), str);
  H5Tinsert(t, "kind", HOFFSET(IndexRow, kind), str);
  H5Tinsert(t, "name", HOFFSET(IndexRow, name), str);
  H5Tinsert(t, "call", HOFFSET(IndexRow, call), H5T_NATIVE_INT32);
  H5Tinsert(t, "dtype", HOFFSET(IndexRow, dtype), str);
  H5Tinsert(t, "shape", HOFFSET(IndexRow, shape), shape);
  H5Tinsert(t, "numel", HOFFSET(IndexRow, numel), H5T_NATIVE_INT64);
  H5Tinsert(t, "hash", HOFFSET(IndexRow, hash), H5T_NATIVE_UINT64);
  H5Tinsert(t, "input_hash", HOFFSET(IndexRow, input_hash), H5T_NATIVE_UINT64);
  H5Tinsert(t, "has_input_hash", HOFFSET(IndexRow, has_input_hash), H5T_NATIVE_UINT8);
  H5Tinsert(t, "dataset", HOFFSET(IndexRow, dataset), str);
  return t;
}

}  // namespace hdf5
}  // namespace reprocheck
