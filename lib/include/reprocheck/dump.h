// The HDF5 dump of one run: every captured tensor at full precision plus an ordered index.
// Layout and semantics: docs/dump-format.md. All HDF5 calls of the project live in dump.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace reprocheck {

inline constexpr int kDumpFormatVersion = 1;
inline constexpr const char* kDumpFormatName = "reprocheck-dump";

// What a captured tensor is. Order is the execution order within the run, assigned on write.
struct TensorMeta {
  int64_t order = -1;
  int32_t step = -1;       // -1 for tensors before the first step (initial parameters)
  std::string phase;       // init, input, forward, output, loss, backward, param_grad, after_step
  std::string layer;       // module path ("" for the model itself) or "path:aten::op#k"
  std::string layer_type;  // demangled module type or op name
  std::string kind;        // activation, grad, param, buffer, input, target, output, loss
  std::string name;        // parameter/buffer name, or "out" / "out.1" for activations
  int32_t call = 0;        // how many times this layer had already been called in this step
  std::string dtype;       // float32, float64, float16, bfloat16, int8, uint8, int16, int32, int64, bool
  std::vector<int64_t> shape;
  int64_t numel = 0;
  uint64_t hash = 0;        // XXH3-64 of the raw little-endian bytes, row-major
  uint64_t input_hash = 0;  // combined XXH3-64 of the layer's tensor inputs (activations)
  bool has_input_hash = false;
  std::string dataset;  // "tensors/000123"

  // A readable name: "layer1.0.conv1", "features.0.weight", "<model>".
  std::string tensor_name() const;
  // The identity used to pair tensors across runs.
  std::string key() const;
};

size_t dtype_size(const std::string& dtype);  // throws InputError for an unknown dtype
uint64_t hash_bytes(const void* data, size_t nbytes);

// Writes a dump under a temporary name in the destination's folder; commit() writes the index and
// renames it into place. A writer destroyed without commit() removes its temporary file, so a
// crash or an error never leaves a file that looks whole.
class DumpWriter {
 public:
  // Throws InputError when `path` exists and !overwrite, or when its folder is not writable.
  DumpWriter(std::string path, bool overwrite);
  ~DumpWriter();
  DumpWriter(const DumpWriter&) = delete;
  DumpWriter& operator=(const DumpWriter&) = delete;

  void set_attribute(const std::string& name, const std::string& value);
  void set_attribute(const std::string& name, int64_t value);

  // Stores `nbytes` bytes of `meta.dtype` data with `meta.shape`; fills order, numel, hash and
  // dataset. `hash` may be given when it is already known (e.g. computed on the device).
  const TensorMeta& write(TensorMeta meta, const void* data, size_t nbytes, const uint64_t* hash = nullptr);

  void commit();
  const std::string& path() const { return path_; }
  size_t tensor_count() const { return index_.size(); }
  uint64_t bytes_written() const { return bytes_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_, tmp_path_;
  std::vector<TensorMeta> index_;
  uint64_t bytes_ = 0;
  bool committed_ = false;
};

class DumpReader {
 public:
  // Throws InputError for a missing file, a file that is not a reprocheck dump, or another
  // format version.
  explicit DumpReader(std::string path);
  ~DumpReader();
  DumpReader(const DumpReader&) = delete;
  DumpReader& operator=(const DumpReader&) = delete;

  const std::string& path() const { return path_; }
  int format_version() const { return version_; }
  // Root attributes, integers rendered as decimal strings.
  const std::map<std::string, std::string>& attributes() const { return attributes_; }
  std::string attribute(const std::string& name, const std::string& fallback = "") const;
  // The tensors in execution order.
  const std::vector<TensorMeta>& index() const { return index_; }
  // Raw bytes of one tensor, in the dtype's in-memory layout (bfloat16 and bool as their bits).
  std::vector<std::byte> read(const TensorMeta& meta) const;
  void read_into(const TensorMeta& meta, void* out, size_t nbytes) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  int version_ = 0;
  std::map<std::string, std::string> attributes_;
  std::vector<TensorMeta> index_;
};

}  // namespace reprocheck
