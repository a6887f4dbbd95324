#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "reprocheck/error.h"
#include "reprocheck/files.h"
#include "reprocheck/interrupt.h"

namespace reprocheck::files {

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_regular(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

std::string read_text_or_empty(const std::string& path) {
  if (!is_regular(path)) return "";
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string read_text(const std::string& path, const std::string& what) {
  if (!exists(path)) throw InputError(fmt::format("cannot read {} '{}': no such file; check the path", what, path));
  if (is_directory(path)) throw InputError(fmt::format("cannot read {} '{}': it is a folder; pass a file", what, path));
  if (!is_regular(path))
    throw InputError(
        fmt::format("cannot read {} '{}': not a regular file (a device or a pipe); pass a file", what, path));
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw InputError(fmt::format("cannot read {} '{}': {}; check its permissions", what, path, std::strerror(errno)));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
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

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (auto* e = readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) out.emplace_back(e->d_name);
    closedir(d);
  }
  return out;
}

size_t count_entries(const std::string& dir) { return entries(dir).size(); }

namespace {

// Takes the lock file for a destination; false when a live process holds it.
bool take_lock(const std::string& lock) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    int fd = open(lock.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      std::string pid = std::to_string(getpid());
      bool ok = write(fd, pid.data(), pid.size()) == static_cast<ssize_t>(pid.size());
      close(fd);
      return ok;
    }
    if (errno != EEXIST) return false;
    // Held: by a live process, or left by one that died.
    std::ifstream in(lock);
    long holder = 0;
    in >> holder;
    if (holder > 0 && (kill(static_cast<pid_t>(holder), 0) == 0 || errno != ESRCH)) return false;
    unlink(lock.c_str());
  }
  return false;
}

}  // namespace

DestinationLock::DestinationLock(const std::string& destination, const std::string& what) {
  std::string lock = fmt::format("{}/.{}.lock", parent_dir(destination), base_name(destination));
  if (!take_lock(lock))
    throw InputError(
        fmt::format("cannot write {} '{}': another process is writing it (lock file '{}'); wait for "
                    "it, or choose another name",
                    what, destination, lock));
  lock_ = lock;
}

DestinationLock::~DestinationLock() {
  if (!lock_.empty()) unlink(lock_.c_str());
}

void check_writable(const std::string& path, const std::string& what) {
  if (is_directory(path))
    throw InputError(fmt::format("cannot write {} '{}': it is a directory; name a file", what, path));
  std::string dir = parent_dir(path);
  if (!is_directory(dir))
    throw InputError(fmt::format("cannot write {} '{}': folder '{}' does not exist; create it first", what, path, dir));
  if (access(dir.c_str(), W_OK) != 0)
    throw InputError(
        fmt::format("cannot write {} '{}': folder '{}' is not writable ({})", what, path, dir, std::strerror(errno)));
}

PendingFile::PendingFile(std::string path, std::string what, bool exclusive)
    : path_(std::move(path)), what_(std::move(what)), exclusive_(exclusive) {
  check_writable(path_, what_);
  std::string dir = parent_dir(path_);
  temp_ = fmt::format("{}/.{}.tmp-{}", dir, base_name(path_), getpid());
  register_cleanup(temp_);
  if (exclusive_) {
    lock_ = fmt::format("{}/.{}.lock", dir, base_name(path_));
    if (!take_lock(lock_)) {
      lock_.clear();
      unregister_cleanup(temp_);
      throw InputError(
          fmt::format("cannot write {} '{}': another process is writing it (lock file '{}/.{}.lock'); "
                      "wait for it, or choose another name",
                      what_, path_, dir, base_name(path_)));
    }
    register_cleanup(lock_);
  }
}

PendingFile::~PendingFile() {
  if (!committed_) std::remove(temp_.c_str());
  unregister_cleanup(temp_);
  if (!lock_.empty()) {
    unlink(lock_.c_str());
    unregister_cleanup(lock_);
  }
}

void PendingFile::commit() {
  if (exclusive_) {
    // Never replace a file that appeared meanwhile.
    if (renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST)
        throw InputError(
            fmt::format("cannot write {} '{}': it appeared while this run wrote it; the other file was "
                        "kept, choose another name",
                        what_, path_));
      if (errno != EINVAL && errno != ENOSYS)
        throw RunError(fmt::format("cannot move the finished {} to '{}': {}", what_, path_, std::strerror(errno)));
      // A file system without RENAME_NOREPLACE: link, which fails when the name exists.
      if (link(temp_.c_str(), path_.c_str()) != 0)
        throw InputError(fmt::format("cannot write {} '{}': {}", what_, path_, std::strerror(errno)));
      unlink(temp_.c_str());
    }
  } else if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
    throw RunError(fmt::format("cannot move the finished {} to '{}': {}", what_, path_, std::strerror(errno)));
  }
  committed_ = true;
  unregister_cleanup(temp_);
  if (!lock_.empty()) {
    unlink(lock_.c_str());
    unregister_cleanup(lock_);
  }
  lock_.clear();
}

namespace {

// Writes all of `data` to `fd`, then syncs and closes it; false (errno set) on any failure, a short
// write on a full disk included.
bool write_all_and_close(int fd, const char* data, size_t n) {
  bool ok = true;
  while (ok && n > 0) {
    ssize_t written = ::write(fd, data, n);
    if (written < 0 && errno == EINTR) continue;
    ok = written > 0;
    if (ok) {
      data += written;
      n -= static_cast<size_t>(written);
    } else if (written == 0) {
      errno = ENOSPC;
    }
  }
  int saved = errno;
  if (ok && fsync(fd) != 0) ok = false, saved = errno;
  if (::close(fd) != 0 && ok) ok = false, saved = errno;
  errno = saved;
  return ok;
}

int create_temp(const PendingFile& pending) {
  return ::open(pending.temp_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& text, const std::string& what) {
  PendingFile pending(path, what);
  int fd = create_temp(pending);
  if (fd < 0 || !write_all_and_close(fd, text.data(), text.size()))
    throw InputError(fmt::format("cannot write {} '{}': {}; check free space and that the folder is writable", what,
                                 path, std::strerror(errno)));
  pending.commit();
}

void copy_file_atomically(const std::string& from, const std::string& to, const std::string& what, bool exclusive) {
  PendingFile pending(to, what, exclusive);
  int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  int out = in < 0 ? -1 : create_temp(pending);
  bool ok = in >= 0 && out >= 0;
  std::vector<char> buffer(size_t{1} << 20);
  while (ok) {
    ssize_t n = ::read(in, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    for (ssize_t done = 0; ok && done < n;) {
      ssize_t written = ::write(out, buffer.data() + done, static_cast<size_t>(n - done));
      if (written < 0 && errno == EINTR) continue;
      ok = written > 0;
      if (written == 0) errno = ENOSPC;
      if (ok) done += written;
    }
  }
  int saved = errno;
  if (in >= 0) ::close(in);
  if (out >= 0 && !write_all_and_close(out, nullptr, 0) && ok) ok = false, saved = errno;
  errno = saved;
  if (!ok)
    throw InputError(
        fmt::format("cannot write {} '{}': {}; check free space on that storage", what, to, std::strerror(errno)));
  pending.commit();
}

}  // namespace reprocheck::files
