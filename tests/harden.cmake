# Hardening (issue 15): hostile checkpoints, configs, tokenizers, job files
# and work dirs. Tests that feed hostile bytes to the binary carry the "unit"
# label too, so the CI runs them against the ASan + UBSan build as well.
qs_add_unit_test(test_checkpoint unit/test_checkpoint.c)
