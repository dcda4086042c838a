/* test_model_synth.c — the synthetic generator: values are a pure function of
 * (seed, name, index) whatever the chunking and threading, the tensor list
 * covers every tensor of each architecture, shards are laid out greedily, and
 * the statistics are the documented ones (scale, tail, outlier channels). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/synth.h"

static qs_synth_opts small_opts(qs_arch arch)
{
    qs_synth_opts o;
    memset(&o, 0, sizeof o);
    qs_model_config_defaults(&o.cfg, arch);
    o.cfg.n_layers = 2;
    o.cfg.hidden = 256;
    o.cfg.n_heads = 4;
    o.cfg.n_kv_heads = arch == QS_ARCH_LLAMA ? 2 : 4;
    o.cfg.head_dim = 64;
    o.cfg.ffn = arch == QS_ARCH_LLAMA ? 512 : 1024;
    o.cfg.vocab = 300;
    if (arch != QS_ARCH_BLOOM) o.cfg.max_positions = 64;
    o.seed = 7;
    o.n_outliers = -1;
    return o;
}

static void init_ok(qs_synth_model *m, const qs_synth_opts *o)
{
    qs_error err;
    if (qs_synth_model_init(m, o, &err) != QS_OK) fail_msg("%s", err.msg);
}

static void test_chunking_and_threads_do_not_matter(void **state)
{
    (void)state;
    qs_synth_opts o = small_opts(QS_ARCH_LLAMA);
    o.cfg.hidden = 512;
    o.cfg.head_dim = 128;
    o.cfg.ffn = 1024;
    qs_synth_model m;
    init_ok(&m, &o);
    const qs_synth_tensor *t = qs_synth_find(&m, "model.layers.1.mlp.up_proj.weight");
    assert_non_null(t);
    const int64_t n = t->shape[0] * t->shape[1]; /* 512K elements: the threaded path */
    float *whole = malloc(sizeof(float) * (size_t)n), *parts = malloc(sizeof(float) * (size_t)n);
    omp_set_num_threads(2);
    qs_synth_fill(&m, t, 0, n, whole);
    /* odd-sized chunks that cross row boundaries, single-threaded */
    omp_set_num_threads(1);
    for (int64_t off = 0; off < n; off += 7919) qs_synth_fill(&m, t, off, n - off < 7919 ? n - off : 7919, parts + off);
    assert_memory_equal(whole, parts, sizeof(float) * (size_t)n);
    /* three threads, one big call */
    omp_set_num_threads(3);
    memset(parts, 0, sizeof(float) * (size_t)n);
    qs_synth_fill(&m, t, 0, n, parts);
    assert_memory_equal(whole, parts, sizeof(float) * (size_t)n);
    omp_set_num_threads(2);
    /* single elements */
    for (int64_t i = 0; i < n; i += 10007) {
        float v;
        qs_synth_fill(&m, t, i, 1, &v);
        assert_true(v == whole[i]);
    }
    /* a second model with the same options: same values; a different seed: different */
    qs_synth_model m2;
    init_ok(&m2, &o);
    qs_synth_fill(&m2, qs_synth_find(&m2, t->name), 0, n, parts);
    assert_memory_equal(whole, parts, sizeof(float) * (size_t)n);
    qs_synth_model_free(&m2);
    o.seed = 8;
    init_ok(&m2, &o);
    qs_synth_fill(&m2, qs_synth_find(&m2, t->name), 0, n, parts);
    int64_t same = 0;
    for (int64_t i = 0; i < n; i++) same += whole[i] == parts[i];
    assert_true(same < n / 100);
    qs_synth_model_free(&m2);
    /* another tensor of the same shape differs too (the key includes the name) */
    const qs_synth_tensor *g = qs_synth_find(&m, "model.layers.1.mlp.gate_proj.weight");
    qs_synth_fill(&m, g, 0, n, parts);
    same = 0;
    for (int64_t i = 0; i < n; i++) same += whole[i] == parts[i];
    assert_true(same < n / 100);
    free(whole);
    free(parts);
    qs_synth_model_free(&m);
}

/* Expected tensor names per architecture, written from the HF module layouts. */
static void expect_tensors(const qs_synth_model *m, const char *const *names, int n_names)
{
    assert_int_equal(m->count, n_names);
    for (int i = 0; i < n_names; i++)
        if (!qs_synth_find(m, names[i])) fail_msg("tensor %s is missing", names[i]);
}

static void test_tensor_lists(void **state)
{
    (void)state;
    char buf[64][QS_NAME_MAX];
    const char *names[64];
    for (int i = 0; i < 64; i++) names[i] = buf[i];
    int n;

    qs_synth_opts o = small_opts(QS_ARCH_LLAMA);
    qs_synth_model m;
    init_ok(&m, &o);
    n = 0;
    snprintf(buf[n++], QS_NAME_MAX, "model.embed_tokens.weight");
    snprintf(buf[n++], QS_NAME_MAX, "model.norm.weight");
    snprintf(buf[n++], QS_NAME_MAX, "lm_head.weight");
    for (int l = 0; l < 2; l++) {
        const char *s[] = {"input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                           "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
        for (int k = 0; k < 9; k++) snprintf(buf[n++], QS_NAME_MAX, "model.layers.%d.%s.weight", l, s[k]);
    }
    expect_tensors(&m, names, n);
    assert_int_equal(qs_synth_find(&m, "model.layers.0.self_attn.k_proj.weight")->shape[0], 2 * 64);
    qs_synth_model_free(&m);
    o.cfg.tie_embeddings = true;
    init_ok(&m, &o);
    assert_null(qs_synth_find(&m, "lm_head.weight"));
    assert_int_equal(m.count, n - 1);
    qs_synth_model_free(&m);

    o = small_opts(QS_ARCH_OPT);
    init_ok(&m, &o);
    n = 0;
    snprintf(buf[n++], QS_NAME_MAX, "model.decoder.embed_tokens.weight");
    snprintf(buf[n++], QS_NAME_MAX, "model.decoder.embed_positions.weight");
    snprintf(buf[n++], QS_NAME_MAX, "model.decoder.final_layer_norm.weight");
    snprintf(buf[n++], QS_NAME_MAX, "model.decoder.final_layer_norm.bias");
    for (int l = 0; l < 2; l++) {
        const char *s[] = {"self_attn_layer_norm", "final_layer_norm", "self_attn.q_proj", "self_attn.k_proj",
                           "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"};
        for (int k = 0; k < 8; k++) {
            snprintf(buf[n++], QS_NAME_MAX, "model.decoder.layers.%d.%s.weight", l, s[k]);
            snprintf(buf[n++], QS_NAME_MAX, "model.decoder.layers.%d.%s.bias", l, s[k]);
        }
    }
    expect_tensors(&m, names, n);
    /* OPT's learned positions have max_pos + 2 rows */
    assert_int_equal(qs_synth_find(&m, "model.decoder.embed_positions.weight")->shape[0], 66);
    qs_synth_model_free(&m);

    o = small_opts(QS_ARCH_BLOOM);
    init_ok(&m, &o);
    n = 0;
    snprintf(buf[n++], QS_NAME_MAX, "transformer.word_embeddings.weight");
    snprintf(buf[n++], QS_NAME_MAX, "transformer.word_embeddings_layernorm.weight");
    snprintf(buf[n++], QS_NAME_MAX, "transformer.word_embeddings_layernorm.bias");
    snprintf(buf[n++], QS_NAME_MAX, "transformer.ln_f.weight");
    snprintf(buf[n++], QS_NAME_MAX, "transformer.ln_f.bias");
    for (int l = 0; l < 2; l++) {
        const char *s[] = {"input_layernorm", "post_attention_layernorm", "self_attention.query_key_value",
                           "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"};
        for (int k = 0; k < 6; k++) {
            snprintf(buf[n++], QS_NAME_MAX, "transformer.h.%d.%s.weight", l, s[k]);
            snprintf(buf[n++], QS_NAME_MAX, "transformer.h.%d.%s.bias", l, s[k]);
        }
    }
    expect_tensors(&m, names, n);
    assert_int_equal(qs_synth_find(&m, "transformer.h.1.self_attention.query_key_value.weight")->shape[0], 768);
    qs_synth_model_free(&m);
}

static void test_shards(void **state)
{
    (void)state;
    qs_synth_opts o = small_opts(QS_ARCH_LLAMA);
    o.max_shard_bytes = 600 * 1024; /* each 256x512 f32 MLP matrix is 512 KiB */
    qs_synth_model m;
    init_ok(&m, &o);
    uint64_t total = 0, in_shard = 0;
    int shard = 0;
    for (size_t i = 0; i < m.count; i++) {
        const qs_synth_tensor *t = &m.tensors[i];
        uint64_t b = (uint64_t)(t->shape[0] * t->shape[1]) * 4;
        total += b;
        assert_true(t->shard == shard || t->shard == shard + 1);
        if (t->shard != shard) {
            /* a new shard starts only when this tensor would overflow the previous one */
            assert_true(in_shard + b > o.max_shard_bytes);
            shard = t->shard;
            in_shard = 0;
        }
        in_shard += b;
        assert_true(in_shard <= o.max_shard_bytes || in_shard == b);
    }
    assert_int_equal(m.n_shards, shard + 1);
    assert_true(m.n_shards > 3);
    assert_true(total == m.total_bytes);
    qs_synth_model_free(&m);
    o.max_shard_bytes = 0; /* default 2 GiB: one file */
    init_ok(&m, &o);
    assert_int_equal(m.n_shards, 1);
    qs_synth_model_free(&m);
}

static float *fill_all(const qs_synth_model *m, const char *name, int64_t *rows, int64_t *cols)
{
    const qs_synth_tensor *t = qs_synth_find(m, name);
    if (!t) fail_msg("no tensor %s", name);
    *rows = t->shape[0];
    *cols = t->shape[1];
    float *v = malloc(sizeof(float) * (size_t)(*rows * *cols));
    qs_synth_fill(m, t, 0, *rows * *cols, v);
    return v;
}

static void test_statistics(void **state)
{
    (void)state;
    qs_synth_opts o = small_opts(QS_ARCH_LLAMA);
    o.cfg.hidden = 1024;
    o.cfg.n_heads = 16;
    o.cfg.n_kv_heads = 16;
    o.cfg.ffn = 2048;
    qs_synth_model m;
    init_ok(&m, &o);
    assert_int_equal(m.n_outliers, 1024 / 128 > 6 ? 6 : 1024 / 128);
    for (int i = 1; i < m.n_outliers; i++) assert_true(m.outliers[i] > m.outliers[i - 1]);

    /* a reading linear: normal columns have std ~1/sqrt(in), heavy tail, outlier columns 1/sqrt(20) */
    int64_t R, C;
    float *w = fill_all(&m, "model.layers.0.self_attn.q_proj.weight", &R, &C);
    double s2 = 0, s4 = 0, so = 0;
    int64_t nn = 0, no = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) {
            double v = w[r * C + c];
            if (m.is_outlier[c]) {
                so += v * v;
                no++;
            } else {
                s2 += v * v;
                s4 += v * v * v * v;
                nn++;
            }
        }
    double var = s2 / nn, kurt = (s4 / nn) / (var * var), sd = sqrt(var);
    print_message("q_proj: std %.5f (1/sqrt(in) = %.5f), kurtosis %.2f, outlier column std ratio %.3f\n", sd,
                  1 / sqrt(1024.0), kurt, sqrt(so / no) / sd);
    assert_true(fabs(sd * sqrt(1024.0) - 1.0) < 0.1);
    assert_true(kurt > 5.0);   /* a Gaussian has 3 */
    assert_true(fabs(sqrt(so / no) / sd - 1 / sqrt(20.0)) < 0.03);
    free(w);

    /* a writing linear: outlier rows sqrt(20)x */
    w = fill_all(&m, "model.layers.1.mlp.down_proj.weight", &R, &C);
    double row_norm_out = 0, row_norm_in = 0;
    for (int64_t r = 0; r < R; r++) {
        double s = 0;
        for (int64_t c = 0; c < C; c++) s += (double)w[r * C + c] * w[r * C + c];
        if (m.is_outlier[r]) row_norm_out += s / m.n_outliers;
        else row_norm_in += s / (R - m.n_outliers);
    }
    assert_true(fabs(sqrt(row_norm_out / row_norm_in) - sqrt(20.0)) < 0.6);
    free(w);

    /* norm weights: ~1 on normal channels, ~sqrt(20) on outliers */
    w = fill_all(&m, "model.layers.1.input_layernorm.weight", &R, &C);
    for (int64_t r = 0; r < R; r++) {
        double want = m.is_outlier[r] ? sqrt(20.0) : 1.0;
        assert_true(fabs(w[r] / want - 1.0) < 0.2);
    }
    free(w);

    /* embedding followed by the first RMSNorm: outlier channels ~20x the median channel */
    int64_t V, D;
    float *e = fill_all(&m, "model.embed_tokens.weight", &V, &D);
    float *g = fill_all(&m, "model.layers.0.input_layernorm.weight", &R, &C);
    double *mean_abs = calloc((size_t)D, sizeof(double));
    for (int64_t t = 0; t < V; t++) {
        double ss = 0;
        for (int64_t c = 0; c < D; c++) ss += (double)e[t * D + c] * e[t * D + c];
        double inv = 1.0 / sqrt(ss / D + 1e-5);
        for (int64_t c = 0; c < D; c++) mean_abs[c] += fabs(e[t * D + c] * inv * g[c]) / V;
    }
    double *sorted = malloc(sizeof(double) * (size_t)D);
    memcpy(sorted, mean_abs, sizeof(double) * (size_t)D);
    for (int64_t i = 1; i < D; i++) /* insertion sort */
        for (int64_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
            double tmp = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = tmp;
        }
    double median = sorted[D / 2];
    for (int i = 0; i < m.n_outliers; i++) {
        double ratio = mean_abs[m.outliers[i]] / median;
        assert_true(ratio > 14 && ratio < 28);
    }
    /* and no other channel comes close */
    assert_true(sorted[D - 1 - m.n_outliers] / median < 2.0);
    free(sorted);
    free(mean_abs);
    free(e);
    free(g);
    qs_synth_model_free(&m);
}

static void test_bad_options(void **state)
{
    (void)state;
    qs_synth_model m;
    qs_error err;
    qs_synth_opts o = small_opts(QS_ARCH_LLAMA);
    o.cfg.n_kv_heads = 3;
    assert_int_equal(qs_synth_model_init(&m, &o, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "kv heads"));
    o = small_opts(QS_ARCH_LLAMA);
    o.cfg.torch_dtype = QS_DTYPE_I32;
    assert_int_equal(qs_synth_model_init(&m, &o, &err), QS_ERR_INPUT);
    o = small_opts(QS_ARCH_LLAMA);
    o.cfg.n_layers = 0;
    assert_int_equal(qs_synth_model_init(&m, &o, &err), QS_ERR_INPUT);
    o = small_opts(QS_ARCH_LLAMA);
    o.n_outliers = 0;
    init_ok(&m, &o);
    assert_int_equal(m.n_outliers, 0);
    qs_synth_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunking_and_threads_do_not_matter),
        cmocka_unit_test(test_tensor_lists),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_statistics),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
