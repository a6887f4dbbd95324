#pragma once

#include <string>

namespace reprocheck {

inline constexpr const char* kVersion = "0.1.0";

// HDF5 library version "1.10.8" (from the dump module, which owns all HDF5 calls).
std::string hdf5_version();

}  // namespace reprocheck
