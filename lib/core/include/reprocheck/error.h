// The library's one exception hierarchy. Every error a user can cause or meet is one of these, with
// a message of the form "<what> '<where>': <why>; <what to do>" (the tool prefixes kErrorPrefix).
// Third-party errors (c10::Error, HDF5) are caught where the library calls them and rethrown as one
// of these, with the path and the detail.
#pragma once

#include <stdexcept>
#include <string>

#include "reprocheck/exit_codes.h"

namespace reprocheck {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  // The process exit code the tool maps this error to.
  virtual ExitCode exit_code() const noexcept { return ExitCode::usage; }
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
  ExitCode exit_code() const noexcept override { return ExitCode::run_failed; }
};

// The first line of a third-party message, without LibTorch's C++ backtrace and trailing blanks.
std::string first_line(const std::string& message);

// The full error line for the user: kErrorPrefix + message.
std::string error_line(const std::string& message);

// In a worker started by the runner (kErrorFileEnv set): writes `message` to that file, so that the
// runner relays it. Does nothing otherwise. Never throws.
void report_error_to_runner(const std::string& message) noexcept;

}  // namespace reprocheck
