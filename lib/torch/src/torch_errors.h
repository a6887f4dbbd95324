// LibTorch errors turned into one-line messages. Not a public header.
#pragma once

#include <exception>
#include <string>

namespace reprocheck::detail {

// The message of a LibTorch error, without its C++ backtrace.
std::string torch_message(const std::exception& e);

// The message without the TorchScript traceback: the last "Error: ..." line when there is one
// (the interpreter puts the real error last), else the first line.
std::string torch_error_summary(const std::string& message);

}  // namespace reprocheck::detail
