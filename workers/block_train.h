/* block_train.h — a transformer block's forward that keeps what its backward
 * needs, and the backward: the autograd-by-hand under OmniQuant's training.
 *
 * The block is the one of workers/block.h (llama, opt pre- and post-LN,
 * bloom; semantics in docs/forward.md), but its parameters come from a
 * qs_train_weights view, so a trainer can run it on effective weights (the
 * fake-quantized, LET-transformed linears and norms) without touching the
 * block. The forward uses the same kernels as qs_block_forward
 * (kernels/cpu/ops.c, GEMMs through the backend's sgemm); the backward is
 * kernels/cpu/ops_backward.c. Attention saves only its row log-sum-exps and
 * recomputes probabilities in tiles, so memory is O(rows · width), never
 * O(seq²).
 *
 * Gradients are those of the block's output with respect to every linear
 * weight and bias and the norm parameters; the block's input gets none (it is
 * not learned). Results do not depend on the thread count.
 */
#ifndef QS_BLOCK_TRAIN_H
#define QS_BLOCK_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "workers/block.h"

/* Parameters a training forward uses, indexed like blk->lin[]. */
typedef struct qs_train_weights {
    const float *w[QS_MAX_BLOCK_LINEARS]; /* [out, in] */
    const float *b[QS_MAX_BLOCK_LINEARS]; /* [out], NULL when the linear has none */
    const float *attn_norm_w, *attn_norm_b; /* [hidden]; *_b NULL for RMSNorm */
    const float *mlp_norm_w, *mlp_norm_b;
} qs_train_weights;

/* Gradient outputs (overwritten); a NULL pointer is a gradient not wanted
 * (its GEMM or reduction is skipped). */
typedef struct qs_train_grads {
    float *w[QS_MAX_BLOCK_LINEARS];
    float *b[QS_MAX_BLOCK_LINEARS];
    float *attn_norm_w, *attn_norm_b;
    float *mlp_norm_w, *mlp_norm_b;
} qs_train_grads;

/* Activations of one forward (sized for up to max_rows = batch · seq tokens). */
typedef struct qs_train_ctx qs_train_ctx;

/* A context for blk's shapes and sequences of length seq (RoPE tables or
 * ALiBi slopes are made once here). The block is only read for its shapes and
 * configuration; weights come from the views. */
qs_status qs_train_ctx_init(qs_train_ctx **out, const qs_block *blk, int64_t max_batch, int64_t seq, qs_error *err);
void qs_train_ctx_free(qs_train_ctx *c);

/* x [batch, seq, hidden] → out [batch, seq, hidden], keeping the activations
 * (x must stay valid until the backward). */
qs_status qs_train_forward(qs_train_ctx *c, const qs_backend_i *be, const qs_train_weights *w, const float *x,
                           int64_t batch, float *out, qs_error *err);

/* dout = ∂L/∂out of the last forward → the wanted gradients in g. */
qs_status qs_train_backward(qs_train_ctx *c, const qs_backend_i *be, const qs_train_weights *w, const float *dout,
                            const qs_train_grads *g, qs_error *err);

#endif
