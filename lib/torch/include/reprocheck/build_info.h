// Versions of reprocheck and the libraries it runs with, as loaded in this process.
#pragma once

#include <string>

#include "reprocheck/version.h"

namespace reprocheck {

struct BuildInfo {
  std::string reprocheck = kVersion;
  std::string libtorch;
  std::string cuda;   // CUDA runtime LibTorch was built with, or "none"
  std::string cudnn;  // "9.19.0", or "none"
  std::string hdf5;
  bool cuda_available = false;
  int cuda_devices = 0;
};

BuildInfo build_info();

}  // namespace reprocheck
