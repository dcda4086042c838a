/* model_check.c — a model's tensors against its config.json (see model_check.h). */
#include "pipeline/formats/model_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct check_ctx {
    const qs_manifest *m;
    qs_model_check_level level;
    bool outside;  /* the tensor is outside the blocks */
    float *buf;    /* values, grown as needed */
    size_t cap;
    size_t n_read;
    qs_error *err;
} check_ctx;

static bool float_dtype(qs_dtype d)
{
    return d == QS_DTYPE_F32 || d == QS_DTYPE_F16 || d == QS_DTYPE_BF16 || d == QS_DTYPE_F64;
}

/* One tensor: present, float, [d0] or [d0, d1] (d0 < 0: any first dimension
 * above -d0), then its values when the level asks for them. */
static qs_status tensor(check_ctx *c, const char *name, const char *what, int ndim, int64_t d0, int64_t d1)
{
    const qs_st_file *f = NULL;
    const qs_st_info *t = qs_manifest_find(c->m, name, &f);
    const char *dir = qs_manifest_dir(c->m);
    char nb[QS_ST_SHOW_MAX];
    if (!t) return qs_error_set(c->err, QS_ERR_INPUT, "%s: tensor '%s' (%s) is missing", dir, name, what);
    if (!float_dtype(t->dtype))
        return qs_error_set(c->err, QS_ERR_INPUT, "%s: tensor '%s' (%s): dtype %s, expected F32, F16, BF16 or F64", dir,
                            qs_st_show_name(name, nb, sizeof nb), what, qs_dtype_name(t->dtype));
    bool ok = t->ndim == ndim && (d0 < 0 ? t->shape[0] > -d0 : t->shape[0] == d0) && (ndim < 2 || t->shape[1] == d1);
    if (!ok) {
        char got[160], want[160];
        int64_t ws[2] = {d0 < 0 ? -d0 + 1 : d0, d1};
        qs_shape_str(t->ndim, t->shape, got, sizeof got);
        qs_shape_str(ndim, ws, want, sizeof want);
        return qs_error_set(c->err, QS_ERR_INPUT, "%s: tensor '%s' (%s): shape %s, config.json implies %s%s", dir, name,
                            what, got, d0 < 0 ? "at least " : "", want);
    }
    if (c->level == QS_MODEL_CHECK_SHAPES || (c->level == QS_MODEL_CHECK_VALUES_OUTSIDE && !c->outside)) return QS_OK;
    size_t n = (size_t)(t->nbytes / qs_dtype_size(t->dtype));
    if (n > c->cap) {
        float *nb2 = realloc(c->buf, n * sizeof *nb2);
        if (!nb2) return qs_error_set(c->err, QS_ERR_NOMEM, "%s: tensor '%s': cannot allocate %zu floats", dir, name, n);
        c->buf = nb2;
        c->cap = n;
    }
    c->n_read++;
    return qs_st_read_f32(f, t, c->buf, true, c->err);
}

static qs_status vec(check_ctx *c, const char *name, const char *what, int64_t n)
{
    return name[0] ? tensor(c, name, what, 1, n, 0) : QS_OK;
}

static qs_status check_block(check_ctx *c, const qs_model_config *cfg, const qs_model_names *names, int b)
{
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
    int n = qs_block_linears(cfg, names, b, lin);
    char what[96];
    for (int j = 0; j < n; j++) {
        const qs_block_linear *l = &lin[j];
        snprintf(what, sizeof what, "block %d %s", b, l->short_name);
        if (!qs_manifest_find(c->m, l->weight, NULL)) {
            /* a GPTQ export as the model: the loader checks and dequantizes it */
            char q[QS_NAME_MAX + 16];
            size_t len = strlen(l->weight);
            if (len > 7 && !strcmp(l->weight + len - 7, ".weight")) {
                snprintf(q, sizeof q, "%.*s.qweight", (int)(len - 7), l->weight);
                if (qs_manifest_find(c->m, q, NULL)) continue;
            }
        }
        QS_TRY(tensor(c, l->weight, what, 2, l->out, l->in));
        snprintf(what, sizeof what, "block %d %s bias", b, l->short_name);
        QS_TRY(vec(c, l->bias, what, l->out));
    }
    char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
    qs_block_norm_names(cfg, names, b, aw, ab, mw, mb);
    snprintf(what, sizeof what, "block %d norm", b);
    QS_TRY(vec(c, aw, what, cfg->hidden));
    QS_TRY(vec(c, ab, what, cfg->hidden));
    QS_TRY(vec(c, mw, what, cfg->hidden));
    return vec(c, mb, what, cfg->hidden);
}

qs_status qs_model_check(const qs_manifest *m, const qs_model_names *names, qs_model_check_level level, size_t *n_read,
                         qs_error *err)
{
    const qs_model_config *cfg = qs_manifest_config(m);
    check_ctx c = {m, level, true, NULL, 0, 0, err};
    qs_status st = tensor(&c, names->embed, "token embedding [vocab_size, hidden_size]", 2, cfg->vocab, cfg->hidden);
    if (st == QS_OK && names->pos_embed[0])
        st = tensor(&c, names->pos_embed, "learned positions", 2, -(int64_t)cfg->pos_offset, cfg->hidden);
    if (st == QS_OK) st = vec(&c, names->embed_norm_w, "embedding norm", cfg->hidden);
    if (st == QS_OK) st = vec(&c, names->embed_norm_b, "embedding norm", cfg->hidden);
    if (st == QS_OK) st = vec(&c, names->final_norm_w, "final norm", cfg->hidden);
    if (st == QS_OK) st = vec(&c, names->final_norm_b, "final norm", cfg->hidden);
    if (st == QS_OK && strcmp(names->lm_head, names->embed) != 0)
        st = tensor(&c, names->lm_head, "LM head [vocab_size, hidden_size]", 2, cfg->vocab, cfg->hidden);
    c.outside = false;
    for (int b = 0; b < cfg->n_layers && st == QS_OK; b++) st = check_block(&c, cfg, names, b);
    free(c.buf);
    if (n_read) *n_read = c.n_read;
    return st;
}
