// HDF5 helpers shared by the dump writer and reader. Not a public header.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>

#include "reprocheck/dtype.h"

namespace reprocheck::hdf5 {

// An HDF5 identifier closed on scope exit.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  ~Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

// The innermost message on this thread's HDF5 error stack.
std::string last_error();
// Turns off HDF5's printing of its error stack (reprocheck reports errors itself).
void quiet();
Handle vlen_string_type();
// The HDF5 type a dtype is stored as (see docs/dump-format.md).
Handle file_type(DType dtype);

// One row of /index, in memory.
struct IndexRow {
  int64_t order;
  int32_t step;
  const char* phase;
  const char* layer;
  const char* layer_type;
  const char* kind;
  const char* name;
  int32_t call;
  const char* dtype;
  hvl_t shape;
  int64_t numel;
  uint64_t hash;
  uint64_t input_hash;
  uint8_t has_input_hash;
  const char* dataset;
};
Handle index_type();

}  // namespace reprocheck::hdf5
