# Decides LOADSTAR_HAVE_CUDA. Kernels are built for sm_80 and sm_90 (SPEC §9) unless
# CMAKE_CUDA_ARCHITECTURES is set; CI compiles them even though it cannot run them.
set(LOADSTAR_HAVE_CUDA OFF)
if(NOT LOADSTAR_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    # CMake 3.25 does not know nvcc's C++20 flag (CUDA_STANDARD 20, also inherited from
    # CXX_STANDARD, fails at generate time); nvcc >= 12 accepts -std=c++20.
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(LOADSTAR_HAVE_CUDA ON)
  elseif(LOADSTAR_CUDA STREQUAL "ON")
    message(FATAL_ERROR "LOADSTAR_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "loadstar: CUDA ${LOADSTAR_HAVE_CUDA}")
if(LOADSTAR_HAVE_CUDA)
  # The CUDA module (kernels/module/): built into <build>/lib/loadstar/, which is also
  # <dir of build/deploy/loadstar>/../lib/loadstar, where an installed loadstar looks.
  set(LOADSTAR_CUDA_MODULE_DIR ${PROJECT_BINARY_DIR}/lib/loadstar)
  # The module and the loader that dlopens it must come from the same sources and
  # compiler (they pass C++ objects); the module refuses a loader with another tag.
  set(LOADSTAR_MODULE_ABI
      "${PROJECT_VERSION}-${CMAKE_CXX_COMPILER_ID}-${CMAKE_CXX_COMPILER_VERSION}")
endif()
