# Transformer forward: ops, block forward, model stages, `qshard eval`.
qs_add_unit_test(test_ops unit/test_ops.c)
qs_add_unit_test(test_block unit/test_block.c)
qs_add_unit_test(test_bf16 unit/test_bf16.c)
qs_add_py_test(test_forward_hf_tiny tests/py/test_forward_hf_tiny.py TIMEOUT 120)
qs_add_py_test(test_forward_tinystories tests/py/test_forward_tinystories.py TIMEOUT 300)
qs_add_py_test(test_forward_stories260k tests/py/test_forward_stories260k.py TIMEOUT 120)
qs_add_py_test(test_eval_ref tests/py/test_eval_ref.py TIMEOUT 120)
qs_add_py_test(test_eval_gptq tests/py/test_eval_gptq.py TIMEOUT 120)
