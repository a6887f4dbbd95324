// Test-only custom ops, loaded with --load-library (and torch.ops.load_library when the test
// models are scripted). Not part of reprocheck.
#include <torch/library.h>
#include <torch/torch.h>

#include <csignal>

namespace {

// Crashes the process the way a faulty extension does.
at::Tensor crash(const at::Tensor& x) {
  std::raise(SIGSEGV);
  return x;
}

}  // namespace

TORCH_LIBRARY(reprocheck_test, m) { m.def("crash(Tensor x) -> Tensor", &crash); }
