# Model descriptions (config.json, tensor names), `qshard synth` and `qshard convert`.
qs_add_unit_test(test_model_config unit/test_model_config.c)
