# Quantization core: grid, RTN, GPTQ, Hessian statistics, `qshard layer`.
qs_add_unit_test(test_quant unit/test_quant.c)
# Many small OpenMP regions between single-threaded reference code: with the
# default (spinning) wait policy the idle team burns the second core that the
# test's own code and other tests need.
set_property(TEST test_quant APPEND PROPERTY ENVIRONMENT OMP_WAIT_POLICY=passive)
qs_add_py_test(layer_cli tests/py/test_layer_cli.py TIMEOUT 300)
