/* quant.c — the dispatch over the quantizers of one linear, and the
 * H-weighted loss. Options and results: kernels/quant_opts.c; the
 * algorithms: kernels/cpu/rtn.c and gptq.c, or the backend's own
 * (be->gptq, be->rtn: kernels/cuda/). */
#include "kernels/quant.h"

#include <math.h>
#include <string.h>

#include "kernels/tensor.h"

static const char *tname(const qs_quant_opts *o) { return o->name ? o->name : "weight"; }

qs_status qs_quant_run(const qs_backend_i *be, const float *w, int64_t rows, int64_t cols, float *h,
                       const qs_quant_opts *o, qs_quant_result *res, qs_error *err)
{
    /* A backend that brings its own implementation (CUDA) runs it; the CPU
     * table leaves the slots empty and gets kernels/cpu/rtn.c and gptq.c. */
    if (o->method == QS_QUANT_METHOD_RTN)
        return be && be->rtn ? be->rtn(be->ctx, w, rows, cols, o, res, err) : qs_quant_rtn(w, rows, cols, o, res, err);
    if (o->method == QS_QUANT_METHOD_OMNIQUANT)
        return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': OmniQuant trains a whole block (workers/omniquant.h), "
                                               "not one linear", tname(o));
    if (!h) return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': GPTQ needs a Hessian", tname(o));
    if (be->gptq) return be->gptq(be->ctx, w, rows, cols, h, o, res, err);
    return qs_quant_gptq(be, w, rows, cols, h, o, res, err);
}

qs_status qs_quant_hloss(const qs_backend_i *be, const float *w, const float *q, int64_t rows, int64_t cols,
                         const float *h, double *loss, qs_error *err)
{
    /* Row panels bound the scratch to panel·cols for D and for D·H (each
     * twice on a device backend: the host panel and its device copy). */
    int64_t panel = rows < 256 ? rows : 256;
    size_t pb = (size_t)panel * (size_t)cols * sizeof(float);
    float *d = qs_malloc(pb), *dh = qs_malloc(pb);
    float *d_dev = be->device ? be->alloc(be->ctx, pb) : d, *dh_dev = be->device ? be->alloc(be->ctx, pb) : dh;
    qs_status s = QS_OK;
    if (!d || !dh || !d_dev || !dh_dev)
        s = qs_error_set(err, QS_ERR_NOMEM, "hloss: cannot allocate [%lld,%lld] scratch%s", (long long)panel,
                         (long long)cols, be->device ? " (host and device)" : "");
    double total = 0.0;
    for (int64_t r0 = 0; r0 < rows && s == QS_OK; r0 += panel) {
        int64_t m = rows - r0 < panel ? rows - r0 : panel;
        size_t mb = (size_t)(m * cols) * sizeof(float);
        for (int64_t i = 0; i < m * cols; i++) d[i] = w[r0 * cols + i] - q[r0 * cols + i];
        if (be->device && (s = be->copy(be->ctx, d_dev, d, mb, err)) != QS_OK) break;
        be->sgemm(be->ctx, false, false, m, cols, cols, 1.0f, d_dev, cols, h, cols, 0.0f, dh_dev, cols);
        if (be->device && (s = be->copy(be->ctx, dh, dh_dev, mb, err)) == QS_OK) s = be->sync(be->ctx, err);
        if (s != QS_OK) break;
        double part = 0.0;
#pragma omp parallel for reduction(+ : part) schedule(static)
        for (int64_t i = 0; i < m * cols; i++) part += (double)d[i] * (double)dh[i];
        total += part;
    }
    if (be->device) {
        if (d_dev) be->free(be->ctx, d_dev);
        if (dh_dev) be->free(be->ctx, dh_dev);
    }
    qs_free(d);
    qs_free(dh);
    *loss = total;
    return s;
}
