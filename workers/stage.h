/* stage.h — what one rank does in a quantization run.
 *
 * A rank owns a contiguous range of blocks [first, end). Activations of all
 * calibration rows (N × L × hidden, f32) arrive from the previous rank in
 * micro-batches through `struct qs_comm_i` (the first rank makes them with the
 * embedding stage instead), flow through the rank's blocks one block at a
 * time, and leave for the next rank in micro-batches.
 *
 * Per block (GPTQ, true-sequential): for each stage s of the block (q/k/v, o,
 * gate/up, down) the rank runs the block forward over every micro-batch from
 * where the previous stage stopped (the residual stream and, at the o and
 * down boundaries, the stage input are kept for all rows) up to stage s,
 * accumulating the Hessian of that stage's input; quantizes the stage's
 * linears and writes their dequantized weights back into the block. The span
 * after the last stage ends at the block's output, the next block's input.
 * So every linear runs once, with its quantized weight, and block b+1 sees
 * block b's quantized output: one block forward per block
 * (docs/scheduling.md). Without the memory for the kept activations (or with
 * QS_FORWARD_RECOMPUTE=1) each stage re-runs the block from its input as
 * before: the same numbers, about 2.4 forwards per block.
 *
 * OmniQuant (workers/omniquant.h) instead trains each block on two streams:
 * the quantized path's activations (acts, as above) and the FP path's, whose
 * block output is the training target and the next block's FP input. In the
 * exact schedule both streams travel rank to rank; in the pipelined one the
 * FP pass gives a rank its first block's FP input, which also starts its
 * quantized stream.
 *
 * Schedules:
 *   exact     — the first block's input is what the previous rank's last
 *               block produced after quantization; ranks run one after another
 *               (the receiver accumulates its first Hessian while micro-batches
 *               arrive). Results do not depend on the number of ranks.
 *   pipelined — first an FP pass: every rank forwards FP activations through
 *               its blocks (unquantized) and sends them on; then all ranks
 *               quantize at once, each starting from its FP input.
 *
 * What the rank does with a finished block is up to the caller: a callback
 * gets the block's quantization results (workers know nothing of formats);
 * pipeline/run.c checkpoints, exports and reports progress from it.
 */
#ifndef QS_STAGE_H
#define QS_STAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/quant_opts.h"
#include "pipeline/formats/manifest.h"
#include "schedulers/cost_model.h"
#include "workers/block.h"
#include "workers/comm.h"
#include "workers/omniquant.h"

/* Statistics of one quantized linear. */
typedef struct qs_linear_stats {
    double h_trace;       /* trace of the Hessian of its input */
    double loss;          /* tr((W − Q) H (W − Q)ᵀ) of the method used */
    double loss_rtn;      /* the same for round-to-nearest (the baseline); NaN when not measured */
    double seconds;       /* quantization time */
    int64_t samples;      /* token rows its Hessian saw */
} qs_linear_stats;

/* Where one block's time went on its rank (seconds; t_start/t_end are wall-clock
 * CLOCK_REALTIME so that ranks on different hosts share a time axis). The
 * interval runs from the previous block's end on this rank (for the rank's
 * first block: from the start of its stage, so the wait for the previous
 * rank, the embedding or the FP pass are in it) to the end of the block's
 * quantized forward; the phases are sums inside it. */
typedef struct qs_block_timing {
    double t_start, t_end;
    double forward;   /* block forwards (capture passes and the quantized output), less the Hessian updates */
    double hessian;   /* Hessian accumulation inside the capture passes */
    double solve;     /* quantizing the linears (GPTQ/RTN, losses) */
    double comm;      /* receiving and sending activations, less wait */
    double wait;      /* waiting for the previous rank's first micro-batch (a pipeline bubble) */
    double io;        /* reading the block's weights */
} qs_block_timing;

typedef struct qs_block_outcome {
    int layer;
    const qs_block *blk;                          /* the block with quantized weights */
    qs_quant_result res[QS_MAX_BLOCK_LINEARS];    /* one per blk->lin[i] */
    qs_linear_stats stats[QS_MAX_BLOCK_LINEARS];
    double seconds;                               /* the whole block */
    bool resumed;                                 /* taken from a previous run's checkpoint */
    qs_block_timing timing;
    qs_omni_record *omni;                         /* OmniQuant: what was learned and folded; NULL otherwise */
} qs_block_outcome;

/* Resume: fills res (with q) and stats of block `layer` from a previous run
 * and sets *found; the stage then only forwards the block. For OmniQuant
 * (omni not NULL) also the block's record, whose folded tensors the stage
 * puts back into the block. */
typedef qs_status (*qs_block_resume_fn)(void *ctx, int layer, qs_quant_result res[QS_MAX_BLOCK_LINEARS],
                                        qs_linear_stats stats[QS_MAX_BLOCK_LINEARS], qs_omni_record *omni,
                                        bool *found, qs_error *err);

typedef qs_status (*qs_block_done_fn)(void *ctx, const qs_block_outcome *o, qs_error *err);

/* Called when the rank starts block `layer` (progress reports). */
typedef qs_status (*qs_block_start_fn)(void *ctx, int layer, qs_error *err);

typedef struct qs_stage_timing {
    double compute, comm, io, idle, total;
    /* compute = forward + hessian + solve (+ the embedding) */
    double forward;                               /* block forwards, captures excluded */
    double hessian;                               /* Hessian accumulation (the captures) */
    double solve;                                 /* quantizing: GPTQ/RTN, losses, write-back */
    double forward_flops;                         /* GEMM + attention flops the forwards ran */
    double forward_flops_one;                     /* one forward of each of this rank's blocks over all rows */
    uint64_t bytes_read;                          /* tensor bytes this rank read */
    double wait_first;                            /* part of comm: waiting for a receive's first micro-batch */
} qs_stage_timing;

typedef struct qs_stage_args {
    const qs_comm_i *comm;
    const qs_backend_i *be;
    const qs_manifest *manifest;
    const qs_model_names *names;
    qs_quant_opts quant;
    qs_compute_dtype compute;                     /* GEMMs and Hessians of the block forwards */
    bool true_sequential;
    bool rtn_baseline;                            /* also measure RTN's loss per linear (one GEMM each) */
    qs_schedule_kind schedule;
    int first_block, end_block;                   /* this rank's blocks */
    int prev_rank, next_rank;                     /* -1 when none (replica i of the stage before / after) */
    /* Data-parallel replicas (workers/replica.h): the D ranks of this stage
     * are replica0_rank + [0, D); this rank is replica `replica`, holding
     * calibration chunks (micro-batches) [i·K/D, (i+1)·K/D). replicas 0 or 1:
     * one replica (the rank alone). Only replica 0 calls on_block_start and
     * on_block (with every linear's whole result). */
    int replicas, replica, replica0_rank;
    int64_t rows, seq, micro_batch;               /* calibration N, L, M */
    const int32_t *tokens;                        /* [rows, seq] on the embedding rank, else NULL */
    bool embed;                                   /* this rank runs the embedding stage */
    qs_block_done_fn on_block;
    void *on_block_ctx;
    qs_block_start_fn on_block_start;             /* NULL: none; gets on_block_ctx */
    qs_block_resume_fn resume_block;              /* NULL: quantize every block */
    void *resume_ctx;
    /* Set by a signal handler: stop at the next block boundary. A stopping
     * rank tells the others (comm->announce_stop), a rank waiting for
     * activations stops too, and qs_stage_run returns QS_ERR_INTERRUPTED. */
    volatile int *stop_flag;
} qs_stage_args;

/* Runs this rank's part of the schedule. */
qs_status qs_stage_run(const qs_stage_args *a, qs_stage_timing *t, qs_error *err);

#endif
