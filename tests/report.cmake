# The run report (report.html), the event stream, the progress display, generation.
qs_add_unit_test(test_report unit/test_report.c)
# report.html of a 2-rank run in Debian's headless chromium (skips without chromium), ~20 s
qs_add_py_test(report_browser tests/py/test_report_browser.py LABELS "e2e;mpi;browser" TIMEOUT 600)
# --log-json, plain/live/quiet progress, the report of an interrupted and resumed run (2 ranks), ~40 s
qs_add_py_test(run_events tests/py/test_run_events.py LABELS "e2e;mpi" TIMEOUT 900)
# qshard generate: greedy, sampled stories, the sampler's distribution (tinystories-656K), ~20 s
qs_add_py_test(generate tests/py/test_generate.py LABELS "e2e;interop" TIMEOUT 600)
# The README's results table against scripts/results.sh (six 2-rank runs of tinystories-656K), ~1 min
qs_add_py_test(readme_results tests/py/test_readme_results.py LABELS "e2e;mpi;docs" TIMEOUT 1200)
