/* quant_opts.c — quantization options, their checks and grid; the result's
 * allocation and dequantization. Shared by the dispatch and every backend. */
#include "kernels/quant_opts.h"

#include <string.h>

#include "kernels/tensor.h"

void qs_quant_opts_default(qs_quant_opts *o)
{
    memset(o, 0, sizeof *o);
    o->method = QS_QUANT_METHOD_GPTQ;
    o->bits = 4;
    o->group_size = 128;
    o->sym = true;
    o->mse_norm = 2.4f;
    o->mse_grid = 100;
    o->mse_maxshrink = 0.8f;
    o->damp = 0.01;
    o->block_size = 128;
    o->scales_fp16 = true;
    o->omni.epochs = 20;
    o->omni.lwc = true;
    o->omni.let = false;
    o->omni.lwc_lr = 5e-3;
    o->omni.let_lr = 1e-2;
    o->omni.batch = 1;
    o->omni.seed = 0;
    o->omni.let_alpha = 0.5;
    o->omni.cosine = true;
}

static const char *tname(const qs_quant_opts *o) { return o->name ? o->name : "weight"; }

qs_status qs_quant_opts_check(const qs_quant_opts *o, int64_t rows, int64_t cols, qs_error *err)
{
    if (rows <= 0 || cols <= 0)
        return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': shape [%lld,%lld], expected a non-empty 2-D weight",
                            tname(o), (long long)rows, (long long)cols);
    if (o->method != QS_QUANT_METHOD_RTN && o->method != QS_QUANT_METHOD_GPTQ && o->method != QS_QUANT_METHOD_OMNIQUANT)
        return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': unknown quantization method %d", tname(o), (int)o->method);
    if (o->bits != 2 && o->bits != 3 && o->bits != 4 && o->bits != 8)
        return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': %d bits, expected 2, 3, 4 or 8", tname(o), o->bits);
    if (o->group_size != -1 && (o->group_size <= 0 || cols % o->group_size != 0))
        return qs_error_set(err, QS_ERR_INPUT,
                            "tensor '%s': group size %d does not divide its %lld input columns "
                            "(expected -1 or a divisor of %lld)",
                            tname(o), o->group_size, (long long)cols, (long long)cols);
    if (o->block_size <= 0)
        return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': block size %d, expected > 0", tname(o), o->block_size);
    if (!(o->damp >= 0.0 && o->damp < 1.0))
        return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': damp %g, expected 0 <= damp < 1", tname(o), o->damp);
    if (o->mse && (!(o->mse_norm > 0.0f) || o->mse_grid <= 0 || !(o->mse_maxshrink > 0.0f && o->mse_maxshrink <= 1.0f)))
        return qs_error_set(err, QS_ERR_INPUT,
                            "tensor '%s': mse search needs norm > 0, grid > 0, 0 < maxshrink <= 1 (got %g, %d, %g)",
                            tname(o), (double)o->mse_norm, o->mse_grid, (double)o->mse_maxshrink);
    if (o->method == QS_QUANT_METHOD_OMNIQUANT) {
        const qs_omni_opts *m = &o->omni;
        if (m->epochs < 1)
            return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': omniquant epochs %d, expected >= 1", tname(o), m->epochs);
        if (m->batch < 1)
            return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': omniquant batch %d, expected >= 1", tname(o), m->batch);
        if (!(m->lwc_lr > 0.0) || !(m->let_lr > 0.0))
            return qs_error_set(err, QS_ERR_INPUT,
                                "tensor '%s': omniquant learning rates %g (lwc), %g (let): expected > 0", tname(o),
                                m->lwc_lr, m->let_lr);
        if (!(m->let_alpha >= 0.0 && m->let_alpha <= 1.0))
            return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': omniquant let alpha %g, expected 0..1", tname(o),
                                m->let_alpha);
        if (!m->lwc && !m->let)
            return qs_error_set(err, QS_ERR_INPUT,
                                "tensor '%s': omniquant with neither LWC nor LET trains nothing (turn on --lwc or --let)",
                                tname(o));
        if (o->act_order || o->static_groups || o->mse)
            return qs_error_set(err, QS_ERR_INPUT,
                                "tensor '%s': act-order, static groups and mse are GPTQ/RTN options, not omniquant's",
                                tname(o));
    }
    return QS_OK;
}

qs_quant_grid qs_quant_opts_grid(const qs_quant_opts *o)
{
    qs_quant_grid g = {
        .maxq = (1 << o->bits) - 1,
        .sym = o->sym,
        .scales_fp16 = o->scales_fp16,
        .mse = o->mse,
        .mse_norm = o->mse_norm,
        .mse_grid = o->mse_grid,
        .mse_maxshrink = o->mse_maxshrink,
    };
    return g;
}

int64_t qs_quant_groups(const qs_quant_opts *o, int64_t cols) { return o->group_size > 0 ? cols / o->group_size : 1; }

qs_status qs_quant_result_init(qs_quant_result *r, int64_t rows, int64_t cols, const qs_quant_opts *o,
                               qs_error *err)
{
    memset(r, 0, sizeof *r);
    r->rows = rows;
    r->cols = cols;
    r->groups = qs_quant_groups(o, cols);
    r->bits = o->bits;
    size_t n = (size_t)rows * (size_t)cols, ng = (size_t)r->groups * (size_t)rows;
    r->codes = qs_malloc(n);
    r->q = qs_malloc(n * sizeof(float));
    r->scales = qs_malloc(ng * sizeof(float));
    r->zeros = qs_malloc(ng * sizeof(int32_t));
    r->g_idx = qs_malloc((size_t)cols * sizeof(int32_t));
    if (!r->codes || !r->q || !r->scales || !r->zeros || !r->g_idx) {
        qs_quant_result_free(r);
        return qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': cannot allocate the quantized [%lld,%lld]", tname(o),
                            (long long)rows, (long long)cols);
    }
    return QS_OK;
}

void qs_quant_result_free(qs_quant_result *r)
{
    qs_free(r->codes);
    qs_free(r->q);
    qs_free(r->scales);
    qs_free(r->zeros);
    qs_free(r->g_idx);
    memset(r, 0, sizeof *r);
}

void qs_quant_dequantize(const qs_quant_result *res, float *q)
{
    int64_t rows = res->rows, cols = res->cols;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            size_t g = (size_t)res->g_idx[c] * (size_t)rows + (size_t)r;
            q[r * cols + c] = qs_quant_dequant(res->codes[r * cols + c], res->scales[g], (float)res->zeros[g]);
        }
    }
}
