# The run report (report.html), the event stream, the progress display, generation.
qs_add_unit_test(test_report unit/test_report.c)
