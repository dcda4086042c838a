# The scheduler: optimal contiguous partition, cost model, plans.
qs_add_unit_test(test_partition unit/test_partition.c)
# `qshard plan` from config.json alone: BLOOM-176B fits on 64 × 80 GiB, not on 64 × 40 GiB (exit 4, says why).
add_test(NAME plan_bloom176b_fits COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --ranks 64 --gpu-mem 80GiB)
set_tests_properties(plan_bloom176b_fits PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "63 +\\[[0-9]+, 70\\).*fits: yes")
add_test(NAME plan_bloom176b_too_small COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --ranks 64 --gpu-mem 40GiB)
set_tests_properties(plan_bloom176b_too_small PROPERTIES LABELS unit WILL_FAIL TRUE)
add_test(NAME plan_bloom176b_too_small_says_why COMMAND sh -c "$<TARGET_FILE:qshard> plan ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --ranks 64 --gpu-mem 40GiB; test $? -eq 4")
set_tests_properties(plan_bloom176b_too_small_says_why PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "fits: NO .*dense_4h_to_h")
add_test(NAME plan_llama405b COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/configs/llama-3.1-405b.json --ranks 64 --gpu-mem 80GiB --json)
set_tests_properties(plan_llama405b PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "\"blocks\":126.*\"fits\":true")
add_test(NAME plan_too_many_ranks COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --ranks 71)
set_tests_properties(plan_too_many_ranks PROPERTIES LABELS unit WILL_FAIL TRUE)
