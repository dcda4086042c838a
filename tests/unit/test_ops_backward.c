/* test_ops_backward.c — every backward op of kernels/cpu/ops_backward.c
 * against finite differences of a plain double-precision forward written
 * here (see gradcheck.h for the method): linear, RMSNorm, LayerNorm, RoPE
 * with llama3 frequency scaling, causal attention with GQA, ALiBi, tiles
 * crossed, non-causal, queries shorter than keys and bloom's fused strided
 * layout, SiLU·gate, GELU-tanh, ReLU, a residual connection. Plus: the
 * attention forward's row log-sum-exp, and identical results for 1 and 2
 * threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "kernels/backend.h"
#include "kernels/cpu/ops_backward_cpu.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/ops.h"

/* ================================================================= linear == */

typedef struct lin_ctx {
    int64_t rows, in, out;
    double *x, *w, *b, *g; /* g: the upstream gradient (loss = Σ g ⊙ y) */
} lin_ctx;

static double lin_loss(void *p)
{
    lin_ctx *c = p;
    double L = 0;
    for (int64_t r = 0; r < c->rows; r++)
        for (int64_t o = 0; o < c->out; o++) {
            double y = c->b[o];
            for (int64_t i = 0; i < c->in; i++) y += c->x[r * c->in + i] * c->w[o * c->in + i];
            L += c->g[r * c->out + o] * y;
        }
    return L;
}

static void test_linear_backward(void **state)
{
    (void)state;
    const int64_t rows = 37, in = 24, out = 20;
    float *x = gc_randf(rows * in, 1), *w = gc_randf(out * in, 1), *b = gc_randf(out, 1), *g = gc_randf(rows * out, 1);
    float *dx = calloc((size_t)(rows * in), 4), *dw = calloc((size_t)(out * in), 4), *db = calloc((size_t)out, 4);
    qs_cpu_linear_backward(qs_backend_cpu(), x, w, g, rows, in, out, dx, 0.0f, dw, 0.0f, db);
    lin_ctx c = {rows, in, out, gc_tod(x, rows * in), gc_tod(w, out * in), gc_tod(b, out), gc_tod(g, rows * out)};
    assert_true(gc_check("linear dx", lin_loss, &c, c.x, rows * in, dx, 400) < GC_TOL);
    assert_true(gc_check("linear dW", lin_loss, &c, c.w, out * in, dw, 400) < GC_TOL);
    assert_true(gc_check("linear db", lin_loss, &c, c.b, out, db, 400) < GC_TOL);
    /* accumulate mode adds to what is there */
    float *dx2 = malloc(sizeof(float) * (size_t)(rows * in));
    for (int64_t i = 0; i < rows * in; i++) dx2[i] = 1.0f;
    qs_cpu_linear_backward(qs_backend_cpu(), x, w, g, rows, in, out, dx2, 1.0f, NULL, 0.0f, NULL);
    for (int64_t i = 0; i < rows * in; i++) assert_true(fabsf(dx2[i] - 1.0f - dx[i]) < 1e-5f);
    free(x), free(w), free(b), free(g), free(dx), free(dw), free(db), free(dx2);
    free(c.x), free(c.w), free(c.b), free(c.g);
}

/* ================================================================== norms == */

typedef struct norm_ctx {
    int64_t rows, n;
    int layer; /* 0 RMSNorm, 1 LayerNorm */
    double eps;
    double *x, *w, *b, *g;
} norm_ctx;

static double norm_loss(void *p)
{
    norm_ctx *c = p;
    double L = 0;
    for (int64_t r = 0; r < c->rows; r++) {
        const double *x = c->x + r * c->n;
        double mean = 0, var = 0;
        if (c->layer) {
            for (int64_t i = 0; i < c->n; i++) mean += x[i];
            mean /= (double)c->n;
        }
        for (int64_t i = 0; i < c->n; i++) var += (x[i] - mean) * (x[i] - mean);
        double inv = 1.0 / sqrt(var / (double)c->n + c->eps);
        for (int64_t i = 0; i < c->n; i++) {
            double y = (x[i] - mean) * inv * c->w[i] + (c->layer ? c->b[i] : 0.0);
            L += c->g[r * c->n + i] * y;
        }
    }
    return L;
}

static void test_rmsnorm_backward(void **state)
{
    (void)state;
    const int64_t rows = 9, n = 48;
    float *x = gc_randf(rows * n, 2), *w = gc_randf(n, 1.5), *g = gc_randf(rows * n, 1);
    float *dx = calloc((size_t)(rows * n), 4), *dw = calloc((size_t)n, 4);
    qs_cpu_rmsnorm_backward(x, w, g, dx, dw, rows, n, 1e-5f);
    norm_ctx c = {rows, n, 0, 1e-5, gc_tod(x, rows * n), gc_tod(w, n), NULL, gc_tod(g, rows * n)};
    assert_true(gc_check("rmsnorm dx", norm_loss, &c, c.x, rows * n, dx, 500) < GC_TOL);
    assert_true(gc_check("rmsnorm dw", norm_loss, &c, c.w, n, dw, 500) < GC_TOL);
    /* dx may alias dy, with dw computed in the same call */
    float *d2 = malloc(sizeof(float) * (size_t)(rows * n)), *dw2 = malloc(sizeof(float) * (size_t)n);
    memcpy(d2, g, sizeof(float) * (size_t)(rows * n));
    qs_cpu_rmsnorm_backward(x, w, d2, d2, dw2, rows, n, 1e-5f);
    assert_memory_equal(d2, dx, sizeof(float) * (size_t)(rows * n));
    assert_memory_equal(dw2, dw, sizeof(float) * (size_t)n);
    free(x), free(w), free(g), free(dx), free(dw), free(d2), free(dw2), free(c.x), free(c.w), free(c.g);
}

static void test_layernorm_backward(void **state)
{
    (void)state;
    const int64_t rows = 9, n = 40;
    float *x = gc_randf(rows * n, 2), *w = gc_randf(n, 1.5), *b = gc_randf(n, 1), *g = gc_randf(rows * n, 1);
    for (int64_t i = 0; i < n; i++) x[i] += 30.0f; /* a row with a large offset */
    float *dx = calloc((size_t)(rows * n), 4), *dw = calloc((size_t)n, 4), *db = calloc((size_t)n, 4);
    qs_cpu_layernorm_backward(x, w, g, dx, dw, db, rows, n, 1e-5f);
    norm_ctx c = {rows, n, 1, 1e-5, gc_tod(x, rows * n), gc_tod(w, n), gc_tod(b, n), gc_tod(g, rows * n)};
    assert_true(gc_check("layernorm dx", norm_loss, &c, c.x, rows * n, dx, 500) < GC_TOL);
    assert_true(gc_check("layernorm dw", norm_loss, &c, c.w, n, dw, 500) < GC_TOL);
    assert_true(gc_check("layernorm db", norm_loss, &c, c.b, n, db, 500) < GC_TOL);
    /* dx may alias dy, with dw and db computed in the same call */
    float *d2 = malloc(sizeof(float) * (size_t)(rows * n)), *dw2 = malloc(4 * (size_t)n), *db2 = malloc(4 * (size_t)n);
    memcpy(d2, g, sizeof(float) * (size_t)(rows * n));
    qs_cpu_layernorm_backward(x, w, d2, d2, dw2, db2, rows, n, 1e-5f);
    assert_memory_equal(d2, dx, sizeof(float) * (size_t)(rows * n));
    assert_memory_equal(dw2, dw, sizeof(float) * (size_t)n);
    assert_memory_equal(db2, db, sizeof(float) * (size_t)n);
    free(d2), free(dw2), free(db2);
    free(x), free(w), free(b), free(g), free(dx), free(dw), free(db), free(c.x), free(c.w), free(c.b), free(c.g);
}

/* =================================================================== RoPE == */

typedef struct rope_ctx {
    int64_t batch, seq;
    int heads, d;
    const double *freq; /* [d/2], llama3-scaled, computed here */
    double *x, *g;
} rope_ctx;

static double rope_loss(void *p)
{
    rope_ctx *c = p;
    double L = 0;
    int h2 = c->d / 2;
    for (int64_t b = 0; b < c->batch; b++)
        for (int64_t t = 0; t < c->seq; t++)
            for (int h = 0; h < c->heads; h++) {
                int64_t base = ((b * c->seq + t) * c->heads + h) * c->d;
                for (int i = 0; i < h2; i++) {
                    double a = (double)t * c->freq[i], x0 = c->x[base + i], x1 = c->x[base + i + h2];
                    L += c->g[base + i] * (x0 * cos(a) - x1 * sin(a)) + c->g[base + i + h2] * (x1 * cos(a) + x0 * sin(a));
                }
            }
    return L;
}

static void test_rope_backward(void **state)
{
    (void)state;
    const int64_t batch = 2, seq = 40;
    const int heads = 3, d = 16, h2 = d / 2;
    /* llama3 scaling (factor 8, low 1, high 4, original 16 positions, theta 500000),
     * written here from HF's _compute_llama3_parameters */
    double freq[8], inv[8];
    for (int i = 0; i < h2; i++) {
        double f = 1.0 / pow(500000.0, 2.0 * i / d), wl = 2 * M_PI / f, lo_wl = 16.0 / 1.0, hi_wl = 16.0 / 4.0;
        if (wl > lo_wl) f = f / 8.0;
        else if (wl >= hi_wl) {
            double sm = (16.0 / wl - 1.0) / (4.0 - 1.0);
            f = (1 - sm) * f / 8.0 + sm * f;
        }
        freq[i] = f;
    }
    qs_cpu_rope_inv_freq(d, 500000.0, 2, 8.0, 1.0, 4.0, 16.0, inv);
    for (int i = 0; i < h2; i++) assert_true(fabs(inv[i] - freq[i]) <= 1e-12 * freq[i]);
    float *cs = malloc(sizeof(float) * (size_t)(seq * h2)), *sn = malloc(sizeof(float) * (size_t)(seq * h2));
    qs_cpu_rope_tables(inv, d, 0, seq, cs, sn);
    int64_t n = batch * seq * heads * d;
    float *x = gc_randf(n, 1), *g = gc_randf(n, 1);
    float *dx = malloc(sizeof(float) * (size_t)n);
    memcpy(dx, g, sizeof(float) * (size_t)n);
    qs_cpu_rope_backward(dx, batch, seq, heads, d, heads * d, d, cs, sn);
    rope_ctx c = {batch, seq, heads, d, freq, gc_tod(x, n), gc_tod(g, n)};
    assert_true(gc_check("rope (llama3 scaling) dx", rope_loss, &c, c.x, n, dx, 600) < GC_TOL);
    free(cs), free(sn), free(x), free(g), free(dx), free(c.x), free(c.g);
}

/* ============================================================ activations == */

typedef struct act_ctx {
    int64_t n;
    int kind; /* 0 silu·up, 1 gelu, 2 relu */
    double *x, *u, *g;
} act_ctx;

static double act_loss(void *p)
{
    act_ctx *c = p;
    double L = 0;
    for (int64_t i = 0; i < c->n; i++) {
        double x = c->x[i], y;
        if (c->kind == 0) y = x / (1.0 + exp(-x)) * c->u[i];
        else if (c->kind == 1) y = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
        else y = x > 0 ? x : 0;
        L += c->g[i] * y;
    }
    return L;
}

static void test_activations_backward(void **state)
{
    (void)state;
    const int64_t n = 300;
    float *x = gc_randf(n, 5), *u = gc_randf(n, 2), *g = gc_randf(n, 1);
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) < 1e-2f) x[i] = 0.5f; /* keep ReLU's kink out of the differences */
    float *dg = malloc(sizeof(float) * (size_t)n), *du = malloc(sizeof(float) * (size_t)n);
    qs_cpu_silu_mul_backward(x, u, g, dg, du, n);
    act_ctx c = {n, 0, gc_tod(x, n), gc_tod(u, n), gc_tod(g, n)};
    assert_true(gc_check("silu*gate d gate", act_loss, &c, c.x, n, dg, n) < GC_TOL);
    assert_true(gc_check("silu*gate d up", act_loss, &c, c.u, n, du, n) < GC_TOL);
    /* dgate may alias dh */
    float *al = malloc(sizeof(float) * (size_t)n);
    memcpy(al, g, sizeof(float) * (size_t)n);
    qs_cpu_silu_mul_backward(x, u, al, al, du, n);
    assert_memory_equal(al, dg, sizeof(float) * (size_t)n);
    memcpy(dg, g, sizeof(float) * (size_t)n);
    qs_cpu_gelu_tanh_backward(x, dg, n);
    c.kind = 1;
    assert_true(gc_check("gelu_tanh dx", act_loss, &c, c.x, n, dg, n) < GC_TOL);
    memcpy(dg, g, sizeof(float) * (size_t)n);
    qs_cpu_relu_backward(x, dg, n);
    c.kind = 2;
    assert_true(gc_check("relu dx", act_loss, &c, c.x, n, dg, n) < GC_TOL);
    free(x), free(u), free(g), free(dg), free(du), free(al), free(c.x), free(c.u), free(c.g);
}

/* y = x + relu(x Wᵀ): the residual's gradient is dy plus the branch's. */
typedef struct res_ctx {
    int64_t rows, n;
    double *x, *w, *g;
} res_ctx;

static double res_loss(void *p)
{
    res_ctx *c = p;
    double L = 0;
    for (int64_t r = 0; r < c->rows; r++)
        for (int64_t o = 0; o < c->n; o++) {
            double z = 0;
            for (int64_t i = 0; i < c->n; i++) z += c->x[r * c->n + i] * c->w[o * c->n + i];
            L += c->g[r * c->n + o] * (c->x[r * c->n + o] + (z > 0 ? z : 0));
        }
    return L;
}

static void test_residual_backward(void **state)
{
    (void)state;
    const int64_t rows = 11, n = 16;
    float *x = gc_randf(rows * n, 1), *w = gc_randf(n * n, 1), *g = gc_randf(rows * n, 1);
    float *z = malloc(sizeof(float) * (size_t)(rows * n)), *dz = malloc(sizeof(float) * (size_t)(rows * n));
    float *dx = malloc(sizeof(float) * (size_t)(rows * n));
    const qs_backend_i *be = qs_backend_cpu();
    be->sgemm(be->ctx, false, true, rows, n, n, 1.0f, x, n, w, n, 0.0f, z, n);
    memcpy(dz, g, sizeof(float) * (size_t)(rows * n));
    qs_cpu_relu_backward(z, dz, rows * n);
    memcpy(dx, g, sizeof(float) * (size_t)(rows * n)); /* the residual path */
    qs_cpu_linear_backward(be, x, w, dz, rows, n, n, dx, 1.0f, NULL, 0.0f, NULL);
    res_ctx c = {rows, n, gc_tod(x, rows * n), gc_tod(w, n * n), gc_tod(g, rows * n)};
    assert_true(gc_check("residual x + relu(xW) dx", res_loss, &c, c.x, rows * n, dx, 500) < GC_TOL);
    free(x), free(w), free(g), free(z), free(dz), free(dx), free(c.x), free(c.w), free(c.g);
}

/* ============================================================== attention == */

typedef struct att_ctx {
    int64_t batch, sq, sk;
    int nh, nkv, d;
    int causal;
    const float *slopes;
    double *q, *k, *v, *g; /* contiguous [b, s, heads, d] */
} att_ctx;

/* Naive attention in double with the full score row (the reference). */
static double att_loss(void *p)
{
    att_ctx *c = p;
    double *sc = malloc(sizeof(double) * (size_t)c->sk), L = 0;
    int group = c->nh / c->nkv;
    for (int64_t b = 0; b < c->batch; b++)
        for (int h = 0; h < c->nh; h++)
            for (int64_t i = 0; i < c->sq; i++) {
                const double *qi = c->q + ((b * c->sq + i) * c->nh + h) * c->d;
                double mx = -INFINITY;
                for (int64_t j = 0; j < c->sk; j++) {
                    sc[j] = -INFINITY;
                    if (c->causal && j > i + (c->sk - c->sq)) continue;
                    const double *kj = c->k + ((b * c->sk + j) * c->nkv + h / group) * c->d;
                    double s = 0;
                    for (int t = 0; t < c->d; t++) s += qi[t] * kj[t];
                    s /= sqrt((double)c->d);
                    if (c->slopes) s += c->slopes[h] * (double)j;
                    sc[j] = s;
                    if (s > mx) mx = s;
                }
                double z = 0;
                for (int64_t j = 0; j < c->sk; j++) z += sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
                const double *gi = c->g + ((b * c->sq + i) * c->nh + h) * c->d;
                for (int64_t j = 0; j < c->sk; j++) {
                    if (sc[j] == -INFINITY) continue;
                    double pr = exp(sc[j] - mx) / z;
                    const double *vj = c->v + ((b * c->sk + j) * c->nkv + h / group) * c->d;
                    for (int t = 0; t < c->d; t++) L += gi[t] * pr * vj[t];
                }
            }
    free(sc);
    return L;
}

/* Runs the f32 forward (with lse) and backward on contiguous q/k/v, or on
 * bloom's fused [tokens, heads, 3, d] layout when fused (needs nh == nkv). */
static void attention_grads(att_ctx *c, const float *q, const float *k, const float *v, const float *g, bool fused,
                            float *dq, float *dk, float *dv)
{
    int64_t nq = c->batch * c->sq * c->nh * c->d, nk = c->batch * c->sk * c->nkv * c->d;
    float *out = calloc((size_t)nq, 4), *lse = calloc((size_t)(c->batch * c->nh * c->sq), 4);
    qs_attn_args a = {.batch = c->batch, .seq_q = c->sq, .seq_k = c->sk, .n_heads = c->nh, .n_kv_heads = c->nkv,
                      .head_dim = c->d, .scale = 1.0f / sqrtf((float)c->d), .causal = c->causal, .alibi = c->slopes,
                      .out = out, .o_tok = (int64_t)c->nh * c->d, .o_head = c->d, .lse = lse};
    qs_attn_grad_args ga = {.dout = g, .do_tok = (int64_t)c->nh * c->d, .do_head = c->d};
    qs_error err;
    float *buf = NULL, *gbuf = NULL;
    if (!fused) {
        a.q = q, a.k = k, a.v = v;
        a.q_tok = (int64_t)c->nh * c->d, a.k_tok = a.v_tok = (int64_t)c->nkv * c->d;
        a.q_head = a.k_head = a.v_head = c->d;
        ga.dq = dq, ga.dk = dk, ga.dv = dv;
        ga.dq_tok = a.q_tok, ga.dk_tok = ga.dv_tok = a.k_tok;
        ga.dq_head = ga.dk_head = ga.dv_head = c->d;
    } else {
        int64_t tok = 3LL * c->nh * c->d;
        buf = malloc(sizeof(float) * (size_t)(c->batch * c->sq * tok));
        gbuf = malloc(sizeof(float) * (size_t)(c->batch * c->sq * tok));
        for (int64_t t = 0; t < c->batch * c->sq; t++)
            for (int h = 0; h < c->nh; h++)
                for (int x = 0; x < c->d; x++) {
                    int64_t src = (t * c->nh + h) * c->d + x;
                    buf[t * tok + h * 3 * c->d + x] = q[src];
                    buf[t * tok + h * 3 * c->d + c->d + x] = k[src];
                    buf[t * tok + h * 3 * c->d + 2 * c->d + x] = v[src];
                }
        a.q = buf, a.k = buf + c->d, a.v = buf + 2 * c->d;
        a.q_tok = a.k_tok = a.v_tok = tok;
        a.q_head = a.k_head = a.v_head = 3 * c->d;
        ga.dq = gbuf, ga.dk = gbuf + c->d, ga.dv = gbuf + 2 * c->d;
        ga.dq_tok = ga.dk_tok = ga.dv_tok = tok;
        ga.dq_head = ga.dk_head = ga.dv_head = 3 * c->d;
    }
    assert_int_equal(qs_cpu_attention(&a, &err), QS_OK);
    assert_int_equal(qs_cpu_attention_backward(&a, lse, &ga, &err), QS_OK);
    if (fused)
        for (int64_t t = 0; t < c->batch * c->sq; t++)
            for (int h = 0; h < c->nh; h++)
                for (int x = 0; x < c->d; x++) {
                    int64_t dst = (t * c->nh + h) * c->d + x;
                    dq[dst] = gbuf[t * 3 * c->nh * c->d + h * 3 * c->d + x];
                    dk[dst] = gbuf[t * 3 * c->nh * c->d + h * 3 * c->d + c->d + x];
                    dv[dst] = gbuf[t * 3 * c->nh * c->d + h * 3 * c->d + 2 * c->d + x];
                }
    (void)nk;
    free(out), free(lse), free(buf), free(gbuf);
}

static void check_attention_grad(const char *name, int64_t batch, int64_t sq, int64_t sk, int nh, int nkv, int d,
                                 int causal, int alibi, bool fused)
{
    float slopes[16];
    for (int h = 0; h < nh; h++) slopes[h] = (float)qs_op_alibi_slope(h, nh);
    att_ctx c = {batch, sq, sk, nh, nkv, d, causal, alibi ? slopes : NULL, NULL, NULL, NULL, NULL};
    int64_t nq = batch * sq * nh * d, nk = batch * sk * nkv * d;
    float *q = gc_randf(nq, 1.5), *k = gc_randf(nk, 1.5), *v = gc_randf(nk, 1), *g = gc_randf(nq, 1);
    float *dq = calloc((size_t)nq, 4), *dk = calloc((size_t)nk, 4), *dv = calloc((size_t)nk, 4);
    attention_grads(&c, q, k, v, g, fused, dq, dk, dv);
    c.q = gc_tod(q, nq), c.k = gc_tod(k, nk), c.v = gc_tod(v, nk), c.g = gc_tod(g, nq);
    char label[96];
    snprintf(label, sizeof label, "attention %s dq", name);
    assert_true(gc_check(label, att_loss, &c, c.q, nq, dq, 150) < GC_TOL);
    snprintf(label, sizeof label, "attention %s dk", name);
    assert_true(gc_check(label, att_loss, &c, c.k, nk, dk, 150) < GC_TOL);
    snprintf(label, sizeof label, "attention %s dv", name);
    assert_true(gc_check(label, att_loss, &c, c.v, nk, dv, 150) < GC_TOL);
    free(q), free(k), free(v), free(g), free(dq), free(dk), free(dv), free(c.q), free(c.k), free(c.v), free(c.g);
}

static void test_attention_backward(void **state)
{
    (void)state;
    check_attention_grad("causal GQA 8/2 heads, 70 tokens", 2, 70, 70, 8, 2, 8, 1, 0, false);
    check_attention_grad("causal MHA, 130 tokens", 1, 130, 130, 2, 2, 4, 1, 0, false);
    check_attention_grad("causal ALiBi 6 heads, 77 tokens", 1, 77, 77, 6, 6, 8, 1, 1, false);
    check_attention_grad("not causal, ALiBi, 45 tokens", 1, 45, 45, 4, 4, 4, 0, 1, false);
    check_attention_grad("40 queries over 100 keys, GQA", 1, 40, 100, 4, 2, 4, 1, 0, false);
    check_attention_grad("bloom fused layout, ALiBi", 1, 70, 70, 3, 3, 8, 1, 1, true);
}

/* The forward's lse equals log Σ exp(score) from the naive scores. */
static void test_attention_lse(void **state)
{
    (void)state;
    const int64_t s = 70;
    const int nh = 4, nkv = 2, d = 8;
    float *q = gc_randf(s * nh * d, 2), *k = gc_randf(s * nkv * d, 2), *v = gc_randf(s * nkv * d, 1);
    float *out = calloc((size_t)(s * nh * d), 4), *lse = calloc((size_t)(nh * s), 4);
    qs_attn_args a = {.batch = 1, .seq_q = s, .seq_k = s, .n_heads = nh, .n_kv_heads = nkv, .head_dim = d,
                      .scale = 1.0f / sqrtf((float)d), .causal = true, .q = q, .q_tok = nh * d, .q_head = d,
                      .k = k, .k_tok = nkv * d, .k_head = d, .v = v, .v_tok = nkv * d, .v_head = d,
                      .out = out, .o_tok = nh * d, .o_head = d, .lse = lse};
    qs_error err;
    assert_int_equal(qs_cpu_attention(&a, &err), QS_OK);
    for (int h = 0; h < nh; h++)
        for (int64_t i = 0; i < s; i++) {
            double z = 0;
            for (int64_t j = 0; j <= i; j++) {
                double sc = 0;
                for (int x = 0; x < d; x++) sc += (double)q[(i * nh + h) * d + x] * k[(j * nkv + h / 2) * d + x];
                z += exp(sc / sqrt((double)d));
            }
            assert_true(fabs(lse[h * s + i] - log(z)) < 2e-5 * (1 + fabs(log(z))));
        }
    free(q), free(k), free(v), free(out), free(lse);
}

/* Attention and norm gradients do not depend on the number of threads. */
static void test_backward_threads(void **state)
{
    (void)state;
    att_ctx c = {2, 100, 100, 8, 2, 8, 1, NULL, NULL, NULL, NULL, NULL};
    int64_t nq = 2 * 100 * 8 * 8, nk = 2 * 100 * 2 * 8;
    float *q = gc_randf(nq, 1.5), *k = gc_randf(nk, 1.5), *v = gc_randf(nk, 1), *g = gc_randf(nq, 1);
    float *d1 = calloc((size_t)(nq + 2 * nk), 4), *d2 = calloc((size_t)(nq + 2 * nk), 4);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    attention_grads(&c, q, k, v, g, false, d1, d1 + nq, d1 + nq + nk);
    omp_set_num_threads(2);
    attention_grads(&c, q, k, v, g, false, d2, d2 + nq, d2 + nq + nk);
    assert_memory_equal(d1, d2, sizeof(float) * (size_t)(nq + 2 * nk));
    omp_set_num_threads(saved);
    free(q), free(k), free(v), free(g), free(d1), free(d2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_backward),    cmocka_unit_test(test_rmsnorm_backward),
        cmocka_unit_test(test_layernorm_backward), cmocka_unit_test(test_rope_backward),
        cmocka_unit_test(test_activations_backward), cmocka_unit_test(test_residual_backward),
        cmocka_unit_test(test_attention_backward), cmocka_unit_test(test_attention_lse),
        cmocka_unit_test(test_backward_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
