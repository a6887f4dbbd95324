# Finds LibTorch and defines the interface target reprocheck::libtorch.
#
# LibTorch comes from Torch_DIR / CMAKE_PREFIX_PATH (a LibTorch of your own, or the torch Python
# package's share/cmake). The PyPI torch wheel is built with CUDA, and its TorchConfig insists on a
# CUDA toolkit at configure time. Where the machine has one, TorchConfig is used as is and
# reprocheck is built with CUDA support (REPROCHECK_WITH_CUDA). Where it has none, the same
# libraries are used without TorchConfig: only the CPU-side headers and libraries are needed to
# build, and the wheel's own CUDA runtime libraries are still found at run time, so CUDA stays
# available to a run whenever the machine has a GPU.
option(REPROCHECK_CUDA "Build with CUDA support when a CUDA toolkit is found" ON)

set(_rc_cuda OFF)
if(REPROCHECK_CUDA)
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(_rc_cuda ON)
  endif()
endif()

add_library(reprocheck_libtorch INTERFACE)
add_library(reprocheck::libtorch ALIAS reprocheck_libtorch)

if(_rc_cuda)
  find_package(Torch REQUIRED)
  target_link_libraries(reprocheck_libtorch INTERFACE ${TORCH_LIBRARIES})
  target_compile_definitions(reprocheck_libtorch INTERFACE REPROCHECK_WITH_CUDA=1)
  message(STATUS "reprocheck: LibTorch ${Torch_VERSION} with CUDA ${CUDAToolkit_VERSION}")
else()
  find_path(_rc_torch_prefix NAMES include/torch/script.h
            PATH_SUFFIXES ../.. ../../.. PATHS ${CMAKE_PREFIX_PATH} ${Torch_DIR} NO_DEFAULT_PATH REQUIRED)
  get_filename_component(_rc_torch_prefix "${_rc_torch_prefix}" ABSOLUTE)
  foreach(_lib torch torch_cpu c10)
    find_library(_rc_lib_${_lib} ${_lib} PATHS ${_rc_torch_prefix}/lib NO_DEFAULT_PATH REQUIRED)
    target_link_libraries(reprocheck_libtorch INTERFACE ${_rc_lib_${_lib}})
  endforeach()
  # libtorch.so pulls in libtorch_cuda.so when present; keep it on the link line so that the CUDA
  # backend registers itself at load time.
  find_library(_rc_lib_torch_cuda torch_cuda PATHS ${_rc_torch_prefix}/lib NO_DEFAULT_PATH)
  if(_rc_lib_torch_cuda)
    target_link_options(reprocheck_libtorch INTERFACE "LINKER:--no-as-needed" ${_rc_lib_torch_cuda} "LINKER:--as-needed")
  endif()
  target_include_directories(reprocheck_libtorch SYSTEM INTERFACE
    ${_rc_torch_prefix}/include ${_rc_torch_prefix}/include/torch/csrc/api/include)
  target_compile_definitions(reprocheck_libtorch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
  set_property(TARGET reprocheck_libtorch APPEND PROPERTY INTERFACE_LINK_DIRECTORIES ${_rc_torch_prefix}/lib)
  message(STATUS "reprocheck: LibTorch at ${_rc_torch_prefix} (no CUDA toolkit: built without CUDA headers)")
endif()

# The torch release LibTorch comes from ("2.11.0" of torch/version.py's "2.11.0+cu130"): the wheel
# pins it and checks it at run time.
find_file(_rc_torch_version_py version.py PATHS "${_rc_torch_prefix}" NO_DEFAULT_PATH)
set(REPROCHECK_TORCH_VERSION "${Torch_VERSION}")
if(_rc_torch_version_py)
  file(STRINGS "${_rc_torch_version_py}" _rc_version_line REGEX "^__version__")
  string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" REPROCHECK_TORCH_VERSION "${_rc_version_line}")
endif()
message(STATUS "reprocheck: torch ${REPROCHECK_TORCH_VERSION}")
