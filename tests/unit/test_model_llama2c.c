/* test_model_llama2c.c — the llama2.c reader and the RoPE row permutation.
 *
 * The permutation test is the proof in llama2c.c done numerically: with the
 * original rows and llama2.c's interleaved RoPE, and with the permuted rows
 * and HF's rotate-half RoPE, every attention score q·k (all heads, all
 * query/key positions) must agree. Both RoPEs are written out here from their
 * definitions (run.c and transformers' apply_rotary_pos_emb), in double. */
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

#include "pipeline/formats/llama2c.h"

static char model_path[4096];

static int setup(void **state)
{
    (void)state;
    const char *shared = getenv("QS_SHARED");
    snprintf(model_path, sizeof model_path, "%s/models/stories260K/stories260K.bin", shared ? shared : "../shared");
    return 0;
}

static bool have_model(void)
{
    if (access(model_path, R_OK) == 0) return true;
    print_message("SKIP: %s is missing (the shared models live in ../shared)\n", model_path);
    return false;
}

/* run.c: for i in 0..dim step 2, head_dim = i % head_size,
 * freq = 1 / 10000^(head_dim / head_size), rotate (v[i], v[i+1]) by pos·freq. */
static void rope_interleaved(double *v, int dim, int head_size, int pos)
{
    for (int i = 0; i < dim; i += 2) {
        int hd = i % head_size;
        double a = pos * (1.0 / pow(10000.0, hd / (double)head_size));
        double c = cos(a), s = sin(a), v0 = v[i], v1 = v[i + 1];
        v[i] = v0 * c - v1 * s;
        v[i + 1] = v0 * s + v1 * c;
    }
}

/* transformers: inv_freq[j] = 1 / 10000^(2j / hs); cos/sin = cat(freqs, freqs);
 * q' = q·cos + rotate_half(q)·sin, rotate_half(x) = cat(−x2, x1), per head. */
static void rope_rotate_half(double *v, int dim, int head_size, int pos)
{
    const int half = head_size / 2;
    double tmp[1024];
    for (int h = 0; h < dim / head_size; h++) {
        double *x = v + h * head_size;
        for (int e = 0; e < head_size; e++) {
            int j = e % half;
            double a = pos * (1.0 / pow(10000.0, 2.0 * j / head_size));
            double rot = e < half ? -x[e + half] : x[e - half];
            tmp[e] = x[e] * cos(a) + rot * sin(a);
        }
        memcpy(x, tmp, sizeof(double) * (size_t)head_size);
    }
}

static void matvec(const float *w, int rows, int cols, const float *x, double *y)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += (double)w[(size_t)r * cols + c] * x[c];
        y[r] = s;
    }
}

static void test_header_and_layout(void **state)
{
    (void)state;
    if (!have_model()) skip();
    qs_llama2c m;
    qs_error err;
    if (qs_llama2c_open(model_path, &m, &err) != QS_OK) fail_msg("%s", err.msg);
    /* the README's header and byte offsets */
    assert_int_equal(m.dim, 64);
    assert_int_equal(m.hidden_dim, 172);
    assert_int_equal(m.n_layers, 5);
    assert_int_equal(m.n_heads, 8);
    assert_int_equal(m.n_kv_heads, 4);
    assert_int_equal(m.vocab, 512);
    assert_int_equal(m.seq_len, 512);
    assert_true(m.shared);
    assert_int_equal(m.head_size, 8);
    assert_int_equal(m.kv_dim, 32);
    const char *base = m.map;
    assert_int_equal((const char *)m.tok_emb - base, 28);
    assert_int_equal((const char *)m.rms_att - base, 131100);
    assert_int_equal((const char *)m.wq - base, 132380);
    assert_int_equal((const char *)m.wk - base, 214300);
    assert_int_equal((const char *)m.wv - base, 255260);
    assert_int_equal((const char *)m.wo - base, 296220);
    assert_int_equal((const char *)m.rms_ffn - base, 378140);
    assert_int_equal((const char *)m.w1 - base, 379420);
    assert_int_equal((const char *)m.w2 - base, 599580);
    assert_int_equal((const char *)m.w3 - base, 819740);
    assert_int_equal((const char *)m.rms_final - base, 1039900);
    assert_int_equal((const char *)m.freq_real - base, 1040156);
    assert_int_equal((const char *)m.freq_imag - base, 1048348);
    assert_ptr_equal(m.wcls, m.tok_emb);
    qs_model_config c;
    qs_llama2c_config(&m, &c);
    assert_int_equal(c.hidden, 64);
    assert_int_equal(c.ffn, 172);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.max_positions, 512);
    assert_true(c.tie_embeddings);
    assert_true(c.norm_eps == 1e-5);
    assert_true(c.rope_theta == 10000.0);
    /* parameters without the RoPE table: the README's 260,032 */
    int64_t params = (int64_t)c.vocab * c.hidden + c.n_layers * qs_block_param_count(&c) + c.hidden;
    assert_int_equal(params, 260032);
    qs_llama2c_close(&m);
}

/* The legacy RoPE table in the file is the interleaved frequencies: checks
 * that the reference rope_interleaved above is llama2.c's. */
static void test_freq_table_matches_reference(void **state)
{
    (void)state;
    if (!have_model()) skip();
    qs_llama2c m;
    qs_error err;
    if (qs_llama2c_open(model_path, &m, &err) != QS_OK) fail_msg("%s", err.msg);
    const int half = m.head_size / 2;
    for (int pos = 0; pos < m.seq_len; pos += 37) {
        for (int j = 0; j < half; j++) {
            double a = pos * (1.0 / pow(10000.0, 2.0 * j / m.head_size));
            assert_true(fabs(m.freq_real[pos * half + j] - cos(a)) < 1e-5);
            assert_true(fabs(m.freq_imag[pos * half + j] - sin(a)) < 1e-5);
        }
    }
    qs_llama2c_close(&m);
}

static void test_permutation_preserves_scores(void **state)
{
    (void)state;
    if (!have_model()) skip();
    qs_llama2c m;
    qs_error err;
    if (qs_llama2c_open(model_path, &m, &err) != QS_OK) fail_msg("%s", err.msg);
    const int D = m.dim, KV = m.kv_dim, hs = m.head_size, group = m.n_heads / m.n_kv_heads;
    float *wq_p = malloc(sizeof(float) * (size_t)D * D), *wk_p = malloc(sizeof(float) * (size_t)KV * D);
    float x[64], y[64];
    double q0[64], k0[64], q1[64], k1[64], qn[64], kn[64], qb[64], qpb[64], kb[64], kpb[64];
    assert_true(D <= 64);
    uint32_t seed = 1;
    double max_diff = 0, max_naive_diff = 0, max_score = 0;
    for (int layer = 0; layer < m.n_layers; layer++) {
        const float *wq = m.wq + (size_t)layer * D * D, *wk = m.wk + (size_t)layer * KV * D;
        qs_llama2c_permute_rope(wq, wq_p, m.n_heads, hs, D);
        qs_llama2c_permute_rope(wk, wk_p, m.n_kv_heads, hs, D);
        for (int trial = 0; trial < 2; trial++) {
            for (int i = 0; i < D; i++) {
                seed = seed * 1664525u + 1013904223u;
                x[i] = (float)((seed >> 8) / 16777216.0 - 0.5);
                seed = seed * 1664525u + 1013904223u;
                y[i] = (float)((seed >> 8) / 16777216.0 - 0.5);
            }
            matvec(wq, D, D, x, qb);
            matvec(wq_p, D, D, x, qpb);
            matvec(wk, KV, D, y, kb);
            matvec(wk_p, KV, D, y, kpb);
            const size_t qbytes = sizeof(double) * (size_t)D, kbytes = sizeof(double) * (size_t)KV;
            /* query positions against every earlier key position (strided to keep it quick) */
            for (int pq = 0; pq < m.seq_len; pq += 7) {
                memcpy(q0, qb, qbytes);
                memcpy(q1, qpb, qbytes);
                memcpy(qn, qb, qbytes);
                rope_interleaved(q0, D, hs, pq);
                rope_rotate_half(q1, D, hs, pq);
                rope_rotate_half(qn, D, hs, pq); /* unpermuted rows with HF's RoPE: must differ */
                for (int pk = 0; pk <= pq; pk += 3) {
                    memcpy(k0, kb, kbytes);
                    memcpy(k1, kpb, kbytes);
                    memcpy(kn, kb, kbytes);
                    rope_interleaved(k0, KV, hs, pk);
                    rope_rotate_half(k1, KV, hs, pk);
                    rope_rotate_half(kn, KV, hs, pk);
                    for (int h = 0; h < m.n_heads; h++) {
                        const int kh = h / group;
                        double s0 = 0, s1 = 0, sn = 0;
                        for (int e = 0; e < hs; e++) {
                            s0 += q0[h * hs + e] * k0[kh * hs + e];
                            s1 += q1[h * hs + e] * k1[kh * hs + e];
                            sn += qn[h * hs + e] * kn[kh * hs + e];
                        }
                        max_diff = fmax(max_diff, fabs(s0 - s1));
                        max_naive_diff = fmax(max_naive_diff, fabs(s0 - sn));
                        max_score = fmax(max_score, fabs(s0));
                    }
                }
            }
        }
    }
    print_message("max |score| %.4g, permuted diff %.3g, unpermuted diff %.3g\n", max_score, max_diff,
                  max_naive_diff);
    assert_true(max_score > 0.01);
    assert_true(max_diff < 1e-9 * (1 + max_score));
    assert_true(max_naive_diff > 0.1 * max_score); /* the test can tell a wrong layout */
    free(wq_p);
    free(wk_p);
    qs_llama2c_close(&m);
}

/* The permutation on a tiny labelled matrix: rows carry their source index. */
static void test_permute_indices(void **state)
{
    (void)state;
    float src[2 * 8 * 2], dst[2 * 8 * 2];
    for (int r = 0; r < 16; r++) src[r * 2] = src[r * 2 + 1] = (float)r;
    qs_llama2c_permute_rope(src, dst, 2, 8, 2);
    /* head of 8: HF position j < 4 takes 2j, position 4 + j takes 2j + 1 */
    const int want[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};
    for (int r = 0; r < 16; r++) {
        assert_true(dst[r * 2] == (float)want[r]);
        assert_true(dst[r * 2 + 1] == (float)want[r]);
    }
}

static void write_bin(const char *path, const int32_t *hdr, size_t floats)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(hdr, 4, 7, f);
    float z = 0.25f;
    for (size_t i = 0; i < floats; i++) fwrite(&z, 4, 1, f);
    fclose(f);
}

static void test_bad_files(void **state)
{
    (void)state;
    char path[] = "/tmp/qs-l2c-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    qs_llama2c m;
    qs_error err;
    /* dim 8, hidden 12, 1 layer, 2 heads, 1 kv head, vocab 10, seq 4: count the floats */
    const int D = 8, F = 12, KV = 4, V = 10, S = 4, hs = 4;
    size_t n = (size_t)V * D + D + D * D + 2 * KV * D + D * D + D + 3 * F * D + D + 2 * S * hs / 2;
    int32_t h[7] = {D, F, 1, 2, 1, V, S};
    write_bin(path, h, n);
    assert_int_equal(qs_llama2c_open(path, &m, &err), QS_OK);
    assert_true(m.shared);
    qs_llama2c_close(&m);
    /* negative vocab: a classifier must follow; the same file is now too short */
    h[5] = -V;
    write_bin(path, h, n);
    assert_int_equal(qs_llama2c_open(path, &m, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "own classifier"));
    write_bin(path, h, n + (size_t)V * D);
    assert_int_equal(qs_llama2c_open(path, &m, &err), QS_OK);
    assert_false(m.shared);
    assert_true(m.wcls == m.freq_imag + S * hs / 2);
    qs_llama2c_close(&m);
    /* one float too many */
    h[5] = V;
    write_bin(path, h, n + 1);
    assert_int_equal(qs_llama2c_open(path, &m, &err), QS_ERR_INPUT);
    /* inconsistent heads */
    int32_t bad[7] = {D, F, 1, 3, 1, V, S};
    write_bin(path, bad, n);
    assert_int_equal(qs_llama2c_open(path, &m, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "n_heads"));
    int32_t zero[7] = {D, F, 0, 2, 1, V, S};
    write_bin(path, zero, n);
    assert_int_equal(qs_llama2c_open(path, &m, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "n_layers"));
    /* the versioned export */
    int32_t v1[7] = {0x616b3432, 1, 0, 0, 0, 0, 0};
    write_bin(path, v1, 4);
    assert_int_equal(qs_llama2c_open(path, &m, &err), QS_ERR_UNSUPPORTED);
    /* short */
    write_bin(path, h, 0);
    assert_int_equal(truncate(path, 10), 0);
    assert_int_equal(qs_llama2c_open(path, &m, &err), QS_ERR_INPUT);
    unlink(path);
    assert_int_equal(qs_llama2c_open("/nonexistent.bin", &m, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "/nonexistent.bin"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_and_layout),
        cmocka_unit_test(test_freq_table_matches_reference),
        cmocka_unit_test(test_permutation_preserves_scores),
        cmocka_unit_test(test_permute_indices),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
