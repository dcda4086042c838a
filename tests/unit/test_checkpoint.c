/* test_checkpoint.c — hostile block checkpoints (issue 15, item 1).
 *
 * Each case writes a block checkpoint with qs_checkpoint_write_block, which
 * stores whatever it is given with a valid xxHash, after breaking one field
 * of an honest RTN result: g_idx out of range or negative or out of group
 * order, 30 bits, codes above 2^bits − 1, zeros out of range, a scale that is
 * infinite, not an fp16 value or clamped at 65504, a shape or bit width or
 * group count other than the model's and the run's, a linear's name, a NaN
 * loss. Reading it back against the model must fail with QS_ERR_INPUT and one
 * line naming the file and the field, and must never touch memory out of
 * bounds (the "unit" label runs this under ASan + UBSan; before the checks,
 * dequantization read g_idx-indexed scales out of bounds). The honest file
 * reads back bit for bit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/quant.h"
#include "pipeline/checkpoint.h"
#include "pipeline/checkpoint_check.h"

static char work[256];
static qs_model_config cfg;
static qs_model_names names;
static qs_block blk;
static qs_quant_opts opts;

static int setup(void **state)
{
    (void)state;
    snprintf(work, sizeof work, "/tmp/qs-test-ckpt-%d", (int)getpid());
    qs_model_config_defaults(&cfg, QS_ARCH_LLAMA);
    cfg.n_layers = 2;
    cfg.hidden = 64;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 2;
    cfg.head_dim = 32;
    cfg.ffn = 128;
    cfg.vocab = 32;
    qs_error err;
    assert_int_equal(qs_model_names_init(&cfg, NULL, NULL, &names, &err), QS_OK);
    memset(&blk, 0, sizeof blk);
    blk.cfg = cfg;
    blk.layer = 1;
    blk.n_linears = qs_block_linears(&cfg, &names, 1, blk.lin);
    qs_quant_opts_default(&opts);
    opts.method = QS_QUANT_METHOD_RTN;
    opts.group_size = 32;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf %s", work);
    return system(cmd) == 0 ? 0 : -1;
}

/* An honest outcome: RTN of a deterministic weight for every linear. */
static void honest(qs_block_outcome *o)
{
    memset(o, 0, sizeof *o);
    o->layer = 1;
    o->blk = &blk;
    for (int i = 0; i < blk.n_linears; i++) {
        int64_t rows = blk.lin[i].out, cols = blk.lin[i].in;
        float *w = malloc(sizeof(float) * (size_t)(rows * cols));
        assert_non_null(w);
        for (int64_t k = 0; k < rows * cols; k++) w[k] = sinf((float)(k * 7 + i)) * 0.1f;
        qs_error err;
        assert_int_equal(qs_quant_result_init(&o->res[i], rows, cols, &opts, &err), QS_OK);
        assert_int_equal(qs_quant_rtn(w, rows, cols, &opts, &o->res[i], &err), QS_OK);
        o->stats[i].h_trace = 1.5;
        o->stats[i].loss = 0.25;
        o->stats[i].loss_rtn = NAN;
        o->stats[i].samples = 64;
        free(w);
    }
}

static void outcome_free(qs_block_outcome *o)
{
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) qs_quant_result_free(&o->res[i]);
}

/* Writes o, reads it back against the model; returns the read status and
 * the message in msg. */
static qs_status round_trip(const qs_block_outcome *o, char *msg, size_t cap, qs_block_record *back)
{
    qs_error err;
    qs_error_clear(&err);
    assert_int_equal(qs_checkpoint_write_block(work, o, "fp", NULL, &err), QS_OK);
    qs_block_expect want;
    qs_block_expect_init(&want, &cfg, &names, 1, &opts);
    qs_block_record r;
    qs_status st = qs_checkpoint_read_block(work, 1, "fp", &want, back ? back : &r, &err);
    snprintf(msg, cap, "%s", err.msg);
    if (st == QS_OK && !back) qs_block_record_free(&r);
    return st;
}

static void test_honest_reads_back(void **state)
{
    (void)state;
    qs_block_outcome o;
    honest(&o);
    char msg[QS_ERROR_MSG_MAX];
    qs_block_record r;
    assert_int_equal(round_trip(&o, msg, sizeof msg, &r), QS_OK);
    assert_int_equal(r.n_linears, blk.n_linears);
    for (int i = 0; i < blk.n_linears; i++) {
        size_t n = (size_t)(o.res[i].rows * o.res[i].cols);
        assert_memory_equal(r.res[i].codes, o.res[i].codes, n);
        assert_memory_equal(r.res[i].q, o.res[i].q, n * sizeof(float));
        assert_string_equal(r.names[i], blk.lin[i].weight);
    }
    qs_block_record_free(&r);
    outcome_free(&o);
}

/* One hostile edit of linear `lin`, and the words the message must hold. */
typedef struct hostile {
    const char *what;
    void (*edit)(qs_quant_result *r, qs_linear_stats *s);
    int lin;
    const char *field;
} hostile;

static void g_idx_high(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->g_idx[5] = 99; }
static void g_idx_negative(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->g_idx[0] = -1; }
static void g_idx_order(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->g_idx[0] = 1; }
static void bits_30(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->bits = 30; }
static void bits_8(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->bits = 8; }
static void codes_255(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->codes[17] = 255; }
static void zeros_16(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->zeros[3] = 16; }
static void zeros_neg(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->zeros[0] = -7; }
static void scale_inf(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->scales[2] = INFINITY; }
static void scale_nan(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->scales[2] = NAN; }
static void scale_zero(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->scales[1] = 0.0f; }
static void scale_not_fp16(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->scales[4] = 0.1f; }
static void scale_clamped(qs_quant_result *r, qs_linear_stats *s) { (void)s; r->scales[4] = 65504.0f; }
static void loss_nan(qs_quant_result *r, qs_linear_stats *s) { (void)r; s->loss = NAN; }
static void trace_neg(qs_quant_result *r, qs_linear_stats *s) { (void)r; s->h_trace = -1; }

static void test_hostile_fields(void **state)
{
    (void)state;
    static const hostile cases[] = {
        {"g_idx above the groups", g_idx_high, 0, "field 'g_idx'[5] = 99"},
        {"negative g_idx", g_idx_negative, 3, "field 'g_idx'[0] = -1"},
        {"g_idx out of group order", g_idx_order, 6, "field 'g_idx'[0] = 1"},
        {"30 bits", bits_30, 1, "field 'bits' = 30"},
        {"8 bits in a 4-bit run", bits_8, 2, "field 'bits' = 8"},
        {"code 255 at 4 bits", codes_255, 4, "field 'codes'[0, 17] = 255"},
        {"zero 16 at 4 bits", zeros_16, 5, "field 'zeros'[0, 3] = 16"},
        {"negative zero", zeros_neg, 0, "field 'zeros'[0, 0] = -7"},
        {"infinite scale", scale_inf, 1, "field 'scales' of row 2"},
        {"NaN scale", scale_nan, 1, "field 'scales' of row 2"},
        {"zero scale", scale_zero, 1, "field 'scales' of row 1"},
        {"scale not an fp16 value", scale_not_fp16, 2, "not an fp16 value"},
        {"scale clamped at 65504", scale_clamped, 2, "does not fit the export's fp16"},
        {"NaN loss", loss_nan, 3, "field 'loss' = nan"},
        {"negative h_trace", trace_neg, 3, "field 'h_trace' = -1"},
    };
    char path[512];
    qs_checkpoint_block_path(work, 1, path, sizeof path);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        qs_block_outcome o;
        honest(&o);
        cases[k].edit(&o.res[cases[k].lin], &o.stats[cases[k].lin]);
        char msg[QS_ERROR_MSG_MAX];
        qs_status st = round_trip(&o, msg, sizeof msg, NULL);
        printf("%-28s -> %s\n", cases[k].what, msg);
        assert_int_equal(st, QS_ERR_INPUT);
        assert_non_null(strstr(msg, path));
        assert_non_null(strstr(msg, cases[k].field));
        assert_null(strchr(msg, '\n'));
        if (strstr(cases[k].field, "bits") == NULL && strstr(cases[k].field, "g_idx'[0] = 1") == NULL)
            assert_non_null(strstr(msg, blk.lin[cases[k].lin].weight)); /* names the linear */
        outcome_free(&o);
    }
}

/* Shapes other than the model's are refused before anything is allocated. */
static void test_hostile_shapes(void **state)
{
    (void)state;
    char msg[QS_ERROR_MSG_MAX];
    /* a q_proj stored with one row more than the model's [64, 64] */
    qs_block_outcome o;
    honest(&o);
    qs_quant_result_free(&o.res[0]);
    qs_error err;
    float *w = calloc(65 * 64, sizeof(float));
    assert_int_equal(qs_quant_result_init(&o.res[0], 65, 64, &opts, &err), QS_OK);
    assert_int_equal(qs_quant_rtn(w, 65, 64, &opts, &o.res[0], &err), QS_OK);
    free(w);
    assert_int_equal(round_trip(&o, msg, sizeof msg, NULL), QS_ERR_INPUT);
    printf("%-28s -> %s\n", "65 rows for 64", msg);
    assert_non_null(strstr(msg, "field 'codes' has shape [65, 64], the model's is [64, 64]"));
    outcome_free(&o);
    /* group size 16 where the run used 32: twice the groups */
    honest(&o);
    qs_quant_opts g16 = opts;
    g16.group_size = 16;
    qs_quant_result_free(&o.res[2]);
    w = calloc((size_t)(blk.lin[2].out * blk.lin[2].in), sizeof(float));
    assert_int_equal(qs_quant_result_init(&o.res[2], blk.lin[2].out, blk.lin[2].in, &g16, &err), QS_OK);
    assert_int_equal(qs_quant_rtn(w, blk.lin[2].out, blk.lin[2].in, &g16, &o.res[2], &err), QS_OK);
    free(w);
    assert_int_equal(round_trip(&o, msg, sizeof msg, NULL), QS_ERR_INPUT);
    printf("%-28s -> %s\n", "group size 16 for 32", msg);
    assert_non_null(strstr(msg, "field 'scales' has 4 groups, group size 32 gives 2"));
    outcome_free(&o);
}

/* The checks on their own: dims before allocation, with no model. */
static void test_dims_without_model(void **state)
{
    (void)state;
    qs_error err;
    qs_linear_dims d = {4, 2, 2, 2, 1, {1 << 20, 1 << 20}, {1, 1 << 20}, {1, 1 << 20}, 1 << 20};
    assert_int_equal(qs_checkpoint_check_dims("f.h5", 0, "w", &d, NULL, &err), QS_ERR_INPUT); /* 2^40 codes */
    assert_non_null(strstr(err.msg, "field 'codes' has shape"));
    qs_linear_dims ok = {4, 2, 2, 2, 1, {8, 64}, {2, 8}, {2, 8}, 64};
    assert_int_equal(qs_checkpoint_check_dims("f.h5", 0, "w", &ok, NULL, &err), QS_OK);
    qs_linear_dims g3 = ok;
    g3.scales[0] = g3.zeros[0] = 3; /* 3 groups do not divide 64 columns */
    assert_int_equal(qs_checkpoint_check_dims("f.h5", 0, "w", &g3, NULL, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "field 'scales' has shape [3, 8]"));
    qs_linear_dims z = ok;
    z.zeros[1] = 9;
    assert_int_equal(qs_checkpoint_check_dims("f.h5", 0, "w", &z, NULL, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "field 'zeros' has shape [2, 9]"));
    qs_linear_dims gi = ok;
    gi.g_idx = 63;
    assert_int_equal(qs_checkpoint_check_dims("f.h5", 0, "w", &gi, NULL, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "field 'g_idx' has 63 entries"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_honest_reads_back),
        cmocka_unit_test(test_hostile_fields),
        cmocka_unit_test(test_hostile_shapes),
        cmocka_unit_test(test_dims_without_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
