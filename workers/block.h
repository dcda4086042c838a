/* block.h — one transformer block (llama, opt, bloom): its weights and its
 * forward over [batch, seq, hidden] activations, with the hooks GPTQ needs.
 *
 * Semantics are Hugging Face transformers' (see docs/forward.md):
 *   llama: x += o(attn(rope(q(rms(x))), rope(k(rms(x))), v(rms(x))))
 *          x += down(silu(gate(rms(x))) * up(rms(x)))
 *   opt:   x += out_proj(attn(q(ln(x)), k(..), v(..)))       (pre-LN; post-LN too)
 *          x += fc2(relu(fc1(ln(x))))
 *   bloom: x += dense(attn_alibi(query_key_value(ln(x))))    (fused [heads, 3, head_dim])
 *          x += dense_4h_to_h(gelu_tanh(dense_h_to_4h(ln(x))))
 *
 * Compute dtype. Activations between ops are f32. With QS_COMPUTE_BF16 every
 * linear's GEMM takes bf16 operands (the stage input rounded once, the weight
 * rounded when it is loaded or replaced) with f32 accumulation
 * (be->gemm_bf16); norms, RoPE, attention and the residual stay f32.
 * QS_COMPUTE_F32 is plain sgemm.
 *
 * Boundaries and spans (true-sequential GPTQ). The quantizable linears of a
 * block fall into stages (qs_block_linear.stage): 0 q/k/v (qkv), 1 o, 2
 * gate/up (fc1), 3 down (fc2); the linears of one stage read the same input.
 * Boundary b (0..3) is the point right before stage b's linears; boundary 4
 * (QS_BLOCK_END) is the block's output. The state at a boundary is the
 * residual stream [R, hidden] plus, at boundaries 1 and 3, the stage input
 * (the attention output [R, heads·head_dim], the MLP's activated hidden
 * [R, ffn]); at 0 and 2 the stage input is the norm of the residual and is
 * recomputed. qs_block_forward_span runs from one boundary to a later one, so
 * a pipeline quantizes a block with one forward in total:
 *     span 0→0 (capture q/k/v) → quantize q/k/v, write back → span 0→1 (keep
 *     the attention output; capture o) → quantize o → span 1→2 → ... → span
 *     3→4: the quantized block's output for the next block.
 * Each linear runs once, with its quantized weight; the numbers are those of
 * re-running the block from its input for every stage (the same ops on the
 * same values), which is what qs_block_forward with stop_after_stage does.
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
#define QS_BLOCK_END QS_BLOCK_STAGES /* the boundary after the last stage: the block's output */

typedef struct qs_block {
    qs_model_config cfg; /* a copy: the block does not depend on its loader */
    int layer;
    int n_linears;
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS]; /* forward order, as qs_block_linears gives them */
    qs_tensor weight[QS_MAX_BLOCK_LINEARS];    /* F32 [out, in] */
    qs_tensor bias[QS_MAX_BLOCK_LINEARS];      /* F32 [out]; data NULL when the linear has none */
    qs_tensor attn_norm_w, attn_norm_b;        /* F32 [hidden]; *_b data NULL for RMSNorm */
    qs_tensor mlp_norm_w, mlp_norm_b;
    qs_compute_dtype compute;                  /* QS_COMPUTE_F32 unless qs_block_set_compute said otherwise */
    uint16_t *weight_bf16[QS_MAX_BLOCK_LINEARS]; /* bf16 copies of weight[] when compute is BF16 */
    /* Device copies (qs_block_to_device): the tensors above in dev's memory,
     * what a forward on dev computes with. dev NULL: none. The host tensors
     * stay the block's own (GPTQ, checkpoints and exports read them);
     * qs_block_linear_sync copies a changed weight again. */
    const qs_backend_i *dev;
    float *d_weight[QS_MAX_BLOCK_LINEARS], *d_bias[QS_MAX_BLOCK_LINEARS];
    float *d_attn_norm_w, *d_attn_norm_b, *d_mlp_norm_w, *d_mlp_norm_b;
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
 * data with the quantized-dequantized weight between forward stages, and then
 * calls qs_block_linear_sync. */
qs_tensor *qs_block_linear_weight(qs_block *blk, int idx);

/* Re-derives what the forward uses from weight[idx]: its bf16 copy, its
 * device copy (a failed copy to the device is the error). */
qs_status qs_block_linear_sync(qs_block *blk, int idx, qs_error *err);

/* Copies the block's tensors into the memory of device backend `be` (a
 * no-op for a host backend, or when they are there already); a forward on
 * `be` needs them there. bf16 compute is refused (no device bf16 GEMM yet).
 * qs_block_free frees them. */
qs_status qs_block_to_device(qs_block *blk, const qs_backend_i *be, qs_error *err);

/* Chooses the compute dtype of the block's GEMMs (bf16 copies of the weights
 * are made here; QS_COMPUTE_F32 drops them). */
qs_status qs_block_set_compute(qs_block *blk, qs_compute_dtype dt, qs_error *err);

/* Called with the input of linear `idx` (blk->lin[idx]): x is [rows, in] (in
 * the forward's backend memory: device memory on a device backend) with
 * rows = batch · seq; xb is the same input as the bf16 the GEMMs read (NULL
 * in f32 compute). Linears of the same stage are called one after another
 * with the same pointers, so a callee may accumulate one Hessian per stage.
 * A non-OK status stops the forward and is returned from it. */
typedef qs_status (*qs_block_capture_fn)(void *ctx, const qs_block *blk, int idx, const float *x,
                                         const uint16_t *xb, int64_t rows, int64_t in, qs_error *err);

typedef struct qs_block_hooks {
    qs_block_capture_fn capture; /* NULL: capture nothing */
    void *ctx;
    int capture_stage;    /* -1: every stage; s: only the linears of stage s */
    int stop_after_stage; /* -1: the whole forward; s: return right after stage s was captured */
} qs_block_hooks;

/* x [batch, seq, hidden] → out [batch, seq, hidden] (out may equal x). Token t
 * of every row has position t (rows are unpadded sequences). GEMMs go through
 * `be`. With hooks->stop_after_stage >= 0 the forward returns after that
 * stage's capture and `out` is not written. hooks may be NULL. This is
 * qs_block_forward_span from boundary 0. */
qs_status qs_block_forward(const qs_block *blk, const qs_backend_i *be, const float *x, int64_t batch, int64_t seq,
                           float *out, const qs_block_hooks *hooks, qs_error *err);

/* One span of a block forward, from boundary `from` to boundary `to`
 * (0 <= from <= to <= QS_BLOCK_END), on one batch of rows. */
typedef struct qs_block_span {
    int from, to;
    const float *res_in; /* [R, hidden]: the residual stream at `from` (the block's input at 0) */
    float *res_out;      /* [R, hidden]: the residual stream at `to` (the output at QS_BLOCK_END); may equal
                          * res_in; NULL: not wanted */
    const float *x_in;   /* from = 1 or 3: the stage input kept at that boundary (qs_block_carry_cols) */
    float *x_out;        /* to = 1 or 3: where the stage input at `to` goes; NULL: not kept */
    double flops;        /* out: GEMM and attention flops this span ran (added to) */
} qs_block_span;

/* Columns of the stage input kept at boundary b (1: heads·head_dim, 3: ffn),
 * 0 at boundaries whose input is recomputed from the residual (0, 2, 4). */
int64_t qs_block_carry_cols(const qs_block *blk, int boundary);

/* Flops of one whole forward (GEMMs + causal attention) of batch × seq tokens:
 * the unit "block-forward equivalents" are counted in. */
double qs_block_forward_flops(const qs_block *blk, int64_t batch, int64_t seq);

/* Runs the span. Captures (hooks->capture, filtered by capture_stage) happen
 * at every boundary b with from <= b <= to, b < QS_BLOCK_END;
 * hooks->stop_after_stage is ignored (`to` says where to stop).
 *
 * The span's pointers (res_in, res_out, x_in, x_out, and x, out of
 * qs_block_forward) are host memory. On a device backend (be->device; the
 * block on it by qs_block_to_device) they are copied to device buffers and
 * back, one copy each way per span, and everything in between — the
 * weights, every intermediate activation, the captures' x — is device
 * memory: a capture hook gets device pointers then (qs_hessian_init_on(be)
 * Hessians take them). */
qs_status qs_block_forward_span(const qs_block *blk, const qs_backend_i *be, int64_t batch, int64_t seq,
                                qs_block_span *sp, const qs_block_hooks *hooks, qs_error *err);

/* The same with the span's pointers in be's memory (device memory on a
 * device backend): no staging. */
qs_status qs_block_forward_span_on(const qs_block *blk, const qs_backend_i *be, int64_t batch, int64_t seq,
                                   qs_block_span *sp, const qs_block_hooks *hooks, qs_error *err);

#endif
