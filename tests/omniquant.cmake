# OmniQuant: backward ops (finite-difference gradient checks in double), the
# LWC/LET quantizer and the per-block trainer, the run end to end.
qs_add_unit_test(test_ops_backward unit/test_ops_backward.c)
qs_add_unit_test(test_omniquant unit/test_omniquant.c)
