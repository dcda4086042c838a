/* lwc_grid.h — OmniQuant's learnable weight clipping (LWC) on the grid of
 * kernels/quant_grid.h, element-wise, with its straight-through gradient
 * (QS_HD: shared with CUDA).
 *
 * For one segment (an output row, or one group of it) of a weight W:
 *
 *   wmax = max(0, max w)   wmin = min(0, min w)     (the grid's range holds 0)
 *   hi = σ(γ) · wmax       lo = σ(β) · wmin          (γ, β learned; σ the sigmoid)
 *   scale, zero = qs_quant_range_params(lo, hi)      (sym / all-zero rules of the grid)
 *   scale: floored at FLT_MIN, then rounded to fp16 with scales_fp16
 *   code  = clamp(round(w / scale) + zero, 0, maxq)   value = scale · (code − zero)
 *
 * i.e. exactly qs_quant_find_params with the range [lo, hi] instead of
 * [wmin, wmax], so the trained fake-quantized weight and the exported integer
 * codes agree bit for bit. γ = β = +∞ would be plain RTN; OmniQuant starts at
 * γ = β = 4 (σ = 0.982).
 *
 * Gradients (the choices of the OmniQuant reference implementation):
 *   round(w / scale) passes its gradient straight through (STE), so inside
 *   the clamp value = scale · round(w/scale) has
 *       ∂value/∂scale = round(w/scale) − w/scale,   ∂value/∂w = 1;
 *   a clamped element is scale · (0 − zero) or scale · (maxq − zero):
 *       ∂value/∂scale = −zero or maxq − zero,        ∂value/∂w = 0;
 *   zero = round(−lo/scale) carries no gradient (torch.round's is zero) and
 *   the fp16 rounding of the scale is straight-through;
 *   asym: scale = (hi − lo)/maxq; sym: scale = 2M/maxq (M/maxq when lo = 0),
 *   M = max(|lo|, hi), the gradient going to the bound that is M;
 *   hi → γ through σ'(γ)·wmax and → the arg-max element of w through σ(γ)
 *   (and lo likewise), which equivalent transformations (LET) need.
 */
#ifndef QS_LWC_GRID_H
#define QS_LWC_GRID_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernels/half.h"
#include "kernels/quant_grid.h"

/* The initial γ and β of OmniQuant (σ(4) = 0.982). */
#define QS_LWC_INIT 4.0f

QS_HD float qs_lwc_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* One segment's grid: what the forward and the backward both need. */
typedef struct qs_lwc_seg {
    float wmin, wmax;   /* min(0, min w), max(0, max w) */
    int64_t imin, imax; /* elements holding them (-1 when the bound is the 0 of the range) */
    float sg, sb;       /* σ(γ), σ(β) (1 without clipping) */
    float lo, hi;       /* clipped range */
    float scale, zero;  /* the grid's scale (fp16 with scales_fp16) and zero */
    bool grad;          /* false when the scale does not depend on lo/hi (all-zero range, floored scale) */
} qs_lwc_seg;

/* Range, clipping and grid of w[0], w[stride], ... (n elements); gamma/beta
 * are the segment's parameters, or no clipping when clip is false. */
QS_HD void qs_lwc_seg_params(const float *w, int64_t n, int64_t stride, bool clip, float gamma, float beta,
                             const qs_quant_grid *g, qs_lwc_seg *s)
{
    float mn = 0.0f, mx = 0.0f;
    int64_t imn = -1, imx = -1;
    for (int64_t i = 0; i < n; i++) {
        float v = w[i * stride];
        if (v < mn) mn = v, imn = i;
        if (v > mx) mx = v, imx = i;
    }
    s->wmin = mn, s->wmax = mx, s->imin = imn, s->imax = imx;
    s->sg = clip ? qs_lwc_sigmoid(gamma) : 1.0f;
    s->sb = clip ? qs_lwc_sigmoid(beta) : 1.0f;
    s->hi = s->sg * mx;
    s->lo = s->sb * mn;
    float sc, z;
    qs_quant_range_params(s->lo, s->hi, g->maxq, g->sym, &sc, &z);
    s->grad = !(s->lo == 0.0f && s->hi == 0.0f);
    if (!(sc > 0.0f)) {
        sc = 1.17549435e-38f;
        s->grad = false;
    }
    if (g->scales_fp16) sc = qs_quant_scale_fp16(sc);
    s->scale = sc;
    s->zero = z;
}

/* The fake-quantized value of one element (what the export dequantizes to). */
QS_HD float qs_lwc_fake(float w, const qs_lwc_seg *s, int maxq)
{
    return qs_quant_dequant(qs_quant_code(w, s->scale, s->zero, maxq), s->scale, s->zero);
}

/* Gradient of one element: with dv = ∂L/∂value, returns ∂L/∂w through the
 * straight-through estimator (0 when clamped) and adds dv·∂value/∂scale to *dscale. */
QS_HD float qs_lwc_elem_backward(float w, float dv, const qs_lwc_seg *s, int maxq, double *dscale)
{
    float u = rintf(w / s->scale) + s->zero;
    if (u < 0.0f) {
        *dscale += (double)dv * (double)(-s->zero);
        return 0.0f;
    }
    if (u > (float)maxq) {
        *dscale += (double)dv * (double)((float)maxq - s->zero);
        return 0.0f;
    }
    *dscale += (double)dv * ((double)(u - s->zero) - (double)w / (double)s->scale);
    return dv;
}

/* From the segment's ∂L/∂scale to ∂L/∂lo and ∂L/∂hi. */
QS_HD void qs_lwc_scale_backward(const qs_lwc_seg *s, const qs_quant_grid *g, double dscale, double *dlo, double *dhi)
{
    *dlo = *dhi = 0.0;
    if (!s->grad) return;
    double inv = 1.0 / (double)g->maxq;
    if (!g->sym) {
        *dhi = dscale * inv;
        *dlo = -dscale * inv;
        return;
    }
    /* sym: M = max(|lo|, hi); scale = 2M/maxq when lo < 0, else M/maxq */
    double k = s->lo < 0.0f ? 2.0 * inv : inv;
    if (fabsf(s->lo) > s->hi) *dlo = -dscale * k;
    else *dhi = dscale * k;
}

#endif
