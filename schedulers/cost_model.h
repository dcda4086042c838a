/* cost_model.h — what one transformer block costs to quantize: FLOPs, bytes,
 * memory and communication, from the architecture alone (config.json; no
 * weights needed), for a stage whose blocks run on D data-parallel replicas.
 *
 * The model follows what a rank does for one block (docs/scheduling.md):
 *   forward passes over the N×L calibration tokens — true-sequential GPTQ
 *   runs each stage from the previous stage's boundary, so one forward in
 *   all (the recompute fallback re-runs the block from its input for every
 *   stage: 1 + the shares up to each stage boundary; without
 *   true-sequential an unquantized pass up to the last stage, then the
 *   quantized one) — Hessian accumulation per distinct linear input
 *   (syrk: d_in²·N·L flops), GPTQ per linear (factorizations ~(4/3)·d_in³ plus
 *   the column sweep's trailing updates 2·d_out·d_in²).
 * With D replicas each replica runs the forwards and the Hessians on its
 * ceil(N/D) calibration rows and the sweep on ceil(d_out/D) output rows; the
 * factorizations are done once per stage (not divided). The replicas then
 * all-reduce each Hessian (d_in² f32) and all-gather the quantized rows
 * (uint8 codes + f32 scales and zeros per group); stage s hands N×L×hidden
 * f32 on to stage s+1, replica i to replica i.
 * Peak memory is the largest working set while the block is processed: its
 * weights in f32, one stage's Hessian, GPTQ's inverse-Hessian factor and
 * weight rows, and the activations (the replica's rows at the block
 * boundary, with true-sequential the stage input kept for those rows at the
 * o / down boundaries, the intermediate of one micro-batch).
 *
 * Arithmetic is in double with explicit bounds (qs_cost_block refuses what
 * is beyond them), so no size from a hostile config.json can overflow.
 */
#ifndef QS_COST_MODEL_H
#define QS_COST_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/status.h"
#include "pipeline/formats/model_config.h"

typedef enum qs_schedule_kind { QS_SCHEDULE_EXACT = 0, QS_SCHEDULE_PIPELINED } qs_schedule_kind;

/* Bounds the planner works within (beyond them: QS_ERR_INPUT, exit 2). */
#define QS_COST_MAX_TOKENS 1099511627776.0  /* N·L ≤ 2^40 calibration tokens */
#define QS_COST_MAX_ROWS 2147483647LL       /* N and L each ≤ 2^31 − 1 */
#define QS_COST_MAX_BLOCK_PARAMS 1125899906842624.0 /* 2^50 parameters per block */
#define QS_COST_MAX_RATE 1e21               /* flop/s or bytes/s of one rank (at least 1) */
#define QS_COST_MAX_RANKS 1048576           /* 2^20 ranks */
#define QS_COST_MAX_BLOCKS 1048576          /* 2^20 blocks */

typedef struct qs_cost_params {
    int64_t calib_rows;       /* N */
    int64_t calib_len;        /* L */
    int64_t micro_batch;      /* rows per micro-batch */
    double device_flops;      /* sustained f32 flop/s of one rank's device */
    double io_bytes_per_s;    /* checkpoint read bandwidth per rank */
    double link_bytes_per_s;  /* between nodes, per rank (--link-gbps) */
    double intra_bytes_per_s; /* between ranks of one node (--intra-node-gbps) */
    int ranks_per_node;       /* ranks are placed stage-major, ranks_per_node to a node */
    int group_size;           /* quantization group (scales/zeros of the weight all-gather); -1 per row */
    int weight_bytes;         /* bytes per parameter on disk (2 for bf16/f16, 4 for f32) */
    bool true_sequential;
    bool activations_on_device; /* keep the boundary activations on the device */
    qs_schedule_kind schedule;
} qs_cost_params;

/* Fills defaults: N=128, L=2048, micro-batch 8, 30 TFLOP/s, 2 GB/s I/O,
 * 100 Gb/s between nodes and 1600 Gb/s within a node per rank, 8 ranks per
 * node, group 128, bf16 weights, true-sequential, activations on the host. */
void qs_cost_params_default(qs_cost_params *p);

/* Checks every field against the bounds above (finite, positive rates ...). */
qs_status qs_cost_params_check(const qs_cost_params *p, qs_error *err);

typedef struct qs_block_cost {
    int replicas;               /* D this cost was computed for */
    int64_t rows_per_replica;   /* ceil(N / D) */
    int64_t params;             /* weights + biases + norms of one block */
    /* the whole block (D = 1) */
    double flops_forward;       /* one forward over N×L tokens */
    double flops_hessian;
    double flops_gptq;          /* factorizations + sweep */
    double flops_gptq_factor;   /* per linear (4/3)·d_in³: once per stage, not divided by D */
    double flops_gptq_sweep;    /* trailing updates and the loss: split by output rows */
    double flops_total;         /* forward × passes + hessian + gptq */
    double passes;              /* block-forward equivalents per block (1 with true-sequential) */
    double passes_recompute;    /* the same if every true-sequential stage re-ran the block from its input */
    /* one replica */
    double flops_replica;       /* what one replica computes for the block */
    double seconds_forward, seconds_hessian, seconds_factor, seconds_sweep;
    double seconds_compute;     /* their sum */
    double seconds_io;          /* reading the block (every replica reads all of it) */
    /* communication volumes (bytes); their time depends on where the ranks are */
    int n_hessians;             /* distinct linear inputs: one Hessian each */
    double bytes_hessian_each[4];
    const char *hessian_name[4];/* the first linear of each true-sequential stage */
    double bytes_reduce;        /* every Hessian of the block, f32 */
    double bytes_gather;        /* the quantized block: codes + scales + zeros */
    double bytes_handoff;       /* N×L×hidden f32 across a stage boundary (all replicas together) */
    /* memory */
    double bytes_disk;          /* what the rank reads for the block */
    double bytes_weights_f32;   /* working copy */
    double bytes_hessian;       /* largest single Hessian (f32) */
    double bytes_gptq;          /* inverse factor + this replica's weight rows of the largest linear */
    double bytes_act_boundary;  /* this replica's rows × L × hidden f32, in and out */
    double bytes_act_carry;     /* rows × L × max(heads·head_dim, ffn) f32: the kept stage input (true-sequential) */
    double bytes_act_micro;     /* intermediates of one micro-batch */
    double peak_device;
    double peak_host;
    const char *largest_hessian;/* which linear's input dominates memory */
} qs_block_cost;

/* One block on a stage of `replicas` ranks. QS_ERR_INPUT when the config or
 * the parameters are beyond the bounds (the message names what). */
qs_status qs_cost_block(const qs_model_config *cfg, const qs_cost_params *p, int replicas, qs_block_cost *out,
                        qs_error *err);

/* Ring all-reduce of `bytes` over d ranks at `bytes_per_s` per rank:
 * 2·(d−1)/d·bytes / bandwidth (0 for d = 1). */
double qs_cost_allreduce_seconds(double bytes, int d, double bytes_per_s);
/* Ring all-gather of `bytes` in total over d ranks: (d−1)/d·bytes / bandwidth. */
double qs_cost_allgather_seconds(double bytes, int d, double bytes_per_s);

/* The embedding stage: bytes of the embedding table (and positions). */
double qs_cost_embedding_bytes(const qs_model_config *cfg, int bytes_per_param);

/* Human-readable bytes ("13.2 GiB") into buf; any finite value. */
const char *qs_fmt_bytes(double bytes, char *buf, int cap);
/* "2d 03h", "1h 02m", "3m 10s", "4.2 s"; any finite value. */
const char *qs_fmt_seconds(double s, char *buf, int cap);

#endif
