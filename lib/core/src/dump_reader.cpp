#include <fmt/format.h>

#include "dump_hdf5.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"

namespace reprocheck {

using hdf5::Handle;

namespace {

// All root attributes of `file`, strings and integers, as strings.
std::map<std::string, std::string> read_attributes(hid_t file) {
  std::map<std::string, std::string> attrs;
  H5Aiterate2(
      file, H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t loc, const char* name, const H5A_info_t*, void* out) -> herr_t {
        auto* attrs = static_cast<std::map<std::string, std::string>*>(out);
        Handle a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
        Handle t(H5Aget_type(a), H5Tclose);
        if (H5Tget_class(t) == H5T_STRING) {
          Handle str = hdf5::vlen_string_type();
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
      &attrs);
  return attrs;
}

}  // namespace

struct DumpReader::Impl {
  Handle file;
};

DumpReader::~DumpReader() = default;

DumpReader::DumpReader(std::string path) : impl_(std::make_unique<Impl>()), path_(std::move(path)) {
  hdf5::quiet();
  if (!files::exists(path_))
    throw InputError(fmt::format("cannot read dump '{}': no such file; check the path", path_));
  if (H5Fis_hdf5(path_.c_str()) <= 0)
    throw InputError(
        fmt::format("cannot read dump '{}': not an HDF5 file; pass a dump written by 'reprocheck record'", path_));
  impl_->file = Handle(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!impl_->file.ok()) throw InputError(fmt::format("cannot read dump '{}': {}", path_, hdf5::last_error()));

  attributes_ = read_attributes(impl_->file);
  if (attribute("format") != kDumpFormatName)
    throw InputError(
        fmt::format("cannot read dump '{}': an HDF5 file but not a reprocheck dump (no format attribute); "
                    "pass a dump written by 'reprocheck record'",
                    path_));
  try {
    version_ = std::stoi(attribute("format_version", "0"));
  } catch (const std::exception&) {
    version_ = -1;
  }
  if (version_ != kDumpFormatVersion)
    throw InputError(
        fmt::format("cannot read dump '{}': format version {}, this reprocheck reads version {}; "
                    "record it again or use the reprocheck that wrote it",
                    path_, attribute("format_version", "0"), kDumpFormatVersion));

  Handle ds(H5Dopen2(impl_->file, "index", H5P_DEFAULT), H5Dclose);
  if (!ds.ok())
    throw InputError(fmt::format("cannot read dump '{}': it has no index (incomplete file?); record it again", path_));
  Handle space(H5Dget_space(ds), H5Sclose);
  hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<hdf5::IndexRow> rows(static_cast<size_t>(std::max<hssize_t>(n, 0)));
  Handle type = hdf5::index_type();
  if (n > 0 && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()) < 0)
    throw InputError(fmt::format("cannot read the index of dump '{}': {}", path_, hdf5::last_error()));
  index_.reserve(rows.size());
  auto s = [](const char* p) { return p ? std::string(p) : std::string(); };
  std::string bad;
  for (const auto& r : rows) {
    TensorMeta m;
    m.order = r.order;
    m.step = r.step;
    auto phase = parse_phase(s(r.phase));
    auto kind = parse_kind(s(r.kind));
    if (!phase || !kind) {
      bad = fmt::format("index row {} has unknown {} '{}'", index_.size(), phase ? "kind" : "phase",
                        phase ? s(r.kind) : s(r.phase));
      break;
    }
    m.phase = *phase;
    m.kind = *kind;
    m.layer = s(r.layer);
    m.layer_type = s(r.layer_type);
    m.name = s(r.name);
    m.call = r.call;
    m.dtype = s(r.dtype);
    const auto* dims = static_cast<const int64_t*>(r.shape.p);
    if (dims) m.shape.assign(dims, dims + r.shape.len);
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
  if (!bad.empty()) throw InputError(fmt::format("dump '{}' is damaged: {}; record it again", path_, bad));
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
        fmt::format("dump '{}' is damaged: cannot read tensor '{}': {}", path_, meta.dataset, hdf5::last_error()));
}

std::vector<std::byte> DumpReader::read(const TensorMeta& meta) const {
  std::vector<std::byte> out(static_cast<size_t>(meta.numel) * dtype_size(meta.dtype));
  read_into(meta, out.data(), out.size());
  return out;
}

}  // namespace reprocheck
