/* omniquant.h — OmniQuant's block reconstruction (Shao et al., ICLR 2024),
 * weight-only: learnable weight clipping (LWC) and, optionally, learnable
 * equivalent transformation (LET), trained per block on the block's
 * calibration inputs, then folded and quantized into the same result layout
 * GPTQ produces.
 *
 * Per block:
 *   1. parameters: LWC's γ, β per output row and group of every linear
 *      (σ(4) = 0.982 at the start); LET's channel scales (and, where a bias
 *      carries it, shifts) between each norm and the linears it feeds and
 *      between v and o, started from SmoothQuant's max|x|^α / max|w|^(1−α) on
 *      the FP block's activations;
 *   2. training: epochs × (rows / batch) AdamW steps (weight decay 0) on
 *      loss = mean((quantized block(x_q) − FP block(x_fp))²), the quantized
 *      block running on fake-quantized weights (kernels/lwc_grid.h,
 *      straight-through rounding), gradients from workers/block_train.h;
 *      rows are visited in a seeded order per (layer, epoch);
 *   3. finish: LET folded into the norms, biases and linears, every linear
 *      quantized with its learned clipping (kernels/cpu/lwc.h); the block
 *      gets the dequantized weights and folded FP tensors, the caller the
 *      integer codes (qs_quant_result) and a record of what was learned.
 *
 * What LET transforms and folds, per architecture, and why: docs/omniquant.md.
 * Everything is deterministic: the same bytes for any thread count, and on
 * any rank (nothing depends on where a block runs).
 */
#ifndef QS_OMNIQUANT_H
#define QS_OMNIQUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/quant_opts.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/model_config.h"
#include "workers/block.h"

#define QS_OMNI_MAX_TENSORS 24

/* A named f32 array (owned). */
typedef struct qs_omni_tensor {
    char name[QS_NAME_MAX + 16];
    int ndim;
    int64_t shape[2];
    float *data;
} qs_omni_tensor;

/* What OmniQuant learned for one block and what it changed besides the
 * quantized linears; kept in the block checkpoint and the HDF5 archive.
 *   params: "<linear>.lwc_gamma", "<linear>.lwc_beta" [out, groups]
 *           (<linear> = the weight's name without ".weight"),
 *           "let.attn_scale", "let.attn_shift", "let.mlp_scale",
 *           "let.mlp_shift" [hidden], "let.vo_scale" [kv channels]
 *           (the values applied: scales after the |s| >= 1e-2 truncation);
 *   fp:     folded FP tensors under the model's own names (norm weights and
 *           biases, linear biases), already rounded to the model's dtype:
 *           exporters write these instead of the model's tensors;
 *   loss:   the mean training loss of each epoch. */
typedef struct qs_omni_record {
    int n_params;
    qs_omni_tensor params[QS_OMNI_MAX_TENSORS];
    int n_fp;
    qs_omni_tensor fp[QS_OMNI_MAX_TENSORS];
    int epochs;
    double *loss;
    double seconds_forward, seconds_backward, seconds_optimizer; /* training, summed over steps */
    int64_t steps;
} qs_omni_record;

void qs_omni_record_free(qs_omni_record *r);
/* The folded tensor named `name`, or NULL. */
const qs_omni_tensor *qs_omni_record_fp(const qs_omni_record *r, const char *name);
/* Adds a copy of data as a tensor of the record (params when fp is false). */
qs_status qs_omni_record_add(qs_omni_record *r, bool fp, const char *name, int ndim, const int64_t *shape,
                             const float *data, qs_error *err);

/* Whether OmniQuant with these options can run on this architecture:
 * QS_ERR_INPUT with one line saying what is allowed when not (LET on
 * post-LayerNorm OPT, whose norms feed the residual stream as well). */
qs_status qs_omni_check(const qs_model_config *cfg, const qs_quant_opts *o, qs_error *err);

/* ---- the trainer (steps exposed for tests and the benchmark) ------------------- */

typedef struct qs_omni_state qs_omni_state;

/* Parameters for blk (FP weights, only read until qs_omni_finish) at their
 * initial values: γ = β = 4; LET scales 1 and shifts 0 until qs_omni_init_let.
 * max_batch: rows per step; seq: tokens per row. */
qs_status qs_omni_init(qs_omni_state **out, const qs_block *blk, const qs_quant_opts *o, int64_t max_batch,
                       int64_t seq, qs_error *err);
void qs_omni_free(qs_omni_state *s);

/* LET's initial scales (and shifts) from the FP block's activations on x_fp
 * [rows, seq, hidden] (SmoothQuant's rule with alpha = o->omni.let_alpha). */
qs_status qs_omni_init_let(qs_omni_state *s, const qs_backend_i *be, const float *x_fp, int64_t rows,
                           qs_error *err);

/* Loss and gradients of every parameter at the current values, on x
 * [batch, seq, hidden] against the target y. */
qs_status qs_omni_loss_grad(qs_omni_state *s, const qs_backend_i *be, const float *x, const float *y, int64_t batch,
                            double *loss, qs_error *err);

/* The trainable parameters, in a fixed order (name, value, gradient of the last qs_omni_loss_grad). */
int qs_omni_param_count(const qs_omni_state *s);
typedef struct qs_omni_param_view {
    const char *name;
    float *value;
    const float *grad;
    int64_t n;
} qs_omni_param_view;
qs_omni_param_view qs_omni_param(const qs_omni_state *s, int i);

/* Seconds spent so far in the forward (effective weights, block forward,
 * loss), the backward (block backward, chain rule) and AdamW. */
void qs_omni_timing(const qs_omni_state *s, double *forward, double *backward, double *optimizer);

/* The weight linear i's quantizer sees at the current parameters (LET
 * applied; the block's own weight without LET) — for tests. */
const float *qs_omni_effective_weight(qs_omni_state *s, int i);

/* Makes qs_omni_train return QS_ERR_INTERRUPTED before its next step once *stop is nonzero. */
void qs_omni_set_stop(qs_omni_state *s, volatile int *stop);

/* The whole training: o->omni.epochs passes over x_q / y_fp [rows, seq, hidden]. */
qs_status qs_omni_train(qs_omni_state *s, const qs_backend_i *be, const float *x_q, const float *y_fp, int64_t rows,
                        int layer, qs_error *err);

/* Folds LET, quantizes every linear with its learned clipping into res[i]
 * (allocated here), writes the dequantized weights and the folded tensors into
 * blk, and fills rec. m (may be NULL: keep f32) gives the dtype the folded
 * tensors are rounded to; names give the norms' tensor names. */
qs_status qs_omni_finish(qs_omni_state *s, qs_block *blk, const qs_manifest *m, const qs_model_names *names,
                         qs_quant_result res[QS_MAX_BLOCK_LINEARS], qs_omni_record *rec, qs_error *err);

/* ---- one block, start to finish (workers/stage.c) --------------------------------- */

/* blk holds the FP block on entry and the quantized one on return; x_q: the
 * quantized path's input, x_fp: the FP path's input (LET statistics), y_fp:
 * the FP block's output on x_fp (the target), each [rows, seq, hidden].
 * stop (may be NULL): once nonzero, training ends before its next step with
 * QS_ERR_INTERRUPTED (a block takes minutes on big models; a preempted run
 * should not wait for it — the block is trained again on resume). */
qs_status qs_omni_quantize_block(qs_block *blk, const qs_backend_i *be, const qs_quant_opts *o, const qs_manifest *m,
                                 const qs_model_names *names, const float *x_q, const float *x_fp, const float *y_fp,
                                 int64_t rows, int64_t seq, qs_quant_result res[QS_MAX_BLOCK_LINEARS],
                                 qs_omni_record *rec, volatile int *stop, qs_error *err);

/* Puts a record's folded FP tensors into blk (a block resumed from its
 * checkpoint); a name the block does not have is QS_ERR_INPUT. */
qs_status qs_omni_apply_fp(qs_block *blk, const qs_model_names *names, const qs_omni_record *rec, qs_error *err);

#endif
