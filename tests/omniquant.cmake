# OmniQuant: backward ops (finite-difference gradient checks in double), the
# LWC/LET quantizer and the per-block trainer, the run end to end.
qs_add_unit_test(test_ops_backward unit/test_ops_backward.c)
qs_add_unit_test(test_omniquant unit/test_omniquant.c)
# omni_tool: test-only, OmniQuant on a whole model in one process (the
# in-memory model the export must equal).
add_executable(omni_tool unit/omni_tool.c)
target_link_libraries(omni_tool PRIVATE qshard_lib)
qs_target_warnings(omni_tool)
qs_add_py_test(omniquant_run tests/py/test_omniquant_run.py LABELS "e2e;mpi;interop" TIMEOUT 900)
set_property(TEST omniquant_run APPEND PROPERTY ENVIRONMENT "QS_OMNI_TOOL=$<TARGET_FILE:omni_tool>")
