// Small POSIX file helpers. The project does not use std::filesystem: the PyPI LibTorch exports
// its own copy of libstdc++'s std::filesystem symbols, which interpose on the system's and crash
// (remove_all calls through a null pointer) in any program that links LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reprocheck::files {

bool exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_regular(const std::string& path);         // a regular file (following links): not a FIFO or device
std::string parent_dir(const std::string& path);  // "." for a bare file name
std::string base_name(const std::string& path);
// Removes a file or a whole folder tree; missing paths are fine. Returns false on failure.
bool remove_tree(const std::string& path);
// Creates a fresh private folder "<parent>/<prefix>XXXXXX"; throws RunError on failure.
std::string make_temp_dir(const std::string& prefix, const std::string& parent = "");
// The system's temporary folder ($TMPDIR or /tmp).
std::string temp_root();
size_t count_entries(const std::string& dir);
std::vector<std::string> entries(const std::string& dir);  // names, without "." and ".."; {} when unreadable
// The size of a file in bytes (following links); 0 when it cannot be read.
uint64_t file_size(const std::string& path);
// The whole file as text; "" when it cannot be read.
std::string read_text_or_empty(const std::string& path);
// The whole file as text. Throws InputError naming `what` when it is missing, not a regular file,
// or unreadable.
std::string read_text(const std::string& path, const std::string& what);

// A file written under a temporary name in its destination's folder and renamed into place by
// commit(): nothing ever appears under the final name unless it is whole. Destroyed without
// commit(), it removes the temporary file. `what` names the file in error messages ("report",
// "dump").
class PendingFile {
 public:
  // Throws InputError when the destination is a folder or its folder does not exist. `exclusive`:
  // the destination must not exist, now or at commit, and another process writing it at the same
  // time is refused (a lock file "<dir>/.<name>.lock" holds the writer's pid; a stale one is taken
  // over).
  PendingFile(std::string path, std::string what, bool exclusive = false);
  ~PendingFile();
  PendingFile(const PendingFile&) = delete;
  PendingFile& operator=(const PendingFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  // Renames the temporary file to the final name. Throws RunError.
  void commit();

 private:
  std::string path_, temp_, what_, lock_;
  bool committed_ = false;
  bool exclusive_ = false;
};

// An exclusive claim on a destination (a file or folder): the lock file "<dir>/.<name>.lock" holds
// this process's pid; a stale one (its process is gone) is taken over. Throws InputError when
// another live process holds it.
class DestinationLock {
 public:
  DestinationLock(const std::string& destination, const std::string& what);
  ~DestinationLock();
  DestinationLock(const DestinationLock&) = delete;
  DestinationLock& operator=(const DestinationLock&) = delete;

 private:
  std::string lock_;
};

// Checks, before any work starts, that `path` can be written: its folder exists and is writable
// and it is not a folder itself. Throws InputError naming `what`.
void check_writable(const std::string& path, const std::string& what);

// Writes `text` to `path` through a PendingFile. Throws InputError (unwritable folder).
void write_file_atomically(const std::string& path, const std::string& text, const std::string& what);

// Copies `from` to `to` through a PendingFile. Throws InputError. `exclusive`: an existing `to` is
// never replaced (PendingFile's exclusive commit).
void copy_file_atomically(const std::string& from, const std::string& to, const std::string& what,
                          bool exclusive = false);

}  // namespace reprocheck::files
