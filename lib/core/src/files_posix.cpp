#include <dirent.h>
#include <fmt/format.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "reprocheck/error.h"
#include "reprocheck/files.h"

namespace reprocheck::files {

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_name(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool remove_tree(const std::string& path) {
  if (!exists(path)) return true;
  if (!is_directory(path)) return unlink(path.c_str()) == 0;
  auto rm = [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); };
  return nftw(path.c_str(), rm, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

std::string temp_root() {
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

std::string make_temp_dir(const std::string& prefix, const std::string& parent) {
  std::string tmpl = (parent.empty() ? temp_root() : parent) + "/" + prefix + "XXXXXX";
  if (!mkdtemp(tmpl.data()))
    throw RunError(fmt::format("cannot create a temporary folder '{}': {}; check TMPDIR and free space", tmpl,
                               std::strerror(errno)));
  return tmpl;
}

size_t count_entries(const std::string& dir) {
  size_t n = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (auto* e = readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
    closedir(d);
  }
  return n;
}

PendingFile::PendingFile(std::string path, std::string what)
    : path_(std::move(path)), what_(std::move(what)) {
  if (is_directory(path_))
    throw InputError(fmt::format("cannot write {} '{}': it is a directory; name a file", what_, path_));
  std::string dir = parent_dir(path_);
  if (!is_directory(dir))
    throw InputError(
        fmt::format("cannot write {} '{}': folder '{}' does not exist; create it first", what_, path_, dir));
  temp_ = fmt::format("{}/.{}.tmp-{}", dir, base_name(path_), getpid());
}

PendingFile::~PendingFile() {
  if (!committed_) std::remove(temp_.c_str());
}

void PendingFile::commit() {
  if (std::rename(temp_.c_str(), path_.c_str()) != 0)
    throw RunError(fmt::format("cannot move the finished {} to '{}': {}", what_, path_, std::strerror(errno)));
  committed_ = true;
}

void write_file_atomically(const std::string& path, const std::string& text, const std::string& what) {
  PendingFile pending(path, what);
  {
    std::ofstream f(pending.temp_path(), std::ios::binary);
    f << text;
    if (!f.flush())
      throw InputError(fmt::format("cannot write {} '{}': {}; check that the folder is writable", what, path,
                                   std::strerror(errno)));
  }
  pending.commit();
}

void copy_file_atomically(const std::string& from, const std::string& to, const std::string& what) {
  PendingFile pending(to, what);
  {
    std::ifstream in(from, std::ios::binary);
    std::ofstream out(pending.temp_path(), std::ios::binary);
    out << in.rdbuf();
    if (!in || !out.flush())
      throw InputError(fmt::format("cannot write {} '{}': {}", what, to, std::strerror(errno)));
  }
  pending.commit();
}

}  // namespace reprocheck::files
