/* ops.h — element-wise math of the transformer forward, shared by CPU and CUDA.
 *
 * Like half.h, every function is QS_HD (static inline on the host, __host__
 * __device__ under nvcc), so the CPU loops in kernels/cpu/ops.c and the future
 * CUDA kernels compute exactly the same formulas and the CPU tests check both.
 * Conventions follow Hugging Face transformers (the models we load were
 * trained with it): norms accumulate in f32 (we use double for the sums, which
 * only makes them closer to exact), RoPE is rotate-half with inv_freq =
 * theta^(-2i/d), llama3 rope scaling as in HF's _compute_llama3_parameters,
 * ALiBi slopes as in HF's build_alibi_tensor.
 */
#ifndef QS_OPS_H
#define QS_OPS_H

#include <math.h>
#include <stdint.h>

#include "kernels/half.h"

/* ---- normalization (one row) ------------------------------------------------ */

/* The steps of a row's norm are separate functions so that a GPU kernel can
 * sum a row in parallel (a tree of double partial sums) and still apply
 * exactly the CPU's per-element formula. */

/* RMSNorm's 1 / sqrt(mean(x²) + eps) from the row's Σ x² (in double). */
QS_HD float qs_op_rmsnorm_inv(double sum_sq, int64_t n, float eps)
{
    return (float)(1.0 / sqrt(sum_sq / (double)n + (double)eps));
}

QS_HD float qs_op_rmsnorm_apply(float x, float inv, float w) { return (x * inv) * w; }

/* y = x / sqrt(mean(x²) + eps) * w  (llama RMSNorm). y may alias x. */
QS_HD void qs_op_rmsnorm_row(const float *x, const float *w, float *y, int64_t n, float eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    float inv = qs_op_rmsnorm_inv(ss, n, eps);
    for (int64_t i = 0; i < n; i++) y[i] = qs_op_rmsnorm_apply(x[i], inv, w[i]);
}

/* y = (x − mean) / sqrt(var + eps) * w + b, biased variance (torch LayerNorm).
 * b may be NULL. y may alias x. Two passes: the mean first, then the variance
 * of the centred values, so large offsets do not cancel catastrophically. */
QS_HD double qs_op_layernorm_inv(double sum_sq_centred, int64_t n, float eps)
{
    return 1.0 / sqrt(sum_sq_centred / (double)n + (double)eps);
}

/* One element: (x − mean)·inv·w (+ b when has_b). */
QS_HD float qs_op_layernorm_apply(float x, double mean, double inv, float w, float b, int has_b)
{
    float t = (float)(((double)x - mean) * inv) * w;
    return has_b ? t + b : t;
}

QS_HD void qs_op_layernorm_row(const float *x, const float *w, const float *b, float *y, int64_t n, float eps)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    double mean = s / (double)n;
    double v = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - mean;
        v += d * d;
    }
    double inv = qs_op_layernorm_inv(v, n, eps);
    for (int64_t i = 0; i < n; i++) y[i] = qs_op_layernorm_apply(x[i], mean, inv, w[i], b ? b[i] : 0.0f, b != 0);
}

/* ---- rotary position embedding ----------------------------------------------- */

/* inv_freq[i] = theta^(-2i/d) for i in [0, d/2). */
QS_HD double qs_op_rope_inv_freq(int i, int head_dim, double theta)
{
    return 1.0 / pow(theta, (double)(2 * i) / (double)head_dim);
}

/* Llama 3 frequency scaling of one inv_freq (HF _compute_llama3_parameters):
 * long wavelengths (> original_max / low_freq_factor) are divided by factor,
 * short ones (< original_max / high_freq_factor) are kept, and the band in
 * between is interpolated smoothly between the two. */
QS_HD double qs_op_rope_llama3_scale(double inv_freq, double factor, double low_freq_factor,
                                     double high_freq_factor, double original_max_positions)
{
    const double pi = 3.14159265358979323846;
    double low_freq_wavelen = original_max_positions / low_freq_factor;
    double high_freq_wavelen = original_max_positions / high_freq_factor;
    double wavelen = 2.0 * pi / inv_freq;
    if (wavelen > low_freq_wavelen) return inv_freq / factor;
    if (wavelen < high_freq_wavelen) return inv_freq;
    double smooth = (original_max_positions / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    return (1.0 - smooth) * inv_freq / factor + smooth * inv_freq;
}

/* Rotate-half RoPE of one head vector x[0..d) in place: element i pairs with
 * i + d/2; cs[i], sn[i] (i < d/2) are cos/sin of position · inv_freq[i]. */
/* One rotated pair: (x0, x1) → (x0·c − x1·s, x1·c + x0·s). */
QS_HD void qs_op_rope_pair(float *x0, float *x1, float c, float s)
{
    float a = *x0, b = *x1;
    *x0 = a * c - b * s;
    *x1 = b * c + a * s;
}

QS_HD void qs_op_rope_rotate_half(float *x, const float *cs, const float *sn, int head_dim)
{
    int h = head_dim / 2;
    for (int i = 0; i < h; i++) qs_op_rope_pair(&x[i], &x[i + h], cs[i], sn[i]);
}

/* ---- activations -------------------------------------------------------------- */

QS_HD float qs_op_silu(float x) { return x / (1.0f + expf(-x)); }

QS_HD float qs_op_relu(float x) { return x > 0.0f ? x : 0.0f; }

/* GELU, tanh approximation (BLOOM's bloom_gelu_forward, torch approximate="tanh"). */
QS_HD float qs_op_gelu_tanh(float x)
{
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

/* ---- ALiBi ---------------------------------------------------------------------- */

/* Slope of head h of n_heads (HF build_alibi_tensor): with p the largest power
 * of two <= n_heads, heads h < p get (2^(-8/p))^(h+1); the remaining heads take
 * every other slope of the 2p sequence: (2^(-4/p))^(2(h-p)+1). */
QS_HD double qs_op_alibi_slope(int h, int n_heads)
{
    int p = 1;
    while (p * 2 <= n_heads) p *= 2;
    if (h < p) return pow(2.0, -8.0 / (double)p * (double)(h + 1));
    return pow(2.0, -4.0 / (double)p * (double)(2 * (h - p) + 1));
}

/* ---- exp ------------------------------------------------------------------------ */

/* e^x in f32 without a libm call, so loops over it vectorize (`omp simd`):
 * x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact product),
 * e^r by the Cephes expf polynomial, 2^n put into the exponent bits. Relative
 * error below 2 ulp on [-87, 88]; inputs are clamped to that range, so very
 * negative x gives ~1e-38 rather than 0 (callers mask -inf themselves). */
QS_HD float qs_op_expf(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* n = round(x / ln2) by the 1.5·2^23 trick (no floorf/rintf, which SSE2 cannot
     * vectorize): the sum's low mantissa bits hold n as an integer */
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    union { float f; uint32_t u; } pun; /* not memcpy: keeps `omp simd` loops vectorizable */
    pun.f = t;
    int32_t ni = (int32_t)(pun.u - 0x4B400000u);
    float r = x - n * 0.693359375f;   /* ln2 high part: n·it is exact in f32 */
    r = r - n * -2.12194440e-4f;      /* ln2 low part */
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    /* 2^n for n in [-126, 127] as an f32 bit pattern */
    pun.u = (uint32_t)(ni + 127) << 23;
    return p * pun.f;
}

/* ---- online softmax ------------------------------------------------------------ */

/* Running max m and running sum l of exp(s − m) over the scores seen so far.
 * Start with m = -INFINITY, l = 0. */
typedef struct qs_softmax_state {
    float m;
    float l;
} qs_softmax_state;

/* Moves the state to max(m, tile_max) and returns the factor by which sums
 * (l and the value accumulator) computed against the old max must be scaled.
 * While every score so far is -inf (all masked) the factor is 1 and m stays
 * -inf, so no NaN (-inf − -inf) is ever formed. */
QS_HD float qs_op_softmax_rescale(qs_softmax_state *s, float tile_max)
{
    float m_new = tile_max > s->m ? tile_max : s->m;
    if (m_new == -INFINITY) return 1.0f;
    float alpha = s->m == -INFINITY ? 0.0f : expf(s->m - m_new);
    s->l *= alpha;
    s->m = m_new;
    return alpha;
}

/* ---- log-softmax statistics ------------------------------------------------ */

/* log Σ exp(x) of a row from its max m and Σ exp(x − m) (a non-finite max is
 * the answer itself: all -inf, or an inf/NaN in the row). */
QS_HD double qs_op_lse(float m, double sum_exp) { return (double)m + log(sum_exp); }

/* One term of KL(p_ref ‖ p_x): p·(log p − log q) with log p = ref − lse_ref,
 * log q = x − lse_x; 0 where p underflows to 0. */
QS_HD double qs_op_kl_term(float ref, float x, double lse_ref, double lse_x)
{
    double lr = (double)ref - lse_ref;
    double p = exp(lr);
    return p > 0.0 ? p * (lr - ((double)x - lse_x)) : 0.0;
}

/* ---- running means --------------------------------------------------------- */

/* The merge of two means with weights a = n1/(n1+n2), b = n2/(n1+n2). */
QS_HD double qs_op_mean_merge(double h, double o, double a, double b) { return a * h + b * o; }

#endif
