# GGUF export: the container writer, the block encodings, the llama mapping.
# gguf_tool is a test-only helper: it quantizes a model directory and writes a
# GGUF the way the ranks of a run do; the Python interop test reads the result
# with PyPI's gguf package (llama.cpp's own reader) and tokenizers.
add_executable(gguf_tool unit/gguf_tool.c)
target_link_libraries(gguf_tool PRIVATE qshard_lib)
qs_target_warnings(gguf_tool)

qs_add_unit_test(test_gguf unit/test_gguf.c)

qs_add_py_test(gguf_interop tests/py/test_gguf_interop.py TIMEOUT 300)
set_property(TEST gguf_interop APPEND PROPERTY ENVIRONMENT "QS_GGUF_TOOL=$<TARGET_FILE:gguf_tool>")
