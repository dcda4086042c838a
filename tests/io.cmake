# Model and tensor I/O: safetensors, npy, the model manifest, `qshard inspect`.
# io_tool is a test-only helper exposing the readers/writers to the Python
# interop tests, which compare them with the PyPI safetensors library and NumPy.
add_executable(io_tool unit/io_tool.c)
target_link_libraries(io_tool PRIVATE qshard_lib)
qs_target_warnings(io_tool)

qs_add_unit_test(test_safetensors unit/test_safetensors.c)
qs_add_unit_test(test_npy unit/test_npy.c)

foreach(t safetensors npy)
  qs_add_py_test(io_${t}_interop tests/py/test_io_${t}.py TIMEOUT 120)
  set_property(TEST io_${t}_interop APPEND PROPERTY ENVIRONMENT "QS_IO_TOOL=$<TARGET_FILE:io_tool>")
endforeach()

# Malformed checkpoints through `qshard inspect`: labelled unit too, so the CI
# runs it against the ASan + UBSan build as well.
qs_add_py_test(io_malformed tests/py/test_io_malformed.py LABELS unit interop TIMEOUT 120)
qs_add_py_test(io_inspect tests/py/test_io_inspect.py TIMEOUT 120)
