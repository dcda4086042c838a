/* export_gguf.c — the GGUF export of a quantized llama model (see export_gguf.h):
 * the plan (tensor names, types, offsets, the general.* and llama.* metadata),
 * init, and the parallel pwrite of each rank's tensors: everything that
 * decides or writes the file's tensor data, and the public entry points.
 *
 * The vocabulary (tokenizer.json → tokenizer.ggml.*) is in gguf_vocab.c: init
 * loads it and adds its keys; the only thing it decides here is how many byte
 * tokens it appended for llama.cpp, which token_embd (and an untied output)
 * get as extra rows, copies of the unknown token's row. */
#define _GNU_SOURCE
#include "pipeline/export/export_gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/half.h"
#include "pipeline/export/gguf_vocab.h"
#include "pipeline/formats/fsutil.h"

/* ==== the plan ================================================================= */

typedef enum src_kind {
    SRC_LINEAR = 0, /* a quantized linear of a block: data from the block outcome */
    SRC_TENSOR,     /* a manifest tensor (norm, bias, embedding, lm_head) as F32/F16 */
    SRC_ROPE_FREQS, /* llama3 RoPE scaling factors, computed from the config */
} src_kind;

typedef struct plan_tensor {
    char gguf[64];            /* llama.cpp's name */
    char src[QS_NAME_MAX];    /* manifest name: the linear's weight or the tensor */
    src_kind kind;
    int group;                /* 0 embedding, 1 + layer, n_layers + 1 head */
    qs_gguf_type type;
    int perm_heads;           /* 0: rows as stored; else the Q/K row permutation with this many heads */
    int64_t rows, cols;       /* [out, in]; a vector is [n, 1] (one value per row) */
    int64_t src_rows;         /* rows in the source; rows past them are padding: */
    int64_t copy_row;         /* the source row each padded row copies, -1 zeros */
    size_t li;                /* index in the layout */
} plan_tensor;

struct qs_gguf_export {
    char path[4096];
    char partial[4200];
    const qs_manifest *m;
    const qs_model_names *names;
    qs_model_config cfg;
    qs_gguf_export_opts o;
    qs_gguf_layout lay;
    plan_tensor *t;
    size_t n, cap;
    int fallbacks;
    char fallback_reason[QS_NAME_MAX + 384];
    char vocab_warning[1024]; /* qs_gguf_vocab_warning, or "" */
    int64_t vocab_pad;        /* byte tokens after the embedding's rows (qs_gguf_vocab_padding) */
    int64_t vocab_pad_row;    /* the row they copy (HF's unknown token), -1 zeros */
    int fd;                   /* the partial file, opened on first write */
};

int64_t qs_gguf_permuted_row(int64_t r, int64_t rows, int n_head)
{
    int64_t hd = rows / n_head, half = hd / 2;
    int64_t h = r / hd, w = r % hd, i = w / 2, j = w % 2;
    return h * hd + j * half + i;
}

static qs_status add_plan(qs_gguf_export *x, const plan_tensor *p, qs_error *err)
{
    if (x->n == x->cap) {
        size_t nc = x->cap ? 2 * x->cap : 64;
        plan_tensor *nt = realloc(x->t, nc * sizeof *nt);
        if (!nt) return qs_error_set(err, QS_ERR_NOMEM, "gguf plan");
        x->t = nt;
        x->cap = nc;
    }
    x->t[x->n++] = *p;
    return QS_OK;
}

/* The GGUF type of a quantized linear with `cols` input features, or -1 with
 * the reason in why. */
static int linear_type(const qs_quant_opts *q, int64_t cols, char *why, size_t cap)
{
    int type;
    if (q->bits == 4 && q->sym) type = QS_GGUF_TYPE_Q4_0;
    else if (q->bits == 4) type = QS_GGUF_TYPE_Q4_1;
    else if (q->bits == 8 && q->sym) type = QS_GGUF_TYPE_Q8_0;
    else {
        snprintf(why, cap, "%d-bit %s quantization has no exact GGUF type (Q4_0: 4-bit sym, Q4_1: 4-bit asym, Q8_0: 8-bit sym)",
                 q->bits, q->sym ? "symmetric" : "asymmetric");
        return -1;
    }
    if (cols % QS_GGUF_QK) {
        snprintf(why, cap, "rows of %lld input features are not a multiple of the 32-weight GGUF block", (long long)cols);
        return -1;
    }
    if (q->group_size != -1 && q->group_size % QS_GGUF_QK) {
        snprintf(why, cap, "group size %d is not a multiple of 32, so a 32-weight GGUF block would span two groups",
                 q->group_size);
        return -1;
    }
    if (q->act_order && !q->static_groups && q->group_size != -1) {
        snprintf(why, cap, "act-order without static groups gives columns of one 32-weight block different groups "
                           "(use static groups, or no act-order)");
        return -1;
    }
    if (!q->scales_fp16) {
        snprintf(why, cap, "scales are not rounded to fp16 (GGUF stores d as fp16)");
        return -1;
    }
    return type;
}

static const char *role_name(qs_linear_role r)
{
    switch (r) {
    case QS_LIN_Q: return "attn_q";
    case QS_LIN_K: return "attn_k";
    case QS_LIN_V: return "attn_v";
    case QS_LIN_O: return "attn_output";
    case QS_LIN_GATE: return "ffn_gate";
    case QS_LIN_UP: return "ffn_up";
    case QS_LIN_DOWN: return "ffn_down";
    default: return NULL;
    }
}

/* A manifest tensor written as F32 (or F16) with the shape the manifest gives. */
static qs_status plan_tensor_from(qs_gguf_export *x, const char *gguf, const char *src, int group, qs_gguf_type type,
                                  int perm_heads, qs_error *err)
{
    const qs_st_info *info = qs_manifest_find(x->m, src, NULL);
    if (!info)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' is missing (needed for GGUF '%s')", qs_manifest_dir(x->m),
                            src, gguf);
    plan_tensor p;
    memset(&p, 0, sizeof p);
    snprintf(p.gguf, sizeof p.gguf, "%s", gguf);
    snprintf(p.src, sizeof p.src, "%s", src);
    p.kind = SRC_TENSOR;
    p.group = group;
    p.type = type;
    p.perm_heads = perm_heads;
    if (info->ndim == 1) p.rows = info->shape[0], p.cols = 1;
    else if (info->ndim == 2) p.rows = info->shape[0], p.cols = info->shape[1];
    else
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' has %d dims (1 or 2 expected)", qs_manifest_dir(x->m), src,
                            info->ndim);
    p.src_rows = p.rows;
    p.copy_row = -1;
    return add_plan(x, &p, err);
}

/* The last planned tensor (the embedding or the output, [vocab, hidden]) gets
 * the vocabulary's byte tokens as extra rows, copies of the unknown token's. */
static void plan_vocab_rows(qs_gguf_export *x)
{
    plan_tensor *p = &x->t[x->n - 1];
    p->rows += x->vocab_pad;
    p->copy_row = x->vocab_pad_row;
}

/* ==== init ======================================================================= */

static void model_name(const qs_gguf_export *x, char *buf, size_t cap)
{
    if (x->o.name) {
        snprintf(buf, cap, "%s", x->o.name);
        return;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", qs_manifest_dir(x->m));
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') dir[--n] = '\0';
    const char *base = strrchr(dir, '/');
    snprintf(buf, cap, "%s", base ? base + 1 : dir);
}

static qs_gguf_file_type file_type(const qs_quant_opts *q)
{
    if (q->bits == 4 && q->sym) return QS_GGUF_FTYPE_MOSTLY_Q4_0;
    if (q->bits == 4) return QS_GGUF_FTYPE_MOSTLY_Q4_1;
    if (q->bits == 8 && q->sym) return QS_GGUF_FTYPE_MOSTLY_Q8_0;
    return QS_GGUF_FTYPE_MOSTLY_F16; /* everything fell back to F16 */
}

static qs_status plan_tensors(qs_gguf_export *x, qs_error *err)
{
    const qs_model_config *c = &x->cfg;
    const qs_model_names *nm = x->names;
    qs_gguf_type big = x->o.embed_f16 ? QS_GGUF_TYPE_F16 : QS_GGUF_TYPE_F32;
    QS_TRY(plan_tensor_from(x, "token_embd.weight", nm->embed, 0, big, 0, err));
    plan_vocab_rows(x);
    for (int l = 0; l < c->n_layers; l++) {
        char an[QS_NAME_MAX], ab[QS_NAME_MAX], mn[QS_NAME_MAX], mb[QS_NAME_MAX], g[64];
        qs_block_norm_names(c, nm, l, an, ab, mn, mb);
        qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
        int nl = qs_block_linears(c, nm, l, lin);
        snprintf(g, sizeof g, "blk.%d.attn_norm.weight", l);
        QS_TRY(plan_tensor_from(x, g, an, 1 + l, QS_GGUF_TYPE_F32, 0, err));
        for (int i = 0; i < nl; i++) {
            const char *rn = role_name(lin[i].role);
            if (!rn)
                return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: linear role of '%s' has no llama GGUF tensor",
                                    qs_manifest_dir(x->m), lin[i].weight);
            if (lin[i].role == QS_LIN_GATE) {
                snprintf(g, sizeof g, "blk.%d.ffn_norm.weight", l);
                QS_TRY(plan_tensor_from(x, g, mn, 1 + l, QS_GGUF_TYPE_F32, 0, err));
            }
            int perm = lin[i].role == QS_LIN_Q ? c->n_heads : lin[i].role == QS_LIN_K ? c->n_kv_heads : 0;
            if (!qs_manifest_find(x->m, lin[i].weight, NULL))
                return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' is missing", qs_manifest_dir(x->m),
                                    lin[i].weight);
            plan_tensor p;
            memset(&p, 0, sizeof p);
            snprintf(p.gguf, sizeof p.gguf, "blk.%d.%s.weight", l, rn);
            snprintf(p.src, sizeof p.src, "%s", lin[i].weight);
            p.kind = SRC_LINEAR;
            p.group = 1 + l;
            p.perm_heads = perm;
            p.rows = lin[i].out;
            p.cols = lin[i].in;
            char why[256];
            int t = linear_type(&x->o.quant, p.cols, why, sizeof why);
            if (t < 0) {
                if (!x->o.fallback_f16)
                    return qs_error_set(err, QS_ERR_UNSUPPORTED, "gguf: tensor '%s' [%lld, %lld]: %s (or write it F16 with --gguf-fallback f16)",
                                        lin[i].weight, (long long)p.rows, (long long)p.cols, why);
                if (!x->fallbacks++) snprintf(x->fallback_reason, sizeof x->fallback_reason, "%s: %s", lin[i].weight, why);
                t = QS_GGUF_TYPE_F16;
            }
            p.type = (qs_gguf_type)t;
            QS_TRY(add_plan(x, &p, err));
            if (lin[i].bias[0]) {
                snprintf(g, sizeof g, "blk.%d.%s.bias", l, rn);
                QS_TRY(plan_tensor_from(x, g, lin[i].bias, 1 + l, QS_GGUF_TYPE_F32, perm, err));
            }
        }
    }
    int head = c->n_layers + 1;
    QS_TRY(plan_tensor_from(x, "output_norm.weight", nm->final_norm_w, head, QS_GGUF_TYPE_F32, 0, err));
    bool tied = c->tie_embeddings || !strcmp(nm->lm_head, nm->embed);
    if (!tied) {
        QS_TRY(plan_tensor_from(x, "output.weight", nm->lm_head, head, big, 0, err));
        plan_vocab_rows(x);
    }
    if (c->rope_scaling == QS_ROPE_SCALING_LLAMA3) {
        plan_tensor p;
        memset(&p, 0, sizeof p);
        snprintf(p.gguf, sizeof p.gguf, "rope_freqs.weight");
        p.kind = SRC_ROPE_FREQS;
        p.group = head;
        p.type = QS_GGUF_TYPE_F32;
        p.rows = c->head_dim / 2;
        p.cols = 1;
        QS_TRY(add_plan(x, &p, err));
    }
    return QS_OK;
}

static qs_status check_model(const qs_gguf_export *x, qs_error *err)
{
    const qs_model_config *c = &x->cfg;
    const char *dir = qs_manifest_dir(x->m);
    if (c->arch != QS_ARCH_LLAMA || (strcmp(c->model_type, "llama") && strcmp(c->model_type, "mistral")))
        return qs_error_set(err, QS_ERR_UNSUPPORTED,
                            "%s: model_type '%s': the GGUF export writes llama-architecture models (llama, mistral) only",
                            dir, c->model_type);
    if (c->head_dim % 2 || c->n_heads <= 0 || c->n_kv_heads <= 0)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: head_dim %d: the Q/K row permutation needs an even head size",
                            dir, c->head_dim);
    return QS_OK;
}

qs_status qs_gguf_export_init(qs_gguf_export **out, const char *out_path, const qs_manifest *m,
                              const qs_model_names *names, const qs_gguf_export_opts *o, qs_error *err)
{
    *out = NULL;
    qs_gguf_export *x = calloc(1, sizeof *x);
    if (!x) return qs_error_set(err, QS_ERR_NOMEM, "gguf export");
    x->fd = -1;
    if (strlen(out_path) >= sizeof x->path) {
        free(x);
        return qs_error_set(err, QS_ERR_INPUT, "%s: path too long", out_path);
    }
    snprintf(x->path, sizeof x->path, "%s", out_path);
    snprintf(x->partial, sizeof x->partial, "%s.partial", out_path);
    x->m = m;
    x->names = names;
    x->cfg = *qs_manifest_config(m);
    x->o = *o;
    qs_gguf_layout_init(&x->lay, QS_GGUF_ALIGNMENT);
    qs_gguf_vocab *v = NULL;
    qs_status st = check_model(x, err);
    if (st == QS_OK) {
        char tok[4200];
        if (o->tokenizer) snprintf(tok, sizeof tok, "%s", o->tokenizer);
        else snprintf(tok, sizeof tok, "%s/tokenizer.json", qs_manifest_dir(m));
        st = qs_gguf_vocab_load(&v, tok, qs_manifest_dir(m), x->cfg.vocab, err);
    }
    if (st == QS_OK) {
        x->vocab_pad = qs_gguf_vocab_padding(v, &x->vocab_pad_row);
        st = plan_tensors(x, err);
    }
    if (st != QS_OK) goto fail;

    /* metadata, in a fixed order */
    const qs_model_config *c = &x->cfg;
    qs_gguf_layout *l = &x->lay;
    char name[512];
    model_name(x, name, sizeof name);
    qs_gguf_add_string(l, "general.architecture", "llama");
    qs_gguf_add_string(l, "general.type", "model");
    qs_gguf_add_string(l, "general.name", name);
    qs_gguf_add_u32(l, "general.alignment", QS_GGUF_ALIGNMENT);
    qs_gguf_add_u32(l, "general.file_type", (uint32_t)file_type(&o->quant));
    qs_gguf_add_u32(l, "general.quantization_version", 2);
    qs_gguf_add_u32(l, "llama.vocab_size", (uint32_t)(c->vocab + x->vocab_pad)); /* = the tokens */
    qs_gguf_add_u32(l, "llama.context_length", (uint32_t)c->max_positions);
    qs_gguf_add_u32(l, "llama.embedding_length", (uint32_t)c->hidden);
    qs_gguf_add_u32(l, "llama.block_count", (uint32_t)c->n_layers);
    qs_gguf_add_u32(l, "llama.feed_forward_length", (uint32_t)c->ffn);
    qs_gguf_add_u32(l, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    qs_gguf_add_u32(l, "llama.attention.head_count", (uint32_t)c->n_heads);
    qs_gguf_add_u32(l, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    if (c->head_dim * c->n_heads != c->hidden) {
        qs_gguf_add_u32(l, "llama.attention.key_length", (uint32_t)c->head_dim);
        qs_gguf_add_u32(l, "llama.attention.value_length", (uint32_t)c->head_dim);
    }
    qs_gguf_add_f32(l, "llama.rope.freq_base", (float)c->rope_theta);
    qs_gguf_add_f32(l, "llama.attention.layer_norm_rms_epsilon", (float)c->norm_eps);
    if (c->rope_scaling == QS_ROPE_SCALING_LINEAR) {
        qs_gguf_add_string(l, "llama.rope.scaling.type", "linear");
        qs_gguf_add_f32(l, "llama.rope.scaling.factor", (float)c->rope_factor);
    }
    qs_gguf_vocab_add_metadata(l, v);
    if (qs_gguf_vocab_warning(v)) snprintf(x->vocab_warning, sizeof x->vocab_warning, "%s", qs_gguf_vocab_warning(v));
    qs_gguf_vocab_free(v);
    v = NULL;

    for (size_t i = 0; i < x->n && st == QS_OK; i++) {
        plan_tensor *p = &x->t[i];
        uint64_t ne[2] = {(uint64_t)p->cols, (uint64_t)p->rows};
        if (p->cols == 1) ne[0] = (uint64_t)p->rows; /* a vector: ne = {n} */
        st = qs_gguf_add_tensor(l, p->gguf, p->cols == 1 ? 1 : 2, ne, p->type, &p->li, err);
    }
    if (st == QS_OK) st = qs_gguf_layout_finish(l, err);
    if (st != QS_OK) goto fail;
    *out = x;
    return QS_OK;
fail:
    qs_gguf_vocab_free(v);
    qs_gguf_export_free(x);
    return st;
}

void qs_gguf_export_free(qs_gguf_export *x)
{
    if (!x) return;
    if (x->fd >= 0) close(x->fd);
    qs_gguf_layout_free(&x->lay);
    free(x->t);
    free(x);
}

const char *qs_gguf_export_path(const qs_gguf_export *x) { return x->path; }
const char *qs_gguf_export_partial_path(const qs_gguf_export *x) { return x->partial; }
uint64_t qs_gguf_export_file_size(const qs_gguf_export *x) { return qs_gguf_layout_file_size(&x->lay); }
const qs_gguf_layout *qs_gguf_export_layout(const qs_gguf_export *x) { return &x->lay; }
int qs_gguf_export_fallbacks(const qs_gguf_export *x) { return x->fallbacks; }
const char *qs_gguf_export_fallback_reason(const qs_gguf_export *x) { return x->fallback_reason; }
const char *qs_gguf_export_vocab_warning(const qs_gguf_export *x) { return x->vocab_warning[0] ? x->vocab_warning : NULL; }

/* ==== writing ====================================================================== */

qs_status qs_gguf_export_create(qs_gguf_export *x, qs_error *err)
{
    int fd = open(x->partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return qs_error_set(err, QS_ERR_IO, "%s: cannot create: %s", x->partial, strerror(errno));
    qs_status st = QS_OK;
    if (ftruncate(fd, (off_t)qs_gguf_export_file_size(x)) != 0 || fsync(fd) != 0)
        st = qs_error_set(err, QS_ERR_IO, "%s: cannot size to %llu bytes: %s", x->partial,
                          (unsigned long long)qs_gguf_export_file_size(x), strerror(errno));
    close(fd);
    if (st == QS_OK) st = qs_fsync_dir_of(x->partial, err);
    return st;
}

static qs_status open_partial(qs_gguf_export *x, qs_error *err)
{
    if (x->fd >= 0) return QS_OK;
    x->fd = open(x->partial, O_WRONLY | O_CLOEXEC);
    if (x->fd < 0)
        return qs_error_set(err, QS_ERR_IO, "%s: cannot open (rank 0 creates it with qs_gguf_export_create first): %s",
                            x->partial, strerror(errno));
    return QS_OK;
}

static qs_status pwrite_all(qs_gguf_export *x, const void *buf, size_t n, uint64_t off, qs_error *err)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(x->fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return qs_error_set(err, QS_ERR_IO, "%s: write of %zu bytes at %llu failed: %s", x->partial, n,
                                (unsigned long long)off, w < 0 ? strerror(errno) : "no progress");
        p += w, n -= (size_t)w, off += (uint64_t)w;
    }
    return QS_OK;
}

static qs_status sync_partial(qs_gguf_export *x, qs_error *err)
{
    if (fsync(x->fd) != 0) return qs_error_set(err, QS_ERR_IO, "%s: fsync: %s", x->partial, strerror(errno));
    return QS_OK;
}

/* Rows are encoded into a buffer of at most this many bytes and written in chunks. */
#define CHUNK_BYTES (8u << 20)

/* The per-32-column group of a quantized linear: every column of a block must
 * share its group (one scale and zero per row and block). */
static qs_status block_groups(const plan_tensor *p, const qs_quant_result *r, int32_t *bg, qs_error *err)
{
    int64_t nb = r->cols / QS_GGUF_QK;
    for (int64_t b = 0; b < nb; b++) {
        int32_t g = r->g_idx[b * QS_GGUF_QK];
        for (int64_t c = b * QS_GGUF_QK; c < (b + 1) * QS_GGUF_QK; c++)
            if (r->g_idx[c] != g)
                return qs_error_set(err, QS_ERR_UNSUPPORTED,
                                    "gguf: tensor '%s': columns %lld and %lld of one 32-weight block are in groups %d and %d "
                                    "(act-order without static groups cannot be stored as %s)",
                                    p->src, (long long)(b * QS_GGUF_QK), (long long)c, g, r->g_idx[c],
                                    qs_gguf_type_name(p->type));
        if (g < 0 || g >= r->groups)
            return qs_error_set(err, QS_ERR_INPUT, "gguf: tensor '%s': g_idx[%lld] = %d outside [0, %lld)", p->src,
                                (long long)(b * QS_GGUF_QK), g, (long long)r->groups);
        bg[b] = g;
    }
    return QS_OK;
}

/* One GGUF row (HF row `src`) of a quantized linear into dst. */
static qs_status encode_row(const plan_tensor *p, const qs_quant_result *r, const int32_t *bg, int64_t src,
                            uint8_t *dst, qs_error *err)
{
    int64_t cols = r->cols, rows = r->rows, nb = cols / QS_GGUF_QK;
    const uint8_t *codes = r->codes + src * cols;
    if (p->type == QS_GGUF_TYPE_F16) {
        for (int64_t c = 0; c < cols; c++) {
            uint16_t h = qs_f32_to_f16(r->q[src * cols + c]);
            memcpy(dst + 2 * c, &h, 2);
        }
        return QS_OK;
    }
    size_t bb = qs_gguf_type_block_bytes(p->type);
    for (int64_t b = 0; b < nb; b++) {
        size_t gi = (size_t)bg[b] * (size_t)rows + (size_t)src;
        float scale = r->scales[gi];
        int32_t zero = r->zeros[gi];
        uint16_t d = qs_f32_to_f16(scale);
        if (qs_f16_to_f32(d) != scale || !isfinite(scale))
            return qs_error_set(err, QS_ERR_UNSUPPORTED, "gguf: tensor '%s' row %lld group %d: scale %.9g is not an fp16 value",
                                p->src, (long long)src, bg[b], (double)scale);
        const uint8_t *q = codes + b * QS_GGUF_QK;
        uint8_t *out = dst + (size_t)b * bb;
        if (p->type == QS_GGUF_TYPE_Q4_0) {
            if (zero != 8)
                return qs_error_set(err, QS_ERR_UNSUPPORTED, "gguf: tensor '%s' row %lld group %d: zero %d, Q4_0 needs 8 (symmetric)",
                                    p->src, (long long)src, bg[b], zero);
            qs_gguf_block_q4_0(d, q, out);
        } else if (p->type == QS_GGUF_TYPE_Q8_0) {
            if (zero != 128)
                return qs_error_set(err, QS_ERR_UNSUPPORTED, "gguf: tensor '%s' row %lld group %d: zero %d, Q8_0 needs 128 (symmetric)",
                                    p->src, (long long)src, bg[b], zero);
            int8_t s8[QS_GGUF_QK];
            for (int k = 0; k < QS_GGUF_QK; k++) s8[k] = (int8_t)((int)q[k] - 128);
            qs_gguf_block_q8_0(d, s8, out);
        } else { /* Q4_1: x = d·q + m with m = −d·zero rounded to fp16 */
            float mf = zero ? -(scale * (float)zero) : 0.0f;
            uint16_t m = qs_f32_to_f16(mf);
            if (!isfinite(qs_f16_to_f32(m)))
                return qs_error_set(err, QS_ERR_UNSUPPORTED, "gguf: tensor '%s' row %lld group %d: min %g overflows fp16",
                                    p->src, (long long)src, bg[b], (double)mf);
            qs_gguf_block_q4_1(d, m, q, out);
        }
    }
    return QS_OK;
}

static qs_status write_linear(qs_gguf_export *x, const plan_tensor *p, const qs_quant_result *r, qs_error *err)
{
    if (r->rows != p->rows || r->cols != p->cols)
        return qs_error_set(err, QS_ERR_INPUT, "gguf: tensor '%s': quantized result is [%lld, %lld], expected [%lld, %lld]",
                            p->src, (long long)r->rows, (long long)r->cols, (long long)p->rows, (long long)p->cols);
    if (p->type != QS_GGUF_TYPE_F16 && r->bits != (p->type == QS_GGUF_TYPE_Q8_0 ? 8 : 4))
        return qs_error_set(err, QS_ERR_INPUT, "gguf: tensor '%s': %d-bit result planned as %s", p->src, r->bits,
                            qs_gguf_type_name(p->type));
    const qs_gguf_tensor_info *ti = &x->lay.tensors[p->li];
    uint64_t row_bytes = ti->nbytes / (uint64_t)p->rows;
    int32_t *bg = malloc(sizeof(int32_t) * (size_t)(p->cols / QS_GGUF_QK + 1));
    int64_t rows_per = (int64_t)(CHUNK_BYTES / row_bytes);
    if (rows_per < 1) rows_per = 1;
    if (rows_per > p->rows) rows_per = p->rows;
    uint8_t *buf = malloc((size_t)(row_bytes * (uint64_t)rows_per));
    qs_status st = QS_OK;
    if (!bg || !buf) st = qs_error_set(err, QS_ERR_NOMEM, "gguf: tensor '%s'", p->src);
    if (st == QS_OK && p->type != QS_GGUF_TYPE_F16) st = block_groups(p, r, bg, err);
    for (int64_t r0 = 0; r0 < p->rows && st == QS_OK; r0 += rows_per) {
        int64_t r1 = r0 + rows_per < p->rows ? r0 + rows_per : p->rows;
        for (int64_t row = r0; row < r1 && st == QS_OK; row++) {
            int64_t src = p->perm_heads ? qs_gguf_permuted_row(row, p->rows, p->perm_heads) : row;
            st = encode_row(p, r, bg, src, buf + (size_t)((uint64_t)(row - r0) * row_bytes), err);
        }
        if (st == QS_OK)
            st = pwrite_all(x, buf, (size_t)((uint64_t)(r1 - r0) * row_bytes), ti->offset + (uint64_t)r0 * row_bytes, err);
    }
    free(bg);
    free(buf);
    return st;
}

/* A manifest tensor as F32/F16, converted in row chunks straight from the
 * mapping; padded rows (past src_rows) are copies of copy_row, or zeros —
 * or, when OmniQuant's LET folded it (folded not NULL), from its folded f32
 * value. */
static qs_status write_tensor(qs_gguf_export *x, const plan_tensor *p, const qs_omni_tensor *folded, qs_error *err)
{
    const qs_st_file *f = NULL;
    const qs_st_info *info = qs_manifest_find(x->m, p->src, &f);
    if (!info) return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' is missing", qs_manifest_dir(x->m), p->src);
    const uint8_t *data = qs_st_data(f, info);
    qs_dtype src_dt = info->dtype;
    if (folded) {
        if (folded->shape[0] != p->rows * p->cols)
            return qs_error_set(err, QS_ERR_INTERNAL, "gguf: folded '%s' has %lld elements, planned %lld", p->src,
                                (long long)folded->shape[0], (long long)(p->rows * p->cols));
        data = (const uint8_t *)folded->data;
        src_dt = QS_DTYPE_F32;
    }
    size_t es = qs_dtype_size(src_dt);
    const qs_gguf_tensor_info *ti = &x->lay.tensors[p->li];
    size_t out_es = p->type == QS_GGUF_TYPE_F16 ? 2 : 4;
    int64_t rows_per = (int64_t)(CHUNK_BYTES / ((size_t)p->cols * 4));
    if (rows_per < 1) rows_per = 1;
    if (rows_per > p->rows) rows_per = p->rows;
    float *tmp = malloc(sizeof(float) * (size_t)(rows_per * p->cols));
    uint8_t *out = malloc(out_es * (size_t)(rows_per * p->cols));
    qs_status st = QS_OK;
    if (!tmp || !out) st = qs_error_set(err, QS_ERR_NOMEM, "gguf: tensor '%s'", p->src);
    for (int64_t r0 = 0; r0 < p->rows && st == QS_OK; r0 += rows_per) {
        int64_t r1 = r0 + rows_per < p->rows ? r0 + rows_per : p->rows;
        for (int64_t row = r0; row < r1 && st == QS_OK; row++) {
            int64_t src = p->perm_heads ? qs_gguf_permuted_row(row, p->rows, p->perm_heads) : row;
            if (row >= p->src_rows) src = p->copy_row;
            if (src < 0) memset(tmp + (row - r0) * p->cols, 0, sizeof(float) * (size_t)p->cols);
            else
                st = qs_convert_to_f32(data + (size_t)(src * p->cols) * es, src_dt, (size_t)p->cols,
                                       tmp + (row - r0) * p->cols, err);
        }
        size_t n = (size_t)((r1 - r0) * p->cols);
        if (st == QS_OK)
            st = qs_convert_from_f32(tmp, n, p->type == QS_GGUF_TYPE_F16 ? QS_DTYPE_F16 : QS_DTYPE_F32, out, err);
        if (st == QS_OK) st = pwrite_all(x, out, n * out_es, ti->offset + (uint64_t)(r0 * p->cols) * out_es, err);
    }
    if (st != QS_OK && err) qs_error_prefix(err, "gguf tensor '%s'", p->gguf);
    free(tmp);
    free(out);
    return st;
}

/* llama3 RoPE scaling: per frequency the factor llama.cpp divides it by. */
static qs_status write_rope_freqs(qs_gguf_export *x, const plan_tensor *p, qs_error *err)
{
    const qs_model_config *c = &x->cfg;
    int64_t n = p->rows;
    float *f = malloc(sizeof(float) * (size_t)n);
    if (!f) return qs_error_set(err, QS_ERR_NOMEM, "rope_freqs");
    double old = c->rope_original_max_positions, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    double low_wl = old / lo, high_wl = old / hi;
    for (int64_t i = 0; i < n; i++) {
        double freq = 1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->head_dim);
        double wl = 2.0 * M_PI / freq, v;
        if (wl < high_wl) v = 1.0;
        else if (wl > low_wl) v = c->rope_factor;
        else {
            double smooth = (old / wl - lo) / (hi - lo);
            v = 1.0 / ((1.0 - smooth) / c->rope_factor + smooth);
        }
        f[i] = (float)v;
    }
    qs_status st = pwrite_all(x, f, sizeof(float) * (size_t)n, x->lay.tensors[p->li].offset, err);
    free(f);
    return st;
}

/* Writes every planned tensor of `group`; o is the block outcome for block groups. */
static qs_status write_group(qs_gguf_export *x, int group, const qs_block_outcome *o, qs_error *err)
{
    QS_TRY(open_partial(x, err));
    qs_status st = QS_OK;
    for (size_t i = 0; i < x->n && st == QS_OK; i++) {
        const plan_tensor *p = &x->t[i];
        if (p->group != group) continue;
        if (p->kind == SRC_TENSOR) st = write_tensor(x, p, o && o->omni ? qs_omni_record_fp(o->omni, p->src) : NULL, err);
        else if (p->kind == SRC_ROPE_FREQS) st = write_rope_freqs(x, p, err);
        else {
            int li = -1;
            for (int k = 0; o && k < o->blk->n_linears; k++)
                if (!strcmp(o->blk->lin[k].weight, p->src)) li = k;
            if (li < 0)
                return qs_error_set(err, QS_ERR_INPUT, "gguf: block %d outcome has no quantized '%s'", group - 1, p->src);
            st = write_linear(x, p, &o->res[li], err);
        }
    }
    if (st == QS_OK) st = sync_partial(x, err);
    return st;
}

qs_status qs_gguf_export_block(qs_gguf_export *x, const qs_block_outcome *o, qs_error *err)
{
    if (o->layer < 0 || o->layer >= x->cfg.n_layers)
        return qs_error_set(err, QS_ERR_INPUT, "gguf: block %d outside [0, %d)", o->layer, x->cfg.n_layers);
    return write_group(x, 1 + o->layer, o, err);
}

qs_status qs_gguf_export_embed(qs_gguf_export *x, qs_error *err) { return write_group(x, 0, NULL, err); }

qs_status qs_gguf_export_head(qs_gguf_export *x, qs_error *err)
{
    return write_group(x, x->cfg.n_layers + 1, NULL, err);
}

qs_status qs_gguf_export_finish(qs_gguf_export *x, qs_error *err)
{
    QS_TRY(open_partial(x, err));
    uint8_t *hdr = NULL;
    size_t len = 0;
    QS_TRY(qs_gguf_layout_header(&x->lay, &hdr, &len, err));
    qs_status st = pwrite_all(x, hdr, len, 0, err);
    free(hdr);
    struct stat sb;
    if (st == QS_OK && (fstat(x->fd, &sb) != 0 || (uint64_t)sb.st_size != qs_gguf_export_file_size(x)))
        st = qs_error_set(err, QS_ERR_IO, "%s: size %lld, planned %llu (was it created by qs_gguf_export_create?)",
                          x->partial, (long long)sb.st_size, (unsigned long long)qs_gguf_export_file_size(x));
    if (st == QS_OK) st = sync_partial(x, err);
    close(x->fd);
    x->fd = -1;
    if (st == QS_OK && rename(x->partial, x->path) != 0)
        st = qs_error_set(err, QS_ERR_IO, "%s: cannot rename to %s: %s", x->partial, x->path, strerror(errno));
    if (st == QS_OK) st = qs_fsync_dir_of(x->path, err);
    return st;
}
