/* model.c — embedding stage, head stage and the whole-model forward. */
#include "workers/model.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops_cpu.h"

/* ============================================================== names ==== */

static bool manifest_has(const char *name, void *ctx)
{
    const qs_st_file *f = NULL;
    return qs_manifest_find((const qs_manifest *)ctx, name, &f) != NULL;
}

qs_status qs_model_names_from_manifest(const qs_manifest *m, qs_model_names *names, qs_error *err)
{
    qs_status s = qs_model_names_init(qs_manifest_config(m), manifest_has, (void *)m, names, err);
    if (s != QS_OK) qs_error_prefix(err, "%s", qs_manifest_dir(m));
    return s;
}

static qs_status load_shaped(const qs_manifest *m, const char *name, int ndim, int64_t d0, int64_t d1, qs_tensor *t,
                             qs_error *err)
{
    QS_TRY(qs_manifest_read_f32(m, name, t, true, err));
    if (t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1)) return QS_OK;
    char got[96], want[96];
    int64_t ws[2] = {d0, d1};
    qs_status s = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': shape %s, expected %s", qs_manifest_dir(m), name,
                               qs_shape_str(t->ndim, t->shape, got, sizeof got),
                               qs_shape_str(ndim, ws, want, sizeof want));
    qs_tensor_free(t);
    return s;
}

/* ========================================================== embedding ==== */

qs_status qs_embed_stage_load(qs_embed_stage *e, const qs_manifest *m, const qs_model_names *names, qs_error *err)
{
    memset(e, 0, sizeof *e);
    e->cfg = *qs_manifest_config(m);
    const qs_model_config *c = &e->cfg;
    qs_status s = load_shaped(m, names->embed, 2, c->vocab, c->hidden, &e->tok, err);
    if (s == QS_OK && c->pos == QS_POS_LEARNED) {
        QS_TRY(qs_manifest_read_f32(m, names->pos_embed, &e->pos, true, err));
        if (e->pos.ndim != 2 || e->pos.shape[1] != c->hidden || e->pos.shape[0] <= c->pos_offset) {
            char got[96];
            s = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': shape %s, expected [positions + %d, %d]",
                             qs_manifest_dir(m), names->pos_embed, qs_shape_str(e->pos.ndim, e->pos.shape, got, 96),
                             c->pos_offset, c->hidden);
        }
    }
    if (s == QS_OK && c->embed_layernorm) {
        s = load_shaped(m, names->embed_norm_w, 1, c->hidden, 0, &e->norm_w, err);
        if (s == QS_OK) s = load_shaped(m, names->embed_norm_b, 1, c->hidden, 0, &e->norm_b, err);
    }
    if (s != QS_OK) qs_embed_stage_free(e);
    return s;
}

void qs_embed_stage_free(qs_embed_stage *e)
{
    if (!e) return;
    qs_tensor_free(&e->tok);
    qs_tensor_free(&e->pos);
    qs_tensor_free(&e->norm_w);
    qs_tensor_free(&e->norm_b);
}

qs_status qs_embed_stage_forward(const qs_embed_stage *e, const int32_t *ids, int64_t batch, int64_t seq, float *out,
                                 qs_error *err)
{
    const qs_model_config *c = &e->cfg;
    const int64_t H = c->hidden, R = batch * seq;
    QS_TRY(qs_cpu_embed(e->tok.data, c->vocab, H, ids, R, out, err));
    if (e->pos.data) {
        int64_t n_pos = e->pos.shape[0] - c->pos_offset;
        if (seq > n_pos)
            return qs_error_set(err, QS_ERR_INPUT, "sequence length %lld exceeds the %lld learned positions",
                                (long long)seq, (long long)n_pos);
        const float *pt = e->pos.data;
        for (int64_t r = 0; r < R; r++)
            qs_cpu_add(out + r * H, pt + (r % seq + c->pos_offset) * H, H);
    }
    if (e->norm_w.data) qs_cpu_layernorm(out, e->norm_w.data, e->norm_b.data, out, R, H, (float)c->norm_eps);
    return QS_OK;
}

/* =============================================================== head ==== */

qs_status qs_head_stage_load(qs_head_stage *h, const qs_manifest *m, const qs_model_names *names, qs_error *err)
{
    memset(h, 0, sizeof *h);
    h->cfg = *qs_manifest_config(m);
    const qs_model_config *c = &h->cfg;
    qs_status s = QS_OK;
    if (names->final_norm_w[0]) s = load_shaped(m, names->final_norm_w, 1, c->hidden, 0, &h->norm_w, err);
    if (s == QS_OK && names->final_norm_b[0]) s = load_shaped(m, names->final_norm_b, 1, c->hidden, 0, &h->norm_b, err);
    if (s == QS_OK) s = load_shaped(m, names->lm_head, 2, c->vocab, c->hidden, &h->lm_head, err);
    if (s != QS_OK) qs_head_stage_free(h);
    return s;
}

void qs_head_stage_free(qs_head_stage *h)
{
    if (!h) return;
    qs_tensor_free(&h->norm_w);
    qs_tensor_free(&h->norm_b);
    qs_tensor_free(&h->lm_head);
    qs_free(h->lm_head_bf16);
    h->lm_head_bf16 = NULL;
}

qs_status qs_head_stage_set_compute(qs_head_stage *h, qs_compute_dtype dt, qs_error *err)
{
    qs_free(h->lm_head_bf16);
    h->lm_head_bf16 = NULL;
    if (dt != QS_COMPUTE_BF16) return QS_OK;
    int64_t n = qs_tensor_numel(&h->lm_head);
    h->lm_head_bf16 = qs_malloc(sizeof(uint16_t) * (size_t)n);
    if (!h->lm_head_bf16) return qs_error_set(err, QS_ERR_NOMEM, "head: bf16 copy of the LM head (%lld)", (long long)n);
    qs_cpu_to_bf16(h->lm_head.data, h->lm_head_bf16, n);
    return QS_OK;
}

qs_status qs_head_stage_forward(const qs_head_stage *h, const qs_backend_i *be, const float *x, int64_t rows,
                                float *logits, qs_error *err)
{
    const qs_model_config *c = &h->cfg;
    const int64_t H = c->hidden;
    const float *in = x;
    float *tmp = NULL;
    if (h->norm_w.data) {
        tmp = qs_malloc(sizeof(float) * (size_t)(rows * H));
        if (!tmp) return qs_error_set(err, QS_ERR_NOMEM, "head: out of memory for %lld rows", (long long)rows);
        if (c->norm == QS_NORM_RMS) qs_cpu_rmsnorm(x, h->norm_w.data, tmp, rows, H, (float)c->norm_eps);
        else qs_cpu_layernorm(x, h->norm_w.data, h->norm_b.data, tmp, rows, H, (float)c->norm_eps);
        in = tmp;
    }
    qs_status s = QS_OK;
    if (h->lm_head_bf16) {
        uint16_t *xb = qs_malloc(sizeof(uint16_t) * (size_t)(rows * H));
        if (!xb) s = qs_error_set(err, QS_ERR_NOMEM, "head: out of memory for %lld rows", (long long)rows);
        else {
            qs_cpu_to_bf16(in, xb, rows * H);
            s = be->gemm_bf16(be->ctx, false, true, rows, c->vocab, H, 1.0f, xb, H, h->lm_head_bf16, H, 0.0f, logits,
                              c->vocab, err);
        }
        qs_free(xb);
    } else {
        be->sgemm(be->ctx, false, true, rows, c->vocab, H, 1.0f, in, H, h->lm_head.data, H, 0.0f, logits, c->vocab);
    }
    qs_free(tmp);
    return s;
}

/* ============================================================== model ==== */

qs_status qs_model_load(qs_model *model, const char *dir, qs_error *err)
{
    return qs_model_load_file(model, dir, NULL, err);
}

qs_status qs_model_load_file(qs_model *model, const char *dir, const char *file, qs_error *err)
{
    memset(model, 0, sizeof *model);
    QS_TRY(qs_manifest_open_file(dir, file, &model->manifest, err));
    const qs_manifest *m = model->manifest;
    model->cfg = *qs_manifest_config(m);
    qs_status s = qs_model_names_from_manifest(m, &model->names, err);
    if (s == QS_OK) s = qs_embed_stage_load(&model->embed, m, &model->names, err);
    if (s == QS_OK) s = qs_head_stage_load(&model->head, m, &model->names, err);
    if (s == QS_OK && model->cfg.n_layers > 0) {
        model->blocks = calloc((size_t)model->cfg.n_layers, sizeof(qs_block));
        if (!model->blocks) s = qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", dir);
    }
    for (int l = 0; s == QS_OK && l < model->cfg.n_layers; l++)
        s = qs_block_load(&model->blocks[l], m, &model->names, l, err);
    if (s != QS_OK) qs_model_free(model);
    return s;
}

void qs_model_free(qs_model *model)
{
    if (!model) return;
    if (model->blocks)
        for (int l = 0; l < model->cfg.n_layers; l++) qs_block_free(&model->blocks[l]);
    free(model->blocks);
    model->blocks = NULL;
    qs_embed_stage_free(&model->embed);
    qs_head_stage_free(&model->head);
    qs_manifest_close(model->manifest);
    model->manifest = NULL;
}

qs_status qs_model_set_compute(qs_model *model, qs_compute_dtype dt, qs_error *err)
{
    for (int l = 0; l < model->cfg.n_layers; l++) QS_TRY(qs_block_set_compute(&model->blocks[l], dt, err));
    return qs_head_stage_set_compute(&model->head, dt, err);
}

qs_status qs_compute_dtype_resolve(const char *option, const qs_manifest *m, const qs_model_names *names,
                                   const qs_backend_i *be, qs_compute_dtype *out, qs_error *err)
{
    if (option && !strcmp(option, "f32")) *out = QS_COMPUTE_F32;
    else if (option && !strcmp(option, "bf16")) {
        if (!be->gemm_bf16)
            return qs_error_set(err, QS_ERR_UNSUPPORTED, "--compute-dtype bf16: the %s backend has no bf16 GEMM",
                                be->name);
        *out = QS_COMPUTE_BF16;
    }
    else if (!option || !*option || !strcmp(option, "auto")) {
        const qs_st_file *f = NULL;
        const qs_st_info *t = qs_manifest_find(m, names->embed, &f);
        bool half = t && (t->dtype == QS_DTYPE_BF16 || t->dtype == QS_DTYPE_F16);
        *out = half && be->gemm_bf16 && be->bf16_native && be->bf16_native(be->ctx) ? QS_COMPUTE_BF16 : QS_COMPUTE_F32;
    } else {
        return qs_error_set(err, QS_ERR_INPUT, "--compute-dtype: expected auto, f32 or bf16, got '%s'", option);
    }
    return QS_OK;
}

qs_status qs_model_to_device(qs_model *model, const qs_backend_i *be, qs_error *err)
{
    for (int l = 0; l < model->cfg.n_layers; l++) QS_TRY(qs_block_to_device(&model->blocks[l], be, err));
    return QS_OK;
}

qs_status qs_model_forward(const qs_model *model, const qs_backend_i *be, const int32_t *ids, int64_t batch,
                           int64_t seq, float *logits, qs_error *err)
{
    const int64_t R = batch * seq;
    const size_t xb = sizeof(float) * (size_t)(R * model->cfg.hidden);
    float *x = qs_malloc(xb);
    if (!x) return qs_error_set(err, QS_ERR_NOMEM, "forward: out of memory for %lld tokens", (long long)R);
    qs_status s = qs_embed_stage_forward(&model->embed, ids, batch, seq, x, err);
    if (be->device) {
        /* the blocks on the device: the activations go there once and stay
         * across blocks; the embedding and the head run on the CPU */
        float *d = be->alloc(be->ctx, xb);
        if (!d) s = qs_error_set(err, QS_ERR_NOMEM, "forward: %zu bytes of activations on %s", xb, be->name);
        if (s == QS_OK) s = be->copy(be->ctx, d, x, xb, err);
        for (int l = 0; s == QS_OK && l < model->cfg.n_layers; l++) {
            qs_block_span sp = {.from = 0, .to = QS_BLOCK_END, .res_in = d, .res_out = d};
            s = qs_block_forward_span_on(&model->blocks[l], be, batch, seq, &sp, NULL, err);
        }
        if (s == QS_OK) s = be->copy(be->ctx, x, d, xb, err);
        if (d) be->free(be->ctx, d);
        if (s == QS_OK) s = qs_head_stage_forward(&model->head, qs_backend_cpu(), x, R, logits, err);
        qs_free(x);
        return s;
    }
    for (int l = 0; s == QS_OK && l < model->cfg.n_layers; l++)
        s = qs_block_forward(&model->blocks[l], be, x, batch, seq, x, NULL, err);
    if (s == QS_OK) s = qs_head_stage_forward(&model->head, be, x, R, logits, err);
    qs_free(x);
    return s;
}
