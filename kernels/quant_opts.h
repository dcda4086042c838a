/* quant_opts.h — what every quantizer of one linear layer shares: the
 * options, their checks and grid, and the result's layout.
 *
 * Split from the dispatch (kernels/quant.h) so that the backends' quantizers
 * (kernels/cpu/rtn.c, gptq.c; a CUDA backend's; OmniQuant's) include this
 * header and never the dispatch that calls them: the dispatch sits above
 * the backends, the options below both.
 *
 * The options mirror the GPTQ export's quantize_config (bits, group_size,
 * desc_act, sym, static_groups, damp_percent) plus the algorithm's knobs. The
 * result is laid out the way the GPTQ export needs it:
 *
 *   codes  [rows, cols] uint8, ORIGINAL column order, each in [0, maxq]
 *   scales [groups, rows] f32 (already fp16-representable with scales_fp16)
 *   zeros  [groups, rows] int32, each in [0, maxq]
 *   g_idx  [cols] int32: the group of each original column
 *   q      [rows, cols] f32: the dequantized weight, equal bit for bit to
 *          scales[g_idx[c], r] * (codes[r, c] - zeros[g_idx[c], r])
 *
 * rows = out features, cols = in features (a Linear weight is [out, in]).
 * groups = cols / group_size, or 1 per output channel (group_size = -1).
 * The element-wise grid is kernels/quant_grid.h, shared with CUDA kernels.
 */
#ifndef QS_QUANT_OPTS_H
#define QS_QUANT_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/quant_grid.h"
#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) calls these C functions */
#endif

typedef enum qs_quant_method {
    QS_QUANT_METHOD_RTN = 0,
    QS_QUANT_METHOD_GPTQ,
    QS_QUANT_METHOD_OMNIQUANT, /* per-block training: workers/omniquant.h, kernels/lwc_grid.h */
} qs_quant_method;

/* OmniQuant's knobs (docs/omniquant.md). Every field changes the numbers. */
typedef struct qs_omni_opts {
    int epochs;        /* passes over the calibration rows per block, >= 1 (20; 40 at 2 bits) */
    bool lwc;          /* learnable weight clipping γ, β per output row (and group) (default on) */
    bool let;          /* learnable equivalent transformation: norm→linears and v→o scales (default off) */
    double lwc_lr;     /* AdamW learning rate of γ, β (5e-3) */
    double let_lr;     /* AdamW learning rate of the LET scales and shifts (1e-2) */
    int batch;         /* calibration rows per optimizer step (1) */
    uint64_t seed;     /* the order rows are visited in, per block and epoch (0) */
    double let_alpha;  /* SmoothQuant migration strength of LET's initial scales (0.5) */
    bool cosine;       /* learning rates follow a cosine from their value to 0 over the block's steps (on) */
} qs_omni_opts;

typedef struct qs_quant_opts {
    qs_quant_method method;
    int bits;            /* 2, 3, 4 or 8 */
    int group_size;      /* -1: one group per output channel; else divides cols */
    bool sym;            /* symmetric grid (zero = 2^(bits-1)); default true */
    bool act_order;      /* desc_act: columns by decreasing H_ii (GPTQ only) */
    bool static_groups;  /* group params from the original W before any update (GPTQ only) */
    bool mse;            /* clipping search (the reference's mse option) */
    float mse_norm;      /* 2.4 */
    int mse_grid;        /* 100 */
    float mse_maxshrink; /* 0.8 */
    double damp;         /* damp_percent: H_ii += damp · mean(diag H); default 0.01 */
    int block_size;      /* lazy-batch block, default 128 */
    bool scales_fp16;    /* round scales to fp16 before choosing codes; default true */
    bool factor_f64;     /* factor H^-1 in double (slower, more accurate); default false */
    qs_omni_opts omni;   /* OmniQuant only */
    const char *name;    /* tensor name for error messages (may be NULL) */
} qs_quant_opts;

typedef struct qs_quant_result {
    int64_t rows, cols, groups;
    int bits;
    uint8_t *codes;   /* [rows, cols] */
    float *scales;    /* [groups, rows] */
    int32_t *zeros;   /* [groups, rows] */
    int32_t *g_idx;   /* [cols] */
    float *q;         /* [rows, cols] */
    /* GPTQ: the reference's error estimate Σ (w - q)² / (2 · [H^-1 chol]_cc²)
     * over all weights (what the reference prints as 'error'); RTN: 0. */
    double est_loss;
    /* GPTQ: the damping actually added to the diagonal (damp · mean diag H). */
    double damp_abs;
    int64_t dead_columns; /* GPTQ: columns with H_ii == 0 */
    double seconds;       /* wall time of the quantize call */
    /* GPTQ phase times (wall; the sweep and GEMM shares are thread-seconds
     * divided by the threads used): factorization (Cholesky of H and the
     * inverses of its diagonal blocks), within-block sweeps (with the
     * gathers and the block-start GEMMs), trailing GEMMs; and the flops of
     * the trailing GEMMs (2·rows·count·(cols - i2) each). */
    double seconds_factor, seconds_sweep, seconds_update;
    double update_flops;
} qs_quant_result;

/* Defaults: GPTQ, 4 bits, group 128, sym, no act-order, damp 0.01, block 128,
 * scales_fp16 on, mse off (norm 2.4, grid 100, maxshrink 0.8); OmniQuant
 * 20 epochs, LWC on, LET off, learning rates 5e-3 / 1e-2 with cosine decay,
 * batch 1, seed 0, alpha 0.5. */
void qs_quant_opts_default(qs_quant_opts *o);

/* Checks the options against a [rows, cols] weight: bits in {2,3,4,8},
 * group_size -1 or a positive divisor of cols, block_size > 0, 0 <= damp < 1,
 * sane mse settings; OmniQuant: epochs and batch >= 1, learning rates > 0,
 * LWC or LET on, no act-order / static groups / mse (GPTQ's and RTN's knobs).
 * QS_ERR_INPUT with a message naming the tensor. */
qs_status qs_quant_opts_check(const qs_quant_opts *o, int64_t rows, int64_t cols, qs_error *err);

/* The grid settings of the options (maxq = 2^bits - 1). */
qs_quant_grid qs_quant_opts_grid(const qs_quant_opts *o);

/* Number of groups for cols columns: cols / group_size, or 1 for -1. */
int64_t qs_quant_groups(const qs_quant_opts *o, int64_t cols);

/* Allocates a result for a [rows, cols] weight (options must be checked). */
qs_status qs_quant_result_init(qs_quant_result *r, int64_t rows, int64_t cols, const qs_quant_opts *o,
                               qs_error *err);
void qs_quant_result_free(qs_quant_result *r);

/* q[r, c] = scales[g_idx[c], r] * (codes[r, c] - zeros[g_idx[c], r]) — what the
 * export's consumers compute; equals res->q exactly. */
void qs_quant_dequantize(const qs_quant_result *res, float *q);

#ifdef __cplusplus
}
#endif

#endif
