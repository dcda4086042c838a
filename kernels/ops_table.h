/* ops_table.h — the forward ops as a table on backend memory (CPU and CUDA).
 *
 * The block forward (workers/block.c) and the model stages call these through
 * `be->ops`, so the same code runs on host memory with the CPU loops of
 * kernels/cpu/ops.c and on device memory with the kernels of
 * kernels/cuda/ops_cuda.cu. Every pointer argument is backend memory (see
 * kernels/backend.h); the arguments and semantics are those of the CPU
 * functions in kernels/cpu/ops_cpu.h, whose per-element formulas are the
 * QS_HD functions of kernels/ops.h that both backends compile.
 *
 * Every op returns a qs_status. A device backend's ops are asynchronous on
 * the backend's stream: QS_OK means the work was queued; a failure while it
 * runs comes back from a later op or from be->sync. docs/gpu.md has the
 * table's design and how the block forward uses it.
 */
#ifndef QS_OPS_TABLE_H
#define QS_OPS_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/cpu/ops_cpu.h" /* qs_attn_args: the attention's views (the CPU ops had it first) */
#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* implemented in C (CPU) and C++ (CUDA) */
#endif

typedef struct qs_ops_i {
    /* ---- norms over rows (y may alias x) ------------------------------------ */
    qs_status (*rmsnorm)(void *ctx, const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps,
                         qs_error *err);
    /* b may be NULL */
    qs_status (*layernorm)(void *ctx, const float *x, const float *w, const float *b, float *y, int64_t rows,
                           int64_t n, float eps, qs_error *err);

    /* ---- element-wise -------------------------------------------------------- */
    qs_status (*add_bias)(void *ctx, float *y, const float *bias, int64_t rows, int64_t n, qs_error *err);
    qs_status (*add)(void *ctx, float *y, const float *x, int64_t n, qs_error *err); /* residual: y += x */
    qs_status (*scale)(void *ctx, float *y, float s, int64_t n, qs_error *err);
    qs_status (*silu_mul)(void *ctx, float *gate, const float *up, int64_t n, qs_error *err);
    qs_status (*relu)(void *ctx, float *x, int64_t n, qs_error *err);
    qs_status (*gelu_tanh)(void *ctx, float *x, int64_t n, qs_error *err);

    /* ---- RoPE: cs/sn are the [seq, head_dim/2] tables of qs_cpu_rope_tables,
     *      made on the host once per run and copied to backend memory --------- */
    qs_status (*rope)(void *ctx, float *x, int64_t batch, int64_t seq, int heads, int head_dim, int64_t tok_stride,
                      int64_t head_stride, const float *cs, const float *sn, qs_error *err);

    /* ---- attention: every pointer of the args (q, k, v, out, alibi) is
     *      backend memory ------------------------------------------------------- */
    qs_status (*attention)(void *ctx, const qs_attn_args *a, qs_error *err);

    /* ---- embedding: ids are backend memory; an id outside [0, vocab) is
     *      QS_ERR_INPUT naming the position and the id ----------------------- */
    qs_status (*embed)(void *ctx, const float *table, int64_t vocab, int64_t hidden, const int32_t *ids, int64_t n,
                       float *out, qs_error *err);

    /* ---- log-softmax statistics: nll/kl are double [rows], same uint8 [rows]
     *      (may be NULL), all backend memory --------------------------------- */
    qs_status (*nll_rows)(void *ctx, const float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                          double *nll, qs_error *err);
    qs_status (*kl_rows)(void *ctx, const float *ref, const float *x, int64_t rows, int64_t vocab, double *kl,
                         uint8_t *same, qs_error *err);

    /* ---- Hessian statistics (kernels/hessian.c on a device backend) ----------- */
    /* y[r, c] = (double)x[r·ldx + c] for r < rows, c < cols (y contiguous). */
    qs_status (*widen_f64)(void *ctx, const float *x, int64_t rows, int64_t cols, int64_t ldx, double *y,
                           qs_error *err);
    /* Upper triangle of [n, n]: h = a·h + b·o in double, h f32 (h32) or f64
     * (h64), o f32 (o32) or f64 (o64): the merge of two partial Hessians. */
    qs_status (*hessian_merge)(void *ctx, float *h32, double *h64, const float *o32, const double *o64, int64_t n,
                               double a, double b, qs_error *err);
    /* out [n, n] f32, both triangles, from the upper triangle of h32 or h64. */
    qs_status (*hessian_full)(void *ctx, const float *h32, const double *h64, int64_t n, float *out, qs_error *err);
} qs_ops_i;

/* The CPU table (kernels/cpu/ops_table.c): the functions of ops_cpu.h. */
extern const qs_ops_i qs_ops_cpu_table;

#ifdef __cplusplus
}
#endif

#endif
