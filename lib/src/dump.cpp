#include "reprocheck/dump.h"

#include <fmt/format.h>
#include <hdf5.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/version.h"

namespace reprocheck {

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return fmt::format("{}.{}.{}", major, minor, release);
}

std::string TensorMeta::tensor_name() const {
  std::string base = layer.empty() ? "<model>" : layer;
  if (kind == "param" || kind == "buffer" || kind == "param_grad") return layer.empty() ? name : layer + "." + name;
  if (kind == "input" || kind == "target" || kind == "loss" || kind == "output") return kind;
  if (!name.empty() && name != "out") return fmt::format("{}[{}]", base, name.substr(name.find('.') + 1));
  return base;
}

std::string TensorMeta::key() const { return fmt::format("{}|{}|{}|{}|{}|{}", step, phase, layer, kind, name, call); }

uint64_t hash_bytes(const void* data, size_t nbytes) { return XXH3_64bits(data, nbytes); }

size_t dtype_size(const std::string& dtype) {
  if (dtype == "float64" || dtype == "int64") return 8;
  if (dtype == "float32" || dtype == "int32") return 4;
  if (dtype == "float16" || dtype == "bfloat16" || dtype == "int16") return 2;
  if (dtype == "int8" || dtype == "uint8" || dtype == "bool") return 1;
  throw InputError(
      fmt::format("unsupported tensor dtype '{}': reprocheck stores float64/32/16, bfloat16, "
                  "int64/32/16/8, uint8 and bool; convert the tensor or skip its layer",
                  dtype));
}

namespace {

// HDF5 identifiers closed on scope exit.
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

// The innermost message on the HDF5 error stack (the most specific one).
std::string hdf5_error() {
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

void quiet_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

Handle vlen_string_type() {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

// The HDF5 type a dtype is stored as (see docs/dump-format.md).
Handle file_type(const std::string& dtype) {
  auto copy = [](hid_t t) { return Handle(H5Tcopy(t), H5Tclose); };
  if (dtype == "float32") return copy(H5T_IEEE_F32LE);
  if (dtype == "float64") return copy(H5T_IEEE_F64LE);
  if (dtype == "float16") {  // IEEE half, as h5py and numpy read it
    Handle t = copy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
  }
  if (dtype == "bfloat16") return copy(H5T_STD_U16LE);  // raw bits; the dtype attribute says bfloat16
  if (dtype == "int8") return copy(H5T_STD_I8LE);
  if (dtype == "uint8") return copy(H5T_STD_U8LE);
  if (dtype == "int16") return copy(H5T_STD_I16LE);
  if (dtype == "int32") return copy(H5T_STD_I32LE);
  if (dtype == "int64") return copy(H5T_STD_I64LE);
  if (dtype == "bool") {  // the enum h5py maps to numpy bool
    Handle t(H5Tenum_create(H5T_NATIVE_INT8), H5Tclose);
    int8_t f = 0, tr = 1;
    H5Tenum_insert(t, "FALSE", &f);
    H5Tenum_insert(t, "TRUE", &tr);
    return t;
  }
  dtype_size(dtype);  // throws with the list of supported dtypes
  return {};
}

void write_attr(hid_t obj, const char* name, const std::string& value) {
  Handle type = vlen_string_type();
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const char* p = value.c_str();
  if (!attr.ok() || H5Awrite(attr, type, &p) < 0)
    throw InputError(fmt::format("cannot write attribute '{}': {}", name, hdf5_error()));
}

template <typename T>
void write_attr_num(hid_t obj, const char* name, T value, hid_t type) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok() || H5Awrite(attr, type, &value) < 0)
    throw InputError(fmt::format("cannot write attribute '{}': {}", name, hdf5_error()));
}

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

struct DumpWriter::Impl {
  Handle file;
  Handle tensors;
  Handle dcpl;    // dataset creation: no modification times (cheaper, and equal runs give equal files)
  std::mutex mu;  // backward hooks may run on autograd's device threads
};

DumpWriter::DumpWriter(std::string path, bool overwrite) : impl_(std::make_unique<Impl>()), path_(std::move(path)) {
  quiet_hdf5();
  if (files::is_directory(path_))
    throw InputError(fmt::format("output '{}' is a directory; name a file such as run.h5", path_));
  if (files::exists(path_) && !overwrite)
    throw InputError(
        fmt::format("output '{}' already exists; pass --force to overwrite it, or choose another name", path_));
  std::string dir = files::parent_dir(path_);
  if (!files::is_directory(dir))
    throw InputError(fmt::format("cannot write dump '{}': folder '{}' does not exist; create it first", path_, dir));
  tmp_path_ = fmt::format("{}/.{}.tmp-{}", dir, files::base_name(path_), getpid());
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
  impl_->file = Handle(H5Fcreate(tmp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
  if (!impl_->file.ok())
    throw InputError(fmt::format("cannot write dump '{}': {} ({}); check that the folder is writable", path_,
                                 hdf5_error(), std::strerror(errno)));
  impl_->tensors = Handle(H5Gcreate2(impl_->file, "tensors", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  impl_->dcpl = Handle(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_obj_track_times(impl_->dcpl, 0);
  set_attribute("format", kDumpFormatName);
  set_attribute("format_version", static_cast<int64_t>(kDumpFormatVersion));
}

DumpWriter::~DumpWriter() {
  if (!committed_) {
    impl_->tensors.reset();
    impl_->file.reset();
    if (!tmp_path_.empty()) std::remove(tmp_path_.c_str());
  }
}

void DumpWriter::set_attribute(const std::string& name, const std::string& value) {
  if (H5Aexists(impl_->file, name.c_str()) > 0) H5Adelete(impl_->file, name.c_str());
  write_attr(impl_->file, name.c_str(), value);
}

void DumpWriter::set_attribute(const std::string& name, int64_t value) {
  if (H5Aexists(impl_->file, name.c_str()) > 0) H5Adelete(impl_->file, name.c_str());
  write_attr_num(impl_->file, name.c_str(), value, H5T_NATIVE_INT64);
}

const TensorMeta& DumpWriter::write(TensorMeta meta, const void* data, size_t nbytes, const uint64_t* hash) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  meta.numel = 1;
  for (auto d : meta.shape) meta.numel *= d;
  if (static_cast<size_t>(meta.numel) * dtype_size(meta.dtype) != nbytes)
    throw RunError(fmt::format("internal error writing '{}': {} bytes for {} elements of {}", meta.tensor_name(),
                               nbytes, meta.numel, meta.dtype));
  meta.order = static_cast<int64_t>(index_.size());
  meta.hash = hash ? *hash : hash_bytes(data, nbytes);
  std::string local = fmt::format("{:06d}", meta.order);
  meta.dataset = "tensors/" + local;

  Handle type = file_type(meta.dtype);
  std::vector<hsize_t> dims(meta.shape.begin(), meta.shape.end());
  Handle space(meta.shape.empty() ? H5Screate(H5S_SCALAR)
                                  : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  Handle ds(H5Dcreate2(impl_->tensors, local.c_str(), type, space, H5P_DEFAULT, impl_->dcpl, H5P_DEFAULT), H5Dclose);
  if (!ds.ok() || (nbytes > 0 && H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
    throw RunError(fmt::format("cannot write tensor '{}' to dump '{}': {}; check free disk space", meta.tensor_name(),
                               path_, hdf5_error()));
  bytes_ += nbytes;
  index_.push_back(std::move(meta));
  return index_.back();
}

void DumpWriter::commit() {
  std::vector<IndexRow> rows(index_.size());
  for (size_t i = 0; i < index_.size(); ++i) {
    const auto& m = index_[i];
    rows[i] = IndexRow{m.order,
                       m.step,
                       m.phase.c_str(),
                       m.layer.c_str(),
                       m.layer_type.c_str(),
                       m.kind.c_str(),
                       m.name.c_str(),
                       m.call,
                       m.dtype.c_str(),
                       hvl_t{m.shape.size(), const_cast<int64_t*>(m.shape.data())},
                       m.numel,
                       m.hash,
                       m.input_hash,
                       static_cast<uint8_t>(m.has_input_hash),
                       m.dataset.c_str()};
  }
  Handle type = index_type();
  hsize_t n = rows.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle ds(H5Dcreate2(impl_->file, "index", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds.ok() || (n > 0 && H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()) < 0))
    throw RunError(fmt::format("cannot write the index of dump '{}': {}", path_, hdf5_error()));
  write_attr_num(impl_->file, "tensor_count", static_cast<int64_t>(n), H5T_NATIVE_INT64);
  ds.reset();
  impl_->tensors.reset();
  if (H5Fclose(impl_->file.get()) < 0) throw RunError(fmt::format("cannot close dump '{}': {}", path_, hdf5_error()));
  impl_->file = Handle();
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    throw RunError(fmt::format("cannot move finished dump to '{}': {}", path_, std::strerror(errno)));
  committed_ = true;
}

// ---------------------------------------------------------------------------------------------
// Reader

struct DumpReader::Impl {
  Handle file;
};

DumpReader::~DumpReader() = default;

DumpReader::DumpReader(std::string path) : impl_(std::make_unique<Impl>()), path_(std::move(path)) {
  quiet_hdf5();
  if (!files::exists(path_))
    throw InputError(fmt::format("cannot read dump '{}': no such file; check the path", path_));
  if (H5Fis_hdf5(path_.c_str()) <= 0)
    throw InputError(
        fmt::format("cannot read dump '{}': not an HDF5 file; pass a dump written by 'reprocheck record'", path_));
  impl_->file = Handle(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!impl_->file.ok()) throw InputError(fmt::format("cannot read dump '{}': {}", path_, hdf5_error()));

  // All root attributes, as strings.
  H5Aiterate2(
      impl_->file, H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t loc, const char* name, const H5A_info_t*, void* self) -> herr_t {
        auto* attrs = static_cast<std::map<std::string, std::string>*>(self);
        Handle a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
        Handle t(H5Aget_type(a), H5Tclose);
        if (H5Tget_class(t) == H5T_STRING) {
          Handle str = vlen_string_type();
          if (H5Tis_variable_str(t) > 0) {
            char* p = nullptr;
            if (H5Aread(a, str, &p) >= 0 && p) {
              (*attrs)[name] = p;
              H5free_memory(p);
            }
          } else {
            std::string v(H5Tget_size(t), '\0');
            if (H5Aread(a, t, v.data()) >= 0) (*attrs)[name] = v.c_str();
          }
        } else if (H5Tget_class(t) == H5T_INTEGER) {
          int64_t v = 0;
          if (H5Aread(a, H5T_NATIVE_INT64, &v) >= 0) (*attrs)[name] = std::to_string(v);
        }
        return 0;
      },
      &attributes_);
  if (attribute("format") != kDumpFormatName)
    throw InputError(
        fmt::format("cannot read dump '{}': an HDF5 file but not a reprocheck dump (no format attribute); "
                    "pass a dump written by 'reprocheck record'",
                    path_));
  version_ = std::stoi(attribute("format_version", "0"));
  if (version_ != kDumpFormatVersion)
    throw InputError(
        fmt::format("cannot read dump '{}': format version {}, this reprocheck reads version {}; "
                    "record it again or use the reprocheck that wrote it",
                    path_, version_, kDumpFormatVersion));

  Handle ds(H5Dopen2(impl_->file, "index", H5P_DEFAULT), H5Dclose);
  if (!ds.ok())
    throw InputError(fmt::format("cannot read dump '{}': it has no index (incomplete file?); record it again", path_));
  Handle space(H5Dget_space(ds), H5Sclose);
  hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<IndexRow> rows(static_cast<size_t>(n));
  Handle type = index_type();
  if (n > 0 && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()) < 0)
    throw InputError(fmt::format("cannot read the index of dump '{}': {}", path_, hdf5_error()));
  index_.reserve(rows.size());
  auto s = [](const char* p) { return p ? std::string(p) : std::string(); };
  for (const auto& r : rows) {
    TensorMeta m;
    m.order = r.order;
    m.step = r.step;
    m.phase = s(r.phase);
    m.layer = s(r.layer);
    m.layer_type = s(r.layer_type);
    m.kind = s(r.kind);
    m.name = s(r.name);
    m.call = r.call;
    m.dtype = s(r.dtype);
    const auto* dims = static_cast<const int64_t*>(r.shape.p);
    m.shape.assign(dims, dims + r.shape.len);
    m.numel = r.numel;
    m.hash = r.hash;
    m.input_hash = r.input_hash;
    m.has_input_hash = r.has_input_hash != 0;
    m.dataset = s(r.dataset);
    index_.push_back(std::move(m));
  }
  if (n > 0) {
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(type, space, H5P_DEFAULT, rows.data());
#else
    H5Dvlen_reclaim(type, space, H5P_DEFAULT, rows.data());
#endif
  }
}

std::string DumpReader::attribute(const std::string& name, const std::string& fallback) const {
  auto it = attributes_.find(name);
  return it == attributes_.end() ? fallback : it->second;
}

void DumpReader::read_into(const TensorMeta& meta, void* out, size_t nbytes) const {
  size_t expected = static_cast<size_t>(meta.numel) * dtype_size(meta.dtype);
  if (nbytes != expected)
    throw InputError(
        fmt::format("dump '{}': tensor '{}' has {} bytes, {} asked for", path_, meta.dataset, expected, nbytes));
  if (nbytes == 0) return;
  Handle ds(H5Dopen2(impl_->file, meta.dataset.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok())
    throw InputError(fmt::format("dump '{}' is damaged: tensor '{}' is missing; record it again", path_, meta.dataset));
  Handle type(H5Dget_type(ds), H5Tclose);
  if (H5Tget_size(type) != dtype_size(meta.dtype) || H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    throw InputError(
        fmt::format("dump '{}' is damaged: cannot read tensor '{}': {}", path_, meta.dataset, hdf5_error()));
}

std::vector<std::byte> DumpReader::read(const TensorMeta& meta) const {
  std::vector<std::byte> out(static_cast<size_t>(meta.numel) * dtype_size(meta.dtype));
  read_into(meta, out.data(), out.size());
  return out;
}

}  // namespace reprocheck
