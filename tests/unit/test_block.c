/* test_block.c — block forward (workers/block.c) for llama / opt / bloom
 * against a plain double-precision reference written here from the HF
 * definitions (explicit loops, full softmax), and the capture / stop / replace
 * hooks that true-sequential GPTQ relies on; the boundary spans
 * (qs_block_forward_span) against re-running the block from its input, bit
 * for bit, in f32 and bf16 compute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/half.h"
#include "kernels/ops.h"
#include "workers/block.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
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
    "{\"model_type\":\"llama\",\"hidden_size\":32,\"intermediate_size\":48,\"num_hidden_layers\":1,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":50,\"max_position_embeddings\":256,"
    "\"rms_norm_eps\":1e-6,\"rope_theta\":10000.0,\"attention_bias\":true,"
    "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
    "\"original_max_position_embeddings\":32}}";
static const char *OPT_CFG =
    "{\"model_type\":\"opt\",\"hidden_size\":24,\"ffn_dim\":40,\"num_hidden_layers\":1,\"num_attention_heads\":3,"
    "\"vocab_size\":50,\"max_position_embeddings\":256,\"do_layer_norm_before\":true,\"word_embed_proj_dim\":24,"
    "\"activation_function\":\"relu\"}";
static const char *BLOOM_CFG =
    "{\"model_type\":\"bloom\",\"hidden_size\":24,\"n_layer\":1,\"n_head\":6,\"vocab_size\":50,"
    "\"layer_norm_epsilon\":1e-5}";

typedef struct fixture {
    qs_model_config cfg;
    qs_block blk;
} fixture;

static void make_block(fixture *f, const char *json)
{
    qs_error err;
    if (qs_model_config_parse(json, "test", &f->cfg, &err) != QS_OK) fail_msg("%s", err.msg);
    qs_model_names names;
    if (qs_model_names_init(&f->cfg, NULL, NULL, &names, &err) != QS_OK) fail_msg("%s", err.msg);
    if (qs_block_init(&f->blk, &f->cfg, &names, 0, &err) != QS_OK) fail_msg("%s", err.msg);
    for (int i = 0; i < f->blk.n_linears; i++) {
        fill(&f->blk.weight[i], 1.0 / sqrt((double)f->blk.lin[i].in), 0.0);
        fill(&f->blk.bias[i], 0.1, 0.0);
    }
    fill(&f->blk.attn_norm_w, 0.2, 1.0);
    fill(&f->blk.attn_norm_b, 0.1, 0.0);
    fill(&f->blk.mlp_norm_w, 0.2, 1.0);
    fill(&f->blk.mlp_norm_b, 0.1, 0.0);
}

/* ---- the reference ------------------------------------------------------------ */

typedef struct ref_out {
    double *stage_in[QS_BLOCK_STAGES]; /* input of each stage, [R, in] */
    double *out;                       /* [R, hidden] */
} ref_out;

static double *dalloc(int64_t n) { return calloc((size_t)n, sizeof(double)); }

static void ref_norm(const qs_block *b, const qs_tensor *w, const qs_tensor *bias, const double *x, double *y,
                     int64_t R)
{
    int64_t H = b->cfg.hidden;
    const float *wd = w->data, *bd = bias->data;
    for (int64_t r = 0; r < R; r++) {
        const double *xr = x + r * H;
        double *yr = y + r * H;
        if (b->cfg.norm == QS_NORM_RMS) {
            double ms = 0;
            for (int64_t i = 0; i < H; i++) ms += xr[i] * xr[i];
            ms /= H;
            for (int64_t i = 0; i < H; i++) yr[i] = xr[i] / sqrt(ms + b->cfg.norm_eps) * wd[i];
        } else {
            double mu = 0, var = 0;
            for (int64_t i = 0; i < H; i++) mu += xr[i];
            mu /= H;
            for (int64_t i = 0; i < H; i++) var += (xr[i] - mu) * (xr[i] - mu);
            var /= H;
            for (int64_t i = 0; i < H; i++) yr[i] = (xr[i] - mu) / sqrt(var + b->cfg.norm_eps) * wd[i] + bd[i];
        }
    }
}

static void ref_linear(const qs_block *b, qs_linear_role role, const double *x, int64_t R, double *y)
{
    int idx = qs_block_find(b, role);
    assert_true(idx >= 0);
    const qs_block_linear *l = &b->lin[idx];
    const float *w = b->weight[idx].data, *bias = b->bias[idx].data;
    for (int64_t r = 0; r < R; r++)
        for (int64_t o = 0; o < l->out; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < l->in; i++) s += x[r * l->in + i] * w[o * l->in + i];
            y[r * l->out + o] = s;
        }
}

static void ref_forward(const qs_block *b, const float *x, int64_t B, int64_t S, ref_out *ro)
{
    const qs_model_config *c = &b->cfg;
    const int64_t R = B * S, H = c->hidden, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    double *res = dalloc(R * H), *t = dalloc(R * H);
    for (int64_t i = 0; i < R * H; i++) res[i] = x[i];
    double *q = dalloc(R * nh * hd), *k = dalloc(R * nkv * hd), *v = dalloc(R * nkv * hd);

    /* attention input */
    double *a_in = dalloc(R * H);
    ref_norm(b, &b->attn_norm_w, &b->attn_norm_b, res, a_in, R);
    ro->stage_in[0] = a_in;
    if (c->arch == QS_ARCH_BLOOM) {
        double *f = dalloc(R * 3 * H);
        ref_linear(b, QS_LIN_QKV, a_in, R, f);
        for (int64_t r = 0; r < R; r++) /* fused rows: [heads, 3, head_dim] */
            for (int64_t h = 0; h < nh; h++)
                for (int64_t d = 0; d < hd; d++) {
                    q[(r * nh + h) * hd + d] = f[r * 3 * H + h * 3 * hd + d];
                    k[(r * nh + h) * hd + d] = f[r * 3 * H + h * 3 * hd + hd + d];
                    v[(r * nh + h) * hd + d] = f[r * 3 * H + h * 3 * hd + 2 * hd + d];
                }
        free(f);
    } else {
        ref_linear(b, QS_LIN_Q, a_in, R, q);
        ref_linear(b, QS_LIN_K, a_in, R, k);
        ref_linear(b, QS_LIN_V, a_in, R, v);
    }
    if (c->pos == QS_POS_ROPE) {
        /* rotate-half: pair d with d + hd/2, angle pos · inv_freq[d] */
        for (int64_t r = 0; r < R; r++) {
            double pos = (double)(r % S);
            for (int which = 0; which < 2; which++) {
                double *m = which ? k : q;
                int64_t heads = which ? nkv : nh;
                for (int64_t h = 0; h < heads; h++)
                    for (int64_t d = 0; d < hd / 2; d++) {
                        double f = pow(c->rope_theta, -2.0 * d / hd);
                        if (c->rope_scaling == QS_ROPE_SCALING_LLAMA3)
                            f = qs_op_rope_llama3_scale(f, c->rope_factor, c->rope_low_freq_factor,
                                                        c->rope_high_freq_factor, c->rope_original_max_positions);
                        double *e = m + (r * heads + h) * hd;
                        double x0 = e[d], x1 = e[d + hd / 2];
                        e[d] = x0 * cos(pos * f) - x1 * sin(pos * f);
                        e[d + hd / 2] = x1 * cos(pos * f) + x0 * sin(pos * f);
                    }
            }
        }
    }
    double *att = dalloc(R * nh * hd), *sc = dalloc(S);
    for (int64_t bb = 0; bb < B; bb++)
        for (int64_t h = 0; h < nh; h++) {
            int64_t kh = h / (nh / nkv);
            double slope = c->pos == QS_POS_ALIBI ? qs_op_alibi_slope((int)h, (int)nh) : 0.0;
            for (int64_t i = 0; i < S; i++) {
                double mx = -INFINITY, z = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < hd; d++)
                        s += q[((bb * S + i) * nh + h) * hd + d] * k[((bb * S + j) * nkv + kh) * hd + d];
                    sc[j] = s / sqrt((double)hd) + slope * (double)j;
                    mx = fmax(mx, sc[j]);
                }
                for (int64_t j = 0; j <= i; j++) z += exp(sc[j] - mx);
                for (int64_t j = 0; j <= i; j++)
                    for (int64_t d = 0; d < hd; d++)
                        att[((bb * S + i) * nh + h) * hd + d] +=
                            exp(sc[j] - mx) / z * v[((bb * S + j) * nkv + kh) * hd + d];
            }
        }
    ro->stage_in[1] = att;
    ref_linear(b, QS_LIN_O, att, R, t);
    for (int64_t i = 0; i < R * H; i++) res[i] += t[i];

    double *m_in = dalloc(R * H);
    ref_norm(b, &b->mlp_norm_w, &b->mlp_norm_b, res, m_in, R);
    ro->stage_in[2] = m_in;
    int64_t F = c->ffn;
    double *g = dalloc(R * F);
    if (c->arch == QS_ARCH_LLAMA) {
        double *u = dalloc(R * F);
        ref_linear(b, QS_LIN_GATE, m_in, R, g);
        ref_linear(b, QS_LIN_UP, m_in, R, u);
        for (int64_t i = 0; i < R * F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
        free(u);
    } else {
        ref_linear(b, QS_LIN_FC1, m_in, R, g);
        for (int64_t i = 0; i < R * F; i++)
            g[i] = c->arch == QS_ARCH_OPT ? fmax(g[i], 0.0)
                                          : 0.5 * g[i] * (1 + tanh(sqrt(2 / M_PI) * (g[i] + 0.044715 * pow(g[i], 3))));
    }
    ro->stage_in[3] = g;
    ref_linear(b, c->arch == QS_ARCH_LLAMA ? QS_LIN_DOWN : QS_LIN_FC2, g, R, t);
    for (int64_t i = 0; i < R * H; i++) res[i] += t[i];
    ro->out = res;
    free(t), free(q), free(k), free(v), free(sc);
}

static void ref_free(ref_out *ro)
{
    for (int s = 0; s < QS_BLOCK_STAGES; s++) free(ro->stage_in[s]);
    free(ro->out);
}

static double max_rel(const float *a, const double *b, int64_t n)
{
    double scale = 0, e = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(a[i] - b[i]));
    return e / fmax(scale, 1e-30);
}

/* ---- capture hook that records one copy per stage ---------------------------------- */

typedef struct recorder {
    float *in[QS_BLOCK_STAGES];
    uint16_t *inb[QS_BLOCK_STAGES]; /* the bf16 view, when the forward passed one */
    int64_t cols[QS_BLOCK_STAGES];
    int calls[QS_LIN_ROLE_COUNT];
    const float *last_ptr[QS_BLOCK_STAGES];
    int same_ptr_violations;
} recorder;

static qs_status record(void *ctx, const qs_block *blk, int idx, const float *x, const uint16_t *xb, int64_t rows,
                        int64_t in, qs_error *err)
{
    recorder *r = ctx;
    int s = blk->lin[idx].stage;
    r->calls[blk->lin[idx].role]++;
    if (r->last_ptr[s] && r->last_ptr[s] != x) r->same_ptr_violations++;
    r->last_ptr[s] = x;
    if (!r->in[s]) {
        r->in[s] = malloc(sizeof(float) * (size_t)(rows * in));
        memcpy(r->in[s], x, sizeof(float) * (size_t)(rows * in));
        r->cols[s] = in;
        if (xb) {
            r->inb[s] = malloc(sizeof(uint16_t) * (size_t)(rows * in));
            memcpy(r->inb[s], xb, sizeof(uint16_t) * (size_t)(rows * in));
        }
    }
    return QS_OK;
}

static void recorder_free(recorder *r)
{
    for (int s = 0; s < QS_BLOCK_STAGES; s++) free(r->in[s]), free(r->inb[s]);
    memset(r, 0, sizeof *r);
}

static void check_arch(const char *json, int64_t B, int64_t S)
{
    fixture f;
    make_block(&f, json);
    const int64_t R = B * S, H = f.cfg.hidden;
    float *x = malloc(sizeof(float) * (size_t)(R * H)), *y = malloc(sizeof(float) * (size_t)(R * H));
    for (int64_t i = 0; i < R * H; i++) x[i] = (float)urand();

    ref_out ro = {0};
    ref_forward(&f.blk, x, B, S, &ro);

    recorder rec = {0};
    qs_block_hooks hk = {.capture = record, .ctx = &rec, .capture_stage = -1, .stop_after_stage = -1};
    qs_error err;
    if (qs_block_forward(&f.blk, qs_backend_cpu(), x, B, S, y, &hk, &err) != QS_OK) fail_msg("%s", err.msg);
    double e = max_rel(y, ro.out, R * H);
    if (e > 1e-5) fail_msg("%s output: max rel err %g", f.cfg.model_type, e);
    for (int s = 0; s < QS_BLOCK_STAGES; s++) {
        assert_non_null(rec.in[s]);
        e = max_rel(rec.in[s], ro.stage_in[s], R * rec.cols[s]);
        if (e > 1e-5) fail_msg("%s stage %d input: max rel err %g", f.cfg.model_type, s, e);
    }
    /* every linear was captured exactly once, linears of a stage shared one pointer */
    for (int i = 0; i < f.blk.n_linears; i++) assert_int_equal(rec.calls[f.blk.lin[i].role], 1);
    assert_int_equal(rec.same_ptr_violations, 0);
    recorder_free(&rec);

    /* in place (out == x) gives the same result */
    float *x2 = malloc(sizeof(float) * (size_t)(R * H));
    memcpy(x2, x, sizeof(float) * (size_t)(R * H));
    assert_int_equal(qs_block_forward(&f.blk, qs_backend_cpu(), x2, B, S, x2, NULL, &err), QS_OK);
    assert_memory_equal(x2, y, sizeof(float) * (size_t)(R * H));

    ref_free(&ro);
    free(x), free(x2), free(y);
    qs_block_free(&f.blk);
}

static void test_llama(void **state)
{
    (void)state;
    check_arch(LLAMA_CFG, 2, 37); /* GQA, q/k/v/o biases, llama3 rope scaling */
}

static void test_opt(void **state)
{
    (void)state;
    check_arch(OPT_CFG, 2, 33);
}

static void test_bloom(void **state)
{
    (void)state;
    check_arch(BLOOM_CFG, 2, 70); /* 6 heads: the non-power-of-2 ALiBi rule; two key tiles */
}

/* True-sequential: stop after stage s leaves `out` alone and captures only up
 * to s; replacing the stage-0 weights changes the stage-1 capture exactly as
 * the reference with the replaced weights says. */
static void test_stop_and_replace(void **state)
{
    (void)state;
    const char *cfgs[3] = {LLAMA_CFG, OPT_CFG, BLOOM_CFG};
    for (int a = 0; a < 3; a++) {
        fixture f;
        make_block(&f, cfgs[a]);
        const int64_t B = 1, S = 20, R = B * S, H = f.cfg.hidden;
        float *x = malloc(sizeof(float) * (size_t)(R * H)), *y = malloc(sizeof(float) * (size_t)(R * H));
        for (int64_t i = 0; i < R * H; i++) x[i] = (float)urand();
        qs_error err;
        for (int s = 0; s < QS_BLOCK_STAGES; s++) {
            for (int64_t i = 0; i < R * H; i++) y[i] = 12345.0f;
            recorder rec = {0};
            qs_block_hooks hk = {.capture = record, .ctx = &rec, .capture_stage = -1, .stop_after_stage = s};
            assert_int_equal(qs_block_forward(&f.blk, qs_backend_cpu(), x, B, S, y, &hk, &err), QS_OK);
            for (int64_t i = 0; i < R * H; i++) assert_true(y[i] == 12345.0f);
            for (int t = 0; t < QS_BLOCK_STAGES; t++) assert_true((rec.in[t] != NULL) == (t <= s));
            recorder_free(&rec);
        }
        /* capture_stage picks one stage */
        recorder rec = {0};
        qs_block_hooks hk1 = {.capture = record, .ctx = &rec, .capture_stage = 2, .stop_after_stage = -1};
        assert_int_equal(qs_block_forward(&f.blk, qs_backend_cpu(), x, B, S, y, &hk1, &err), QS_OK);
        for (int t = 0; t < QS_BLOCK_STAGES; t++) assert_true((rec.in[t] != NULL) == (t == 2));
        recorder_free(&rec);

        /* replace every stage-0 weight (as a quantizer would) and capture stage 1 */
        for (int i = 0; i < f.blk.n_linears; i++)
            if (f.blk.lin[i].stage == 0) {
                qs_tensor *w = qs_block_linear_weight(&f.blk, i);
                float *d = w->data;
                for (int64_t j = 0; j < qs_tensor_numel(w); j++) d[j] = roundf(d[j] * 8.0f) / 8.0f;
            }
        qs_block_hooks hk2 = {.capture = record, .ctx = &rec, .capture_stage = 1, .stop_after_stage = 1};
        assert_int_equal(qs_block_forward(&f.blk, qs_backend_cpu(), x, B, S, y, &hk2, &err), QS_OK);
        ref_out ro = {0};
        ref_forward(&f.blk, x, B, S, &ro);
        assert_true(max_rel(rec.in[1], ro.stage_in[1], R * rec.cols[1]) < 1e-5);
        recorder_free(&rec);
        ref_free(&ro);
        free(x), free(y);
        qs_block_free(&f.blk);
    }
}

static qs_status fail_capture(void *ctx, const qs_block *blk, int idx, const float *x, const uint16_t *xb,
                              int64_t rows, int64_t in, qs_error *err)
{
    return qs_error_set(err, QS_ERR_IO, "capture failed on %s", blk->lin[idx].short_name);
}

static void test_capture_error_propagates(void **state)
{
    (void)state;
    fixture f;
    make_block(&f, OPT_CFG);
    float x[3 * 24] = {0}, y[3 * 24];
    qs_block_hooks hk = {.capture = fail_capture, .capture_stage = 1, .stop_after_stage = -1};
    qs_error err;
    assert_int_equal(qs_block_forward(&f.blk, qs_backend_cpu(), x, 1, 3, y, &hk, &err), QS_ERR_IO);
    assert_non_null(strstr(err.msg, "out_proj"));
    qs_block_free(&f.blk);
}


/* Rounds every weight of stage st as a quantizer would, then syncs the bf16 copies. */
static void fake_quantize(qs_block *blk, int st)
{
    for (int i = 0; i < blk->n_linears; i++)
        if (blk->lin[i].stage == st) {
            qs_tensor *w = qs_block_linear_weight(blk, i);
            float *d = w->data;
            for (int64_t j = 0; j < qs_tensor_numel(w); j++) d[j] = roundf(d[j] * 8.0f) / 8.0f;
            assert_int_equal(qs_block_linear_sync(blk, i, NULL), QS_OK);
        }
}

/* True-sequential GPTQ two ways on two copies of one block: (a) the forward
 * re-run from the block input up to each stage (what stage.c did before
 * boundary spans), (b) spans that resume from the previous boundary with the
 * kept stage inputs. After each capture both quantize the stage's weights
 * the same way. Every capture (f32 and bf16 views) and the final output
 * must be the same bits, and (b) must do exactly one forward's flops. */
static void check_spans(const char *json, qs_compute_dtype dt)
{
    fixture fa, fb;
    uint64_t seed = rng;
    make_block(&fa, json);
    rng = seed;
    make_block(&fb, json);
    qs_error err;
    assert_int_equal(qs_block_set_compute(&fa.blk, dt, &err), QS_OK);
    assert_int_equal(qs_block_set_compute(&fb.blk, dt, &err), QS_OK);
    const int64_t B = 2, S = 19, R = B * S, H = fa.cfg.hidden;
    float *x = malloc(sizeof(float) * (size_t)(R * H)), *ya = malloc(sizeof(float) * (size_t)(R * H));
    float *yb = malloc(sizeof(float) * (size_t)(R * H)), *res = malloc(sizeof(float) * (size_t)(R * H));
    int64_t c1 = qs_block_carry_cols(&fb.blk, 1), c3 = qs_block_carry_cols(&fb.blk, 3);
    assert_true(c1 > 0 && c3 > 0);
    assert_int_equal(qs_block_carry_cols(&fb.blk, 0), 0);
    assert_int_equal(qs_block_carry_cols(&fb.blk, 2), 0);
    float *carry = malloc(sizeof(float) * (size_t)(R * (c1 > c3 ? c1 : c3)));
    for (int64_t i = 0; i < R * H; i++) x[i] = (float)urand();
    double flops = 0;
    const float *res_at = x;
    for (int st = 0; st < QS_BLOCK_STAGES; st++) {
        recorder ra = {0}, rb = {0};
        qs_block_hooks ha = {.capture = record, .ctx = &ra, .capture_stage = st, .stop_after_stage = st};
        assert_int_equal(qs_block_forward(&fa.blk, qs_backend_cpu(), x, B, S, NULL, &ha, &err), QS_OK);
        qs_block_hooks hb = {.capture = record, .ctx = &rb, .capture_stage = st, .stop_after_stage = -1};
        int from = st == 0 ? 0 : st - 1;
        bool changes = from <= 1 && st >= 2;
        qs_block_span sp = {.from = from, .to = st, .res_in = res_at, .res_out = changes ? res : NULL,
                            .x_in = qs_block_carry_cols(&fb.blk, from) ? carry : NULL,
                            .x_out = qs_block_carry_cols(&fb.blk, st) ? carry : NULL};
        if (sp.x_in && sp.x_out) fail_msg("a span both reads and writes the carry");
        assert_int_equal(qs_block_forward_span(&fb.blk, qs_backend_cpu(), B, S, &sp, &hb, &err), QS_OK);
        if (changes) res_at = res;
        flops += sp.flops;
        assert_non_null(ra.in[st]);
        assert_non_null(rb.in[st]);
        assert_int_equal(ra.cols[st], rb.cols[st]);
        assert_memory_equal(ra.in[st], rb.in[st], sizeof(float) * (size_t)(R * ra.cols[st]));
        if (dt == QS_COMPUTE_BF16) {
            /* the bf16 view is the f32 input rounded */
            assert_non_null(rb.inb[st]);
            for (int64_t i = 0; i < R * rb.cols[st]; i++) assert_int_equal(rb.inb[st][i], qs_f32_to_bf16(rb.in[st][i]));
            assert_memory_equal(ra.inb[st], rb.inb[st], sizeof(uint16_t) * (size_t)(R * ra.cols[st]));
        } else {
            assert_null(rb.inb[st]);
        }
        for (int t = 0; t < QS_BLOCK_STAGES; t++) assert_true((rb.in[t] != NULL) == (t == st));
        recorder_free(&ra);
        recorder_free(&rb);
        fake_quantize(&fa.blk, st);
        fake_quantize(&fb.blk, st);
    }
    assert_int_equal(qs_block_forward(&fa.blk, qs_backend_cpu(), x, B, S, ya, NULL, &err), QS_OK);
    qs_block_span last = {.from = 3, .to = QS_BLOCK_END, .res_in = res_at, .res_out = yb, .x_in = carry};
    assert_int_equal(qs_block_forward_span(&fb.blk, qs_backend_cpu(), B, S, &last, NULL, &err), QS_OK);
    flops += last.flops;
    assert_memory_equal(ya, yb, sizeof(float) * (size_t)(R * H));
    /* one forward in all: every linear once, attention once */
    assert_true(fabs(flops - qs_block_forward_flops(&fb.blk, B, S)) <= 1e-9 * flops);
    free(x), free(ya), free(yb), free(res), free(carry);
    qs_block_free(&fa.blk);
    qs_block_free(&fb.blk);
}

static void test_spans(void **state)
{
    (void)state;
    const char *cfgs[3] = {LLAMA_CFG, OPT_CFG, BLOOM_CFG};
    for (int a = 0; a < 3; a++) {
        check_spans(cfgs[a], QS_COMPUTE_F32);
        check_spans(cfgs[a], QS_COMPUTE_BF16);
    }
}

/* bf16 compute: the same block within bf16's precision of the f32 forward and
 * of the double reference; captures carry the bf16 view. */
static void test_bf16_forward(void **state)
{
    (void)state;
    const char *cfgs[3] = {LLAMA_CFG, OPT_CFG, BLOOM_CFG};
    for (int a = 0; a < 3; a++) {
        fixture f;
        make_block(&f, cfgs[a]);
        const int64_t B = 2, S = 33, R = B * S, H = f.cfg.hidden;
        float *x = malloc(sizeof(float) * (size_t)(R * H)), *y = malloc(sizeof(float) * (size_t)(R * H));
        for (int64_t i = 0; i < R * H; i++) x[i] = (float)urand();
        ref_out ro = {0};
        ref_forward(&f.blk, x, B, S, &ro);
        qs_error err;
        assert_int_equal(qs_block_set_compute(&f.blk, QS_COMPUTE_BF16, &err), QS_OK);
        assert_int_equal(qs_block_forward(&f.blk, qs_backend_cpu(), x, B, S, y, NULL, &err), QS_OK);
        /* the block output is x + the two branches: compare the branches */
        double num = 0, den = 0;
        for (int64_t i = 0; i < R * H; i++) {
            num += (y[i] - ro.out[i]) * (y[i] - ro.out[i]);
            den += (ro.out[i] - x[i]) * (ro.out[i] - x[i]);
        }
        if (sqrt(num / den) > 2e-2) fail_msg("%s bf16: relative error %g of the branches", f.cfg.model_type, sqrt(num / den));
        if (sqrt(num / den) < 1e-6) fail_msg("%s bf16: no rounding at all (%g): f32 ran?", f.cfg.model_type, sqrt(num / den));
        /* back to f32: the f32 numbers again */
        assert_int_equal(qs_block_set_compute(&f.blk, QS_COMPUTE_F32, &err), QS_OK);
        assert_null(f.blk.weight_bf16[0]);
        assert_int_equal(qs_block_forward(&f.blk, qs_backend_cpu(), x, B, S, y, NULL, &err), QS_OK);
        if (max_rel(y, ro.out, R * H) > 1e-5) fail_msg("%s f32 after bf16", f.cfg.model_type);
        ref_free(&ro);
        free(x), free(y);
        qs_block_free(&f.blk);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_opt),
        cmocka_unit_test(test_bloom),
        cmocka_unit_test(test_stop_and_replace),
        cmocka_unit_test(test_capture_error_propagates),
        cmocka_unit_test(test_spans),
        cmocka_unit_test(test_bf16_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
