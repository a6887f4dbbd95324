#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <unordered_set>

#include "dump_hdf5.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/protocol.h"

namespace reprocheck {

using hdf5::Handle;

namespace {

void write_string_attribute(hid_t obj, const char* name, const std::string& value) {
  Handle type = hdf5::vlen_string_type();
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const char* p = value.c_str();
  if (!attr.ok() || H5Awrite(attr, type, &p) < 0)
    throw RunError(fmt::format("cannot write attribute '{}': {}", name, hdf5::last_error()));
}

void write_int_attribute(hid_t obj, const char* name, int64_t value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok() || H5Awrite(attr, H5T_NATIVE_INT64, &value) < 0)
    throw RunError(fmt::format("cannot write attribute '{}': {}", name, hdf5::last_error()));
}

}  // namespace

struct DumpWriter::Impl {
  Handle file;
  Handle tensors;
  Handle dcpl;    // dataset creation: no modification times (cheaper, and equal runs give equal files)
  std::mutex mu;  // backward hooks may run on autograd's device threads
};

namespace {

// Checks the destination before the temporary file is made.
std::string checked_destination(const std::string& path, bool overwrite) {
  if (files::is_directory(path))
    throw InputError(fmt::format("output '{}' is a directory; name a file such as run.h5", path));
  if (files::exists(path) && !overwrite)
    throw InputError(
        fmt::format("output '{}' already exists; pass --force to overwrite it, or choose another name", path));
  return path;
}

}  // namespace

DumpWriter::DumpWriter(std::string path, bool overwrite, bool hashes_only)
    : impl_(std::make_unique<Impl>()),
      file_(checked_destination(path, overwrite), "dump", !overwrite),
      hashes_only_(hashes_only) {
  hdf5::quiet();
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
  H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);  // closing the file closes what is still open in it
  impl_->file = Handle(H5Fcreate(file_.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
  if (!impl_->file.ok())
    throw InputError(fmt::format("cannot write dump '{}': {} ({}); check that the folder is writable", path,
                                 hdf5::last_error(), std::strerror(errno)));
  impl_->tensors = Handle(H5Gcreate2(impl_->file, "tensors", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  impl_->dcpl = Handle(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_obj_track_times(impl_->dcpl, 0);
  set_attribute(attr::kFormat, kDumpFormatName);
  set_attribute(attr::kFormatVersion, static_cast<int64_t>(kDumpFormatVersion));
  set_attribute(attr::kCapture, hashes_only ? "hashes" : "full");
}

// The HDF5 file is closed before PendingFile removes the uncommitted temporary.
DumpWriter::~DumpWriter() {
  impl_->tensors.reset();
  impl_->file.reset();
}

void DumpWriter::set_attribute(const std::string& name, const std::string& value) {
  if (H5Aexists(impl_->file, name.c_str()) > 0) H5Adelete(impl_->file, name.c_str());
  write_string_attribute(impl_->file, name.c_str(), value);
}

void DumpWriter::set_attribute(const std::string& name, int64_t value) {
  if (H5Aexists(impl_->file, name.c_str()) > 0) H5Adelete(impl_->file, name.c_str());
  write_int_attribute(impl_->file, name.c_str(), value);
}

const TensorMeta& DumpWriter::write(TensorMeta meta, const void* data, size_t nbytes, const uint64_t* hash,
                                    bool keep_data) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  hdf5::quiet();  // writes may come from a background thread
  const DType dtype = dtype_from_name(meta.dtype);
  meta.numel = 1;
  for (auto d : meta.shape) meta.numel *= d;
  if (static_cast<size_t>(meta.numel) * dtype_info(dtype).size != nbytes)
    throw RunError(fmt::format("internal error writing '{}': {} bytes for {} elements of {}", meta.tensor_name(),
                               nbytes, meta.numel, meta.dtype));
  meta.order = static_cast<int64_t>(index_.size());
  meta.hash = hash ? *hash : hash_bytes(data, nbytes);
  if (!keep_data && !keeps_data(meta)) {
    meta.dataset = kHashOnlyXxh3;
    index_.push_back(std::move(meta));
    return index_.back();
  }
  std::string local = fmt::format("{:06d}", meta.order);
  meta.dataset = "tensors/" + local;

  Handle type = hdf5::file_type(dtype);
  std::vector<hsize_t> dims(meta.shape.begin(), meta.shape.end());
  Handle space(meta.shape.empty() ? H5Screate(H5S_SCALAR)
                                  : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  Handle ds(H5Dcreate2(impl_->tensors, local.c_str(), type, space, H5P_DEFAULT, impl_->dcpl, H5P_DEFAULT), H5Dclose);
  if (!ds.ok() || (nbytes > 0 && H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
    throw RunError(fmt::format("cannot write tensor '{}' to dump '{}': {}; check free disk space", meta.tensor_name(),
                               path(), hdf5::last_error()));
  bytes_ += nbytes;
  index_.push_back(std::move(meta));
  return index_.back();
}

const TensorMeta& DumpWriter::write_hash(TensorMeta meta, uint64_t hash, bool words) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!hashes_only_) throw RunError("internal error: write_hash on a dump that keeps data");
  dtype_from_name(meta.dtype);
  meta.numel = 1;
  for (auto d : meta.shape) meta.numel *= d;
  meta.order = static_cast<int64_t>(index_.size());
  meta.hash = hash;
  meta.dataset = words ? kHashOnlyWords : kHashOnlyXxh3;
  index_.push_back(std::move(meta));
  return index_.back();
}

void DumpWriter::keep_data_from(const std::string& plan_path) {
  std::ifstream in(plan_path);
  if (!in)
    throw InputError(
        fmt::format("cannot read the capture plan '{}': {}; run the check again", plan_path, std::strerror(errno)));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) keep_.insert(line);
}

void DumpWriter::commit() {
  hdf5::quiet();
  if (invariants_checked()) {
    std::unordered_set<std::string> keys;
    for (const auto& m : index_)
      if (!keys.insert(m.key()).second)
        throw RunError(fmt::format("invariant broken: two records of '{}' share the key {}", file_.path(), m.key()));
  }
  std::vector<hdf5::IndexRow> rows(index_.size());
  for (size_t i = 0; i < index_.size(); ++i) {
    const auto& m = index_[i];
    rows[i] = hdf5::IndexRow{m.order,
                             m.step,
                             to_string(m.phase),
                             m.layer.c_str(),
                             m.layer_type.c_str(),
                             to_string(m.kind),
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
  Handle type = hdf5::index_type();
  hsize_t n = rows.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle ds(H5Dcreate2(impl_->file, "index", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds.ok() || (n > 0 && H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()) < 0))
    throw RunError(fmt::format("cannot write the index of dump '{}': {}", path(), hdf5::last_error()));
  write_int_attribute(impl_->file, "tensor_count", static_cast<int64_t>(n));
  ds.reset();
  impl_->tensors.reset();
  if (H5Fclose(impl_->file.get()) < 0)
    throw RunError(fmt::format("cannot close dump '{}': {}", path(), hdf5::last_error()));
  impl_->file = Handle();
  file_.commit();
}

}  // namespace reprocheck
