#pragma once

#include <string>

namespace reprocheck {

inline constexpr const char* kVersion = "0.1.0";

struct BuildInfo {
  std::string reprocheck = kVersion;
  std::string libtorch;
  std::string cuda;   // CUDA runtime LibTorch was built with, or "none"
  std::string cudnn;  // "9.19.0", or "none"
  std::string hdf5;
  bool cuda_available = false;
  int cuda_devices = 0;
};

// Versions of reprocheck and the libraries it runs with, as loaded in this process.
BuildInfo build_info();

// HDF5 library version "1.10.8" (from the dump module, which owns all HDF5 calls).
std::string hdf5_version();

}  // namespace reprocheck
