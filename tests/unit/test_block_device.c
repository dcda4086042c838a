/* test_block_device.c — the block forward on a device backend (CUDA) against
 * the same forward on the CPU backend, for llama (GQA, llama3 RoPE, biases),
 * opt and bloom (ALiBi, fused QKV):
 *   - the block's output within 1e-4 relative (the bound);
 *   - each stage's captured input (device memory in the hook) and the
 *     Hessian accumulated from it on the device (qs_hessian_init_on) within
 *     1e-4 relative of the CPU's;
 *   - the true-sequential spans on the device (0→1 keeping the attention
 *     output, 1→3 keeping the MLP hidden, 3→4) equal one whole device
 *     forward bit for bit, as on the CPU;
 *   - a weight changed on the host and re-synced (qs_block_linear_sync)
 *     reaches the device copy.
 * The device: a real GPU (label gpu; exits 77 without one) or, with
 * QS_CUDA_MODULE naming tests/gpu_emu's module, the CUDA emulator on the
 * CPU (label cuda-emu). Prints the largest relative differences. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/device.h"
#include "kernels/hessian.h"
#include "workers/block.h"

static qs_backend_i g_dev;

static uint64_t rng = 0x243f6a8885a308d3ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}
static void fill(qs_tensor *t, double scale, double offset)
{
    if (!t->data) return;
    float *d = t->data;
    for (int64_t i = 0; i < qs_tensor_numel(t); i++) d[i] = (float)(offset + scale * urand());
}

static const char *LLAMA_CFG =
    "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_hidden_layers\":1,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":50,\"max_position_embeddings\":256,"
    "\"rms_norm_eps\":1e-6,\"rope_theta\":10000.0,\"attention_bias\":true,"
    "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
    "\"original_max_position_embeddings\":32}}";
static const char *OPT_CFG =
    "{\"model_type\":\"opt\",\"hidden_size\":48,\"ffn_dim\":80,\"num_hidden_layers\":1,\"num_attention_heads\":3,"
    "\"vocab_size\":50,\"max_position_embeddings\":256,\"do_layer_norm_before\":true,\"word_embed_proj_dim\":48,"
    "\"activation_function\":\"relu\"}";
static const char *BLOOM_CFG =
    "{\"model_type\":\"bloom\",\"hidden_size\":48,\"n_layer\":1,\"n_head\":6,\"vocab_size\":50,"
    "\"layer_norm_epsilon\":1e-5}";

static void make_block(qs_block *blk, const char *json)
{
    qs_error err;
    qs_model_config cfg;
    qs_model_names names;
    if (qs_model_config_parse(json, "test", &cfg, &err) != QS_OK) fail_msg("%s", err.msg);
    if (qs_model_names_init(&cfg, NULL, NULL, &names, &err) != QS_OK) fail_msg("%s", err.msg);
    if (qs_block_init(blk, &cfg, &names, 0, &err) != QS_OK) fail_msg("%s", err.msg);
    for (int i = 0; i < blk->n_linears; i++) {
        fill(&blk->weight[i], 1.0 / sqrt((double)blk->lin[i].in), 0.0);
        fill(&blk->bias[i], 0.1, 0.0);
    }
    fill(&blk->attn_norm_w, 0.2, 1.0);
    fill(&blk->attn_norm_b, 0.1, 0.0);
    fill(&blk->mlp_norm_w, 0.2, 1.0);
    fill(&blk->mlp_norm_b, 0.1, 0.0);
}

/* max |a − b| / max |a| */
static double rel_diff(const float *a, const float *b, int64_t n)
{
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    }
    return m > 0 ? d / m : d;
}

/* ---- capture: each stage's input (as host floats) and its Hessian ------------- */

typedef struct cap {
    const qs_backend_i *be;
    qs_hessian h[QS_BLOCK_STAGES];
    float *x[QS_BLOCK_STAGES]; /* host copies */
    int64_t in[QS_BLOCK_STAGES];
} cap;

static qs_status on_capture(void *ctx, const qs_block *blk, int idx, const float *x, const uint16_t *xb,
                            int64_t rows, int64_t in, qs_error *err)
{
    cap *c = ctx;
    int st = blk->lin[idx].stage;
    if (c->x[st]) return QS_OK; /* the stage's first linear */
    c->x[st] = malloc(sizeof(float) * (size_t)(rows * in));
    c->in[st] = in;
    QS_TRY(c->be->copy(c->be->ctx, c->x[st], x, sizeof(float) * (size_t)(rows * in), err));
    QS_TRY(qs_hessian_init_on(&c->h[st], c->be, in, false, err));
    return qs_hessian_add(&c->h[st], c->be, x, rows, in, err);
}

static void cap_hessian(cap *c, int st, float *out)
{
    int64_t n = c->in[st];
    size_t b = sizeof(float) * (size_t)(n * n);
    float *tmp = c->be->device ? c->be->alloc(c->be->ctx, b) : out;
    assert_non_null(tmp);
    qs_hessian_get_f32(&c->h[st], tmp);
    qs_error err;
    if (c->be->device) {
        assert_int_equal(c->be->copy(c->be->ctx, out, tmp, b, &err), QS_OK);
        c->be->free(c->be->ctx, tmp);
    }
}

static void cap_free(cap *c)
{
    for (int s = 0; s < QS_BLOCK_STAGES; s++) {
        free(c->x[s]);
        if (c->h[s].h32 || c->h[s].h64) qs_hessian_free(&c->h[s]);
    }
}

/* ---- the comparison ------------------------------------------------------------- */

static void check_arch(const char *json, const char *name)
{
    const int64_t B = 2, S = 40; /* 40 tokens: across the attention's 32-query tile */
    qs_block blk;
    make_block(&blk, json);
    qs_error err;
    const int64_t H = blk.cfg.hidden, R = B * S;
    float *x = malloc(sizeof(float) * (size_t)(R * H)), *y_cpu = malloc(sizeof(float) * (size_t)(R * H));
    float *y_dev = malloc(sizeof(float) * (size_t)(R * H)), *y_span = malloc(sizeof(float) * (size_t)(R * H));
    for (int64_t i = 0; i < R * H; i++) x[i] = (float)urand();

    /* a forward on the device needs the block there first */
    assert_int_equal(qs_block_forward(&blk, &g_dev, x, B, S, y_dev, NULL, &err), QS_ERR_INTERNAL);
    assert_non_null(strstr(err.msg, "qs_block_to_device"));
    assert_int_equal(qs_block_to_device(&blk, &g_dev, &err), QS_OK);

    cap cc = {.be = qs_backend_cpu()}, cd = {.be = &g_dev};
    qs_block_hooks hc = {on_capture, &cc, -1, -1}, hd = {on_capture, &cd, -1, -1};
    if (qs_block_forward(&blk, qs_backend_cpu(), x, B, S, y_cpu, &hc, &err) != QS_OK) fail_msg("%s", err.msg);
    if (qs_block_forward(&blk, &g_dev, x, B, S, y_dev, &hd, &err) != QS_OK) fail_msg("%s", err.msg);
    double d_out = rel_diff(y_cpu, y_dev, R * H), d_x = 0, d_h = 0;
    for (int s = 0; s < QS_BLOCK_STAGES; s++) {
        assert_non_null(cc.x[s]);
        assert_non_null(cd.x[s]);
        assert_int_equal(cc.in[s], cd.in[s]);
        int64_t n = cc.in[s];
        double dx = rel_diff(cc.x[s], cd.x[s], R * n);
        float *hc_ = malloc(sizeof(float) * (size_t)(n * n)), *hd_ = malloc(sizeof(float) * (size_t)(n * n));
        cap_hessian(&cc, s, hc_);
        cap_hessian(&cd, s, hd_);
        double dh = rel_diff(hc_, hd_, n * n);
        assert_int_equal(cc.h[s].count, cd.h[s].count);
        free(hc_);
        free(hd_);
        if (dx > d_x) d_x = dx;
        if (dh > d_h) d_h = dh;
    }
    printf("%s: output %.2e, stage inputs %.2e, Hessians %.2e (max relative difference, device vs CPU)\n", name,
           d_out, d_x, d_h);
    assert_true(d_out <= 1e-4);
    assert_true(d_x <= 1e-4);
    assert_true(d_h <= 1e-4);
    cap_free(&cc);
    cap_free(&cd);

    /* the spans of one true-sequential pass on the device = one device forward, bit for bit */
    int64_t c1 = qs_block_carry_cols(&blk, 1), c3 = qs_block_carry_cols(&blk, 3);
    float *res = malloc(sizeof(float) * (size_t)(R * H));
    float *k1 = malloc(sizeof(float) * (size_t)(R * c1)), *k3 = malloc(sizeof(float) * (size_t)(R * c3));
    qs_block_span a = {.from = 0, .to = 1, .res_in = x, .res_out = res, .x_out = k1};
    assert_int_equal(qs_block_forward_span(&blk, &g_dev, B, S, &a, NULL, &err), QS_OK);
    qs_block_span b = {.from = 1, .to = 3, .res_in = res, .res_out = res, .x_in = k1, .x_out = k3};
    assert_int_equal(qs_block_forward_span(&blk, &g_dev, B, S, &b, NULL, &err), QS_OK);
    qs_block_span c = {.from = 3, .to = QS_BLOCK_END, .res_in = res, .res_out = y_span, .x_in = k3};
    assert_int_equal(qs_block_forward_span(&blk, &g_dev, B, S, &c, NULL, &err), QS_OK);
    assert_memory_equal(y_span, y_dev, sizeof(float) * (size_t)(R * H));
    assert_true(a.flops + b.flops + c.flops == qs_block_forward_flops(&blk, B, S));

    /* a changed weight reaches the device once synced */
    int last = blk.n_linears - 1;
    float *w = blk.weight[last].data;
    for (int64_t i = 0; i < qs_tensor_numel(&blk.weight[last]); i++) w[i] = roundf(w[i] * 8.0f) / 8.0f;
    assert_int_equal(qs_block_linear_sync(&blk, last, &err), QS_OK);
    assert_int_equal(qs_block_forward(&blk, qs_backend_cpu(), x, B, S, y_cpu, NULL, &err), QS_OK);
    assert_int_equal(qs_block_forward(&blk, &g_dev, x, B, S, y_dev, NULL, &err), QS_OK);
    assert_true(rel_diff(y_cpu, y_dev, R * H) <= 1e-4);
    assert_memory_not_equal(y_dev, y_span, sizeof(float) * (size_t)(R * H));

    free(res), free(k1), free(k3);
    free(x), free(y_cpu), free(y_dev), free(y_span);
    qs_block_free(&blk);
}

static void test_llama(void **state) { check_arch(LLAMA_CFG, "llama"); }
static void test_opt(void **state) { check_arch(OPT_CFG, "opt"); }
static void test_bloom(void **state) { check_arch(BLOOM_CFG, "bloom"); }

int main(void)
{
    char why[512] = "";
    if (qs_cuda_device_count(why, sizeof why) < 1) {
        printf("SKIP: no CUDA device: %s\n", why);
        return 77;
    }
    qs_error err;
    if (qs_backend_cuda_init(&g_dev, 0, NULL, &err) != QS_OK) {
        printf("cuda:0: %s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_opt),
        cmocka_unit_test(test_bloom),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    qs_backend_cuda_free(&g_dev);
    return rc;
}
