# The scheduler: optimal contiguous partition, cost model, plans.
qs_add_unit_test(test_partition unit/test_partition.c)
