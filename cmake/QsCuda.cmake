# CUDA backend (kernels/cuda/, docs/gpu.md): built when nvcc is found
# (QS_CUDA=AUTO, the default) or demanded (ON); the CPU build never needs it
# (OFF). nvcc is looked for as CMake does (CUDACXX, PATH), then where the
# toolkit installs itself ($CUDA_HOME/bin, $CUDA_PATH/bin, /usr/local/cuda/bin):
# /etc/profile.d puts it on PATH only for login shells, and a CI job's shell
# need not be one. Nothing CUDA runs on the development machines; the tests
# labelled "gpu" skip with exit code 77 where no GPU is present.
set(QS_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures of the CUDA backend (sm_80 A100, sm_90 H100/H200)")
set(QS_HAVE_CUDA OFF)
if(QS_GPU_STANDALONE)
  set(QS_CUDA ON)
endif()
if(NOT QS_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "QS_CUDA=${QS_CUDA}: expected AUTO, ON or OFF")
endif()
# The sanitizer and fuzzer builds check the C code; nvcc takes neither flag set.
if((QS_SANITIZE OR QS_FUZZ) AND NOT QS_CUDA STREQUAL "OFF")
  if(QS_CUDA STREQUAL "ON")
    message(FATAL_ERROR "QS_CUDA=ON cannot be combined with QS_SANITIZE or QS_FUZZ (configure those with -DQS_CUDA=OFF)")
  endif()
  message(STATUS "qshard: sanitizer/fuzzer build: the CUDA backend is left out")
  set(QS_CUDA OFF)
endif()
if(NOT QS_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(QS_NVCC nvcc HINTS ENV CUDA_HOME ENV CUDA_PATH PATH_SUFFIXES bin PATHS /usr/local/cuda/bin)
    if(QS_NVCC)
      set(CMAKE_CUDA_COMPILER ${QS_NVCC})
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(QS_HAVE_CUDA ON)
  elseif(QS_CUDA STREQUAL "ON")
    message(FATAL_ERROR "QS_CUDA=ON but no CUDA compiler was found (looked for nvcc on PATH, in $CUDA_HOME/bin and /usr/local/cuda/bin)")
  endif()
endif()
if(QS_HAVE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES ${QS_CUDA_ARCHITECTURES})
  endif()
  # One CUDA runtime in the process: the shared one that cuBLAS and cuSOLVER use.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  if(CUDAToolkit_VERSION VERSION_LESS 12.0)
    message(FATAL_ERROR "the CUDA backend needs CUDA >= 12 (cuBLAS's 64-bit API); found ${CUDAToolkit_VERSION}")
  endif()
endif()
message(STATUS "qshard: CUDA backend ${QS_HAVE_CUDA}")
if(QS_HAVE_CUDA)
  message(STATUS "qshard: nvcc ${CMAKE_CUDA_COMPILER} (CUDA ${CUDAToolkit_VERSION}), architectures ${CMAKE_CUDA_ARCHITECTURES}")
endif()

# Flags of every CUDA translation unit (kernels/cuda/CMakeLists.txt):
#  --fmad=false  no fused multiply-add contraction: the element-wise math of
#                the QS_HD headers rounds as it does on the CPU, so GPU and
#                CPU agree bit for bit wherever the operation order is the
#                same (GPTQ's sweep, the grid, norms' per-element step);
#  -fno-exceptions  the .cu files are C in C++ clothing: no libstdc++ runtime
#                is linked into the C executables.
function(qs_cuda_target_flags tgt)
  target_compile_options(${tgt} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--fmad=false -Xcompiler=-fno-exceptions,-fno-rtti,-Wall,-Wextra,-Wno-unused-parameter>)
  if(QS_WERROR)
    target_compile_options(${tgt} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Werror>)
  endif()
endfunction()
