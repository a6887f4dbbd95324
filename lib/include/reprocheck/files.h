// Small POSIX file helpers. The project does not use std::filesystem: the PyPI LibTorch exports
// its own copy of libstdc++'s std::filesystem symbols, which interpose on the system's and crash
// (remove_all calls through a null pointer) in any program that links LibTorch.
#pragma once

#include <string>

namespace reprocheck::files {

bool exists(const std::string& path);
bool is_directory(const std::string& path);
std::string parent_dir(const std::string& path);  // "." for a bare file name
std::string base_name(const std::string& path);
// Removes a file or a whole folder tree; missing paths are fine. Returns false on failure.
bool remove_tree(const std::string& path);
// Creates a fresh private folder "<parent>/<prefix>XXXXXX"; throws RunError on failure.
std::string make_temp_dir(const std::string& prefix, const std::string& parent = "");
// The system's temporary folder ($TMPDIR or /tmp).
std::string temp_root();
size_t count_entries(const std::string& dir);

}  // namespace reprocheck::files
