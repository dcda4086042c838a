/* block.h — one transformer block (llama, opt, bloom): its weights and its
 * forward over [batch, seq, hidden] f32 activations, with the hooks GPTQ needs.
 *
 * Semantics are Hugging Face transformers' (see docs/forward.md):
 *   llama: x += o(attn(rope(q(rms(x))), rope(k(rms(x))), v(rms(x))))
 *          x += down(silu(gate(rms(x))) * up(rms(x)))
 *   opt:   x += out_proj(attn(q(ln(x)), k(..), v(..)))       (pre-LN; post-LN too)
 *          x += fc2(relu(fc1(ln(x))))
 *   bloom: x += dense(attn_alibi(query_key_value(ln(x))))    (fused [heads, 3, head_dim])
 *          x += dense_4h_to_h(gelu_tanh(dense_h_to_4h(ln(x))))
 *
 * Hooks (true-sequential GPTQ). The quantizable linears of a block fall into
 * stages (qs_block_linear.stage): 0 q/k/v (qkv), 1 o, 2 gate/up (fc1), 3 down
 * (fc2); the linears of one stage read the same input. A forward can call a
 * capture callback with each linear's input and stop right after the capture
 * of stage s, so a pipeline runs, per block:
 *     forward(stop_after = 0) → Hessians of q/k/v → quantize q/k/v → write them
 *       back (qs_block_linear_weight) → forward(stop_after = 1) → o → ...
 *     → forward(stop_after = -1) → the quantized block's output for the next block.
 */
#ifndef QS_BLOCK_H
#define QS_BLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/tensor.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/model_config.h"

#define QS_BLOCK_STAGES 4

typedef struct qs_block {
    qs_model_config cfg; /* a copy: the block does not depend on its loader */
    int layer;
    int n_linears;
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS]; /* forward order, as qs_block_linears gives them */
    qs_tensor weight[QS_MAX_BLOCK_LINEARS];    /* F32 [out, in] */
    qs_tensor bias[QS_MAX_BLOCK_LINEARS];      /* F32 [out]; data NULL when the linear has none */
    qs_tensor attn_norm_w, attn_norm_b;        /* F32 [hidden]; *_b data NULL for RMSNorm */
    qs_tensor mlp_norm_w, mlp_norm_b;
} qs_block;

/* Reads linear weight `weight_name` ([out, in]) from a model directory as f32.
 * This is the one place every linear weight is loaded through, so formats that
 * store a linear differently are handled here: when `weight_name` is absent
 * and "<P>.qweight" exists (P = weight_name without ".weight"), the GPTQ
 * export (qweight/qzeros/scales/g_idx, checkpoint_format "gptq" v1) is
 * dequantized: W[o,i] = scales[g_idx[i],o] · (q[i,o] − zero[g_idx[i],o]). */
qs_status qs_linear_load(const qs_manifest *m, const char *weight_name, int64_t out, int64_t in, qs_tensor *w,
                         qs_error *err);

/* Loads block `layer` (all linears, biases, norms) as f32. */
qs_status qs_block_load(qs_block *blk, const qs_manifest *m, const qs_model_names *names, int layer, qs_error *err);

/* A block with zero weights and the shapes of cfg (names from `names`), for
 * callers that fill weights themselves (tests, synthetic models). */
qs_status qs_block_init(qs_block *blk, const qs_model_config *cfg, const qs_model_names *names, int layer,
                        qs_error *err);

void qs_block_free(qs_block *blk);

/* Index of the linear with `role`, or -1. */
int qs_block_find(const qs_block *blk, qs_linear_role role);

/* The weight tensor of linear `idx` (F32 [out, in]); a caller may overwrite its
 * data with the quantized-dequantized weight between forward stages. */
qs_tensor *qs_block_linear_weight(qs_block *blk, int idx);

/* Called with the input of linear `idx` (blk->lin[idx]): x is [rows, in] with
 * rows = batch · seq. Linears of the same stage are called one after another
 * with the same x pointer, so a callee may accumulate one Hessian per stage.
 * A non-OK status stops the forward and is returned from it. */
typedef qs_status (*qs_block_capture_fn)(void *ctx, const qs_block *blk, int idx, const float *x, int64_t rows,
                                         int64_t in, qs_error *err);

typedef struct qs_block_hooks {
    qs_block_capture_fn capture; /* NULL: capture nothing */
    void *ctx;
    int capture_stage;    /* -1: every stage; s: only the linears of stage s */
    int stop_after_stage; /* -1: the whole forward; s: return right after stage s was captured */
} qs_block_hooks;

/* x [batch, seq, hidden] → out [batch, seq, hidden] (out may equal x). Token t
 * of every row has position t (rows are unpadded sequences). GEMMs go through
 * `be`. With hooks->stop_after_stage >= 0 the forward returns after that
 * stage's capture and `out` is not written. hooks may be NULL. */
qs_status qs_block_forward(const qs_block *blk, const qs_backend_i *be, const float *x, int64_t batch, int64_t seq,
                           float *out, const qs_block_hooks *hooks, qs_error *err);

#endif
