/* checkpoint_check.c — range checks of checkpoint fields (see checkpoint_check.h). */
#include "pipeline/checkpoint_check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"

/* Bounds for a checkpoint read without a model to compare with: far above
 * any real linear (405B: 53248 × 16384), far below what would overflow. */
#define DIM_MAX (1ll << 24)
#define NUMEL_MAX (1ll << 32)

void qs_block_expect_init(qs_block_expect *x, const qs_model_config *cfg, const qs_model_names *names, int layer,
                          const qs_quant_opts *quant)
{
    memset(x, 0, sizeof *x);
    x->layer = layer;
    x->n_linears = qs_block_linears(cfg, names, layer, x->lin);
    x->quant = *quant;
    qs_block_norm_names(cfg, names, layer, x->norm[0], x->norm[1], x->norm[2], x->norm[3]);
    x->hidden = cfg->hidden;
}

static bool bits_ok(int b) { return b == 2 || b == 3 || b == 4 || b == 8; }

/* ---- shapes ---------------------------------------------------------------------- */

qs_status qs_checkpoint_check_dims(const char *origin, int i, const char *name, const qs_linear_dims *d,
                                   const qs_block_expect *x, qs_error *err)
{
    if (!bits_ok(d->bits))
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear %d '%s': field 'bits' = %d, expected 2, 3, 4 or 8", origin, i,
                            name, d->bits);
    if (d->codes_ndim != 2 || d->scales_ndim != 2 || d->zeros_ndim != 2 || d->g_idx_ndim != 1)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: linear %d '%s': datasets of rank codes %d, scales %d, zeros %d, g_idx %d, expected 2, "
                            "2, 2, 1",
                            origin, i, name, d->codes_ndim, d->scales_ndim, d->zeros_ndim, d->g_idx_ndim);
    int64_t rows = d->codes[0], cols = d->codes[1], groups = d->scales[0];
    if (rows < 1 || cols < 1 || rows > DIM_MAX || cols > DIM_MAX || rows * cols > NUMEL_MAX)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear %d '%s': field 'codes' has shape [%lld, %lld]", origin, i,
                            name, (long long)rows, (long long)cols);
    if (d->scales[1] != rows || groups < 1 || groups > cols || cols % groups != 0)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: linear %d '%s': field 'scales' has shape [%lld, %lld], expected [groups, %lld] with "
                            "groups dividing %lld",
                            origin, i, name, (long long)groups, (long long)d->scales[1], (long long)rows,
                            (long long)cols);
    if (d->zeros[0] != groups || d->zeros[1] != rows)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear %d '%s': field 'zeros' has shape [%lld, %lld], expected [%lld, %lld]",
                            origin, i, name, (long long)d->zeros[0], (long long)d->zeros[1], (long long)groups,
                            (long long)rows);
    if (d->g_idx != cols)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear %d '%s': field 'g_idx' has %lld entries, expected %lld", origin,
                            i, name, (long long)d->g_idx, (long long)cols);
    if (!x) return QS_OK;
    if (i < 0 || i >= x->n_linears)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear %d '%s': block %d of the model has %d linears", origin, i, name,
                            x->layer, x->n_linears);
    const qs_block_linear *l = &x->lin[i];
    if (strcmp(name, l->weight) != 0)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear %d: field 'name' is '%s', the model's is '%s'", origin, i, name,
                            l->weight);
    if (rows != l->out || cols != l->in)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field 'codes' has shape [%lld, %lld], the model's is [%lld, %lld]",
                            origin, name, (long long)rows, (long long)cols, (long long)l->out, (long long)l->in);
    if (d->bits != x->quant.bits)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field 'bits' = %d, this run quantizes to %d bits", origin,
                            name, d->bits, x->quant.bits);
    int64_t want = qs_quant_groups(&x->quant, cols);
    if (groups != want)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field 'scales' has %lld groups, group size %d gives %lld",
                            origin, name, (long long)groups, x->quant.group_size, (long long)want);
    return QS_OK;
}

/* ---- values ----------------------------------------------------------------------- */

qs_status qs_quant_result_check(const char *origin, const char *name, const qs_quant_result *r, bool fp16_scales,
                                const qs_quant_opts *q, qs_error *err)
{
    if (!bits_ok(r->bits))
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field 'bits' = %d, expected 2, 3, 4 or 8", origin, name,
                            r->bits);
    const int64_t rows = r->rows, cols = r->cols, groups = r->groups;
    if (rows < 1 || cols < 1 || groups < 1 || groups > cols)
        return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': shape [%lld, %lld] with %lld groups", origin, name,
                            (long long)rows, (long long)cols, (long long)groups);
    const int maxq = (1 << r->bits) - 1;
    for (int64_t k = 0; k < rows * cols; k++)
        if (r->codes[k] > maxq)
            return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field 'codes'[%lld, %lld] = %d, expected <= %d (%d bits)",
                                origin, name, (long long)(k / cols), (long long)(k % cols), r->codes[k], maxq, r->bits);
    for (int64_t k = 0; k < groups * rows; k++) {
        if (r->zeros[k] < 0 || r->zeros[k] > maxq)
            return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field 'zeros'[%lld, %lld] = %d, expected [0, %d]",
                                origin, name, (long long)(k / rows), (long long)(k % rows), (int)r->zeros[k], maxq);
        float s = r->scales[k];
        const char *why = NULL;
        if (!isfinite(s) || !(s > 0.0f)) why = "expected a finite positive scale";
        else if (fp16_scales && s >= QS_FP16_MAX)
            why = "the weights' range does not fit the export's fp16 scales (largest fp16: 65504)";
        else if (fp16_scales && qs_f16_to_f32(qs_f32_to_f16(s)) != s) why = "not an fp16 value";
        if (why)
            return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field 'scales' of row %lld (group %lld) = %g: %s",
                                origin, name, (long long)(k % rows), (long long)(k / rows), (double)s, why);
    }
    int gs = q ? q->group_size : 0;
    bool in_order = q && (gs == -1 || !q->act_order || q->static_groups);
    int64_t *count = NULL;
    if (q && gs > 0 && !in_order) {
        count = calloc((size_t)groups, sizeof *count);
        if (!count) return qs_error_set(err, QS_ERR_NOMEM, "%s: linear '%s': g_idx check", origin, name);
    }
    qs_status st = QS_OK;
    for (int64_t c = 0; c < cols && st == QS_OK; c++) {
        int32_t g = r->g_idx[c];
        int64_t want = gs > 0 ? c / gs : 0;
        if (g < 0 || g >= groups)
            st = qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field 'g_idx'[%lld] = %d, expected [0, %lld)", origin,
                              name, (long long)c, (int)g, (long long)groups);
        else if (in_order && g != want)
            st = qs_error_set(err, QS_ERR_INPUT,
                              "%s: linear '%s': field 'g_idx'[%lld] = %d, expected %lld (columns in group order)", origin,
                              name, (long long)c, (int)g, (long long)want);
        else if (count && ++count[g] > gs)
            st = qs_error_set(err, QS_ERR_INPUT,
                              "%s: linear '%s': field 'g_idx': group %d holds more than the group size %d columns",
                              origin, name, (int)g, gs);
    }
    free(count);
    return st;
}

qs_status qs_linear_stats_check(const char *origin, const char *name, const qs_linear_stats *s, bool loss_measured,
                                qs_error *err)
{
    const char *field = NULL;
    double v = 0;
    if (!isfinite(s->h_trace) || s->h_trace < 0) field = "h_trace", v = s->h_trace;
    else if (!isfinite(s->loss) && (loss_measured || !isnan(s->loss))) field = "loss", v = s->loss;
    else if (!isnan(s->loss_rtn) && !isfinite(s->loss_rtn)) field = "loss_rtn", v = s->loss_rtn;
    else if (s->samples < 0) field = "samples", v = (double)s->samples;
    if (!field) return QS_OK;
    return qs_error_set(err, QS_ERR_INPUT, "%s: linear '%s': field '%s' = %g, expected a finite%s value", origin, name,
                        field, v, strcmp(field, "loss") ? ", non-negative" : "");
}

/* The first non-finite element of t, or -1. */
static int64_t first_non_finite(const qs_omni_tensor *t)
{
    int64_t n = t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
    for (int64_t k = 0; k < n; k++)
        if (!isfinite(t->data[k])) return k;
    return -1;
}

static bool tensor_dims_ok(const qs_omni_tensor *t)
{
    if (t->ndim != 1 && t->ndim != 2) return false;
    int64_t a = t->shape[0], b = t->ndim == 2 ? t->shape[1] : 1;
    return a >= 1 && b >= 1 && a <= DIM_MAX && b <= DIM_MAX && a * b <= NUMEL_MAX && t->data;
}

qs_status qs_omni_record_check(const char *origin, const qs_omni_record *m, const qs_block_expect *x, qs_error *err)
{
    if (m->epochs < 1 || m->epochs >= (1 << 24) || !m->loss)
        return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: field 'epochs' = %d, expected [1, 2^24)", origin, m->epochs);
    for (int e = 0; e < m->epochs; e++)
        if (!isfinite(m->loss[e]))
            return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: field 'loss'[%d] = %g, expected a finite value", origin,
                                e, m->loss[e]);
    if (m->steps < 0)
        return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: field 'steps' = %lld, expected >= 0", origin,
                            (long long)m->steps);
    if (m->n_params < 0 || m->n_params > QS_OMNI_MAX_TENSORS || m->n_fp < 0 || m->n_fp > QS_OMNI_MAX_TENSORS)
        return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: %d params and %d folded tensors, expected at most %d each",
                            origin, m->n_params, m->n_fp, QS_OMNI_MAX_TENSORS);
    for (int k = 0; k < m->n_params; k++) {
        const qs_omni_tensor *t = &m->params[k];
        int64_t bad = tensor_dims_ok(t) ? first_non_finite(t) : 0;
        if (!tensor_dims_ok(t) || bad >= 0)
            return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: field 'params/%s' %s", origin, t->name,
                                tensor_dims_ok(t) ? "holds a non-finite value" : "has no sane shape");
    }
    for (int k = 0; k < m->n_fp; k++) {
        const qs_omni_tensor *t = &m->fp[k];
        if (!tensor_dims_ok(t) || t->ndim != 1)
            return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: field 'fp/%s' is not a 1-D tensor", origin, t->name);
        int64_t bad = first_non_finite(t);
        if (bad >= 0)
            return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: field 'fp/%s'[%lld] = %g, expected a finite value",
                                origin, t->name, (long long)bad, (double)t->data[bad]);
        for (int j = 0; j < k; j++)
            if (!strcmp(m->fp[j].name, t->name))
                return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: field 'fp/%s' appears twice", origin, t->name);
        if (!x) continue;
        /* a folded tensor replaces one of the block's norms or linear biases */
        int64_t want = -1;
        for (int i = 0; i < 4 && want < 0; i++)
            if (x->norm[i][0] && !strcmp(t->name, x->norm[i])) want = x->hidden;
        for (int i = 0; i < x->n_linears && want < 0; i++)
            if (x->lin[i].bias[0] && !strcmp(t->name, x->lin[i].bias)) want = x->lin[i].out;
        if (want < 0)
            return qs_error_set(err, QS_ERR_INPUT,
                                "%s: omniquant: field 'fp/%s' is none of block %d's norms or linear biases", origin,
                                t->name, x->layer);
        if (t->shape[0] != want)
            return qs_error_set(err, QS_ERR_INPUT, "%s: omniquant: field 'fp/%s' has %lld elements, the model's has %lld",
                                origin, t->name, (long long)t->shape[0], (long long)want);
    }
    return QS_OK;
}

qs_status qs_block_results_check(const char *origin, int n, const char (*names)[QS_NAME_MAX],
                                 const qs_quant_result *res, const qs_linear_stats *stats, const qs_omni_record *omni,
                                 const qs_block_expect *x, qs_error *err)
{
    if (x && n != x->n_linears)
        return qs_error_set(err, QS_ERR_INPUT, "%s: field 'n_linears' = %d, block %d of the model has %d", origin, n,
                            x->layer, x->n_linears);
    bool omni_run = x ? x->quant.method == QS_QUANT_METHOD_OMNIQUANT : omni != NULL;
    if (x && omni_run && !omni)
        return qs_error_set(err, QS_ERR_INPUT, "%s: no 'omniquant' group, but this run quantizes with OmniQuant", origin);
    if (x && !omni_run && omni)
        return qs_error_set(err, QS_ERR_INPUT, "%s: an 'omniquant' group, but this run does not quantize with OmniQuant",
                            origin);
    for (int i = 0; i < n; i++) {
        if (x && strcmp(names[i], x->lin[i].weight) != 0)
            return qs_error_set(err, QS_ERR_INPUT, "%s: linear %d: field 'name' is '%s', the model's is '%s'", origin, i,
                                names[i], x->lin[i].weight);
        QS_TRY(qs_quant_result_check(origin, names[i], &res[i], true, x ? &x->quant : NULL, err));
        QS_TRY(qs_linear_stats_check(origin, names[i], &stats[i], !omni_run, err));
    }
    if (omni) QS_TRY(qs_omni_record_check(origin, omni, x, err));
    return QS_OK;
}
