// The HDF5 dump of one run: every captured tensor at full precision plus an ordered index.
// Layout and semantics: docs/dump-format.md. All HDF5 calls of the project live in dump_*.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "reprocheck/files.h"
#include "reprocheck/tensor_meta.h"

namespace reprocheck {

inline constexpr int kDumpFormatVersion = 1;
inline constexpr const char* kDumpFormatName = "reprocheck-dump";

// Writes a dump under a temporary name in the destination's folder; commit() writes the index and
// renames it into place. A writer destroyed without commit() removes its temporary file, so a
// crash or an error never leaves a file that looks whole.
class DumpWriter {
 public:
  // Throws InputError when `path` exists and !overwrite, or when its folder is not writable.
  // `hashes_only`: every row records the tensor's hash and no data (attribute capture = "hashes").
  DumpWriter(std::string path, bool overwrite, bool hashes_only = false);
  ~DumpWriter();
  DumpWriter(const DumpWriter&) = delete;
  DumpWriter& operator=(const DumpWriter&) = delete;

  void set_attribute(const std::string& name, const std::string& value);
  void set_attribute(const std::string& name, int64_t value);

  // Stores `nbytes` bytes of `meta.dtype` data with `meta.shape`; fills order, numel, hash and
  // dataset. `hash` may be given when it is already known (e.g. computed on the device).
  // In a hash-only dump only the hash is kept, unless the record is in the plan (keep_data_from)
  // or `keep_data` asks for it (pass 2's drill-down ops).
  const TensorMeta& write(TensorMeta meta, const void* data, size_t nbytes, const uint64_t* hash = nullptr,
                          bool keep_data = false);
  // A hash-only row whose hash was computed elsewhere: XXH3-64 of the bytes, or hash_words when
  // `words` (a CUDA device's hash). Only in a hash-only dump.
  const TensorMeta& write_hash(TensorMeta meta, uint64_t hash, bool words);
  bool hashes_only() const { return hashes_only_; }
  // A hash-only dump that keeps the data of some records (the capture ladder's pass 2): the keys
  // (TensorMeta::key()) listed in `plan_path`, one per line. Throws InputError when it cannot be read.
  void keep_data_from(const std::string& plan_path);
  // Whether write() keeps `m`'s data: a full dump, or a key of the plan. Thread-safe after setup.
  // Without a plan no key is formatted: this runs for every record of a hash-only capture.
  bool keeps_data(const TensorMeta& m) const { return !hashes_only_ || (!keep_.empty() && keep_.count(m.key()) > 0); }
  size_t plan_size() const { return keep_.size(); }

  void commit();
  const std::string& path() const { return file_.path(); }
  size_t tensor_count() const { return index_.size(); }
  uint64_t bytes_written() const { return bytes_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  files::PendingFile file_;
  std::vector<TensorMeta> index_;
  uint64_t bytes_ = 0;
  bool hashes_only_ = false;
  std::unordered_set<std::string> keep_;
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
  // Whether the attribute is stored as an integer (attributes() renders it as decimal text).
  bool integer_attribute(const std::string& name) const { return integer_attributes_.count(name) > 0; }
  // The tensors in execution order.
  const std::vector<TensorMeta>& index() const { return index_; }
  // Whether any row records only its hash (no data to compute statistics from).
  bool hashes_only() const;
  // Raw bytes of one tensor, in the dtype's in-memory layout (bfloat16 and bool as their bits).
  std::vector<std::byte> read(const TensorMeta& meta) const;
  // Checks the dataset against the index row and the data against its stored hash; throws
  // InputError naming the tensor when the dump is damaged.
  void read_into(const TensorMeta& meta, void* out, size_t nbytes) const;
  // Checks a row's dataset without reading it: present, of the row's type and shape, and holding
  // every byte the row claims (call it before allocating for a row). Throws InputError.
  void check_data(const TensorMeta& meta) const;
  // Reads every tensor once, checking each against the index and its stored hash (read_into).
  void verify() const;

  // Opens and verifies the dump at `path` in a child process first: HDF5 itself can crash or hang
  // on a damaged file (a flipped bit in a heap reference), and that must be an InputError naming
  // the file, not the end of this process. Throws InputError.
  // A reader that has not finished after `timeout_s` (0: 20 s plus 1 s per 50 MB) is stopped.
  static void check_isolated(const std::string& path, double timeout_s = 0);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  int version_ = 0;
  std::map<std::string, std::string> attributes_;
  std::set<std::string> integer_attributes_;
  std::vector<TensorMeta> index_;
};

// Merges the dumps of the ranks of one distributed run (rank order) into one dump at `out`: every
// tensor of rank R gets layer "rankR" or "rankR/LAYER", so that runs pair rank by rank. Replicas
// whose parameters disagree after a step (DDP promises identical ones) are listed in the merged
// dump's `replica_notes` attribute (a JSON list of sentences). Throws InputError.
void merge_rank_dumps(const std::vector<std::string>& rank_dumps, const std::string& out);

}  // namespace reprocheck
