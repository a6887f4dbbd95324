# The core's third-party dependencies (Debian packages): HDF5, fmt, nlohmann-json, xxHash. Shared
# by the project build and the Python package's build (python/CMakeLists.txt).
# REPROCHECK_HDF5_ROOT: an unpacked Debian HDF5 (the GPU host's offline bundle, ci/gpu-check) whose
# compiler wrapper cannot be used; otherwise FindHDF5.
set(REPROCHECK_HDF5_ROOT "" CACHE PATH "prefix of an HDF5 to use instead of FindHDF5's")
if(REPROCHECK_HDF5_ROOT)
  find_path(HDF5_INCLUDE_DIRS hdf5.h PATHS ${REPROCHECK_HDF5_ROOT}/include/hdf5/serial ${REPROCHECK_HDF5_ROOT}/include
            NO_DEFAULT_PATH REQUIRED)
  find_library(HDF5_C_LIBRARIES NAMES hdf5_serial hdf5
               PATHS ${REPROCHECK_HDF5_ROOT}/lib/x86_64-linux-gnu/hdf5/serial ${REPROCHECK_HDF5_ROOT}/lib/x86_64-linux-gnu
                     ${REPROCHECK_HDF5_ROOT}/lib NO_DEFAULT_PATH REQUIRED)
  message(STATUS "reprocheck: HDF5 ${HDF5_C_LIBRARIES}")
else()
  find_package(HDF5 REQUIRED COMPONENTS C)
endif()
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
find_library(XXHASH_LIBRARY xxhash REQUIRED)
add_library(reprocheck_xxhash INTERFACE)
target_include_directories(reprocheck_xxhash INTERFACE ${XXHASH_INCLUDE_DIR})
target_link_libraries(reprocheck_xxhash INTERFACE ${XXHASH_LIBRARY})
# XXH3 with the widest vector unit the CPU has (AVX2, AVX-512), chosen at run time: the same hashes,
# several times faster than the library's baseline (SSE2) build on x86-64 (bench/README.md).
include(CheckSymbolExists)
set(CMAKE_REQUIRED_INCLUDES ${XXHASH_INCLUDE_DIR})
set(CMAKE_REQUIRED_LIBRARIES ${XXHASH_LIBRARY})
set(CMAKE_REQUIRED_DEFINITIONS -DXXH_DISPATCH_DISABLE_REPLACE)
check_symbol_exists(XXH3_64bits_dispatch xxh_x86dispatch.h REPROCHECK_XXH3_DISPATCH)
unset(CMAKE_REQUIRED_INCLUDES)
unset(CMAKE_REQUIRED_LIBRARIES)
unset(CMAKE_REQUIRED_DEFINITIONS)
if(REPROCHECK_XXH3_DISPATCH)
  target_compile_definitions(reprocheck_xxhash INTERFACE REPROCHECK_XXH3_DISPATCH=1)
endif()

