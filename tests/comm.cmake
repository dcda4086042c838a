# The MPI activation transport, with real ranks.
add_executable(test_comm_mpi unit/test_comm_mpi.c)
target_link_libraries(test_comm_mpi PRIVATE qshard_lib)
qs_target_warnings(test_comm_mpi)
foreach(np 2 3)
  add_test(NAME comm_mpi_np${np} COMMAND ${QS_MPIEXEC} ${np} --oversubscribe $<TARGET_FILE:test_comm_mpi>)
  set_tests_properties(comm_mpi_np${np} PROPERTIES LABELS mpi TIMEOUT 120
    ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endforeach()
