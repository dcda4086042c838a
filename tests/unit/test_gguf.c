/* test_gguf.c — the GGUF container and the llama GGUF export.
 *
 * Everything is checked against code written here from the definitions:
 * a minimal GGUF reader (the spec's header, key/values and tensor infos),
 * reference Q4_0/Q4_1/Q8_0 encoders and decoders (ggml's block layouts),
 * and the Q/K row permutation as the reshape/swapaxes of llama.cpp's
 * converter. Synthetic llama checkpoints are quantized with kernels/quant.h
 * and exported through the same calls the ranks of a run make. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/half.h"
#include "kernels/quant.h"
#include "pipeline/export/export_gguf.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/gguf_format.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/synth.h"
#include "workers/block.h"
#include "workers/model.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t urand32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* ---- reference block codecs (ggml's layouts, written out plainly) ---------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static void ref_q4_0_encode(uint16_t d, const uint8_t *q, uint8_t *out)
{
    out[0] = (uint8_t)(d & 0xff);
    out[1] = (uint8_t)(d >> 8);
    for (int j = 0; j < 16; j++) out[2 + j] = (uint8_t)(q[j] + 16 * q[j + 16]);
}

static void ref_q4_0_decode(const uint8_t *b, float *y)
{
    float d = qs_f16_to_f32(rd16(b));
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b[2 + j] & 15) - 8) * d;
        y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
    }
}

static void ref_q4_1_decode(const uint8_t *b, float *y)
{
    float d = qs_f16_to_f32(rd16(b)), m = qs_f16_to_f32(rd16(b + 2));
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b[4 + j] & 15) * d + m;
        y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
    }
}

static void ref_q8_0_decode(const uint8_t *b, float *y)
{
    float d = qs_f16_to_f32(rd16(b));
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* GGUF row r of a Q/K projection is HF row src[r]: the converter's
 * w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2).reshape(out, in), done as loops. */
static void ref_permutation(int64_t rows, int n_head, int64_t *src)
{
    int64_t hd = rows / n_head, half = hd / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t a = 0; a < 2; a++)
            for (int64_t b = 0; b < half; b++) src[h * hd + b * 2 + a] = h * hd + a * half + b;
}

/* ---- a minimal GGUF reader ------------------------------------------------------ */

typedef struct rd_tensor {
    char name[96];
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
    uint64_t offset; /* absolute */
} rd_tensor;

typedef struct rd_file {
    uint8_t *buf;
    size_t len;
    uint64_t n_kv, n_tensors;
    rd_tensor *t;
    uint64_t data_start;
    /* key/values: start of each value in buf, its type and key */
    char keys[128][96];
    uint32_t vtypes[128];
    size_t vpos[128];
} rd_file;

static uint64_t rd_u(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static size_t skip_value(const rd_file *f, size_t pos, uint32_t type)
{
    static const int sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    assert_true(type <= 12);
    if (type == 8) return pos + 8 + rd_u(f->buf + pos, 8);
    if (type == 9) {
        uint32_t et = (uint32_t)rd_u(f->buf + pos, 4);
        uint64_t n = rd_u(f->buf + pos + 4, 8);
        pos += 12;
        for (uint64_t i = 0; i < n; i++) pos = skip_value(f, pos, et);
        return pos;
    }
    return pos + (size_t)sz[type];
}

static void rd_open(rd_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    char *data = NULL;
    size_t len = 0;
    qs_error err;
    assert_int_equal(qs_read_file(path, &data, &len, &err), QS_OK);
    f->buf = (uint8_t *)data;
    f->len = len;
    assert_memory_equal(f->buf, "GGUF", 4);
    assert_int_equal(rd_u(f->buf + 4, 4), 3);
    f->n_tensors = rd_u(f->buf + 8, 8);
    f->n_kv = rd_u(f->buf + 16, 8);
    assert_true(f->n_kv <= 128);
    size_t pos = 24;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        uint64_t kl = rd_u(f->buf + pos, 8);
        assert_true(kl < 96);
        memcpy(f->keys[i], f->buf + pos + 8, kl);
        f->keys[i][kl] = '\0';
        pos += 8 + kl;
        f->vtypes[i] = (uint32_t)rd_u(f->buf + pos, 4);
        f->vpos[i] = pos + 4;
        pos = skip_value(f, pos + 4, f->vtypes[i]);
        assert_true(pos <= len);
    }
    f->t = calloc(f->n_tensors, sizeof *f->t);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        rd_tensor *t = &f->t[i];
        uint64_t nl = rd_u(f->buf + pos, 8);
        assert_true(nl < sizeof t->name);
        memcpy(t->name, f->buf + pos + 8, nl);
        pos += 8 + nl;
        t->n_dims = (uint32_t)rd_u(f->buf + pos, 4);
        pos += 4;
        for (uint32_t d = 0; d < t->n_dims; d++, pos += 8) t->ne[d] = rd_u(f->buf + pos, 8);
        t->type = (uint32_t)rd_u(f->buf + pos, 4);
        t->offset = rd_u(f->buf + pos + 4, 8);
        pos += 12;
    }
    f->data_start = (pos + 31) / 32 * 32;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        assert_int_equal(f->t[i].offset % 32, 0);
        f->t[i].offset += f->data_start;
    }
}

static void rd_close(rd_file *f)
{
    free(f->buf);
    free(f->t);
}

static const rd_tensor *rd_find(const rd_file *f, const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

static int rd_key(const rd_file *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (!strcmp(f->keys[i], key)) return (int)i;
    return -1;
}

static uint64_t rd_kv_u32(const rd_file *f, const char *key)
{
    int i = rd_key(f, key);
    if (i < 0) fail_msg("key %s missing", key);
    assert_int_equal(f->vtypes[i], 4);
    return rd_u(f->buf + f->vpos[i], 4);
}

/* ---- block encoders and the layout ---------------------------------------------- */

static void test_block_encoders(void **state)
{
    (void)state;
    for (int it = 0; it < 2000; it++) {
        uint8_t q[32];
        int8_t s8[32];
        for (int j = 0; j < 32; j++) q[j] = (uint8_t)(urand32() & 15), s8[j] = (int8_t)(urand32() & 255);
        uint16_t d = (uint16_t)(urand32() & 0x7bff), m = (uint16_t)(urand32() & 0xfbff);
        uint8_t a[34], b[34];
        float y[32];
        qs_gguf_block_q4_0(d, q, a);
        ref_q4_0_encode(d, q, b);
        assert_memory_equal(a, b, 18);
        ref_q4_0_decode(a, y);
        for (int j = 0; j < 32; j++) assert_true(y[j] == qs_f16_to_f32(d) * (float)(q[j] - 8));
        qs_gguf_block_q4_1(d, m, q, a);
        assert_int_equal(rd16(a), d);
        assert_int_equal(rd16(a + 2), m);
        assert_memory_equal(a + 4, b + 2, 16);
        ref_q4_1_decode(a, y);
        for (int j = 0; j < 32; j++) assert_true(y[j] == qs_f16_to_f32(d) * (float)q[j] + qs_f16_to_f32(m));
        qs_gguf_block_q8_0(d, s8, a);
        ref_q8_0_decode(a, y);
        for (int j = 0; j < 32; j++) assert_true(y[j] == qs_f16_to_f32(d) * (float)s8[j]);
    }
    assert_int_equal(qs_gguf_type_block_bytes(QS_GGUF_TYPE_Q4_0), 18);
    assert_int_equal(qs_gguf_type_block_bytes(QS_GGUF_TYPE_Q4_1), 20);
    assert_int_equal(qs_gguf_type_block_bytes(QS_GGUF_TYPE_Q8_0), 34);
}

static void test_layout(void **state)
{
    (void)state;
    qs_gguf_layout l;
    qs_error err;
    qs_gguf_layout_init(&l, 32);
    qs_gguf_add_string(&l, "general.architecture", "llama");
    qs_gguf_add_u32(&l, "a.u32", 77);
    qs_gguf_add_f32(&l, "a.f32", 1e-6f);
    qs_gguf_add_bool(&l, "a.bool", true);
    const char *strs[] = {"x", "", "hello"};
    qs_gguf_add_array_string(&l, "a.strs", strs, NULL, 3);
    int32_t ints[] = {1, -2, 3};
    qs_gguf_add_array_i32(&l, "a.ints", ints, 3);
    uint64_t ne1[] = {5}, ne2[] = {64, 3}, ne3[] = {32, 2};
    size_t idx;
    assert_int_equal(qs_gguf_add_tensor(&l, "v", 1, ne1, QS_GGUF_TYPE_F32, &idx, &err), QS_OK);
    assert_int_equal(qs_gguf_add_tensor(&l, "q4", 2, ne2, QS_GGUF_TYPE_Q4_0, &idx, &err), QS_OK);
    assert_int_equal(idx, 1);
    assert_int_equal(qs_gguf_add_tensor(&l, "q8", 2, ne3, QS_GGUF_TYPE_Q8_0, NULL, &err), QS_OK);
    uint64_t bad[] = {48, 2};
    assert_int_equal(qs_gguf_add_tensor(&l, "bad", 2, bad, QS_GGUF_TYPE_Q4_0, NULL, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "bad"));
    assert_int_equal(qs_gguf_layout_finish(&l, &err), QS_OK);
    assert_int_equal(l.tensors[0].nbytes, 20);
    assert_int_equal(l.tensors[1].nbytes, 3 * 2 * 18);
    assert_int_equal(l.tensors[2].nbytes, 2 * 34);
    /* write header + zero data and read it back with the test's reader */
    uint8_t *hdr;
    size_t len;
    assert_int_equal(qs_gguf_layout_header(&l, &hdr, &len, &err), QS_OK);
    assert_int_equal(len % 32, 0);
    char path[] = "/tmp/qs-gguf-layout-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint64_t size = qs_gguf_layout_file_size(&l);
    assert_int_equal(size, len + 32 + 128 + 96); /* each tensor rounded up to 32 */
    assert_int_equal(write(fd, hdr, len), (ssize_t)len);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    close(fd);
    rd_file f;
    rd_open(&f, path);
    assert_int_equal(f.n_kv, 6);
    assert_int_equal(f.n_tensors, 3);
    assert_int_equal(f.data_start, len);
    assert_int_equal(rd_kv_u32(&f, "a.u32"), 77);
    int k = rd_key(&f, "a.f32");
    assert_int_equal(f.vtypes[k], 6);
    float v;
    memcpy(&v, f.buf + f.vpos[k], 4);
    assert_true(v == 1e-6f);
    k = rd_key(&f, "a.strs");
    assert_int_equal(f.vtypes[k], 9);
    assert_int_equal(rd_u(f.buf + f.vpos[k], 4), 8);
    assert_int_equal(rd_u(f.buf + f.vpos[k] + 4, 8), 3);
    assert_int_equal(rd_u(f.buf + f.vpos[k] + 12 + 9 + 8, 8), 5); /* "x" then "" then "hello" */
    assert_memory_equal(f.buf + f.vpos[k] + 12 + 9 + 8 + 8, "hello", 5);
    const rd_tensor *t = rd_find(&f, "q4");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 3);
    assert_int_equal(t->type, 2);
    assert_int_equal(t->offset, len + 32);
    assert_int_equal(rd_find(&f, "q8")->offset, len + 32 + 128);
    rd_close(&f);
    unlink(path);
    free(hdr);
    qs_gguf_layout_free(&l);
}

static void test_permutation(void **state)
{
    (void)state;
    int heads[] = {1, 2, 4, 8};
    int64_t hds[] = {2, 8, 16, 128};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
            int64_t rows = heads[a] * hds[b];
            int64_t *src = malloc(sizeof(int64_t) * (size_t)rows);
            ref_permutation(rows, heads[a], src);
            for (int64_t r = 0; r < rows; r++) assert_int_equal(qs_gguf_permuted_row(r, rows, heads[a]), src[r]);
            free(src);
        }
}

/* ---- the export on synthetic llama checkpoints ------------------------------------ */

typedef struct model_fx {
    char dir[64];
    qs_manifest *m;
    qs_model_names names;
    qs_block blk[4];
    qs_block_outcome out[4];
    int n_layers;
} model_fx;

static void make_model(model_fx *fx, const char *cfg_json)
{
    memset(fx, 0, sizeof *fx);
    qs_error err;
    qs_synth_opts so;
    memset(&so, 0, sizeof so);
    if (qs_model_config_parse(cfg_json, "test", &so.cfg, &err) != QS_OK) fail_msg("%s", err.msg);
    so.seed = 7;
    so.n_outliers = -1;
    qs_synth_model sm;
    if (qs_synth_model_init(&sm, &so, &err) != QS_OK) fail_msg("%s", err.msg);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/qs-gguf-model-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    if (qs_synth_write(&sm, fx->dir, &err) != QS_OK) fail_msg("%s", err.msg);
    qs_synth_model_free(&sm);
    if (qs_manifest_open(fx->dir, &fx->m, &err) != QS_OK) fail_msg("%s", err.msg);
    if (qs_model_names_from_manifest(fx->m, &fx->names, &err) != QS_OK) fail_msg("%s", err.msg);
    fx->n_layers = qs_manifest_config(fx->m)->n_layers;
}

static void free_outcomes(model_fx *fx)
{
    for (int l = 0; l < fx->n_layers; l++) {
        if (!fx->out[l].blk) continue;
        for (int i = 0; i < fx->blk[l].n_linears; i++) qs_quant_result_free(&fx->out[l].res[i]);
        qs_block_free(&fx->blk[l]);
        memset(&fx->out[l], 0, sizeof fx->out[l]);
    }
}

static void quantize_model(model_fx *fx, const qs_quant_opts *q)
{
    qs_error err;
    free_outcomes(fx);
    for (int l = 0; l < fx->n_layers; l++) {
        if (qs_block_load(&fx->blk[l], fx->m, &fx->names, l, &err) != QS_OK) fail_msg("%s", err.msg);
        qs_block_outcome *o = &fx->out[l];
        o->layer = l;
        o->blk = &fx->blk[l];
        for (int i = 0; i < fx->blk[l].n_linears; i++) {
            const qs_block_linear *bl = &fx->blk[l].lin[i];
            assert_int_equal(qs_quant_result_init(&o->res[i], bl->out, bl->in, q, &err), QS_OK);
            if (qs_quant_rtn(fx->blk[l].weight[i].data, bl->out, bl->in, q, &o->res[i], &err) != QS_OK)
                fail_msg("%s", err.msg);
        }
    }
}

static void drop_model(model_fx *fx)
{
    free_outcomes(fx);
    qs_manifest_close(fx->m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
}

/* Exports with the given outcome order; blocks are written by separate
 * export objects, as separate ranks would. */
static qs_status export_model(model_fx *fx, const qs_gguf_export_opts *o, const char *path, bool reverse,
                              qs_error *err)
{
    qs_gguf_export *x0 = NULL, *x1 = NULL;
    QS_TRY(qs_gguf_export_init(&x0, path, fx->m, &fx->names, o, err));
    qs_status st = qs_gguf_export_create(x0, err);
    if (st == QS_OK) st = qs_gguf_export_init(&x1, path, fx->m, &fx->names, o, err);
    for (int k = 0; k < fx->n_layers && st == QS_OK; k++) {
        int l = reverse ? fx->n_layers - 1 - k : k;
        st = qs_gguf_export_block(l % 2 ? x1 : x0, &fx->out[l], err);
    }
    if (reverse) {
        if (st == QS_OK) st = qs_gguf_export_head(x1, err);
        if (st == QS_OK) st = qs_gguf_export_embed(x0, err);
    } else {
        if (st == QS_OK) st = qs_gguf_export_embed(x0, err);
        if (st == QS_OK) st = qs_gguf_export_head(x1, err);
    }
    if (st == QS_OK) st = qs_gguf_export_finish(x0, err);
    qs_gguf_export_free(x0);
    qs_gguf_export_free(x1);
    return st;
}

static const char *LLAMA =
    "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":40,\"max_position_embeddings\":128,"
    "\"rms_norm_eps\":1e-5,\"rope_theta\":500000.0,\"attention_bias\":true,\"tie_word_embeddings\":false}";

static const char *role_gguf(qs_linear_role r)
{
    static const char *const n[] = {"attn_q", "attn_k", "attn_v", "?", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    return n[r];
}

/* Decodes GGUF tensor `t` (an [out, in] linear) and compares it with the
 * quantized result r, un-permuting Q/K rows. Returns the largest |difference|
 * divided by the block's d (Q4_1) or 0 when exact is required. */
static double check_linear(const rd_file *f, const rd_tensor *t, const qs_quant_result *r, int perm_heads,
                           uint32_t type)
{
    assert_int_equal(t->type, type);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], r->cols);
    assert_int_equal(t->ne[1], r->rows);
    int64_t *src = malloc(sizeof(int64_t) * (size_t)r->rows);
    for (int64_t i = 0; i < r->rows; i++) src[i] = i;
    if (perm_heads) ref_permutation(r->rows, perm_heads, src);
    size_t bb = type == 2 ? 18 : type == 3 ? 20 : type == 8 ? 34 : 0;
    const uint8_t *base = f->buf + t->offset;
    double worst = 0;
    for (int64_t row = 0; row < r->rows; row++) {
        const float *want = r->q + src[row] * r->cols;
        for (int64_t b = 0; b < r->cols / 32; b++) {
            float y[32];
            if (type == 1) {
                for (int j = 0; j < 32; j++) y[j] = qs_f16_to_f32(rd16(base + 2 * (size_t)(row * r->cols + b * 32 + j)));
                for (int j = 0; j < 32; j++) assert_true(y[j] == qs_f16_to_f32(qs_f32_to_f16(want[b * 32 + j])));
                continue;
            }
            const uint8_t *blk = base + (size_t)(row * (r->cols / 32) + b) * bb;
            if (type == 2) ref_q4_0_decode(blk, y);
            else if (type == 3) ref_q4_1_decode(blk, y);
            else ref_q8_0_decode(blk, y);
            if (type != 3) {
                for (int j = 0; j < 32; j++)
                    if (y[j] != want[b * 32 + j])
                        fail_msg("tensor %s row %lld col %lld: %.9g != %.9g", t->name, (long long)row,
                                 (long long)(b * 32 + j), (double)y[j], (double)want[b * 32 + j]);
                continue;
            }
            /* Q4_1: m = fp16(−d·zero): the documented bound */
            int32_t g = r->g_idx[b * 32];
            float d = r->scales[(size_t)g * (size_t)r->rows + (size_t)src[row]];
            int32_t zero = r->zeros[(size_t)g * (size_t)r->rows + (size_t)src[row]];
            double dz = fabs((double)d * zero);
            double bound = ldexp(dz, -11) + ldexp(1.0, -25) + 4.0 * FLT_EPSILON * (15.0 * d + dz);
            for (int j = 0; j < 32; j++) {
                double diff = fabs((double)y[j] - (double)want[b * 32 + j]);
                if (diff > bound)
                    fail_msg("Q4_1 %s row %lld: |%.9g - %.9g| > bound %.3g", t->name, (long long)row, (double)y[j],
                             (double)want[b * 32 + j], bound);
                if (diff / d > worst) worst = diff / d;
            }
        }
    }
    free(src);
    return worst;
}

/* Compares a F32 GGUF tensor with the manifest tensor (rows permuted when asked). */
static void check_f32(const rd_file *f, const char *gguf, const qs_manifest *m, const char *src_name, int perm_heads)
{
    const rd_tensor *t = rd_find(f, gguf);
    if (!t) fail_msg("tensor %s missing", gguf);
    assert_int_equal(t->type, 0);
    qs_tensor w;
    qs_error err;
    assert_int_equal(qs_manifest_read_f32(m, src_name, &w, false, &err), QS_OK);
    int64_t n = qs_tensor_numel(&w), rows = w.shape[0], cols = n / rows;
    int64_t *src = malloc(sizeof(int64_t) * (size_t)rows);
    for (int64_t i = 0; i < rows; i++) src[i] = i;
    if (perm_heads) ref_permutation(rows, perm_heads, src);
    const float *want = w.data;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float v;
            memcpy(&v, f->buf + t->offset + 4 * (size_t)(r * cols + c), 4);
            assert_true(v == want[src[r] * cols + c]);
        }
    free(src);
    qs_tensor_free(&w);
}

static double export_and_check(model_fx *fx, int bits, bool sym, uint32_t type, bool fallback, const char *path)
{
    qs_quant_opts q;
    qs_quant_opts_default(&q);
    q.method = QS_QUANT_METHOD_RTN;
    q.bits = bits;
    q.sym = sym;
    q.group_size = 32;
    quantize_model(fx, &q);
    qs_gguf_export_opts o = {.quant = q, .fallback_f16 = fallback};
    qs_error err;
    if (export_model(fx, &o, path, false, &err) != QS_OK) fail_msg("%s", err.msg);
    rd_file f;
    rd_open(&f, path);
    const qs_model_config *c = qs_manifest_config(fx->m);
    double worst = 0;
    for (int l = 0; l < fx->n_layers; l++) {
        for (int i = 0; i < fx->blk[l].n_linears; i++) {
            const qs_block_linear *bl = &fx->blk[l].lin[i];
            int perm = bl->role == QS_LIN_Q ? c->n_heads : bl->role == QS_LIN_K ? c->n_kv_heads : 0;
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, role_gguf(bl->role));
            const rd_tensor *t = rd_find(&f, name);
            if (!t) fail_msg("tensor %s missing", name);
            double w = check_linear(&f, t, &fx->out[l].res[i], perm, type);
            if (w > worst) worst = w;
            if (bl->bias[0]) {
                snprintf(name, sizeof name, "blk.%d.%s.bias", l, role_gguf(bl->role));
                check_f32(&f, name, fx->m, bl->bias, perm);
            }
        }
        char an[QS_NAME_MAX], ab[QS_NAME_MAX], mn[QS_NAME_MAX], mb[QS_NAME_MAX], name[64];
        qs_block_norm_names(c, &fx->names, l, an, ab, mn, mb);
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        check_f32(&f, name, fx->m, an, 0);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        check_f32(&f, name, fx->m, mn, 0);
    }
    check_f32(&f, "token_embd.weight", fx->m, fx->names.embed, 0);
    check_f32(&f, "output_norm.weight", fx->m, fx->names.final_norm_w, 0);
    check_f32(&f, "output.weight", fx->m, fx->names.lm_head, 0);
    size_t n_biases = 0;
    for (int l = 0; l < fx->n_layers; l++)
        for (int i = 0; i < fx->blk[l].n_linears; i++) n_biases += fx->blk[l].lin[i].bias[0] != '\0';
    assert_true(n_biases >= 3 * (size_t)fx->n_layers); /* q/k/v at least: attention_bias */
    assert_int_equal(f.n_tensors, 3 + fx->n_layers * (2 + 7) + n_biases);
    assert_int_equal(rd_kv_u32(&f, "general.alignment"), 32);
    assert_int_equal(rd_kv_u32(&f, "llama.attention.head_count_kv"), 2);
    assert_int_equal(rd_kv_u32(&f, "general.file_type"), type == 2 ? 2 : type == 3 ? 3 : type == 8 ? 7 : 1);
    int k = rd_key(&f, "tokenizer.ggml.model");
    assert_true(k >= 0);
    assert_memory_equal(f.buf + f.vpos[k] + 8, "no_vocab", 8); /* the synthetic model has no tokenizer.json */
    rd_close(&f);
    return worst;
}

static void test_export_q4_0_q8_0_exact(void **state)
{
    (void)state;
    model_fx fx;
    make_model(&fx, LLAMA);
    char path[128];
    snprintf(path, sizeof path, "%s/out.gguf", fx.dir);
    export_and_check(&fx, 4, true, QS_GGUF_TYPE_Q4_0, false, path);
    /* byte-determinism: other write order, other export objects */
    char *a = NULL, *b = NULL;
    size_t na, nb;
    qs_error err;
    assert_int_equal(qs_read_file(path, &a, &na, &err), QS_OK);
    qs_quant_opts q;
    qs_quant_opts_default(&q);
    q.method = QS_QUANT_METHOD_RTN;
    q.group_size = 32;
    qs_gguf_export_opts o = {.quant = q};
    char path2[160];
    snprintf(path2, sizeof path2, "%s/out2.gguf", fx.dir);
    assert_int_equal(export_model(&fx, &o, path2, true, &err), QS_OK);
    assert_int_equal(qs_read_file(path2, &b, &nb, &err), QS_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a), free(b);
    char partial[200];
    snprintf(partial, sizeof partial, "%s.partial", path2);
    assert_false(qs_path_exists(partial)); /* renamed away by finish */

    export_and_check(&fx, 8, true, QS_GGUF_TYPE_Q8_0, false, path);
    drop_model(&fx);
}

static void test_export_q4_1_bound(void **state)
{
    (void)state;
    model_fx fx;
    make_model(&fx, LLAMA);
    char path[128];
    snprintf(path, sizeof path, "%s/out.gguf", fx.dir);
    double worst = export_and_check(&fx, 4, false, QS_GGUF_TYPE_Q4_1, false, path);
    print_message("Q4_1: largest |gguf - qshard| = %.3g of a quantization step d\n", worst);
    assert_true(worst < 0.01);
    drop_model(&fx);
}

static void test_refusals_and_fallback(void **state)
{
    (void)state;
    model_fx fx;
    make_model(&fx, LLAMA);
    char path[128];
    snprintf(path, sizeof path, "%s/out.gguf", fx.dir);
    qs_error err;
    qs_gguf_export *x = NULL;
    qs_quant_opts q;
    qs_quant_opts_default(&q);
    q.method = QS_QUANT_METHOD_RTN;
    q.group_size = 32;

    /* 3-bit: no exact type → refused naming a tensor, or F16 with the fallback */
    qs_gguf_export_opts o = {.quant = q};
    o.quant.bits = 3;
    assert_int_equal(qs_gguf_export_init(&x, path, fx.m, &fx.names, &o, &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "self_attn.q_proj.weight"));
    assert_non_null(strstr(err.msg, "3-bit"));
    export_and_check(&fx, 3, true, QS_GGUF_TYPE_F16, true, path);

    /* act-order without static groups, groups not a multiple of 32 */
    o = (qs_gguf_export_opts){.quant = q};
    o.quant.act_order = true;
    assert_int_equal(qs_gguf_export_init(&x, path, fx.m, &fx.names, &o, &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "act-order"));
    o.quant.static_groups = true;
    assert_int_equal(qs_gguf_export_init(&x, path, fx.m, &fx.names, &o, &err), QS_OK);
    qs_gguf_export_free(x);
    o = (qs_gguf_export_opts){.quant = q};
    o.quant.group_size = 16;
    assert_int_equal(qs_gguf_export_init(&x, path, fx.m, &fx.names, &o, &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "group size 16"));

    /* a result that does not fit the plan is refused when the block is written */
    quantize_model(&fx, &q);
    o = (qs_gguf_export_opts){.quant = q};
    assert_int_equal(qs_gguf_export_init(&x, path, fx.m, &fx.names, &o, &err), QS_OK);
    assert_int_equal(qs_gguf_export_create(x, &err), QS_OK);
    qs_quant_result *r = &fx.out[0].res[1];
    int32_t saved = r->g_idx[5];
    r->g_idx[5] = r->g_idx[5] == 0 ? 1 : 0; /* column 5 in another group than column 0 */
    assert_int_equal(qs_gguf_export_block(x, &fx.out[0], &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "k_proj"));
    r->g_idx[5] = saved;
    r->zeros[3] = 7;
    assert_int_equal(qs_gguf_export_block(x, &fx.out[0], &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "zero 7"));
    qs_gguf_export_free(x);
    drop_model(&fx);

    /* in-features not a multiple of 32 (ffn 80 → down_proj rows of 80) */
    make_model(&fx, "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":80,\"num_hidden_layers\":1,"
                    "\"num_attention_heads\":4,\"vocab_size\":40,\"max_position_embeddings\":64}");
    snprintf(path, sizeof path, "%s/out.gguf", fx.dir);
    o = (qs_gguf_export_opts){.quant = q};
    assert_int_equal(qs_gguf_export_init(&x, path, fx.m, &fx.names, &o, &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "down_proj"));
    assert_non_null(strstr(err.msg, "80"));
    o.fallback_f16 = true;
    assert_int_equal(qs_gguf_export_init(&x, path, fx.m, &fx.names, &o, &err), QS_OK);
    assert_int_equal(qs_gguf_export_fallbacks(x), 1);
    const qs_gguf_layout *lay = qs_gguf_export_layout(x);
    for (size_t i = 0; i < lay->n_tensors; i++)
        if (strstr(lay->tensors[i].name, "ffn_down")) assert_int_equal(lay->tensors[i].type, QS_GGUF_TYPE_F16);
        else if (strstr(lay->tensors[i].name, "ffn_up")) assert_int_equal(lay->tensors[i].type, QS_GGUF_TYPE_Q4_0);
    qs_gguf_export_free(x);
    drop_model(&fx);

    /* not a llama: opt is refused */
    make_model(&fx, "{\"model_type\":\"opt\",\"hidden_size\":64,\"ffn_dim\":128,\"num_hidden_layers\":1,"
                    "\"num_attention_heads\":4,\"vocab_size\":40,\"max_position_embeddings\":64,"
                    "\"do_layer_norm_before\":true,\"word_embed_proj_dim\":64}");
    snprintf(path, sizeof path, "%s/out.gguf", fx.dir);
    o = (qs_gguf_export_opts){.quant = q};
    assert_int_equal(qs_gguf_export_init(&x, path, fx.m, &fx.names, &o, &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "opt"));
    drop_model(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_encoders),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_permutation),
        cmocka_unit_test(test_export_q4_0_q8_0_exact),
        cmocka_unit_test(test_export_q4_1_bound),
        cmocka_unit_test(test_refusals_and_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
