# The CUDA backend against the CPU backend (label gpu; each exits 77 and says
# why where there is no GPU). One binary, tests/gpu/gpu_test.c, that needs only
# the CUDA toolkit and libc: this file is also what bench/gpu_check.sh builds
# on a bare GPU machine (cmake/QsGpuStandalone.cmake includes it).
set(QS_GPU_TESTS device sgemm syrk potrf hessian gptq rtn_pack
  ops_norm ops_rope ops_attention ops_elementwise ops_nll_kl)
set(QS_GPU_FIXTURES ${PROJECT_SOURCE_DIR}/tests/gpu/fixtures)
# The cases' inputs must be the same bits on every machine (tests/gpu/gpu_cases.h).
set_source_files_properties(${PROJECT_SOURCE_DIR}/tests/gpu/gpu_cases.c PROPERTIES COMPILE_OPTIONS -ffp-contract=off)
if(QS_HAVE_CUDA)
  add_executable(qs_gpu_test ${PROJECT_SOURCE_DIR}/tests/gpu/gpu_test.c ${PROJECT_SOURCE_DIR}/tests/gpu/gpu_cases.c)
  target_link_libraries(qs_gpu_test PRIVATE qs_kernels_cuda)
  qs_target_warnings(qs_gpu_test)
  # nccl: a one-rank communicator (one GPU allows no more; not in the emulator)
  foreach(t ${QS_GPU_TESTS} nccl)
    add_test(NAME gpu_${t} COMMAND qs_gpu_test ${t} ${QS_GPU_FIXTURES})
    set_tests_properties(gpu_${t} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300)
  endforeach()
endif()
if(TARGET qshard_lib AND CMAKE_CXX_COMPILER)
  # The same gpu tests on the CPU, through the CUDA emulator of tests/gpu_emu/:
  # the CUDA backend's sources as C++ (-DQS_CUDA_EMU), their kernels' threads
  # as fibers, cuBLAS/cuSOLVER as OpenBLAS/LAPACKE. It checks the kernels' and
  # drivers' logic, indexing and the library mappings here; a GPU checks the rest.
  add_library(qs_cuda_emu STATIC
    ${PROJECT_SOURCE_DIR}/tests/gpu_emu/emu.cpp ${PROJECT_SOURCE_DIR}/tests/gpu_emu/emu_backend.cpp
    ${PROJECT_SOURCE_DIR}/tests/gpu_emu/emu_gptq.cpp ${PROJECT_SOURCE_DIR}/tests/gpu_emu/emu_ops.cpp
    ${PROJECT_SOURCE_DIR}/tests/gpu_emu/emu_quant.cpp ${PROJECT_SOURCE_DIR}/tests/gpu_emu/emu_nccl.cpp)
  target_include_directories(qs_cuda_emu BEFORE PUBLIC ${PROJECT_SOURCE_DIR}/tests/gpu_emu)
  target_compile_definitions(qs_cuda_emu PUBLIC QS_CUDA_EMU=1)
  target_compile_options(qs_cuda_emu PRIVATE -ffp-contract=off)
  if(QS_SANITIZE) # the kernels' memory accesses under ASan + UBSan too (scripts/test.sh runs label cuda-emu there)
    target_compile_options(qs_cuda_emu PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
  endif()
  target_link_libraries(qs_cuda_emu PUBLIC qs_kernels_c PkgConfig::QS_BLAS PkgConfig::QS_LAPACKE MPI::MPI_C)
  set_target_properties(qs_cuda_emu PROPERTIES POSITION_INDEPENDENT_CODE ON)
  # The emulated backend as qshard's CUDA module (kernels/cuda/module.c on the
  # emulator): QS_CUDA_MODULE=build/libqshard_cuda_emu.so qshard run --device
  # cuda runs whole commands through the CUDA code paths on the CPU.
  add_library(qshard_cuda_emu MODULE ${PROJECT_SOURCE_DIR}/kernels/cuda/module.c)
  target_link_libraries(qshard_cuda_emu PRIVATE qs_cuda_emu)
  target_link_options(qshard_cuda_emu PRIVATE
    -Wl,--version-script=${PROJECT_SOURCE_DIR}/kernels/cuda/module.map -Wl,-Bsymbolic)
  set_target_properties(qshard_cuda_emu PROPERTIES OUTPUT_NAME qshard_cuda_emu
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR} LINKER_LANGUAGE CXX)
  qs_target_warnings(qshard_cuda_emu)
  add_executable(qs_gpu_test_emu ${PROJECT_SOURCE_DIR}/tests/gpu/gpu_test.c ${PROJECT_SOURCE_DIR}/tests/gpu/gpu_cases.c)
  target_link_libraries(qs_gpu_test_emu PRIVATE qs_cuda_emu)
  set_target_properties(qs_gpu_test_emu PROPERTIES LINKER_LANGUAGE CXX)
  qs_target_warnings(qs_gpu_test_emu)
  # the benchmark's own logic (the sizes over 56: a BLOOM block of hidden 256, 2 heads of 128)
  add_executable(qs_gpu_bench_emu ${PROJECT_SOURCE_DIR}/tests/gpu_emu/emu_bench.cpp)
  target_link_libraries(qs_gpu_bench_emu PRIVATE qs_cuda_emu)
  target_compile_options(qs_gpu_bench_emu PRIVATE -ffp-contract=off)
  foreach(t ${QS_GPU_TESTS} bench)
    if(t STREQUAL "bench")
      add_test(NAME gpu_emu_bench COMMAND qs_gpu_bench_emu --scale 56)
    else()
      add_test(NAME gpu_emu_${t} COMMAND qs_gpu_test_emu ${t} ${QS_GPU_FIXTURES})
    endif()
    set_tests_properties(gpu_emu_${t} PROPERTIES LABELS cuda-emu TIMEOUT 600
      ENVIRONMENT "OMP_NUM_THREADS=2;OPENBLAS_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
  endforeach()
endif()
if(TARGET qshard_lib)
  # The fixtures are the CPU backend's results today (OpenBLAS): checked on every run of the suite.
  add_executable(qs_gpu_fixtures ${PROJECT_SOURCE_DIR}/tests/gpu/gpu_fixtures.c ${PROJECT_SOURCE_DIR}/tests/gpu/gpu_cases.c)
  target_link_libraries(qs_gpu_fixtures PRIVATE qshard_lib)
  qs_target_warnings(qs_gpu_fixtures)
  add_test(NAME gpu_fixtures_current COMMAND qs_gpu_fixtures check ${QS_GPU_FIXTURES})
  set_tests_properties(gpu_fixtures_current PROPERTIES LABELS unit TIMEOUT 120
    ENVIRONMENT "OMP_NUM_THREADS=2;OPENBLAS_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
  # --device on the command line: no GPU → exit 2 with one line; auto → CPU; the pure choices.
  qs_add_unit_test(test_device unit/test_device.c)
  qs_add_py_test(device_cli tests/py/test_device_cli.py LABELS "e2e;mpi" TIMEOUT 120)
  # `qshard layer --device cuda` against --device cpu, end to end (needs a GPU).
  qs_add_py_test(gpu_layer_cli tests/py/test_gpu_layer_cli.py LABELS gpu TIMEOUT 300)
  # The block forward on the device against the CPU's (workers/block.c through
  # be->ops): on a GPU (label gpu) and through the emulator (label cuda-emu).
  add_executable(test_block_device ${PROJECT_SOURCE_DIR}/tests/unit/test_block_device.c)
  target_link_libraries(test_block_device PRIVATE qshard_lib PkgConfig::QS_CMOCKA)
  qs_target_warnings(test_block_device)
  set(QS_GPU_TEST_ENV "OMP_NUM_THREADS=2;OPENBLAS_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
  add_test(NAME gpu_block_forward COMMAND test_block_device)
  set_tests_properties(gpu_block_forward PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300
    ENVIRONMENT "${QS_GPU_TEST_ENV}")
  qs_add_py_test(gpu_run_cli tests/py/test_gpu_run_cli.py LABELS gpu TIMEOUT 600)
  if(TARGET qshard_cuda_emu)
    add_test(NAME emu_block_forward COMMAND test_block_device)
    set_tests_properties(emu_block_forward PROPERTIES LABELS cuda-emu TIMEOUT 600
      ENVIRONMENT "${QS_GPU_TEST_ENV};QS_CUDA_MODULE=$<TARGET_FILE:qshard_cuda_emu>")
    # whole commands through the emulated module: run/eval --device cuda vs cpu, the memory check
    qs_add_py_test(emu_run_cli tests/py/test_gpu_run_cli.py LABELS cuda-emu TIMEOUT 900)
    set_property(TEST emu_run_cli APPEND PROPERTY ENVIRONMENT "QS_CUDA_MODULE=$<TARGET_FILE:qshard_cuda_emu>")
    # 2 ranks with a device each: hand-offs over MPI and over the emulated NCCL
    add_test(NAME emu_run_ranks COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/py/test_gpu_run_cli.py --ranks)
    get_test_property(emu_run_cli ENVIRONMENT QS_EMU_ENV)
    set_tests_properties(emu_run_ranks PROPERTIES LABELS "cuda-emu;mpi" TIMEOUT 900 SKIP_RETURN_CODE 77
      ENVIRONMENT "${QS_EMU_ENV}")
  endif()
endif()
