/* lwc.c — learnable weight clipping over whole weights (see lwc.h); the
 * per-segment math is kernels/lwc_grid.h. */
#include "kernels/cpu/lwc.h"

#include <string.h>
#include <time.h>

#include "kernels/lwc_grid.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void qs_cpu_lwc_fake(const float *w, int64_t rows, int64_t cols, int group_size, const float *gamma,
                     const float *beta, const qs_quant_grid *g, float *q)
{
    const int64_t gs = group_size > 0 ? group_size : cols, groups = cols / gs;
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < groups; k++) {
            const float *wr = w + r * cols + k * gs;
            float *qr = q + r * cols + k * gs;
            qs_lwc_seg s;
            qs_lwc_seg_params(wr, gs, 1, gamma != NULL, gamma ? gamma[r * groups + k] : 0.0f,
                              beta ? beta[r * groups + k] : 0.0f, g, &s);
            for (int64_t c = 0; c < gs; c++) qr[c] = qs_lwc_fake(wr[c], &s, g->maxq);
        }
}

void qs_cpu_lwc_backward(const float *w, int64_t rows, int64_t cols, int group_size, const float *gamma,
                         const float *beta, const qs_quant_grid *g, const float *dq, float *dgamma, float *dbeta,
                         float *dw)
{
    const int64_t gs = group_size > 0 ? group_size : cols, groups = cols / gs;
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < groups; k++) {
            const float *wr = w + r * cols + k * gs, *dr = dq + r * cols + k * gs;
            float *dwr = dw ? dw + r * cols + k * gs : NULL;
            qs_lwc_seg s;
            qs_lwc_seg_params(wr, gs, 1, gamma != NULL, gamma ? gamma[r * groups + k] : 0.0f,
                              beta ? beta[r * groups + k] : 0.0f, g, &s);
            double dscale = 0.0;
            for (int64_t c = 0; c < gs; c++) {
                float d = qs_lwc_elem_backward(wr[c], dr[c], &s, g->maxq, &dscale);
                if (dwr) dwr[c] = d;
            }
            double dlo, dhi;
            qs_lwc_scale_backward(&s, g, dscale, &dlo, &dhi);
            if (gamma) {
                /* hi = σ(γ)·wmax, lo = σ(β)·wmin */
                dgamma[r * groups + k] = (float)(dhi * (double)s.wmax * (double)s.sg * (1.0 - (double)s.sg));
                dbeta[r * groups + k] = (float)(dlo * (double)s.wmin * (double)s.sb * (1.0 - (double)s.sb));
            }
            if (dwr) {
                if (s.imax >= 0) dwr[s.imax] += (float)(dhi * (double)s.sg);
                if (s.imin >= 0) dwr[s.imin] += (float)(dlo * (double)s.sb);
            }
        }
}

qs_status qs_quant_lwc(const float *w, int64_t rows, int64_t cols, const float *gamma, const float *beta,
                       const qs_quant_opts *o, qs_quant_result *res, qs_error *err)
{
    if (res->rows != rows || res->cols != cols || res->groups != qs_quant_groups(o, cols))
        return qs_error_set(err, QS_ERR_INTERNAL, "lwc: result sized for [%lld,%lld], weight is [%lld,%lld]",
                            (long long)res->rows, (long long)res->cols, (long long)rows, (long long)cols);
    double t0 = now_s();
    qs_quant_grid g = qs_quant_opts_grid(o);
    g.mse = false;
    const int64_t gs = o->group_size > 0 ? o->group_size : cols, groups = res->groups;
    for (int64_t c = 0; c < cols; c++) res->g_idx[c] = (int32_t)(c / gs);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < groups; k++) {
            const float *wr = w + r * cols + k * gs;
            qs_lwc_seg s;
            qs_lwc_seg_params(wr, gs, 1, gamma != NULL, gamma ? gamma[r * groups + k] : 0.0f,
                              beta ? beta[r * groups + k] : 0.0f, &g, &s);
            res->scales[k * rows + r] = s.scale;
            res->zeros[k * rows + r] = (int32_t)s.zero;
            for (int64_t c = 0; c < gs; c++) {
                int code = qs_quant_code(wr[c], s.scale, s.zero, g.maxq);
                res->codes[r * cols + k * gs + c] = (uint8_t)code;
                res->q[r * cols + k * gs + c] = qs_quant_dequant(code, s.scale, s.zero);
            }
        }
    res->est_loss = 0.0;
    res->damp_abs = 0.0;
    res->dead_columns = 0;
    res->seconds = now_s() - t0;
    return QS_OK;
}
