/* cost_model.h — what one transformer block costs to quantize: FLOPs, bytes
 * and memory, from the architecture alone (config.json; no weights needed).
 *
 * The model follows what a rank does for one block (docs/scheduling.md):
 *   forward passes over the N×L calibration tokens — true-sequential GPTQ
 *   runs each stage from the previous stage's boundary, so one forward in
 *   all (the recompute fallback re-runs the block from its input for every
 *   stage: 1 + the fractions up to each stage boundary; without
 *   true-sequential an unquantized pass up to the last stage, then the
 *   quantized one) — Hessian accumulation per distinct linear input
 *   (syrk: d_in²·N·L flops), GPTQ per linear (factorizations ~(4/3)·d_in³ plus
 *   the column sweep's trailing updates 2·d_out·d_in²).
 * Peak memory is the largest working set while the block is processed: its
 * weights in f32, one stage's Hessian, GPTQ's inverse-Hessian factor and
 * weight copy, and the activations (all N×L rows at the block boundary, the
 * stage input kept for every row at the o / down boundaries, the
 * intermediate of one micro-batch).
 */
#ifndef QS_COST_MODEL_H
#define QS_COST_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "pipeline/formats/model_config.h"

typedef enum qs_schedule_kind { QS_SCHEDULE_EXACT = 0, QS_SCHEDULE_PIPELINED } qs_schedule_kind;

typedef struct qs_cost_params {
    int64_t calib_rows;       /* N */
    int64_t calib_len;        /* L */
    int64_t micro_batch;      /* rows per micro-batch */
    double device_flops;      /* sustained f32 flop/s of one rank's device */
    double io_bytes_per_s;    /* checkpoint read bandwidth per rank */
    double link_bytes_per_s;  /* activation transfer bandwidth between ranks */
    int weight_bytes;         /* bytes per parameter on disk (2 for bf16/f16, 4 for f32) */
    bool true_sequential;
    bool activations_on_device; /* keep the N×L×d boundary activations on the device */
    qs_schedule_kind schedule;
} qs_cost_params;

/* Fills defaults: N=128, L=2048, micro-batch 8, 30 TFLOP/s, 2 GB/s I/O,
 * 10 GB/s link, bf16 weights, true-sequential, activations on the host. */
void qs_cost_params_default(qs_cost_params *p);

typedef struct qs_block_cost {
    int64_t params;             /* weights + biases + norms of one block */
    double flops_forward;       /* one forward over N×L tokens */
    double forward_passes;      /* block-forward equivalents a rank runs per block */
    double forward_passes_recompute; /* the same when every true-sequential stage re-runs from the block input */
    double flops_hessian;
    double flops_gptq;
    double flops_total;         /* forward × passes + hessian + gptq */
    uint64_t bytes_disk;        /* what the rank reads for the block */
    uint64_t bytes_weights_f32; /* working copy */
    uint64_t bytes_hessian;     /* largest single Hessian (f32) */
    uint64_t bytes_gptq;        /* inverse factor + weight copy of the largest linear */
    uint64_t bytes_act_boundary;/* N×L×hidden f32, in and out */
    uint64_t bytes_act_carry;   /* N×L×max(heads·head_dim, ffn) f32: the kept stage input (true-sequential) */
    uint64_t bytes_act_micro;   /* intermediates of one micro-batch */
    uint64_t peak_device;
    uint64_t peak_host;
    double seconds_compute;
    double seconds_io;
    double seconds_comm;        /* handing N×L×hidden on to the next rank */
    double seconds;             /* compute + io (comm is counted per stage boundary) */
    const char *largest_hessian;/* which linear's input dominates memory */
} qs_block_cost;

void qs_cost_block(const qs_model_config *cfg, const qs_cost_params *p, qs_block_cost *out);

/* The embedding stage: bytes of the embedding table (and positions). */
uint64_t qs_cost_embedding_bytes(const qs_model_config *cfg, int bytes_per_param);

/* Human-readable bytes ("13.2 GiB") into buf. */
const char *qs_fmt_bytes(uint64_t bytes, char *buf, int cap);
/* "1h 02m", "3m 10s", "4.2 s". */
const char *qs_fmt_seconds(double s, char *buf, int cap);

#endif
