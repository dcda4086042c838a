/* lwc.h — OmniQuant's learnable weight clipping on the CPU: the fake-quantized
 * weight and its straight-through gradient during training, and the final
 * quantization into the result layout every exporter takes.
 *
 * The grid and the gradient of one segment are kernels/lwc_grid.h (shared
 * with CUDA). gamma/beta are [rows, groups] (groups = cols / group_size, or
 * 1 per output row with group_size -1); NULL means no clipping (σ = 1: the
 * grid of RTN), which is what LET alone trains through. Rows are processed in
 * parallel, each by one thread in column order, so results do not depend on
 * the thread count.
 */
#ifndef QS_CPU_LWC_H
#define QS_CPU_LWC_H

#include <stdint.h>

#include "kernels/quant_opts.h"

/* q[rows, cols] = the fake-quantized w with clipping gamma/beta. */
void qs_cpu_lwc_fake(const float *w, int64_t rows, int64_t cols, int group_size, const float *gamma,
                     const float *beta, const qs_quant_grid *g, float *q);

/* From dq = ∂L/∂q: dgamma, dbeta [rows, groups] (overwritten; NULL when
 * gamma is NULL) and dw [rows, cols] = ∂L/∂w (overwritten; NULL: skipped). */
void qs_cpu_lwc_backward(const float *w, int64_t rows, int64_t cols, int group_size, const float *gamma,
                         const float *beta, const qs_quant_grid *g, const float *dq, float *dgamma, float *dbeta,
                         float *dw);

/* The final quantization with learned clipping: codes, scales, zeros, g_idx
 * (c / group_size) and q, with q equal bit for bit to qs_cpu_lwc_fake's. */
qs_status qs_quant_lwc(const float *w, int64_t rows, int64_t cols, const float *gamma, const float *beta,
                       const qs_quant_opts *o, qs_quant_result *res, qs_error *err);

#endif
