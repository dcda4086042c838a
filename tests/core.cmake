# Base types: status, tensors, dtype conversion, CLI helpers, the CPU backend.
qs_add_unit_test(test_core unit/test_core.c)
add_test(NAME cli_help COMMAND qshard --help)
set_tests_properties(cli_help PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "inspect.*synth.*run")
add_test(NAME cli_unknown_command COMMAND ${CMAKE_COMMAND} -E env $<TARGET_FILE:qshard> no-such-command)
set_tests_properties(cli_unknown_command PROPERTIES LABELS unit WILL_FAIL TRUE)
# The include rules of docs/architecture.md (layers, no module circles).
add_test(NAME layout_layers COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/layout/check_layers.py)
set_tests_properties(layout_layers PROPERTIES LABELS unit ENVIRONMENT "QS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
