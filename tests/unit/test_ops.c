/* test_ops.c — the forward ops (kernels/ops.h, kernels/cpu/ops.c) against
 * plain, obviously-correct loops written here: naive softmax attention with an
 * explicit score matrix, norms from their definitions, RoPE as a 2-D rotation,
 * ALiBi slopes from the ALiBi paper's closed forms, log-softmax in double. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/ops.h"

static uint64_t rng_state = 88172645463325252ull;

static double urand(void) /* xorshift64, uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 4503599627370496.0 - 1.0;
}

static float *rand_vec(int64_t n, double scale)
{
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = (float)(urand() * scale);
    return v;
}

/* ---- naive attention: full score matrix, softmax in double ------------------ */

typedef struct {
    int64_t batch, sq, sk;
    int nh, nkv, d;
    int causal;
    const float *slopes;
} naive_cfg;

/* q [b, sq, nh, d], k/v [b, sk, nkv, d] contiguous; out [b, sq, nh, d]. */
static void naive_attention(const naive_cfg *c, const float *q, const float *k, const float *v, double *out)
{
    double *sc = malloc(sizeof(double) * (size_t)c->sk);
    int group = c->nh / c->nkv;
    for (int64_t b = 0; b < c->batch; b++)
        for (int h = 0; h < c->nh; h++) {
            int kh = h / group;
            for (int64_t i = 0; i < c->sq; i++) {
                const float *qi = q + ((b * c->sq + i) * c->nh + h) * c->d;
                double mx = -INFINITY;
                for (int64_t j = 0; j < c->sk; j++) {
                    if (c->causal && j > i + (c->sk - c->sq)) {
                        sc[j] = -INFINITY;
                        continue;
                    }
                    const float *kj = k + ((b * c->sk + j) * c->nkv + kh) * c->d;
                    double s = 0;
                    for (int t = 0; t < c->d; t++) s += (double)qi[t] * kj[t];
                    s /= sqrt((double)c->d);
                    if (c->slopes) s += c->slopes[h] * (double)(j - i); /* relative form */
                    sc[j] = s;
                    if (s > mx) mx = s;
                }
                double z = 0;
                for (int64_t j = 0; j < c->sk; j++) z += sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
                double *o = out + ((b * c->sq + i) * c->nh + h) * c->d;
                for (int t = 0; t < c->d; t++) o[t] = 0;
                for (int64_t j = 0; j < c->sk; j++) {
                    if (sc[j] == -INFINITY) continue;
                    double p = exp(sc[j] - mx) / z;
                    const float *vj = v + ((b * c->sk + j) * c->nkv + kh) * c->d;
                    for (int t = 0; t < c->d; t++) o[t] += p * vj[t];
                }
            }
        }
    free(sc);
}

static void check_attention(int64_t batch, int64_t sq, int64_t sk, int nh, int nkv, int d, int causal, int alibi)
{
    float *q = rand_vec(batch * sq * nh * d, 2.0);
    float *k = rand_vec(batch * sk * nkv * d, 2.0);
    float *v = rand_vec(batch * sk * nkv * d, 1.0);
    float *out = calloc((size_t)(batch * sq * nh * d), sizeof(float));
    double *ref = calloc((size_t)(batch * sq * nh * d), sizeof(double));
    float slopes[64];
    for (int h = 0; h < nh; h++) slopes[h] = (float)qs_op_alibi_slope(h, nh);

    naive_cfg c = {batch, sq, sk, nh, nkv, d, causal, alibi ? slopes : NULL};
    naive_attention(&c, q, k, v, ref);

    qs_attn_args a = {
        .batch = batch, .seq_q = sq, .seq_k = sk, .n_heads = nh, .n_kv_heads = nkv, .head_dim = d,
        .scale = 1.0f / sqrtf((float)d), .causal = causal, .alibi = alibi ? slopes : NULL,
        .q = q, .q_tok = (int64_t)nh * d, .q_head = d,
        .k = k, .k_tok = (int64_t)nkv * d, .k_head = d,
        .v = v, .v_tok = (int64_t)nkv * d, .v_head = d,
        .out = out, .o_tok = (int64_t)nh * d, .o_head = d,
    };
    qs_error err;
    assert_int_equal(qs_cpu_attention(&a, &err), QS_OK);
    /* the plain loops give the very same bits as the AVX-512 ones (where they run) */
    float *plain = calloc((size_t)(batch * sq * nh * d), sizeof(float));
    a.out = plain;
    qs_cpu_attention_force_plain(true);
    assert_int_equal(qs_cpu_attention(&a, &err), QS_OK);
    qs_cpu_attention_force_plain(false);
    assert_memory_equal(plain, out, sizeof(float) * (size_t)(batch * sq * nh * d));
    free(plain);
    double max_err = 0;
    for (int64_t i = 0; i < batch * sq * nh * d; i++) {
        double e = fabs(out[i] - ref[i]);
        if (e > max_err) max_err = e;
    }
    if (max_err > 2e-5)
        fail_msg("attention b=%lld sq=%lld sk=%lld nh=%d nkv=%d d=%d causal=%d alibi=%d: max err %g",
                 (long long)batch, (long long)sq, (long long)sk, nh, nkv, d, causal, alibi, max_err);
    free(q), free(k), free(v), free(out), free(ref);
}

static void test_attention_tiles(void **state)
{
    (void)state;
    /* lengths around and off the tile sizes (32 query, 64 key) */
    const int64_t lens[] = {1, 5, 31, 32, 33, 64, 65, 100, 130};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        check_attention(2, lens[i], lens[i], 4, 4, 16, 1, 0);
        check_attention(1, lens[i], lens[i], 4, 4, 8, 0, 0);
    }
}

static void test_attention_gqa_alibi(void **state)
{
    (void)state;
    check_attention(2, 77, 77, 8, 2, 16, 1, 0);   /* GQA, 4 query heads per kv head */
    check_attention(1, 70, 70, 6, 3, 8, 1, 0);
    check_attention(2, 77, 77, 6, 6, 8, 1, 1);    /* ALiBi, non-power-of-2 heads */
    check_attention(1, 45, 45, 8, 8, 4, 0, 1);    /* ALiBi, not causal */
    check_attention(1, 40, 100, 4, 2, 8, 1, 0);   /* queries are the last 40 of 100 keys */
    check_attention(2, 130, 130, 4, 2, 64, 1, 0); /* head_dim of real models: 4 AVX-512 chunks */
    check_attention(1, 70, 70, 3, 3, 80, 1, 1);   /* 80 = 5 chunks */
    check_attention(1, 37, 37, 2, 2, 24, 0, 0);   /* a partial chunk */
}

/* q, k, v as slices of one fused buffer (bloom's [heads, 3, head_dim] rows). */
static void test_attention_strided(void **state)
{
    (void)state;
    const int64_t s = 70;
    const int nh = 3, d = 8;
    float *fused = rand_vec(s * nh * 3 * d, 2.0);
    float *q = malloc(sizeof(float) * s * nh * d), *k = malloc(sizeof(float) * s * nh * d),
          *v = malloc(sizeof(float) * s * nh * d);
    for (int64_t t = 0; t < s; t++)
        for (int h = 0; h < nh; h++)
            for (int c = 0; c < d; c++) {
                const float *row = fused + t * nh * 3 * d + h * 3 * d;
                q[(t * nh + h) * d + c] = row[c];
                k[(t * nh + h) * d + c] = row[d + c];
                v[(t * nh + h) * d + c] = row[2 * d + c];
            }
    double *ref = calloc((size_t)(s * nh * d), sizeof(double));
    float slopes[3];
    for (int h = 0; h < nh; h++) slopes[h] = (float)qs_op_alibi_slope(h, nh);
    naive_cfg c = {1, s, s, nh, nh, d, 1, slopes};
    naive_attention(&c, q, k, v, ref);
    /* output written into a wider buffer with a gap per token */
    const int64_t o_tok = nh * d + 5;
    float *out = calloc((size_t)(s * o_tok), sizeof(float));
    qs_attn_args a = {.batch = 1, .seq_q = s, .seq_k = s, .n_heads = nh, .n_kv_heads = nh, .head_dim = d,
                      .scale = 1.0f / sqrtf((float)d), .causal = true, .alibi = slopes,
                      .q = fused, .q_tok = nh * 3 * d, .q_head = 3 * d,
                      .k = fused + d, .k_tok = nh * 3 * d, .k_head = 3 * d,
                      .v = fused + 2 * d, .v_tok = nh * 3 * d, .v_head = 3 * d,
                      .out = out, .o_tok = o_tok, .o_head = d};
    qs_error err;
    assert_int_equal(qs_cpu_attention(&a, &err), QS_OK);
    for (int64_t t = 0; t < s; t++)
        for (int i = 0; i < nh * d; i++) assert_true(fabs(out[t * o_tok + i] - ref[t * nh * d + i]) < 2e-5);
    free(fused), free(q), free(k), free(v), free(ref), free(out);
}

static void test_attention_bad_heads(void **state)
{
    (void)state;
    float x[8] = {0};
    qs_attn_args a = {.batch = 1, .seq_q = 1, .seq_k = 1, .n_heads = 3, .n_kv_heads = 2, .head_dim = 1,
                      .q = x, .k = x, .v = x, .out = x};
    qs_error err;
    assert_int_equal(qs_cpu_attention(&a, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "kv heads"));
}

/* ---- norms ---------------------------------------------------------------------- */

static void test_norms(void **state)
{
    (void)state;
    const int64_t rows = 37, n = 96;
    float *x = rand_vec(rows * n, 3.0), *w = rand_vec(n, 1.0), *b = rand_vec(n, 1.0);
    for (int64_t i = 0; i < n; i++) x[i] += 1000.0f; /* a row with a large offset */
    float *y = malloc(sizeof(float) * rows * n);
    qs_cpu_rmsnorm(x, w, y, rows, n, 1e-6f);
    for (int64_t r = 0; r < rows; r++) {
        double ms = 0;
        for (int64_t i = 0; i < n; i++) ms += (double)x[r * n + i] * x[r * n + i];
        ms /= n;
        for (int64_t i = 0; i < n; i++) {
            double ref = x[r * n + i] / sqrt(ms + 1e-6) * w[i];
            assert_true(fabs(y[r * n + i] - ref) <= 1e-5 * (1 + fabs(ref)));
        }
    }
    qs_cpu_layernorm(x, w, b, y, rows, n, 1e-5f);
    for (int64_t r = 0; r < rows; r++) {
        double mu = 0, var = 0;
        for (int64_t i = 0; i < n; i++) mu += x[r * n + i];
        mu /= n;
        for (int64_t i = 0; i < n; i++) var += (x[r * n + i] - mu) * (x[r * n + i] - mu);
        var /= n;
        for (int64_t i = 0; i < n; i++) {
            double ref = (x[r * n + i] - mu) / sqrt(var + 1e-5) * w[i] + b[i];
            assert_true(fabs(y[r * n + i] - ref) <= 1e-4 * (1 + fabs(ref)));
        }
    }
    /* in place (y aliases x) gives the same as out of place */
    float *y2 = malloc(sizeof(float) * rows * n);
    memcpy(y2, x, sizeof(float) * rows * n);
    qs_cpu_layernorm(y2, w, b, y2, rows, n, 1e-5f);
    assert_memory_equal(y, y2, sizeof(float) * rows * n);
    free(x), free(w), free(b), free(y), free(y2);
}

/* ---- RoPE ------------------------------------------------------------------------- */

static void test_rope(void **state)
{
    (void)state;
    const int d = 16, heads = 3;
    const int64_t batch = 2, seq = 9;
    double inv[8];
    qs_cpu_rope_inv_freq(d, 10000.0, 0, 0, 0, 0, 0, inv);
    for (int i = 0; i < d / 2; i++) assert_true(fabs(inv[i] - pow(10000.0, -2.0 * i / d)) < 1e-15);
    float cs[9 * 8], sn[9 * 8];
    qs_cpu_rope_tables(inv, d, 0, seq, cs, sn);
    /* x as [batch, seq, heads, d] embedded in rows of width heads*d + 3 */
    const int64_t tok = heads * d + 3;
    float *x = rand_vec(batch * seq * tok, 1.0);
    float *x0 = malloc(sizeof(float) * batch * seq * tok);
    memcpy(x0, x, sizeof(float) * batch * seq * tok);
    qs_cpu_rope(x, batch, seq, heads, d, tok, d, cs, sn);
    for (int64_t b = 0; b < batch; b++)
        for (int64_t t = 0; t < seq; t++)
            for (int h = 0; h < heads; h++) {
                const float *a = x0 + (b * seq + t) * tok + h * d;
                const float *r = x + (b * seq + t) * tok + h * d;
                for (int i = 0; i < d / 2; i++) {
                    /* (a_i, a_{i+d/2}) rotated by angle t·inv_i */
                    double ang = (double)t * pow(10000.0, -2.0 * i / d);
                    double e0 = a[i] * cos(ang) - a[i + d / 2] * sin(ang);
                    double e1 = a[i] * sin(ang) + a[i + d / 2] * cos(ang);
                    assert_true(fabs(r[i] - e0) < 1e-5 && fabs(r[i + d / 2] - e1) < 1e-5);
                }
            }
    /* the 3 padding floats of each row are untouched */
    for (int64_t r = 0; r < batch * seq; r++)
        for (int i = heads * d; i < tok; i++) assert_true(x[r * tok + i] == x0[r * tok + i]);
    free(x), free(x0);
}

/* Llama 3.1 published scaling (factor 8, low 1, high 4, original 8192), checked
 * band by band from the definition. */
static void test_rope_llama3(void **state)
{
    (void)state;
    const double pi = 3.14159265358979323846;
    /* wavelength 2π/f: 100 < 2048 (high-frequency band) → unchanged */
    double f = 2 * pi / 100.0;
    assert_true(fabs(qs_op_rope_llama3_scale(f, 8, 1, 4, 8192) - f) < 1e-15);
    /* wavelength 10000 > 8192 → divided by 8 */
    f = 2 * pi / 10000.0;
    assert_true(fabs(qs_op_rope_llama3_scale(f, 8, 1, 4, 8192) - f / 8) < 1e-15);
    /* wavelength 4096: 8192/4096 = 2 → smooth = (2 − 1)/(4 − 1) = 1/3 */
    f = 2 * pi / 4096.0;
    double want = (2.0 / 3.0) * f / 8 + (1.0 / 3.0) * f;
    assert_true(fabs(qs_op_rope_llama3_scale(f, 8, 1, 4, 8192) - want) < 1e-15);
    /* linear scaling divides every frequency */
    double inv[4];
    qs_cpu_rope_inv_freq(8, 500000.0, 1, 4.0, 0, 0, 0, inv);
    for (int i = 0; i < 4; i++) assert_true(fabs(inv[i] - pow(500000.0, -2.0 * i / 8) / 4) < 1e-15);
}

/* ---- ALiBi ------------------------------------------------------------------------- */

static void test_alibi_slopes(void **state)
{
    (void)state;
    /* 8 heads: 1/2, 1/4, ..., 1/256 (ALiBi paper) */
    for (int h = 0; h < 8; h++) assert_true(fabs(qs_op_alibi_slope(h, 8) - pow(2.0, -(h + 1))) < 1e-15);
    /* 6 heads: the 4-head sequence 2^-2, 2^-4, 2^-6, 2^-8, then every other of the
     * 8-head sequence: 2^-1, 2^-3 */
    const double six[6] = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
    for (int h = 0; h < 6; h++) assert_true(fabs(qs_op_alibi_slope(h, 6) - six[h]) < 1e-15);
    /* 12 heads: 8-head sequence then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 */
    for (int h = 0; h < 4; h++)
        assert_true(fabs(qs_op_alibi_slope(8 + h, 12) - pow(2.0, -0.5 - h)) < 1e-15);
}

/* ---- activations, online softmax ---------------------------------------------------- */

static void test_activations(void **state)
{
    (void)state;
    float g[5] = {-3, -0.5f, 0, 0.5f, 3}, u[5] = {1, 2, 3, 4, 5};
    float x[5];
    memcpy(x, g, sizeof x);
    qs_cpu_silu_mul(x, u, 5);
    for (int i = 0; i < 5; i++) assert_true(fabs(x[i] - g[i] / (1 + exp(-g[i])) * u[i]) < 1e-6);
    memcpy(x, g, sizeof x);
    qs_cpu_relu(x, 5);
    for (int i = 0; i < 5; i++) assert_true(x[i] == (g[i] > 0 ? g[i] : 0));
    memcpy(x, g, sizeof x);
    qs_cpu_gelu_tanh(x, 5);
    for (int i = 0; i < 5; i++) {
        double t = g[i];
        double ref = 0.5 * t * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (t + 0.044715 * t * t * t)));
        assert_true(fabs(x[i] - ref) < 1e-6);
    }
}

/* qs_op_expf against libm's double exp over its whole range, and the SSE2
 * path of the attention (exp_shifted) agrees with it through attention itself
 * (the attention tests above compare with double-precision softmax). */
static void test_expf(void **state)
{
    (void)state;
    double worst = 0;
    for (int i = 0; i <= 2000000; i++) {
        float x = -87.0f + 175.0f * (float)i / 2000000.0f;
        double ref = exp((double)x), got = qs_op_expf(x);
        double rel = fabs(got - ref) / ref;
        if (rel > worst) worst = rel;
    }
    if (worst > 2.5e-7) fail_msg("qs_op_expf: max relative error %g", worst);
    assert_true(qs_op_expf(0.0f) == 1.0f);
    assert_true(qs_op_expf(-INFINITY) > 0.0f && qs_op_expf(-INFINITY) < 1e-37f); /* clamped, never NaN */
    assert_true(isfinite(qs_op_expf(1000.0f)));
}

static void test_online_softmax(void **state)
{
    (void)state;
    /* streaming sum of exp over chunks equals the one-shot sum */
    const float s[7] = {-INFINITY, 1.0f, 3.0f, -2.0f, 10.0f, 9.5f, -INFINITY};
    qs_softmax_state st = {-INFINITY, 0.0f};
    assert_true(qs_op_softmax_rescale(&st, -INFINITY) == 1.0f); /* all masked: no NaN */
    assert_true(st.m == -INFINITY && st.l == 0.0f);
    for (int c = 0; c < 7; c += 2) {
        float mx = -INFINITY;
        for (int j = c; j < c + 2 && j < 7; j++) mx = s[j] > mx ? s[j] : mx;
        qs_op_softmax_rescale(&st, mx);
        for (int j = c; j < c + 2 && j < 7; j++)
            if (s[j] != -INFINITY) st.l += expf(s[j] - st.m);
    }
    double z = 0;
    for (int j = 0; j < 7; j++)
        if (s[j] != -INFINITY) z += exp(s[j] - 10.0);
    assert_true(st.m == 10.0f);
    assert_true(fabs(st.l - z) < 1e-6);
}

/* ---- embedding, NLL, KL --------------------------------------------------------------- */

static void test_embed(void **state)
{
    (void)state;
    float table[4 * 3];
    for (int i = 0; i < 12; i++) table[i] = (float)i;
    int32_t ids[3] = {2, 0, 3};
    float out[9];
    qs_error err;
    assert_int_equal(qs_cpu_embed(table, 4, 3, ids, 3, out, &err), QS_OK);
    for (int i = 0; i < 3; i++)
        for (int c = 0; c < 3; c++) assert_true(out[i * 3 + c] == (float)(ids[i] * 3 + c));
    ids[1] = 4;
    assert_int_equal(qs_cpu_embed(table, 4, 3, ids, 3, out, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "id 4"));
}

static void test_nll_kl(void **state)
{
    (void)state;
    const int64_t rows = 13, vocab = 301;
    float *a = rand_vec(rows * vocab, 8.0), *b = rand_vec(rows * vocab, 8.0);
    for (int64_t i = 0; i < vocab; i++) b[i] = a[i] + 0.25f; /* row 0: same distribution, shifted logits */
    int32_t tgt[13];
    for (int64_t r = 0; r < rows; r++) tgt[r] = (int32_t)((r * 37) % vocab);
    double nll[13], kl[13];
    uint8_t same[13];
    qs_cpu_nll_rows(a, rows, vocab, tgt, nll);
    qs_cpu_kl_rows(a, b, rows, vocab, kl, same);
    for (int64_t r = 0; r < rows; r++) {
        const float *x = a + r * vocab, *y = b + r * vocab;
        double za = 0, zb = 0;
        for (int64_t i = 0; i < vocab; i++) za += exp((double)x[i]), zb += exp((double)y[i]);
        assert_true(fabs(nll[r] - (log(za) - x[tgt[r]])) < 1e-6); /* f32 exp, double sum */
        double k = 0;
        int64_t ma = 0, mb = 0;
        for (int64_t i = 0; i < vocab; i++) {
            double p = exp((double)x[i]) / za, q = exp((double)y[i]) / zb;
            k += p * log(p / q);
            if (x[i] > x[ma]) ma = i;
            if (y[i] > y[mb]) mb = i;
        }
        assert_true(fabs(kl[r] - k) < 1e-9);
        assert_int_equal(same[r], ma == mb);
    }
    assert_true(kl[0] < 1e-12 && same[0] == 1);
    free(a), free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_tiles),   cmocka_unit_test(test_attention_gqa_alibi),
        cmocka_unit_test(test_attention_strided), cmocka_unit_test(test_attention_bad_heads),
        cmocka_unit_test(test_norms),             cmocka_unit_test(test_rope),
        cmocka_unit_test(test_rope_llama3),       cmocka_unit_test(test_alibi_slopes),
        cmocka_unit_test(test_activations),       cmocka_unit_test(test_online_softmax),
        cmocka_unit_test(test_expf),
        cmocka_unit_test(test_embed),             cmocka_unit_test(test_nll_kl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
