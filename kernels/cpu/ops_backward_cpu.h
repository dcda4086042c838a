/* ops_backward_cpu.h — CPU loops of the transformer backward: linear (GEMMs
 * through the backend table), RMSNorm, LayerNorm, RoPE, causal softmax
 * attention with GQA and ALiBi (recomputed in tiles), SiLU·gate, GELU-tanh,
 * ReLU, column sums.
 *
 * The per-element formulas are kernels/ops_backward.h (shared with CUDA).
 * Every result is deterministic and independent of the number of threads:
 * parallel loops split work so that each output element is summed by one
 * thread in a fixed order (rows of a parameter gradient are reduced over
 * column blocks or serially, attention gradients per (batch, kv head)), and
 * nothing uses atomics. Residual connections need no kernel: the gradient of
 * y = x + f(x) is dy added to f's input gradient (qs_cpu_add).
 */
#ifndef QS_OPS_BACKWARD_CPU_H
#define QS_OPS_BACKWARD_CPU_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/status.h"

/* ---- linear ----------------------------------------------------------------- */

/* For y[rows, out] = x[rows, in] · W[out, in]ᵀ + b:
 *   dx = dy · W            (dx NULL: skipped; dx_beta 1 adds to dx, 0 overwrites)
 *   dw = dyᵀ · x           (dw NULL: skipped; dw_beta as dx_beta)
 *   db = Σ_rows dy         (db NULL: skipped; overwrites)
 * The two products go through be->sgemm. */
void qs_cpu_linear_backward(const qs_backend_i *be, const float *x, const float *w, const float *dy, int64_t rows,
                            int64_t in, int64_t out, float *dx, float dx_beta, float *dw, float dw_beta, float *db);

/* out[i] = Σ_r a[r·lda + i] for i < n, summed in double in row order. */
void qs_cpu_colsum(const float *a, int64_t rows, int64_t n, int64_t lda, float *out);
/* out[i] = Σ_r a[r·n + i] · b[r·n + i] (double, row order): the gradient of a
 * per-column scale s in W·diag(s) from ∂L/∂(W·diag(s)) and W. */
void qs_cpu_colsum_mul(const float *a, const float *b, int64_t rows, int64_t n, float *out);
/* out[i] = Σ_r v[r] · a[r·n + i] (vᵀ A, double, row order). */
void qs_cpu_gemv_t(const float *a, const float *v, int64_t rows, int64_t n, float *out);

/* ---- norms ---------------------------------------------------------------------- */

/* Gradients of qs_cpu_rmsnorm: dx [rows, n] (NULL: skipped; may alias dy),
 * dw [n] overwritten with the sum over rows (NULL: skipped). */
void qs_cpu_rmsnorm_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, int64_t rows,
                             int64_t n, float eps);
/* Gradients of qs_cpu_layernorm: dx as above, dw and db [n] overwritten (NULL: skipped). */
void qs_cpu_layernorm_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, float *db,
                               int64_t rows, int64_t n, float eps);

/* ---- RoPE ------------------------------------------------------------------------ */

/* In place on the gradient of qs_cpu_rope's output (same view and tables):
 * afterwards it is the gradient of the rotation's input. */
void qs_cpu_rope_backward(float *dx, int64_t batch, int64_t seq, int heads, int head_dim, int64_t tok_stride,
                          int64_t head_stride, const float *cs, const float *sn);

/* ---- activations ------------------------------------------------------------------- */

/* For h = silu(gate) · up: dgate = dh · up · silu'(gate), dup = dh · silu(gate).
 * dgate may alias dh. */
void qs_cpu_silu_mul_backward(const float *gate, const float *up, const float *dh, float *dgate, float *dup, int64_t n);
/* d *= relu'(x), in place on the gradient (x is the activation's input). */
void qs_cpu_relu_backward(const float *x, float *d, int64_t n);
/* d *= gelu_tanh'(x), in place on the gradient. */
void qs_cpu_gelu_tanh_backward(const float *x, float *d, int64_t n);

/* ---- attention ------------------------------------------------------------------------ */

/* Gradient views of an attention call, with the same strided layout rules as
 * qs_attn_args (element (b, t, h, d) at base[(b·seq + t)·tok + h·head + d]).
 * dq/dk/dv are overwritten; they may be views into one fused buffer (bloom). */
typedef struct qs_attn_grad_args {
    const float *dout;
    int64_t do_tok, do_head;
    float *dq;
    int64_t dq_tok, dq_head;
    float *dk;
    int64_t dk_tok, dk_head;
    float *dv;
    int64_t dv_tok, dv_head;
} qs_attn_grad_args;

/* Backward of qs_cpu_attention: `a` is the forward call (its q, k, v and its
 * output a->out are read), lse the row log-sum-exps the forward wrote
 * (a->lse). Scores and probabilities are recomputed in tiles of
 * QS_ATTN_TILE_Q × QS_ATTN_TILE_K (flash-attention's backward), so memory
 * stays O(tile · head_dim) per thread, never O(seq²). Work items are
 * (batch, kv head): one thread owns the gradients of a kv head and of the
 * query heads reading it, so sums run in a fixed order without atomics. */
qs_status qs_cpu_attention_backward(const qs_attn_args *a, const float *lse, const qs_attn_grad_args *g,
                                    qs_error *err);

#endif
