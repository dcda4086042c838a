# Transformer forward: ops, block forward, model stages, `qshard eval`.
qs_add_unit_test(test_ops unit/test_ops.c)
