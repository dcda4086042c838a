# Model descriptions (config.json, tensor names), `qshard synth` and `qshard convert`.
qs_add_unit_test(test_model_config unit/test_model_config.c)
qs_add_unit_test(test_model_llama2c unit/test_model_llama2c.c)
qs_add_unit_test(test_model_synth unit/test_model_synth.c)
qs_add_py_test(model_synth tests/py/test_model_synth.py TIMEOUT 180)
qs_add_py_test(model_convert tests/py/test_model_convert.py TIMEOUT 120)
