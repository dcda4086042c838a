# Every dependency comes from a Debian package and is found here, once.
# The result is one INTERFACE target, qs_deps, that libqshard links.
find_package(PkgConfig REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
find_package(OpenMP REQUIRED COMPONENTS C)

# Parallel HDF5 (libhdf5-openmpi-dev) — the serial one cannot be opened by MPI ranks together.
pkg_check_modules(QS_HDF5 REQUIRED IMPORTED_TARGET hdf5-openmpi)
pkg_check_modules(QS_BLAS REQUIRED IMPORTED_TARGET openblas)
pkg_check_modules(QS_LAPACKE REQUIRED IMPORTED_TARGET lapacke)
pkg_check_modules(QS_CJSON REQUIRED IMPORTED_TARGET libcjson)
pkg_check_modules(QS_XXHASH REQUIRED IMPORTED_TARGET libxxhash)
pkg_check_modules(QS_PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(QS_INIH REQUIRED IMPORTED_TARGET inih)
pkg_check_modules(QS_YAML REQUIRED IMPORTED_TARGET yaml-0.1)

# oneDNN (libdnnl-dev): the bf16 GEMM (Debian's OpenBLAS has no sbgemm).
find_path(QS_DNNL_INCLUDE dnnl.h REQUIRED)
find_library(QS_DNNL_LIB dnnl REQUIRED)

find_package(Threads REQUIRED)
add_library(qs_deps INTERFACE)
target_link_libraries(qs_deps INTERFACE
  MPI::MPI_C OpenMP::OpenMP_C
  PkgConfig::QS_HDF5 PkgConfig::QS_LAPACKE PkgConfig::QS_BLAS
  PkgConfig::QS_CJSON PkgConfig::QS_XXHASH PkgConfig::QS_PCRE2
  PkgConfig::QS_INIH PkgConfig::QS_YAML ${QS_DNNL_LIB} Threads::Threads m)
target_include_directories(qs_deps INTERFACE ${QS_DNNL_INCLUDE})
target_compile_definitions(qs_deps INTERFACE PCRE2_CODE_UNIT_WIDTH=8)
