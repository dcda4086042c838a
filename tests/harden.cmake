# Hardening (issue 15): hostile checkpoints, configs, tokenizers, job files
# and work dirs. Tests that feed hostile bytes to the binary carry the "unit"
# label too, so the CI runs them against the ASan + UBSan build as well.
qs_add_unit_test(test_checkpoint unit/test_checkpoint.c)
qs_add_py_test(hostile_checkpoint tests/py/test_hostile_checkpoint.py LABELS "unit;interop" TIMEOUT 300)
qs_add_py_test(hostile_model tests/py/test_hostile_model.py LABELS "unit;interop" TIMEOUT 300)
qs_add_py_test(hostile_paths tests/py/test_hostile_paths.py LABELS "interop;mpi" TIMEOUT 300)
qs_add_py_test(work_lock tests/py/test_work_lock.py LABELS "e2e" TIMEOUT 300)
qs_add_py_test(submit_long_work tests/py/test_submit_long_work.py LABELS "unit;slurm" TIMEOUT 120)
qs_add_unit_test(test_hostile_inputs unit/test_hostile_inputs.c)
qs_add_py_test(hostile_export tests/py/test_hostile_export.py LABELS "interop" TIMEOUT 300)
qs_add_py_test(hostile_cli tests/py/test_hostile_cli.py LABELS "unit;interop" TIMEOUT 120)
qs_add_py_test(hostile_weights tests/py/test_hostile_weights.py LABELS "unit;interop" TIMEOUT 300)
qs_add_py_test(slurm_signals tests/py/test_slurm_signals.py LABELS "slurm;e2e" TIMEOUT 900)
set_tests_properties(slurm_signals PROPERTIES RESOURCE_LOCK qs_slurm_cluster)
