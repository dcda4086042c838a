/* test_partition.c — the block partition against brute force and against the
 * O(P·n²) dynamic program it replaced (kept here as the plain reference), the
 * cost model's numbers against formulas written out here from the
 * architecture, stages × replicas, and the planner's bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schedulers/partition.h"

/* Enumerates every way to cut n items into k non-empty contiguous ranges. */
static double brute(const double *c, int n, int k, int start)
{
    if (k == 1) {
        double s = 0;
        for (int i = start; i < n; i++) s += c[i];
        return s;
    }
    double best = INFINITY, s = 0;
    for (int end = start + 1; end <= n - (k - 1); end++) {
        s += c[end - 1];
        double rest = brute(c, n, k - 1, end);
        double m = s > rest ? s : rest;
        if (m < best) best = m;
    }
    return best;
}

static void test_partition_optimal(void **state)
{
    (void)state;
    srand(7);
    qs_error err;
    for (int trial = 0; trial < 300; trial++) {
        int n = 1 + rand() % 12, k = 1 + rand() % n;
        double c[12];
        for (int i = 0; i < n; i++) c[i] = (double)(1 + rand() % 20);
        int starts[13];
        assert_int_equal(qs_partition_linear(c, n, k, starts, &err), QS_OK);
        assert_int_equal(starts[0], 0);
        assert_int_equal(starts[k], n);
        double mx = 0;
        for (int r = 0; r < k; r++) {
            assert_true(starts[r + 1] > starts[r]); /* non-empty, increasing */
            double s = 0;
            for (int i = starts[r]; i < starts[r + 1]; i++) s += c[i];
            if (s > mx) mx = s;
        }
        assert_true(fabs(mx - brute(c, n, k, 0)) < 1e-9);
    }
    double c[3] = {1, 1, 1};
    int starts[5];
    assert_int_equal(qs_partition_linear(c, 3, 4, starts, &err), QS_ERR_INPUT);
}

/* The dynamic program qs_partition_linear used to be (O(parts·n²)): the plain
 * reference. best[k][i]: minimal max-sum of the first i items in k ranges;
 * ties keep the earliest start of the last range. */
static void dp_reference(const double *costs, int n, int parts, int *starts)
{
    size_t w = (size_t)n + 1;
    double *prefix = calloc(w, sizeof *prefix);
    double *best = malloc(sizeof(double) * w * (size_t)(parts + 1));
    int *cut = malloc(sizeof(int) * w * (size_t)(parts + 1));
    assert_non_null(prefix);
    assert_non_null(best);
    assert_non_null(cut);
    for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + costs[i];
    for (size_t i = 0; i < w * (size_t)(parts + 1); i++) best[i] = INFINITY, cut[i] = 0;
    best[0] = 0;
    for (int k = 1; k <= parts; k++) {
        for (int i = k; i <= n - (parts - k); i++) {
            double b = INFINITY;
            int bc = k - 1;
            for (int j = k - 1; j < i; j++) {
                double prev = best[(size_t)(k - 1) * w + (size_t)j];
                if (prev == INFINITY) continue;
                double last = prefix[i] - prefix[j];
                double m = prev > last ? prev : last;
                if (m < b * (1 - 1e-12)) b = m, bc = j;
            }
            best[(size_t)k * w + (size_t)i] = b;
            cut[(size_t)k * w + (size_t)i] = bc;
        }
    }
    starts[parts] = n;
    int i = n;
    for (int k = parts; k >= 1; k--) {
        int j = cut[(size_t)k * w + (size_t)i];
        starts[k - 1] = j;
        i = j;
    }
    free(prefix), free(best), free(cut);
}

static double max_range(const double *c, const int *starts, int k)
{
    double mx = 0;
    for (int r = 0; r < k; r++) {
        double s = 0;
        for (int i = starts[r]; i < starts[r + 1]; i++) s += c[i];
        if (s > mx) mx = s;
    }
    return mx;
}

static void assert_ranges(const int *starts, int n, int k)
{
    assert_int_equal(starts[0], 0);
    assert_int_equal(starts[k], n);
    for (int r = 0; r < k; r++) assert_true(starts[r + 1] > starts[r]); /* non-empty, increasing */
}

/* Integer costs (exact sums): the same cuts as the dynamic program, ties included. */
static void test_partition_matches_dp_integer_costs(void **state)
{
    (void)state;
    srand(11);
    qs_error err;
    int starts[201], ref[201];
    double c[200];
    for (int trial = 0; trial < 2000; trial++) {
        int n = 1 + rand() % 60, k = 1 + rand() % n;
        int span = 1 + rand() % (trial % 3 == 0 ? 3 : 1000); /* small spans: many ties */
        for (int i = 0; i < n; i++) c[i] = (double)(rand() % span + (trial % 5 == 0 ? 0 : 1));
        assert_int_equal(qs_partition_linear(c, n, k, starts, &err), QS_OK);
        dp_reference(c, n, k, ref);
        assert_ranges(starts, n, k);
        for (int r = 0; r <= k; r++) assert_int_equal(starts[r], ref[r]);
    }
}

/* Real costs: the same bottleneck as the dynamic program. */
static void test_partition_matches_dp_real_costs(void **state)
{
    (void)state;
    srand(12);
    qs_error err;
    int starts[201], ref[201];
    double c[200];
    for (int trial = 0; trial < 1000; trial++) {
        int n = 1 + rand() % 200, k = 1 + rand() % n;
        double scale = pow(10.0, rand() % 13 - 6);
        for (int i = 0; i < n; i++) c[i] = scale * (double)rand() / RAND_MAX;
        assert_int_equal(qs_partition_linear(c, n, k, starts, &err), QS_OK);
        dp_reference(c, n, k, ref);
        assert_ranges(starts, n, k);
        double a = max_range(c, starts, k), b = max_range(c, ref, k);
        assert_true(fabs(a - b) <= 1e-9 * b + 1e-300);
    }
}

/* What the planner and `qshard run` partition: every block the same, the
 * first heavier by the embedding's read. The cuts must be the dynamic
 * program's (a pipelined work dir's numbers depend on them). */
static void test_partition_uniform_like_dp(void **state)
{
    (void)state;
    qs_error err;
    int starts[161], ref[161];
    double c[160];
    for (int n = 1; n <= 160; n += (n < 40 ? 1 : 7)) {
        for (int k = 1; k <= n; k++) {
            for (int i = 0; i < n; i++) c[i] = 2.3202;
            c[0] += (k % 3) * 0.0173;
            assert_int_equal(qs_partition_linear(c, n, k, starts, &err), QS_OK);
            dp_reference(c, n, k, ref);
            for (int r = 0; r <= k; r++) assert_int_equal(starts[r], ref[r]);
        }
    }
}

/* 100,000 blocks into 64 and into 4096 ranges: well under a second of CPU
 * (the dynamic program took minutes), and optimal (the bottleneck is
 * ceil(n/k) blocks plus the first block's extra). */
static void test_partition_large_fast(void **state)
{
    (void)state;
    const int n = 100000;
    double *c = malloc(sizeof(double) * n);
    int *starts = malloc(sizeof(int) * (4096 + 1));
    assert_non_null(c);
    assert_non_null(starts);
    qs_error err;
    srand(13);
    clock_t t0 = clock();
    for (int i = 0; i < n; i++) c[i] = 1.0;
    c[0] = 1.5;
    assert_int_equal(qs_partition_linear(c, n, 64, starts, &err), QS_OK);
    assert_ranges(starts, n, 64);
    assert_true(max_range(c, starts, 64) == 1563.0); /* ceil(100000/64) = 1563 */
    for (int i = 0; i < n; i++) c[i] = (double)rand() / RAND_MAX;
    assert_int_equal(qs_partition_linear(c, n, 4096, starts, &err), QS_OK);
    assert_ranges(starts, n, 4096);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    assert_true(secs < 0.5);
    /* bad costs are refused */
    c[5] = NAN;
    assert_int_equal(qs_partition_linear(c, n, 64, starts, &err), QS_ERR_INPUT);
    c[5] = -1;
    assert_int_equal(qs_partition_linear(c, n, 64, starts, &err), QS_ERR_INPUT);
    free(c);
    free(starts);
}

static qs_model_config bloom176b(void)
{
    qs_model_config c;
    qs_model_config_defaults(&c, QS_ARCH_BLOOM); /* LayerNorm, ALiBi, biases everywhere */
    c.arch = QS_ARCH_BLOOM;
    c.n_layers = 70;
    c.hidden = 14336;
    c.n_heads = c.n_kv_heads = 112;
    c.head_dim = 128;
    c.ffn = 4 * 14336;
    c.vocab = 250880;
    c.norm = QS_NORM_LAYER;
    c.pos = QS_POS_ALIBI;
    c.torch_dtype = QS_DTYPE_BF16;
    return c;
}

static void test_cost_bloom(void **state)
{
    (void)state;
    qs_model_config c = bloom176b();
    qs_cost_params p;
    qs_cost_params_default(&p);
    qs_block_cost bc;
    qs_error err;
    assert_int_equal(qs_cost_block(&c, &p, 1, &bc, &err), QS_OK);
    double h = 14336;
    /* BLOOM block: qkv 3h², dense h², 4h→ and ←4h 8h²; biases 3h+h+4h+h; two LayerNorms 4h. */
    assert_true(bc.params == (int64_t)(12 * h * h + 13 * h));
    /* Largest Hessian: the input of dense_4h_to_h, (4h)² f32. */
    assert_true(bc.bytes_hessian == (uint64_t)(16 * h * h * 4));
    assert_string_equal(bc.largest_hessian, "mlp.dense_4h_to_h");
    double tokens = 128.0 * 2048;
    assert_true(fabs(bc.flops_hessian - tokens * (h * h * 3 + 16 * h * h)) / bc.flops_hessian < 1e-12);
}

static void test_plan_bloom_fits_and_not(void **state)
{
    (void)state;
    qs_model_config c = bloom176b();
    qs_cost_params p;
    qs_cost_params_default(&p);
    qs_plan pl;
    qs_error err;
    assert_int_equal(qs_plan_make(&c, &p, 64, 1, 80ull << 30, 0, &pl, &err), QS_OK);
    assert_true(pl.fits);
    int total = 0;
    for (int r = 0; r < 64; r++) {
        total += pl.stages[r].end_block - pl.stages[r].first_block;
        if (r) assert_int_equal(pl.stages[r].first_block, pl.stages[r - 1].end_block);
    }
    assert_int_equal(total, 70);
    assert_true(pl.stages[0].embed && pl.stages[63].head && !pl.stages[1].embed);
    /* exact: stages run one after another, so the total is at least the sum */
    assert_true(pl.seconds_total >= 70 * pl.stages[0].seconds_block);
    qs_plan_free(&pl);

    assert_int_equal(qs_plan_make(&c, &p, 64, 1, 16ull << 30, 0, &pl, &err), QS_OK);
    assert_false(pl.fits);
    assert_non_null(strstr(pl.why, "device memory"));
    assert_non_null(strstr(pl.why, "dense_4h_to_h"));
    qs_plan_free(&pl);

    assert_int_equal(qs_plan_make(&c, &p, 71, 1, 0, 0, &pl, &err), QS_ERR_INPUT);

    /* pipelined is faster than exact with many ranks */
    qs_plan ex, pi;
    assert_int_equal(qs_plan_make(&c, &p, 8, 1, 0, 0, &ex, &err), QS_OK);
    p.schedule = QS_SCHEDULE_PIPELINED;
    assert_int_equal(qs_plan_make(&c, &p, 8, 1, 0, 0, &pi, &err), QS_OK);
    assert_true(pi.seconds_total < ex.seconds_total / 3);
    qs_plan_free(&ex);
    qs_plan_free(&pi);
}

/* Stages × replicas: the per-replica terms against formulas written out here. */
static void test_cost_replicas(void **state)
{
    (void)state;
    qs_model_config c = bloom176b();
    qs_cost_params p;
    qs_cost_params_default(&p);
    qs_error err;
    qs_block_cost one, rep;
    assert_int_equal(qs_cost_block(&c, &p, 1, &one, &err), QS_OK);
    assert_int_equal(qs_cost_block(&c, &p, 3, &rep, &err), QS_OK);
    const double h = 14336, N = 128, L = 2048;
    /* 3 replicas: ceil(128/3) = 43 rows each for the forwards and the Hessians */
    assert_int_equal(rep.rows_per_replica, 43);
    assert_true(fabs(rep.seconds_hessian - one.flops_hessian * 43 / N / p.device_flops) < 1e-12 * rep.seconds_hessian);
    /* true-sequential: one forward per block (each stage resumes from the previous boundary); re-running from
     * the input for every stage would cost 1 + the shares before boundaries 1, 2, 3 */
    assert_true(one.passes == 1.0 && rep.passes == 1.0);
    assert_true(one.passes_recompute > 2.0 && one.passes_recompute < 3.0);
    assert_true(fabs(rep.seconds_forward - one.flops_forward * 43 / N / p.device_flops) < 1e-9);
    /* the factorizations are not divided: (4/3)·d³ per linear, inputs h, h, h, 4h */
    const double factor = 4.0 / 3.0 * (3 * h * h * h + 64 * h * h * h);
    assert_true(fabs(rep.flops_gptq_factor - factor) < 1e-12 * factor);
    assert_true(rep.seconds_factor == one.seconds_factor);
    /* the sweep is split by output rows: qkv 3h, dense h, h→4h 4h, 4h→h h rows */
    const double sweep = 4 * (ceil(3 * h / 3) * h * h + ceil(h / 3) * h * h + ceil(4 * h / 3) * h * h +
                              ceil(h / 3) * 16 * h * h);
    assert_true(fabs(rep.seconds_sweep - sweep / p.device_flops) < 1e-12 * rep.seconds_sweep);
    /* communication volumes: every Hessian (f32), the codes + f32 scale and zero per group of 128 */
    assert_true(rep.bytes_reduce == 4 * (3 * h * h + 16 * h * h));
    assert_int_equal(rep.n_hessians, 4);
    assert_string_equal(rep.hessian_name[3], "mlp.dense_4h_to_h");
    const double w = 3 * h * h + h * h + 4 * h * h + 4 * h * h;
    const double groups_out = 3 * h * (h / 128) + h * (h / 128) + 4 * h * (h / 128) + h * (4 * h / 128);
    assert_true(rep.bytes_gather == w + 8 * groups_out);
    assert_true(rep.bytes_handoff == N * L * h * 4);
    /* ring formulas */
    assert_true(qs_cost_allreduce_seconds(100, 1, 10) == 0);
    assert_true(fabs(qs_cost_allreduce_seconds(100, 4, 10) - 2 * 0.75 * 10) < 1e-12);
    assert_true(fabs(qs_cost_allgather_seconds(100, 4, 10) - 0.75 * 10) < 1e-12);
    /* memory per replica: the boundary rows shrink, the Hessian does not */
    assert_true(rep.bytes_act_boundary == 2 * 43 * L * h * 4);
    assert_true(rep.bytes_hessian == one.bytes_hessian);
}

/* Placement: stage-major ranks, 8 to a node. */
static void test_plan_placement(void **state)
{
    (void)state;
    qs_model_config c = bloom176b();
    qs_cost_params p;
    qs_cost_params_default(&p);
    qs_error err;
    qs_plan pl;
    /* 16 stages × 4 replicas: stage 0 = ranks 0-3 on node 0, stage 1 = 4-7 on node 0, stage 2 = 8-11 on node 1 */
    assert_int_equal(qs_plan_make(&c, &p, 64, 4, 0, 0, &pl, &err), QS_OK);
    assert_int_equal(pl.n_stages, 16);
    assert_false(pl.stages[0].reduce_across_nodes);
    assert_false(pl.stages[0].handoff_across_nodes); /* 0-3 → 4-7: one node */
    assert_true(pl.stages[1].handoff_across_nodes);  /* 4-7 → 8-11: node 0 → node 1 */
    assert_true(pl.stages[15].seconds_handoff == 0);
    const double intra = 2 * 0.75 * pl.block.bytes_reduce / p.intra_bytes_per_s;
    assert_true(fabs(pl.stages[0].seconds_reduce - intra) < 1e-12 * intra);
    /* exact: the total is the sum of the stages plus the hand-offs */
    double sum = 0;
    for (int s = 0; s < 16; s++) sum += pl.stages[s].seconds + pl.stages[s].seconds_handoff;
    assert_true(fabs(pl.seconds_total - sum) < 1e-9 * sum);
    qs_plan_free(&pl);
    /* 2 stages × 32: the all-reduce crosses nodes */
    assert_int_equal(qs_plan_make(&c, &p, 64, 32, 0, 0, &pl, &err), QS_OK);
    assert_true(pl.stages[0].reduce_across_nodes && pl.stages[0].handoff_across_nodes);
    const double inter = 2 * 31.0 / 32 * pl.block.bytes_reduce / p.link_bytes_per_s;
    assert_true(fabs(pl.stages[1].seconds_reduce - inter) < 1e-12 * inter);
    qs_plan_free(&pl);
    /* chosen: the fewest stages that fit; 64 replicas with 80 GiB */
    assert_int_equal(qs_plan_make(&c, &p, 64, 0, 80ull << 30, 0, &pl, &err), QS_OK);
    assert_true(pl.replicas_chosen && pl.n_stages == 1 && pl.n_replicas == 64 && pl.fits);
    assert_int_equal(pl.n_options, 7); /* 1, 2, 4, ..., 64 stages */
    for (int i = 1; i < pl.n_options; i++) assert_true(pl.options[i].stages > pl.options[i - 1].stages);
    /* at least 6x shorter than 64 stages of one replica (docs/scheduling.md) */
    assert_true(pl.options[6].seconds > 6 * pl.seconds_total);
    qs_plan_free(&pl);
    /* when only 2 replicas' worth of rows exist, the fewest stages are 32 */
    p.calib_rows = 2;
    assert_int_equal(qs_plan_make(&c, &p, 64, 0, 0, 0, &pl, &err), QS_OK);
    assert_int_equal(pl.n_stages, 32);
    qs_plan_free(&pl);
    p.calib_rows = 128;
    assert_int_equal(qs_plan_make(&c, &p, 64, 5, 0, 0, &pl, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "does not divide"));
    assert_int_equal(qs_plan_make(&c, &p, 131, 0, 0, 0, &pl, &err), QS_ERR_INPUT);
}

/* Bounds: configs and parameters past them are refused, never overflowed. */
static void test_plan_bounds(void **state)
{
    (void)state;
    qs_model_config c = bloom176b();
    qs_cost_params p;
    qs_cost_params_default(&p);
    qs_error err;
    qs_plan pl;
    qs_block_cost bc;
    c.hidden = 500000000; /* 12·h² = 3e18 parameters per block */
    c.ffn = 4 * c.hidden;
    c.n_heads = c.n_kv_heads = 1;
    c.head_dim = c.hidden;
    assert_int_equal(qs_cost_block(&c, &p, 1, &bc, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "2^50"));
    c = bloom176b();
    p.calib_rows = INT64_MAX;
    assert_int_equal(qs_plan_make(&c, &p, 64, 0, 0, 0, &pl, &err), QS_ERR_INPUT);
    p.calib_rows = 1 << 20;
    p.calib_len = 1 << 21; /* 2^41 tokens */
    assert_int_equal(qs_plan_make(&c, &p, 64, 0, 0, 0, &pl, &err), QS_ERR_INPUT);
    qs_cost_params_default(&p);
    p.device_flops = INFINITY;
    assert_int_equal(qs_plan_make(&c, &p, 64, 0, 0, 0, &pl, &err), QS_ERR_INPUT);
    p.device_flops = 1e-300;
    assert_int_equal(qs_plan_make(&c, &p, 64, 0, 0, 0, &pl, &err), QS_ERR_INPUT);
    qs_cost_params_default(&p);
    assert_int_equal(qs_plan_make(&c, &p, QS_COST_MAX_RANKS + 1, 0, 0, 0, &pl, &err), QS_ERR_INPUT);
    c.n_layers = QS_COST_MAX_BLOCKS + 1;
    assert_int_equal(qs_plan_make(&c, &p, 64, 0, 0, 0, &pl, &err), QS_ERR_INPUT);
    /* the slowest rate allowed still gives finite numbers and a readable time */
    c = bloom176b();
    p.device_flops = 1;
    assert_int_equal(qs_plan_make(&c, &p, 64, 1, 0, 0, &pl, &err), QS_OK);
    assert_true(isfinite(pl.seconds_total) && pl.seconds_total > 1e16);
    char buf[32];
    assert_non_null(strstr(qs_fmt_seconds(pl.seconds_total, buf, 32), "years"));
    qs_plan_free(&pl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partition_optimal),
        cmocka_unit_test(test_partition_matches_dp_integer_costs),
        cmocka_unit_test(test_partition_matches_dp_real_costs),
        cmocka_unit_test(test_partition_uniform_like_dp),
        cmocka_unit_test(test_partition_large_fast),
        cmocka_unit_test(test_cost_bloom),
        cmocka_unit_test(test_plan_bloom_fits_and_not),
        cmocka_unit_test(test_cost_replicas),
        cmocka_unit_test(test_plan_placement),
        cmocka_unit_test(test_plan_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
