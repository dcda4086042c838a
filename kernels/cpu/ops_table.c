/* ops_table.c — the CPU forward ops as the backend's ops table
 * (kernels/ops_table.h): thin wrappers over kernels/cpu/ops.c on host memory,
 * plus the Hessian helpers a device backend needs (host loops here). */
#include <string.h>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/ops.h"
#include "kernels/ops_table.h"

/* ---- norms and element-wise ------------------------------------------------- */

static qs_status t_rmsnorm(void *ctx, const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps,
                           qs_error *err)
{
    qs_cpu_rmsnorm(x, w, y, rows, n, eps);
    return QS_OK;
}

static qs_status t_layernorm(void *ctx, const float *x, const float *w, const float *b, float *y, int64_t rows,
                             int64_t n, float eps, qs_error *err)
{
    qs_cpu_layernorm(x, w, b, y, rows, n, eps);
    return QS_OK;
}

static qs_status t_add_bias(void *ctx, float *y, const float *bias, int64_t rows, int64_t n, qs_error *err)
{
    qs_cpu_add_bias(y, bias, rows, n);
    return QS_OK;
}

static qs_status t_add(void *ctx, float *y, const float *x, int64_t n, qs_error *err)
{
    qs_cpu_add(y, x, n);
    return QS_OK;
}

static qs_status t_scale(void *ctx, float *y, float s, int64_t n, qs_error *err)
{
    qs_cpu_scale(y, s, n);
    return QS_OK;
}

static qs_status t_silu_mul(void *ctx, float *gate, const float *up, int64_t n, qs_error *err)
{
    qs_cpu_silu_mul(gate, up, n);
    return QS_OK;
}

static qs_status t_relu(void *ctx, float *x, int64_t n, qs_error *err)
{
    qs_cpu_relu(x, n);
    return QS_OK;
}

static qs_status t_gelu_tanh(void *ctx, float *x, int64_t n, qs_error *err)
{
    qs_cpu_gelu_tanh(x, n);
    return QS_OK;
}

/* ---- RoPE, attention, embedding --------------------------------------------- */

static qs_status t_rope(void *ctx, float *x, int64_t batch, int64_t seq, int heads, int head_dim, int64_t tok_stride,
                        int64_t head_stride, const float *cs, const float *sn, qs_error *err)
{
    qs_cpu_rope(x, batch, seq, heads, head_dim, tok_stride, head_stride, cs, sn);
    return QS_OK;
}

static qs_status t_attention(void *ctx, const qs_attn_args *a, qs_error *err) { return qs_cpu_attention(a, err); }

static qs_status t_embed(void *ctx, const float *table, int64_t vocab, int64_t hidden, const int32_t *ids, int64_t n,
                         float *out, qs_error *err)
{
    return qs_cpu_embed(table, vocab, hidden, ids, n, out, err);
}

/* ---- log-softmax statistics -------------------------------------------------- */

static qs_status t_nll_rows(void *ctx, const float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                            double *nll, qs_error *err)
{
    qs_cpu_nll_rows(logits, rows, vocab, targets, nll);
    return QS_OK;
}

static qs_status t_kl_rows(void *ctx, const float *ref, const float *x, int64_t rows, int64_t vocab, double *kl,
                           uint8_t *same, qs_error *err)
{
    qs_cpu_kl_rows(ref, x, rows, vocab, kl, same);
    return QS_OK;
}

/* ---- Hessian helpers ------------------------------------------------------------ */

static qs_status t_widen_f64(void *ctx, const float *x, int64_t rows, int64_t cols, int64_t ldx, double *y,
                             qs_error *err)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) y[r * cols + c] = (double)x[r * ldx + c];
    return QS_OK;
}

static qs_status t_hessian_merge(void *ctx, float *h32, double *h64, const float *o32, const double *o64, int64_t n,
                                 double a, double b, qs_error *err)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            size_t k = (size_t)i * (size_t)n + (size_t)j;
            double o = o64 ? o64[k] : (double)o32[k];
            if (h64) h64[k] = qs_op_mean_merge(h64[k], o, a, b);
            else h32[k] = (float)qs_op_mean_merge((double)h32[k], o, a, b);
        }
    return QS_OK;
}

static qs_status t_hessian_full(void *ctx, const float *h32, const double *h64, int64_t n, float *out, qs_error *err)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            size_t k = (size_t)i * (size_t)n + (size_t)j;
            float v = h64 ? (float)h64[k] : h32[k];
            out[k] = v;
            out[(size_t)j * (size_t)n + (size_t)i] = v;
        }
    return QS_OK;
}

const qs_ops_i qs_ops_cpu_table = {
    .rmsnorm = t_rmsnorm,
    .layernorm = t_layernorm,
    .add_bias = t_add_bias,
    .add = t_add,
    .scale = t_scale,
    .silu_mul = t_silu_mul,
    .relu = t_relu,
    .gelu_tanh = t_gelu_tanh,
    .rope = t_rope,
    .attention = t_attention,
    .embed = t_embed,
    .nll_rows = t_nll_rows,
    .kl_rows = t_kl_rows,
    .widen_f64 = t_widen_f64,
    .hessian_merge = t_hessian_merge,
    .hessian_full = t_hessian_full,
};
