// Helpers shared by the unit tests.
#pragma once

#include <sys/stat.h>

#include <string>

#include "reprocheck/files.h"

namespace testutil {

#ifdef REPROCHECK_FIXTURE_DIR
inline std::string fixture(const std::string& name) { return std::string(REPROCHECK_FIXTURE_DIR) + "/" + name; }
#endif

// A fresh, empty folder removed with the object.
class TempDir {
 public:
  TempDir() : path_(reprocheck::files::make_temp_dir("reprocheck-test-")) {}
  ~TempDir() { reprocheck::files::remove_tree(path_); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }
  size_t entries() const { return reprocheck::files::count_entries(path_); }

 private:
  std::string path_;
};

inline size_t file_size(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

}  // namespace testutil
