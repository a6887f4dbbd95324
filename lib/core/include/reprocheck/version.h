#pragma once

#include <string>

#include "reprocheck/version_number.h"  // generated from CMake's project(VERSION): kVersion

namespace reprocheck {

// HDF5 library version "1.10.8" (from the dump module, which owns all HDF5 calls).
std::string hdf5_version();

}  // namespace reprocheck
