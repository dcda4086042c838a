/* quant_grid.h — the uniform quantizer grid, element-wise, shared with CUDA.
 *
 * This is the grid of the GPTQ paper's reference implementation
 * (IST-DASLab/gptq, quant.py: Quantizer.find_params and quantize), so codes
 * and losses are comparable with the literature:
 *
 *   maxq  = 2^bits - 1
 *   xmin  = min(0, min x),  xmax = max(0, max x)          (the range holds 0)
 *   sym:  xmax = max(|xmin|, xmax); if xmin < 0: xmin = -xmax
 *         (a row with no negative value keeps xmin = 0 — a quirk of the
 *          reference we keep: its codes then only use zero..maxq)
 *   xmin == xmax == 0 (all-zero row): xmin = -1, xmax = +1
 *   scale = (xmax - xmin) / maxq
 *   zero  = sym ? (maxq + 1) / 2 : round(-xmin / scale)
 *   code  = clamp(round(x / scale) + zero, 0, maxq)
 *   value = scale * (code - zero)
 *
 * round() is round-half-to-even (torch.round), i.e. rintf in the default
 * rounding mode; x / scale is a true division, as in the reference.
 *
 * MSE clipping (the reference's `mse=True`): for i in [0, maxshrink·grid),
 * p = 1 - i/grid, the candidate range [p·xmin, p·xmax] (zero recomputed for
 * asym, kept at (maxq+1)/2 for sym) is scored by Σ |value - x|^norm and the
 * first strictly best candidate wins. Defaults: norm 2.4, grid 100, maxshrink 0.8.
 *
 * scales_fp16: the export stores scales as fp16. With this option the scale
 * found above is rounded to the nearest fp16 value before any code is chosen,
 * so codes, the dequantized Q and the export's dequantization all agree
 * exactly. The zero point is computed from the unrounded scale, as the
 * reference computes it. A scale that would round to 0 in fp16 becomes the
 * smallest positive fp16 subnormal (2^-24) so that x / scale stays finite,
 * and one beyond fp16's range the largest finite fp16 (65504).
 *
 * QS_HD functions compile for host and device (see half.h): the CPU kernels
 * and tests run exactly the code a CUDA kernel runs.
 */
#ifndef QS_QUANT_GRID_H
#define QS_QUANT_GRID_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernels/half.h"

/* The grid settings one find_params call needs. */
typedef struct qs_quant_grid {
    int maxq;          /* 2^bits - 1 */
    bool sym;
    bool scales_fp16;
    bool mse;
    float mse_norm;    /* 2.4 */
    int mse_grid;      /* 100 */
    float mse_maxshrink; /* 0.8 */
} qs_quant_grid;

/* Rounds a scale to the nearest fp16 value (kept as f32), never to 0. */
QS_HD float qs_quant_scale_fp16(float scale)
{
    float s = qs_f16_to_f32(qs_f32_to_f16(scale));
    if (!(s > 0.0f)) s = 5.9604644775390625e-08f; /* 2^-24, smallest positive fp16 */
    if (s > 65504.0f) s = 65504.0f;               /* largest finite fp16 */
    return s;
}

/* Scale and zero from a range that already holds 0 (xmin <= 0 <= xmax),
 * with the reference's sym/all-zero rules. No mse, no fp16 rounding. */
QS_HD void qs_quant_range_params(float xmin, float xmax, int maxq, bool sym, float *scale, float *zero)
{
    if (sym) {
        xmax = fmaxf(fabsf(xmin), xmax);
        if (xmin < 0.0f) xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    float s = (xmax - xmin) / (float)maxq;
    *scale = s;
    *zero = sym ? (float)((maxq + 1) / 2) : rintf(-xmin / s);
}

/* code = clamp(round(x / scale) + zero, 0, maxq). */
QS_HD int qs_quant_code(float x, float scale, float zero, int maxq)
{
    float q = rintf(x / scale) + zero;
    /* clamp by comparisons (fminf/fmaxf are library calls without SSE4.1);
     * a NaN lands on 0, as fmaxf would put it */
    q = q > 0.0f ? q : 0.0f;
    q = q < (float)maxq ? q : (float)maxq;
    return (int)q;
}

/* value = scale * (code - zero), in f32 exactly as the reference computes it. */
QS_HD float qs_quant_dequant(int code, float scale, float zero) { return scale * ((float)code - zero); }

/* quantize-dequantize in one step (the reference's quantize()). */
QS_HD float qs_quant_fake(float x, float scale, float zero, int maxq)
{
    return qs_quant_dequant(qs_quant_code(x, scale, zero, maxq), scale, zero);
}

/* find_params for one row segment x[0], x[stride], ..., x[(n-1)·stride]. */
QS_HD void qs_quant_find_params(const float *x, int64_t n, int64_t stride, const qs_quant_grid *g, float *scale,
                                float *zero)
{
    float mn = 0.0f, mx = 0.0f; /* starting at 0 gives min(0, min x) and max(0, max x) */
    for (int64_t i = 0; i < n; i++) {
        float v = x[i * stride];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    float s, z;
    qs_quant_range_params(mn, mx, g->maxq, g->sym, &s, &z);
    if (g->mse) {
        /* The range the search shrinks is the one after the sym/all-zero rules. */
        float xmin = mn, xmax = mx;
        if (g->sym) {
            xmax = fmaxf(fabsf(xmin), xmax);
            if (xmin < 0.0f) xmin = -xmax;
        }
        if (xmin == 0.0f && xmax == 0.0f) {
            xmin = -1.0f;
            xmax = 1.0f;
        }
        double best = INFINITY;
        int steps = (int)(g->mse_maxshrink * (float)g->mse_grid);
        for (int i = 0; i < steps; i++) {
            float p = (float)(1.0 - (double)i / (double)g->mse_grid);
            float xmin1 = p * xmin, xmax1 = p * xmax;
            float s1 = (xmax1 - xmin1) / (float)g->maxq;
            float z1 = g->sym ? z : rintf(-xmin1 / s1);
            double e = 0.0;
            for (int64_t j = 0; j < n; j++) {
                float v = x[j * stride];
                float d = fabsf(qs_quant_fake(v, s1, z1, g->maxq) - v);
                e += (double)powf(d, g->mse_norm);
            }
            if (e < best) {
                best = e;
                s = s1;
                z = z1;
            }
        }
    }
    /* A scale that underflowed to 0 (a row of denormals) would make x / scale
     * infinite; the reference would produce NaN there. Keep it finite. */
    if (!(s > 0.0f)) s = 1.17549435e-38f;
    if (g->scales_fp16) s = qs_quant_scale_fp16(s);
    *scale = s;
    *zero = z;
}

#endif
