/* test_partition.c — the block partition against brute force, and the cost
 * model's numbers against formulas written out here from the architecture. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    qs_cost_block(&c, &p, &bc);
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
    assert_int_equal(qs_plan_make(&c, &p, 64, 80ull << 30, 0, &pl, &err), QS_OK);
    assert_true(pl.fits);
    int total = 0;
    for (int r = 0; r < 64; r++) {
        total += pl.stages[r].end_block - pl.stages[r].first_block;
        if (r) assert_int_equal(pl.stages[r].first_block, pl.stages[r - 1].end_block);
    }
    assert_int_equal(total, 70);
    assert_true(pl.stages[0].embed && pl.stages[63].head && !pl.stages[1].embed);
    /* exact: stages run one after another, so the total is at least the sum */
    assert_true(pl.seconds_total >= 70 * pl.block.seconds);
    qs_plan_free(&pl);

    assert_int_equal(qs_plan_make(&c, &p, 64, 16ull << 30, 0, &pl, &err), QS_OK);
    assert_false(pl.fits);
    assert_non_null(strstr(pl.why, "device memory"));
    assert_non_null(strstr(pl.why, "dense_4h_to_h"));
    qs_plan_free(&pl);

    assert_int_equal(qs_plan_make(&c, &p, 71, 0, 0, &pl, &err), QS_ERR_INPUT);

    /* pipelined is faster than exact with many ranks */
    qs_plan ex, pi;
    assert_int_equal(qs_plan_make(&c, &p, 8, 0, 0, &ex, &err), QS_OK);
    p.schedule = QS_SCHEDULE_PIPELINED;
    assert_int_equal(qs_plan_make(&c, &p, 8, 0, 0, &pi, &err), QS_OK);
    assert_true(pi.seconds_total < ex.seconds_total / 3);
    qs_plan_free(&ex);
    qs_plan_free(&pi);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partition_optimal),
        cmocka_unit_test(test_cost_bloom),
        cmocka_unit_test(test_plan_bloom_fits_and_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
