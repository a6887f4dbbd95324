// The library's one exception hierarchy. Every error a user can cause or meet is one of these, with
// a message of the form "<what> '<where>': <why>; <what to do>" (the tool prefixes
// "reprocheck: error: "). Third-party errors (c10::Error, HDF5) are caught where the library calls
// them and rethrown as one of these, with the path and the detail.
#pragma once

#include <stdexcept>
#include <string>

namespace reprocheck {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  // The process exit code the tool maps this error to (see docs: 2 usage/input, 3 run failed).
  virtual int exit_code() const noexcept { return 2; }
};

// A bad flag or a bad combination of flags.
class UsageError : public Error {
 public:
  using Error::Error;
};

// An input the user pointed at is unreadable or not what it should be (model, dump, library).
class InputError : public Error {
 public:
  using Error::Error;
};

// A run could not complete: the model failed during training, a worker crashed or timed out.
class RunError : public Error {
 public:
  using Error::Error;
  int exit_code() const noexcept override { return 3; }
};

// The first line of a third-party message, without LibTorch's C++ backtrace and trailing blanks.
std::string first_line(const std::string& message);

}  // namespace reprocheck
