# The run: options and job files.
qs_add_unit_test(test_run_options unit/test_run_options.c)
