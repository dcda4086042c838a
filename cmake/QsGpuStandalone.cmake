# QS_GPU_STANDALONE: only what the GPU check needs on a bare GPU machine
# (bench/gpu_check.sh, docs/gpu.md): the kernels (qs_kernels_core with the
# CUDA backend), the gpu tests and the GPU benchmark. No MPI, BLAS, HDF5 or
# other Debian package: the CUDA toolkit, a C compiler and libc.
if(NOT QS_HAVE_CUDA)
  message(FATAL_ERROR "QS_GPU_STANDALONE needs CUDA (nvcc was not found)")
endif()
find_package(OpenMP COMPONENTS C) # optional: the CPU references then run on one thread
add_subdirectory(kernels)
enable_testing()
include(${PROJECT_SOURCE_DIR}/tests/gpu.cmake)
add_subdirectory(bench/gpu)
