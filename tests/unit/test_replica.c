/* test_replica.c — the pieces of data-parallel replicas that need no MPI
 * (workers/replica.h), against plain code written here:
 *
 *  - the chunk tree: every node splits into two nodes that partition it, and
 *    a tree of K chunks has 2K − 1 nodes;
 *  - the streamed chunk sum (a stack that adds neighbours as soon as they
 *    form a node) equals the tree's plain recursive sum, bit for bit, and
 *    holds at most ceil(log2 K) + 2 partial sums;
 *  - ownership: chunks and GPTQ rows are covered once, rows in whole tiles;
 *  - GPTQ row slices: quantizing rows [r0, r1) alone gives the bits of the
 *    same rows quantized with the whole matrix — for the replicas' 16-row
 *    splits and for arbitrary ones (act-order, dynamic and static groups,
 *    per-channel) — which is what lets replicas split a linear's rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/quant.h"
#include "kernels/tensor.h"
#include "workers/replica.h"

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static float frand(void) { return (float)(2.0 * urand() - 1.0); }

/* ---- the tree ------------------------------------------------------------------------------ */

static int count_nodes(int64_t K, int64_t lo, int64_t hi)
{
    assert_true(qs_chunk_tree_is_node(K, lo, hi));
    if (hi - lo == 1) return 1;
    int64_t m = qs_chunk_tree_mid(lo, hi);
    assert_true(lo < m && m < hi);
    /* the left child is a power-of-two block */
    assert_int_equal((m - lo) & (m - lo - 1), 0);
    return 1 + count_nodes(K, lo, m) + count_nodes(K, m, hi);
}

static void test_tree_structure(void **state)
{
    (void)state;
    for (int64_t K = 1; K <= 70; K++) {
        assert_int_equal(count_nodes(K, 0, K), 2 * K - 1);
        /* is_node agrees: exactly 2K − 1 intervals of [0, K] are nodes */
        int n = 0;
        for (int64_t lo = 0; lo < K; lo++)
            for (int64_t hi = lo + 1; hi <= K; hi++) n += qs_chunk_tree_is_node(K, lo, hi);
        assert_int_equal(n, 2 * K - 1);
    }
}

/* ---- the streamed sum against the plain recursive one ------------------------------------------ */

/* The tree's sum by its definition: left + right, element by element (upper triangle). */
static void plain_tree_sum(float *const *leaf, int64_t n, int64_t lo, int64_t hi, float *out)
{
    if (hi - lo == 1) {
        memcpy(out, leaf[lo], sizeof(float) * (size_t)(n * n));
        return;
    }
    int64_t m = qs_chunk_tree_mid(lo, hi);
    float *r = malloc(sizeof(float) * (size_t)(n * n));
    assert_non_null(r);
    plain_tree_sum(leaf, n, lo, m, out);
    plain_tree_sum(leaf, n, m, hi, r);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) out[i * n + j] = out[i * n + j] + r[i * n + j];
    free(r);
}

static void test_chunk_sum_matches_tree(void **state)
{
    (void)state;
    const int64_t n = 37;
    const int64_t Ks[] = {1, 2, 3, 5, 6, 8, 13, 16, 33};
    for (size_t t = 0; t < sizeof Ks / sizeof *Ks; t++) {
        int64_t K = Ks[t];
        float **leaf = calloc((size_t)K, sizeof *leaf);
        assert_non_null(leaf);
        qs_chunk_sum s;
        qs_error err;
        assert_int_equal(qs_chunk_sum_init(&s, n, K, &err), QS_OK);
        int64_t samples = 0;
        for (int64_t c = 0; c < K; c++) {
            leaf[c] = malloc(sizeof(float) * (size_t)(n * n));
            assert_non_null(leaf[c]);
            /* values of mixed magnitude: the order of the additions shows in the bits */
            for (int64_t i = 0; i < n * n; i++) leaf[c][i] = frand() * (float)pow(10.0, 6.0 * urand() - 3.0);
            float *b;
            assert_int_equal(qs_chunk_sum_leaf(&s, c, &b, &err), QS_OK);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = i; j < n; j++) b[i * n + j] = leaf[c][i * n + j];
            qs_chunk_sum_close(&s, c + 1);
            samples += c + 1;
        }
        int depth = 0;
        while ((1LL << depth) < K) depth++;
        assert_true(s.peak <= depth + 2);
        float *h = malloc(sizeof(float) * (size_t)(n * n)), *ref = malloc(sizeof(float) * (size_t)(n * n));
        assert_non_null(h);
        assert_non_null(ref);
        int64_t got = 0;
        assert_int_equal(qs_chunk_sum_finish(&s, NULL, 0, h, &got, &err), QS_OK);
        assert_int_equal(got, samples);
        plain_tree_sum(leaf, n, 0, K, ref);
        float scale = (float)(2.0 / (double)samples);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i; j < n; j++) {
                float want = ref[i * n + j] * scale;
                assert_memory_equal(&h[i * n + j], &want, sizeof want);
                assert_memory_equal(&h[j * n + i], &want, sizeof want);
            }
        qs_chunk_sum_free(&s);
        for (int64_t c = 0; c < K; c++) free(leaf[c]);
        free(leaf), free(h), free(ref);
    }
}

/* Chunks must arrive in order: a gap is an error, not a silently different sum. */
static void test_chunk_sum_order(void **state)
{
    (void)state;
    qs_chunk_sum s;
    qs_error err;
    assert_int_equal(qs_chunk_sum_init(&s, 4, 5, &err), QS_OK);
    float *b;
    assert_int_equal(qs_chunk_sum_leaf(&s, 2, &b, &err), QS_OK); /* a replica may start anywhere */
    memset(b, 0, 16 * sizeof(float));
    qs_chunk_sum_close(&s, 1);
    assert_int_equal(qs_chunk_sum_leaf(&s, 4, &b, &err), QS_ERR_INTERNAL);
    qs_chunk_sum_free(&s);
}

/* ---- ownership ------------------------------------------------------------------------------------- */

static void test_ownership(void **state)
{
    (void)state;
    for (int64_t K = 1; K <= 40; K++)
        for (int D = 1; D <= K && D <= 9; D++) {
            assert_int_equal(qs_replica_chunk_begin(K, D, 0), 0);
            assert_int_equal(qs_replica_chunk_begin(K, D, D), K);
            for (int i = 0; i < D; i++) {
                int64_t a = qs_replica_chunk_begin(K, D, i), b = qs_replica_chunk_begin(K, D, i + 1);
                assert_true(b > a); /* at least one chunk each */
                for (int64_t c = a; c < b; c++) assert_int_equal(qs_replica_of_chunk(K, D, c), i);
            }
        }
    for (int64_t rows = 1; rows <= 300; rows += 7)
        for (int D = 1; D <= 6; D++) {
            int64_t end = 0;
            for (int i = 0; i < D; i++) {
                int64_t r0, r1;
                qs_replica_rows(rows, D, i, &r0, &r1);
                assert_int_equal(r0, end);
                assert_true(r1 >= r0);
                assert_true(r0 % QS_REPLICA_ROW_UNIT == 0);
                assert_true(r1 % QS_REPLICA_ROW_UNIT == 0 || r1 == rows);
                end = r1;
            }
            assert_int_equal(end, rows);
        }
}

/* ---- GPTQ on row slices ---------------------------------------------------------------------------- */

typedef struct gptq_case {
    int64_t rows, cols;
    int group_size;
    bool act_order, static_groups;
} gptq_case;

static void check_slice(const qs_quant_result *full, const qs_quant_result *part, int64_t r0)
{
    int64_t r = part->rows, cols = full->cols;
    assert_memory_equal(full->codes + r0 * cols, part->codes, (size_t)(r * cols));
    assert_memory_equal(full->q + r0 * cols, part->q, sizeof(float) * (size_t)(r * cols));
    assert_memory_equal(full->g_idx, part->g_idx, sizeof(int32_t) * (size_t)cols);
    for (int64_t g = 0; g < full->groups; g++) {
        assert_memory_equal(full->scales + g * full->rows + r0, part->scales + g * r, sizeof(float) * (size_t)r);
        assert_memory_equal(full->zeros + g * full->rows + r0, part->zeros + g * r, sizeof(int32_t) * (size_t)r);
    }
}

static void test_gptq_row_slices(void **state)
{
    (void)state;
    const qs_backend_i *be = qs_backend_cpu();
    const gptq_case cases[] = {
        {70, 64, 32, true, false},  /* act-order, dynamic groups */
        {100, 96, 32, true, true},  /* act-order, static groups */
        {45, 80, -1, false, false}, /* per channel */
        {300, 160, 32, true, false},
    };
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        const gptq_case *k = &cases[t];
        int64_t rows = k->rows, cols = k->cols, m = 3 * cols;
        float *w = malloc(sizeof(float) * (size_t)(rows * cols)), *x = malloc(sizeof(float) * (size_t)(m * cols));
        float *h = malloc(sizeof(float) * (size_t)(cols * cols)), *hw = malloc(sizeof(float) * (size_t)(cols * cols));
        assert_non_null(w), assert_non_null(x), assert_non_null(h), assert_non_null(hw);
        for (int64_t i = 0; i < rows * cols; i++) w[i] = frand();
        for (int64_t i = 0; i < m * cols; i++) x[i] = frand() * (i % cols == 3 ? 20.0f : 1.0f); /* an outlier channel */
        memset(h, 0, sizeof(float) * (size_t)(cols * cols));
        be->ssyrk_t(be->ctx, cols, m, 2.0f / (float)m, x, cols, 0.0f, h, cols);
        qs_quant_opts o;
        qs_quant_opts_default(&o);
        o.bits = 4;
        o.group_size = k->group_size;
        o.act_order = k->act_order;
        o.static_groups = k->static_groups;
        o.sym = false;
        o.block_size = 32; /* several lazy blocks: trailing GEMMs of every shape */
        qs_error err;
        qs_quant_result full;
        assert_int_equal(qs_quant_result_init(&full, rows, cols, &o, &err), QS_OK);
        memcpy(hw, h, sizeof(float) * (size_t)(cols * cols));
        assert_int_equal(qs_quant_gptq(be, w, rows, cols, hw, &o, &full, &err), QS_OK);
        /* the replicas' splits (whole 16-row tiles), then arbitrary ones */
        int64_t cuts[][2] = {{0, 0}, {0, 0}, {0, 0}, {0, 7}, {7, 33}, {33, rows}, {1, rows - 1}};
        for (int D = 2; D <= 4; D++) {
            for (int i = 0; i < D; i++) {
                int64_t r0, r1;
                qs_replica_rows(rows, D, i, &r0, &r1);
                if (r1 == r0) continue;
                qs_quant_result part;
                assert_int_equal(qs_quant_result_init(&part, r1 - r0, cols, &o, &err), QS_OK);
                memcpy(hw, h, sizeof(float) * (size_t)(cols * cols));
                assert_int_equal(qs_quant_gptq(be, w + r0 * cols, r1 - r0, cols, hw, &o, &part, &err), QS_OK);
                check_slice(&full, &part, r0);
                qs_quant_result_free(&part);
            }
        }
        for (size_t c = 3; c < sizeof cuts / sizeof *cuts; c++) {
            int64_t r0 = cuts[c][0], r1 = cuts[c][1] < rows ? cuts[c][1] : rows;
            qs_quant_result part;
            assert_int_equal(qs_quant_result_init(&part, r1 - r0, cols, &o, &err), QS_OK);
            memcpy(hw, h, sizeof(float) * (size_t)(cols * cols));
            assert_int_equal(qs_quant_gptq(be, w + r0 * cols, r1 - r0, cols, hw, &o, &part, &err), QS_OK);
            check_slice(&full, &part, r0);
            qs_quant_result_free(&part);
        }
        qs_quant_result_free(&full);
        free(w), free(x), free(h), free(hw);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_structure),
        cmocka_unit_test(test_chunk_sum_matches_tree),
        cmocka_unit_test(test_chunk_sum_order),
        cmocka_unit_test(test_ownership),
        cmocka_unit_test(test_gptq_row_slices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
