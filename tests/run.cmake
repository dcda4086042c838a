# The run: options and job files.
qs_add_unit_test(test_run_options unit/test_run_options.c)
qs_add_unit_test(test_replica unit/test_replica.c)
qs_add_py_test(run_e2e tests/py/test_run_e2e.py LABELS "e2e;mpi" TIMEOUT 1200)
qs_add_py_test(resume tests/py/test_resume.py LABELS "e2e;mpi" TIMEOUT 1200)
qs_add_py_test(replicas tests/py/test_replicas.py LABELS "e2e;mpi" TIMEOUT 600)
qs_add_py_test(export_interop tests/py/test_export_interop.py LABELS "interop;e2e" TIMEOUT 600)
qs_add_py_test(run_bf16 tests/py/test_run_bf16.py LABELS "e2e;mpi" TIMEOUT 600)
qs_add_py_test(affinity tests/py/test_affinity.py LABELS "mpi" TIMEOUT 300)
