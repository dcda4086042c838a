# Tokenizer (HF tokenizer.json BPE in C), token sets and `qshard tokenize`.
qs_add_unit_test(test_tokenizer unit/test_tokenizer.c)

# Test-only driver the Python parity tests use to call encode/decode/token-set
# reading on many inputs in one process.
add_executable(tokenizer_tool unit/tokenizer_tool.c)
target_link_libraries(tokenizer_tool PRIVATE qshard_lib)
qs_target_warnings(tokenizer_tool)

qs_add_py_test(test_tokenize_parity tests/py/test_tokenize_parity.py TIMEOUT 300)
qs_add_py_test(test_tokenize_cli tests/py/test_tokenize_cli.py TIMEOUT 300)
qs_add_py_test(test_tokenize_token_sets tests/py/test_tokenize_token_sets.py TIMEOUT 120)
