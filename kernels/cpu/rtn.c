/* rtn.c — round-to-nearest quantization on the CPU (OpenMP over rows).
 *
 * Each (row, group) gets its own find_params on W as given; no Hessian, so
 * act_order and static_groups do not apply and g_idx[c] = c / group_size.
 */
#include <time.h>

#include "kernels/cpu/rtn.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

qs_status qs_quant_rtn(const float *w, int64_t rows, int64_t cols, const qs_quant_opts *o, qs_quant_result *res,
                       qs_error *err)
{
    QS_TRY(qs_quant_opts_check(o, rows, cols, err));
    if (res->rows != rows || res->cols != cols || res->groups != qs_quant_groups(o, cols))
        return qs_error_set(err, QS_ERR_INTERNAL, "rtn: result sized for [%lld,%lld], weight is [%lld,%lld]",
                            (long long)res->rows, (long long)res->cols, (long long)rows, (long long)cols);
    double t0 = now_s();
    qs_quant_grid grid = qs_quant_opts_grid(o);
    int64_t gs = o->group_size > 0 ? o->group_size : cols;
    int64_t groups = res->groups;
    for (int64_t c = 0; c < cols; c++) res->g_idx[c] = (int32_t)(c / gs);

#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *wr = w + r * cols;
        for (int64_t g = 0; g < groups; g++) {
            float scale, zero;
            qs_quant_find_params(wr + g * gs, gs, 1, &grid, &scale, &zero);
            res->scales[g * rows + r] = scale;
            res->zeros[g * rows + r] = (int32_t)zero;
            for (int64_t c = g * gs; c < (g + 1) * gs; c++) {
                int code = qs_quant_code(wr[c], scale, zero, grid.maxq);
                res->codes[r * cols + c] = (uint8_t)code;
                res->q[r * cols + c] = qs_quant_dequant(code, scale, zero);
            }
        }
    }
    res->est_loss = 0.0;
    res->damp_abs = 0.0;
    res->dead_columns = 0;
    res->seconds = now_s() - t0;
    return QS_OK;
}
