// Reading a dump. Every value read from the file is checked before it is used: attribute types and
// sizes, the index's type and each row (dtype, shape against the element count, order), and each
// tensor's dataset (shape, type, byte order) and data (against its stored hash). A damaged dump is
// an InputError naming the file and the tensor, never a verdict.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <limits>
#include <set>
#include <thread>

#include "dump_hdf5.h"
#include "reprocheck/dump.h"
#include "reprocheck/error.h"
#include "reprocheck/interrupt.h"
#include "reprocheck/protocol.h"
#include "reprocheck/subprocess.h"

namespace reprocheck {

using hdf5::Handle;

namespace {

constexpr hssize_t kMaxRows = hssize_t{1} << 27;  // ~134 M tensors: far above any real run
constexpr int kMaxRank = 32;

// The root attributes of `file` that are scalar strings or integers, as sanitized strings; others
// (arrays, floats, compounds) are left out.
struct Attributes {
  std::map<std::string, std::string> values;  // integers as decimal text
  std::set<std::string> integers;             // the names stored as integers
};

Attributes read_attributes(hid_t file) {
  Attributes attrs;
  H5Aiterate2(
      file, H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t loc, const char* name, const H5A_info_t*, void* out) -> herr_t {
        auto* all = static_cast<Attributes*>(out);
        auto* attrs = &all->values;
        Handle a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
        if (!a.ok()) return 0;
        Handle space(H5Aget_space(a), H5Sclose);
        Handle t(H5Aget_type(a), H5Tclose);
        if (!space.ok() || !t.ok() || H5Sget_simple_extent_npoints(space) != 1) return 0;
        std::string key = sanitize_text(name);
        if (H5Tget_class(t) == H5T_STRING) {
          if (H5Tis_variable_str(t) > 0) {
            Handle str = hdf5::vlen_string_type();
            char* p = nullptr;
            if (H5Aread(a, str, &p) >= 0 && p) {
              (*attrs)[key] = sanitize_text(p);
              H5free_memory(p);
            }
          } else {
            size_t size = H5Tget_size(t);
            if (size == 0 || size > (size_t{1} << 24)) return 0;
            std::string v(size, '\0');
            if (H5Aread(a, t, v.data()) >= 0) (*attrs)[key] = sanitize_text(v.c_str());
          }
        } else if (H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) <= 8) {
          int64_t v = 0;
          if (H5Aread(a, H5T_NATIVE_INT64, &v) >= 0) {
            (*attrs)[key] = std::to_string(v);
            all->integers.insert(key);
          }
        }
        return 0;
      },
      &attrs);
  return attrs;
}

// Checks one index row; returns why it is damaged, or "".
std::string check_row(const TensorMeta& m, size_t row) {
  if (m.order != static_cast<int64_t>(row)) return fmt::format("index row {} has order {}", row, m.order);
  if (m.step < -1) return fmt::format("index row {} has step {}", row, m.step);
  if (m.call < 0) return fmt::format("index row {} has call {}", row, m.call);
  if (!parse_dtype(m.dtype)) return fmt::format("index row {} has unknown dtype '{}'", row, m.dtype);
  if (m.shape.size() > static_cast<size_t>(kMaxRank))
    return fmt::format("index row {} has {} dimensions", row, m.shape.size());
  int64_t numel = 1;
  for (int64_t d : m.shape) {
    if (d < 0) return fmt::format("index row {} has a negative dimension", row);
    if (d > 0 && numel > std::numeric_limits<int64_t>::max() / 16 / d)
      return fmt::format("index row {} has a shape too large to exist", row);
    numel *= d;
  }
  if (numel != m.numel) return fmt::format("index row {} has {} elements for shape of {}", row, m.numel, numel);
  if (!m.has_data() && m.dataset != kHashOnlyXxh3 && m.dataset != kHashOnlyWords)
    return fmt::format("index row {} names dataset '{}'", row, m.dataset);
  return "";
}

// Whether a dataset's stored type is the one the dump format uses for `dtype` (little-endian).
bool type_matches(hid_t type, DType dtype) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (size != dtype_info(dtype).size) return false;
  if (cls == H5T_ENUM) return dtype == DType::bool_;
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) return false;
  if (H5Tget_order(type) != H5T_ORDER_LE && size > 1) return false;
  if (dtype == DType::bool_) return false;
  if (dtype_info(dtype).floating && dtype != DType::bfloat16) return cls == H5T_FLOAT;
  if (cls != H5T_INTEGER) return false;
  const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
  return dtype == DType::bfloat16 || dtype == DType::uint8 ? !is_signed : is_signed;
}

}  // namespace

struct DumpReader::Impl {
  Handle file;
};

DumpReader::~DumpReader() = default;

namespace {

// The index rows, each checked (known phase, kind and dtype, a shape whose product is numel, order
// equal to the row). Throws InputError for a damaged index.
std::vector<TensorMeta> read_index(hid_t file, const std::string& path_) {
  std::vector<TensorMeta> out;
  auto damaged = [&](const std::string& why) {
    return InputError(fmt::format("dump '{}' is damaged: {}; record it again", path_, why));
  };
  Handle ds(H5Dopen2(file, "index", H5P_DEFAULT), H5Dclose);
  if (!ds.ok())
    throw InputError(fmt::format("cannot read dump '{}': it has no index (incomplete file?); record it again", path_));
  Handle file_type(H5Dget_type(ds), H5Tclose);
  Handle space(H5Dget_space(ds), H5Sclose);
  if (!file_type.ok() || H5Tget_class(file_type) != H5T_COMPOUND || !space.ok() ||
      H5Sget_simple_extent_ndims(space) != 1)
    throw damaged("its index is not a table of tensors");
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n < 0 || n > kMaxRows) throw damaged(fmt::format("its index claims {} tensors", n));
  std::vector<hdf5::IndexRow> rows(static_cast<size_t>(n));
  Handle type = hdf5::index_type();
  if (n > 0 && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()) < 0)
    throw damaged(fmt::format("cannot read its index: {}", hdf5::last_error()));
  out.reserve(rows.size());
  auto text = [](const char* p) { return p ? sanitize_text(p) : std::string(); };
  std::string bad;
  for (const auto& r : rows) {
    TensorMeta m;
    m.order = r.order;
    m.step = r.step;
    auto phase = parse_phase(text(r.phase));
    auto kind = parse_kind(text(r.kind));
    if (!phase || !kind) {
      bad = fmt::format("index row {} has unknown {} '{}'", out.size(), phase ? "kind" : "phase",
                        phase ? text(r.kind) : text(r.phase));
      break;
    }
    m.phase = *phase;
    m.kind = *kind;
    m.layer = text(r.layer);
    m.layer_type = text(r.layer_type);
    m.name = text(r.name);
    m.call = r.call;
    m.dtype = text(r.dtype);
    const auto* dims = static_cast<const int64_t*>(r.shape.p);
    if (r.shape.len > static_cast<size_t>(kMaxRank) || (r.shape.len > 0 && !dims)) {
      bad = fmt::format("index row {} has a broken shape", out.size());
      break;
    }
    if (dims) m.shape.assign(dims, dims + r.shape.len);
    m.numel = r.numel;
    m.hash = r.hash;
    m.input_hash = r.input_hash;
    m.has_input_hash = r.has_input_hash != 0;
    m.dataset = text(r.dataset);
    if (bad = check_row(m, out.size()); !bad.empty()) break;
    out.push_back(std::move(m));
  }
  if (n > 0) {
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(type, space, H5P_DEFAULT, rows.data());
#else
    H5Dvlen_reclaim(type, space, H5P_DEFAULT, rows.data());
#endif
  }
  if (!bad.empty()) throw damaged(bad);
  return out;
}

}  // namespace

DumpReader::DumpReader(std::string path) : impl_(std::make_unique<Impl>()), path_(std::move(path)) {
  hdf5::quiet();
  if (!files::exists(path_))
    throw InputError(fmt::format("cannot read dump '{}': no such file; check the path", path_));
  if (!files::is_regular(path_))
    throw InputError(
        fmt::format("cannot read dump '{}': not a regular file (a folder, FIFO or device); pass a "
                    "dump written by 'reprocheck record'",
                    path_));
  if (H5Fis_hdf5(path_.c_str()) <= 0)
    throw InputError(
        fmt::format("cannot read dump '{}': not an HDF5 file; pass a dump written by 'reprocheck record'", path_));
  impl_->file = Handle(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!impl_->file.ok()) throw InputError(fmt::format("cannot read dump '{}': {}", path_, hdf5::last_error()));

  Attributes attrs = read_attributes(impl_->file);
  attributes_ = std::move(attrs.values);
  integer_attributes_ = attrs.integers;
  if (attribute(attr::kFormat) != kDumpFormatName)
    throw InputError(
        fmt::format("cannot read dump '{}': an HDF5 file but not a reprocheck dump (no format attribute); "
                    "pass a dump written by 'reprocheck record'",
                    path_));
  // Attributes the format documents as integers are integers: the same digits as text are not a
  // dump reprocheck wrote.
  for (const char* name : {"format_version", "tensor_count", "seed", "data_seed", "steps", "threads", "ranks",
                           "benchmark", "model_rng_draws", "dropout_elements"})
    if (attributes_.count(name) && !attrs.integers.count(name))
      throw InputError(
          fmt::format("cannot read dump '{}': its attribute '{}' is text, where a dump holds an integer; "
                      "pass a dump written by reprocheck (record it again)",
                      path_, name));
  const std::string version = attribute(attr::kFormatVersion, "?");
  version_ = version == std::to_string(kDumpFormatVersion) ? kDumpFormatVersion : -1;
  if (version_ != kDumpFormatVersion)
    throw InputError(
        fmt::format("cannot read dump '{}': format version {}, this reprocheck reads version {}; "
                    "record it again or use the reprocheck that wrote it",
                    path_, version, kDumpFormatVersion));

  index_ = read_index(impl_->file, path_);
  if (attributes_.count("ranks"))
    for (auto& m : index_) m.rank = rank_of_layer(m.layer);
}

std::string DumpReader::attribute(const std::string& name, const std::string& fallback) const {
  auto it = attributes_.find(name);
  return it == attributes_.end() ? fallback : it->second;
}

namespace {

struct CheckedDataset {
  Handle ds, type;
};

// Opens a tensor's dataset after checking it against its index row: present, of the row's type and
// shape, and stored whole (its storage holds every byte the row claims: a row that claims 10^12
// elements over a small dataset is refused before anything is allocated for it).
CheckedDataset open_checked(hid_t file, const TensorMeta& meta, const std::string& path) {
  auto damaged = [&](const std::string& why) {
    return InputError(fmt::format("dump '{}' is damaged: tensor '{}' ({}) {}; record it again", path,
                                  meta.tensor_name(), meta.dataset, why));
  };
  if (!meta.has_data())
    throw InputError(
        fmt::format("dump '{}' records only the hash of tensor '{}', not its data; record it again "
                    "with full capture",
                    path, meta.tensor_name()));
  const DType dtype = dtype_from_name(meta.dtype);
  if (H5Lexists(file, meta.dataset.c_str(), H5P_DEFAULT) <= 0) throw damaged("is missing");
  CheckedDataset d{Handle(H5Dopen2(file, meta.dataset.c_str(), H5P_DEFAULT), H5Dclose), Handle()};
  if (!d.ds.ok()) throw damaged("cannot be opened");
  d.type = Handle(H5Dget_type(d.ds), H5Tclose);
  if (!d.type.ok() || !type_matches(d.type, dtype)) throw damaged(fmt::format("is not stored as {}", meta.dtype));
  Handle space(H5Dget_space(d.ds), H5Sclose);
  const int rank = space.ok() ? H5Sget_simple_extent_ndims(space) : -1;
  std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
  if (rank < 0 || rank > kMaxRank || (rank > 0 && H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0))
    throw damaged("has a broken shape");
  if (!std::equal(dims.begin(), dims.end(), meta.shape.begin(), meta.shape.end(),
                  [](hsize_t a, int64_t b) { return a == static_cast<hsize_t>(b); }))
    throw damaged("has another shape than its index row");
  const uint64_t bytes = static_cast<uint64_t>(meta.numel) * dtype_info(dtype).size;
  if (bytes > 0 && H5Dget_storage_size(d.ds) != bytes)
    throw damaged(fmt::format("claims {} element(s) ({} bytes) but its file holds {} bytes", meta.numel, bytes,
                              static_cast<uint64_t>(H5Dget_storage_size(d.ds))));
  return d;
}

}  // namespace

void DumpReader::check_data(const TensorMeta& meta) const {
  hdf5::quiet();
  open_checked(impl_->file, meta, path_);
}

void DumpReader::read_into(const TensorMeta& meta, void* out, size_t nbytes) const {
  hdf5::quiet();
  const size_t expected = static_cast<size_t>(meta.numel) * dtype_size(meta.dtype);
  if (nbytes != expected)
    throw InputError(
        fmt::format("dump '{}': tensor '{}' has {} bytes, {} asked for", path_, meta.dataset, expected, nbytes));
  CheckedDataset d = open_checked(impl_->file, meta, path_);
  if (nbytes > 0 && H5Dread(d.ds, d.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    throw InputError(fmt::format("dump '{}' is damaged: tensor '{}' ({}) cannot be read: {}; record it again", path_,
                                 meta.tensor_name(), meta.dataset, hdf5::last_error()));
  if (hash_bytes(out, nbytes) != meta.hash)
    throw InputError(
        fmt::format("dump '{}' is damaged: tensor '{}' ({}) does not match its stored hash; record it again", path_,
                    meta.tensor_name(), meta.dataset));
}

void DumpReader::verify() const {
  std::vector<std::byte> buffer;
  for (const auto& meta : index_) {
    if (!meta.has_data()) continue;
    check_data(meta);
    buffer.resize(static_cast<size_t>(meta.numel) * dtype_size(meta.dtype));
    read_into(meta, buffer.data(), buffer.size());
  }
}

void DumpReader::check_isolated(const std::string& path, double timeout_s) {
  if (timeout_s <= 0) timeout_s = 20.0 + static_cast<double>(files::file_size(path)) / (50 << 20);
  auto outcome = run_isolated(
      [&]() -> std::string {
        try {
          DumpReader(path).verify();
        } catch (const Error& e) {
          return e.what();
        } catch (const std::exception& e) {
          return fmt::format("cannot read dump '{}': {}", path, e.what());
        }
        return "";
      },
      timeout_s);
  switch (outcome.kind) {
    case IsolatedOutcome::Kind::ok:
      return;
    case IsolatedOutcome::Kind::failed:
      throw InputError(outcome.message);
    case IsolatedOutcome::Kind::timed_out:
      throw InputError(
          fmt::format("dump '{}' is damaged: reading it did not finish in {:g} s; record it again", path, timeout_s));
    case IsolatedOutcome::Kind::crashed:
      break;
  }
  throw InputError(
      fmt::format("dump '{}' is damaged: the HDF5 library {} reading it; record it again", path,
                  outcome.signal ? fmt::format("crashed (signal {})", outcome.signal) : std::string("failed")));
}

bool DumpReader::hashes_only() const {
  for (const auto& m : index_)
    if (!m.has_data()) return true;
  return attribute(attr::kCapture) == "hashes";
}

std::vector<std::byte> DumpReader::read(const TensorMeta& meta) const {
  check_data(meta);  // before anything is allocated for it
  std::vector<std::byte> out(static_cast<size_t>(meta.numel) * dtype_size(meta.dtype));
  read_into(meta, out.data(), out.size());
  return out;
}

}  // namespace reprocheck
