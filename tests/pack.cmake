# GPTQ integer packing.
qs_add_unit_test(test_gptq_pack unit/test_gptq_pack.c)
