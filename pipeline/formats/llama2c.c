/* llama2c.c — read llama2.c legacy v0 checkpoints, convert them to HF llama.
 *
 * ---- Why wq and wk rows are permuted (and why that is exact) ----------------
 *
 * llama2.c (run.c) rotates, inside each head of size hs, the interleaved pairs
 * (2j, 2j+1), j < hs/2, by the angle θ_j = pos · 10000^(-2j/hs):
 *     v'[2j]   = v[2j] cos θ_j − v[2j+1] sin θ_j
 *     v'[2j+1] = v[2j] sin θ_j + v[2j+1] cos θ_j
 * HF llama uses rotate-half: cos/sin are cat(θ, θ) over the head and
 * rotate_half(x) = cat(−x[hs/2:], x[:hs/2]), so for j < hs/2
 *     q'[j]      = q[j] cos θ_j − q[j+hs/2] sin θ_j
 *     q'[j+hs/2] = q[j] sin θ_j + q[j+hs/2] cos θ_j
 * i.e. the same rotation by the same θ_j applied to the pair (j, j+hs/2).
 *
 * Let P move element 2j+p of each head to position p·hs/2 + j (p ∈ {0,1}).
 * Setting W_hf = P·W (rows of wq and wk reordered) gives q_hf = P·q for every
 * input, and by the two formulas above RoPE_hf(P·q) = P·RoPE_l2c(q): the pair
 * that llama2.c rotates at (2j, 2j+1) sits at (j, j+hs/2) and turns by the
 * same angle. Every attention score is a dot product inside one head:
 *     RoPE_hf(P q)·RoPE_hf(P k) = (P RoPE(q))·(P RoPE(k)) = RoPE(q)·RoPE(k),
 * since P is a permutation (orthogonal) applied to both sides, and with GQA a
 * query head and its kv head use the same within-head P. wv, wo and the MLP
 * are untouched, so the attention weights, outputs and logits are unchanged:
 * the converted model computes the same function. This P is the one HF's
 * convert_llama_weights_to_hf.py applies to Meta's (also interleaved)
 * checkpoints — view(heads, hs/2, 2, in).transpose(1, 2) — and the inverse of
 * the "unpermute" llama2.c's export.py applies when going HF → llama2.c.
 * tests/unit/test_model_llama2c.c checks it numerically on stories260K.
 */
#include "pipeline/formats/llama2c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/safetensors.h"

#define HEADER_BYTES 28

qs_status qs_llama2c_open(const char *path, qs_llama2c *m, qs_error *err)
{
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return qs_error_set(err, QS_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    const uint64_t size = (uint64_t)sb.st_size;
    int32_t h[7];
    if (size < HEADER_BYTES || pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
        close(fd);
        return qs_error_set(err, QS_ERR_INPUT, "%s: %llu bytes is shorter than the 28-byte llama2.c header", path,
                            (unsigned long long)size);
    }
    if ((uint32_t)h[0] == 0x616b3432u) { /* "ak42": llama2.c's versioned export */
        close(fd);
        return qs_error_set(err, QS_ERR_UNSUPPORTED,
                            "%s: a llama2.c version %d export (magic ak42); only the legacy version 0 is supported",
                            path, h[1]);
    }
    static const char *const names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                                         "seq_len"};
    for (int i = 0; i < 7; i++) {
        if (h[i] == 0 || (i != 5 && h[i] < 0) || h[i] > (1 << 24) || h[i] < -(1 << 24)) {
            close(fd);
            return qs_error_set(err, QS_ERR_INPUT, "%s: header field %s = %d is not a plausible size", path,
                                names[i], h[i]);
        }
    }
    m->dim = h[0];
    m->hidden_dim = h[1];
    m->n_layers = h[2];
    m->n_heads = h[3];
    m->n_kv_heads = h[4];
    m->shared = h[5] > 0;
    m->vocab = h[5] > 0 ? h[5] : -h[5];
    m->seq_len = h[6];
    const char *bad = NULL;
    if (m->dim % m->n_heads != 0) bad = "dim is not a multiple of n_heads";
    else if (m->n_kv_heads > m->n_heads || m->n_heads % m->n_kv_heads != 0) bad = "n_kv_heads does not divide n_heads";
    else if ((m->dim / m->n_heads) % 2 != 0) bad = "head size is odd (RoPE rotates pairs)";
    if (bad) {
        close(fd);
        return qs_error_set(err, QS_ERR_INPUT, "%s: %s (dim %d, n_heads %d, n_kv_heads %d)", path, bad, m->dim,
                            m->n_heads, m->n_kv_heads);
    }
    m->head_size = m->dim / m->n_heads;
    m->kv_dim = m->head_size * m->n_kv_heads;

    const uint64_t D = (uint64_t)m->dim, F = (uint64_t)m->hidden_dim, L = (uint64_t)m->n_layers,
                   KV = (uint64_t)m->kv_dim, V = (uint64_t)m->vocab;
    /* float counts of the arrays, in file order */
    const uint64_t n[14] = {V * D,     L * D,     L * D * D, L * KV * D, L * KV * D,
                            L * D * D, L * D,     L * F * D, L * D * F,  L * F * D,
                            D,         (uint64_t)m->seq_len * (uint64_t)(m->head_size / 2),
                            (uint64_t)m->seq_len * (uint64_t)(m->head_size / 2), m->shared ? 0 : V * D};
    uint64_t floats = 0;
    for (int i = 0; i < 14; i++) floats += n[i];
    const uint64_t want = HEADER_BYTES + 4 * floats;
    if (size != want) {
        close(fd);
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: %llu bytes, but a legacy llama2.c checkpoint with dim %d, hidden_dim %d, %d layers, "
                            "%d/%d heads, vocab %d (%s), seq_len %d has %llu",
                            path, (unsigned long long)size, m->dim, m->hidden_dim, m->n_layers, m->n_heads,
                            m->n_kv_heads, m->vocab, m->shared ? "shared classifier" : "own classifier",
                            m->seq_len, (unsigned long long)want);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return qs_error_set(err, QS_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
    m->map = map;
    m->map_size = size;
    const float *p = (const float *)((const char *)map + HEADER_BYTES);
    const float **dst[14] = {&m->tok_emb, &m->rms_att,   &m->wq, &m->wk, &m->wv, &m->wo,        &m->rms_ffn,
                             &m->w1,      &m->w2,        &m->w3, &m->rms_final, &m->freq_real, &m->freq_imag,
                             &m->wcls};
    for (int i = 0; i < 14; i++) {
        *dst[i] = n[i] ? p : NULL;
        p += n[i];
    }
    if (m->shared) m->wcls = m->tok_emb;
    return QS_OK;
}

void qs_llama2c_close(qs_llama2c *m)
{
    if (!m) return;
    if (m->map) munmap(m->map, m->map_size);
    memset(m, 0, sizeof *m);
}

void qs_llama2c_config(const qs_llama2c *m, qs_model_config *cfg)
{
    qs_model_config_defaults(cfg, QS_ARCH_LLAMA);
    cfg->n_layers = m->n_layers;
    cfg->hidden = m->dim;
    cfg->n_heads = m->n_heads;
    cfg->n_kv_heads = m->n_kv_heads;
    cfg->head_dim = m->head_size;
    cfg->ffn = m->hidden_dim;
    cfg->vocab = m->vocab;
    cfg->max_positions = m->seq_len;
    cfg->norm_eps = 1e-5;      /* run.c's rmsnorm */
    cfg->rope_theta = 10000.0; /* run.c's frequencies */
    cfg->tie_embeddings = m->shared;
    cfg->bos_id = 1; /* llama2.c's sentencepiece ids */
    cfg->eos_id = 2;
    cfg->torch_dtype = QS_DTYPE_F32;
}

void qs_llama2c_permute_rope(const float *src, float *dst, int n_heads, int head_size, int64_t cols)
{
    const int half = head_size / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < half; j++)
            for (int p = 0; p < 2; p++)
                memcpy(dst + ((int64_t)h * head_size + p * half + j) * cols,
                       src + ((int64_t)h * head_size + 2 * j + p) * cols, (size_t)cols * sizeof(float));
}

/* ---- conversion ----------------------------------------------------------------- */

typedef enum src_kind { SRC_PLAIN = 0, SRC_ROPE_Q, SRC_ROPE_K } src_kind;

typedef struct out_tensor {
    char name[QS_NAME_MAX];
    int ndim;
    int64_t shape[2];
    const float *src;
    src_kind kind;
} out_tensor;

static void put(out_tensor *t, size_t *n, const char *name, const float *src, src_kind kind, int ndim, int64_t d0,
                int64_t d1)
{
    out_tensor *o = &t[(*n)++];
    snprintf(o->name, sizeof o->name, "%s", name);
    o->ndim = ndim;
    o->shape[0] = d0;
    o->shape[1] = ndim > 1 ? d1 : 1;
    o->src = src;
    o->kind = kind;
}

static qs_status write_tensor(const qs_llama2c *m, qs_st_writer *w, const out_tensor *t, float *buf, qs_error *err)
{
    const int64_t numel = t->shape[0] * t->shape[1];
    if (t->kind == SRC_PLAIN) return qs_st_writer_tensor(w, t->name, t->src, (uint64_t)numel * 4, err);
    /* permuted: one head at a time, so memory stays at head_size × dim floats */
    const int heads = t->kind == SRC_ROPE_Q ? m->n_heads : m->n_kv_heads;
    const int64_t head_elems = (int64_t)m->head_size * t->shape[1];
    for (int h = 0; h < heads; h++) {
        qs_llama2c_permute_rope(t->src + h * head_elems, buf, 1, m->head_size, t->shape[1]);
        QS_TRY(qs_st_writer_tensor(w, t->name, buf, (uint64_t)head_elems * 4, err));
    }
    return QS_OK;
}

qs_status qs_llama2c_to_hf(const qs_llama2c *m, const char *dir, qs_error *err)
{
    qs_model_config cfg;
    qs_llama2c_config(m, &cfg);
    qs_model_names names;
    QS_TRY(qs_model_names_init(&cfg, NULL, NULL, &names, err));
    QS_TRY(qs_mkdir_p(dir, err));

    char *json = NULL;
    char path[4200];
    QS_TRY(qs_model_config_to_json(&cfg, &json, err));
    snprintf(path, sizeof path, "%s/config.json", dir);
    qs_status st = qs_write_file_durable(path, json, strlen(json), err);
    free(json);
    if (st != QS_OK) return st;

    const size_t cap = 3 + 9 * (size_t)m->n_layers;
    out_tensor *t = calloc(cap, sizeof *t);
    float *buf = malloc((size_t)m->head_size * (size_t)m->dim * sizeof(float));
    if (!t || !buf) {
        free(t);
        free(buf);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", m->path);
    }
    const int64_t D = m->dim, F = m->hidden_dim, KV = m->kv_dim;
    size_t n = 0;
    put(t, &n, names.embed, m->tok_emb, SRC_PLAIN, 2, m->vocab, D);
    for (int l = 0; l < m->n_layers; l++) {
        char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
        qs_block_norm_names(&cfg, &names, l, aw, ab, mw, mb);
        qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
        qs_block_linears(&cfg, &names, l, lin); /* q k v o gate up down */
        put(t, &n, aw, m->rms_att + l * D, SRC_PLAIN, 1, D, 0);
        put(t, &n, lin[0].weight, m->wq + l * D * D, SRC_ROPE_Q, 2, D, D);
        put(t, &n, lin[1].weight, m->wk + l * KV * D, SRC_ROPE_K, 2, KV, D);
        put(t, &n, lin[2].weight, m->wv + l * KV * D, SRC_PLAIN, 2, KV, D);
        put(t, &n, lin[3].weight, m->wo + l * D * D, SRC_PLAIN, 2, D, D);
        put(t, &n, mw, m->rms_ffn + l * D, SRC_PLAIN, 1, D, 0);
        put(t, &n, lin[4].weight, m->w1 + l * F * D, SRC_PLAIN, 2, F, D); /* gate = w1 */
        put(t, &n, lin[5].weight, m->w3 + l * F * D, SRC_PLAIN, 2, F, D); /* up = w3 */
        put(t, &n, lin[6].weight, m->w2 + l * D * F, SRC_PLAIN, 2, D, F); /* down = w2 */
    }
    put(t, &n, names.final_norm_w, m->rms_final, SRC_PLAIN, 1, D, 0);
    if (!m->shared) put(t, &n, names.lm_head, m->wcls, SRC_PLAIN, 2, m->vocab, D);

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    qs_st_writer *w = NULL;
    st = qs_st_writer_open(path, &w, err);
    if (st == QS_OK) st = qs_st_writer_metadata(w, "format", "pt", err);
    for (size_t i = 0; st == QS_OK && i < n; i++) st = qs_st_writer_declare(w, t[i].name, QS_DTYPE_F32, t[i].ndim, t[i].shape, err);
    if (st == QS_OK) st = qs_st_writer_begin(w, err);
    for (size_t k = 0; st == QS_OK && k < n; k++) {
        const char *name = qs_st_writer_order(w, k);
        const out_tensor *o = NULL;
        for (size_t i = 0; name && i < n && !o; i++)
            if (strcmp(t[i].name, name) == 0) o = &t[i];
        if (!o) st = qs_error_set(err, QS_ERR_INTERNAL, "%s: writer asked for unknown tensor '%s'", path, name ? name : "");
        else st = write_tensor(m, w, o, buf, err);
    }
    if (st == QS_OK) st = qs_st_writer_finish(w, err); /* frees w on success */
    if (st != QS_OK) qs_st_writer_abort(w);
    free(t);
    free(buf);
    if (st != QS_OK) return st;
    /* a sharded layout left by an earlier run would shadow this file */
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (unlink(path) != 0 && errno != ENOENT)
        return qs_error_set(err, QS_ERR_IO, "%s: cannot remove the stale file: %s", path, strerror(errno));
    return QS_OK;
}
