/* ops_backward.h — element-wise math of the transformer backward pass,
 * shared by CPU and CUDA (QS_HD, like kernels/ops.h).
 *
 * Each function is the derivative of the forward formula of the same name in
 * kernels/ops.h, written out by hand (no autograd): OmniQuant trains its
 * clipping and equivalent-transformation parameters through a block's
 * forward, so every op of the llama / OPT / BLOOM blocks needs its backward.
 * The CPU loops over rows are kernels/cpu/ops_backward.c; a CUDA backend runs
 * these same formulas in its kernels. Row sums run in double, as the forward
 * norms do.
 *
 * Conventions: `dy` is the gradient of the loss with respect to the op's
 * output, `dx` the gradient with respect to its input. Functions write dx
 * (never accumulate into it) and ADD parameter gradients into the caller's
 * accumulators, so a caller sums them over rows in an order it chooses.
 */
#ifndef QS_OPS_BACKWARD_H
#define QS_OPS_BACKWARD_H

#include <math.h>
#include <stdint.h>

#include "kernels/half.h"
#include "kernels/ops.h"

/* ---- normalization (one row) ------------------------------------------------ */

/* y_i = x_i · r · w_i with r = (mean(x²) + eps)^(-1/2):
 *   dx_i = r · (w_i dy_i − x_i · r² · Σ_j w_j dy_j x_j / n)
 *   dw_i += dy_i · x_i · r          (only when dw is not NULL)
 * dx may be NULL (only dw wanted) and may alias dy. */
QS_HD void qs_op_rmsnorm_row_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                                      int64_t n, float eps)
{
    double ss = 0.0, dot = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ss += (double)x[i] * (double)x[i];
        dot += (double)w[i] * (double)dy[i] * (double)x[i];
    }
    double r = 1.0 / sqrt(ss / (double)n + (double)eps);
    double c = r * r * r * dot / (double)n;
    if (dw)
        for (int64_t i = 0; i < n; i++) dw[i] += (float)((double)dy[i] * (double)x[i] * r);
    if (dx)
        for (int64_t i = 0; i < n; i++) dx[i] = (float)(r * (double)w[i] * (double)dy[i] - (double)x[i] * c);
}

/* y_i = x̂_i · w_i + b_i with x̂ = (x − μ) / σ, σ = sqrt(var + eps) (biased variance):
 *   g_i = dy_i w_i,   dx_i = (g_i − mean(g) − x̂_i · mean(g x̂)) / σ
 *   dw_i += dy_i x̂_i,   db_i += dy_i      (each only when not NULL)
 * dx may be NULL and may alias dy. */
QS_HD void qs_op_layernorm_row_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                                        float *db, int64_t n, float eps)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    double mean = s / (double)n, v = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - mean;
        v += d * d;
    }
    double inv = 1.0 / sqrt(v / (double)n + (double)eps);
    double sg = 0.0, sgx = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double xh = ((double)x[i] - mean) * inv, g = (double)dy[i] * (double)w[i];
        sg += g;
        sgx += g * xh;
        if (dw) dw[i] += (float)((double)dy[i] * xh);
        if (db) db[i] += dy[i];
    }
    sg /= (double)n;
    sgx /= (double)n;
    if (dx)
        for (int64_t i = 0; i < n; i++) {
            double xh = ((double)x[i] - mean) * inv;
            dx[i] = (float)(((double)dy[i] * (double)w[i] - sg - xh * sgx) * inv);
        }
}

/* ---- rotary position embedding ----------------------------------------------- */

/* The forward is a rotation of each pair (i, i + d/2) by +angle; its gradient
 * is the rotation by −angle (the transpose), in place on the head's gradient. */
QS_HD void qs_op_rope_rotate_half_backward(float *dx, const float *cs, const float *sn, int head_dim)
{
    int h = head_dim / 2;
    for (int i = 0; i < h; i++) {
        float g0 = dx[i], g1 = dx[i + h];
        dx[i] = g0 * cs[i] + g1 * sn[i];
        dx[i + h] = g1 * cs[i] - g0 * sn[i];
    }
}

/* ---- activations -------------------------------------------------------------- */

/* d silu(x) / dx = σ(x) (1 + x (1 − σ(x))). */
QS_HD float qs_op_silu_grad(float x)
{
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

QS_HD float qs_op_relu_grad(float x) { return x > 0.0f ? 1.0f : 0.0f; }

/* d gelu_tanh(x) / dx with t = tanh(k (x + 0.044715 x³)), k = sqrt(2/π):
 * 0.5 (1 + t) + 0.5 x (1 − t²) k (1 + 3 · 0.044715 x²). */
QS_HD float qs_op_gelu_tanh_grad(float x)
{
    const float k = 0.7978845608028654f;
    float t = tanhf(k * (x + 0.044715f * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
}

#endif
