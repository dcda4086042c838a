# The scheduler: optimal contiguous partition, cost model, plans.
qs_add_unit_test(test_partition unit/test_partition.c)
# `qshard plan` from config.json alone: BLOOM-176B fits on 64 × 80 GiB, not on 64 × 40 GiB (exit 4, says why);
# --replicas 1: 64 stages of one rank, as before replicas (with 64 replicas 40 GiB is enough: tests/py/test_plan.py).
add_test(NAME plan_bloom176b_fits COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --ranks 64 --replicas 1 --gpu-mem 80GiB)
set_tests_properties(plan_bloom176b_fits PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "63 +\\[[0-9]+, 70\\).*fits: yes")
add_test(NAME plan_bloom176b_too_small COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --ranks 64 --replicas 1 --gpu-mem 40GiB)
set_tests_properties(plan_bloom176b_too_small PROPERTIES LABELS unit WILL_FAIL TRUE)
add_test(NAME plan_bloom176b_too_small_says_why COMMAND sh -c "$<TARGET_FILE:qshard> plan ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --ranks 64 --replicas 1 --gpu-mem 40GiB; test $? -eq 4")
set_tests_properties(plan_bloom176b_too_small_says_why PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "fits: NO .*dense_4h_to_h")
add_test(NAME plan_llama405b COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/configs/llama-3.1-405b.json --ranks 64 --gpu-mem 80GiB --json)
set_tests_properties(plan_llama405b PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "\"blocks\":126.*\"fits\":true")
add_test(NAME plan_too_many_ranks COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --ranks 71 --replicas 1)
set_tests_properties(plan_too_many_ranks PROPERTIES LABELS unit WILL_FAIL TRUE)
# Stages × replicas, communication terms, hostile flags and configs, 100,000 layers.
qs_add_py_test(plan_cli tests/py/test_plan.py LABELS unit TIMEOUT 120)
# `qshard run` takes --replicas (job key replicas); OmniQuant refuses D > 1 (tests/py/test_replicas.py runs them).
add_test(NAME run_replicas_omniquant_refused COMMAND sh -c "$<TARGET_FILE:qshard> run --replicas 2 --method omniquant --model m --calib c.npy --work w --out o; test $? -eq 2 && echo exit-2")
set_tests_properties(run_replicas_omniquant_refused PROPERTIES LABELS mpi TIMEOUT 60 PASS_REGULAR_EXPRESSION "error: --replicas 2: OmniQuant trains each block on one rank.*exit-2"
  ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
# The job files plan from their own keys (nodes × gpus-per-node, replicas, links).
add_test(NAME plan_bloom_job COMMAND qshard plan ${CMAKE_SOURCE_DIR}/jobs/bloom-176b.ini --model ${CMAKE_SOURCE_DIR}/jobs/configs/bloom-176b.json --gpu-mem 80GiB)
set_tests_properties(plan_bloom_job PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "64 ranks = 1 stage × 64 replicas.*fits: yes")
