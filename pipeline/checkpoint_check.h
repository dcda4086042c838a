/* checkpoint_check.h — range checks for every field read back from a block
 * checkpoint, against the model and the run's options, before anything uses
 * it.
 *
 * A checkpoint's xxHash proves that the file holds what was written, not that
 * what was written is sane: a file made by hand (or by a buggy or hostile
 * writer) with a valid checksum could hold g_idx outside [0, groups), 30-bit
 * codes or codes above 2^bits − 1, and every consumer (dequantization, the
 * GPTQ packer, the GGUF converter, the archive) indexes arrays with them. So
 * every field goes through this one layer:
 *
 *   shapes (before anything is allocated): codes [rows, cols] equal to the
 *       model's linear [out, in]; scales and zeros [groups, rows] with groups
 *       what the group size gives; g_idx [cols]; bits in {2, 3, 4, 8} and
 *       equal to the run's
 *   values: codes and zeros in [0, 2^bits − 1]; g_idx in [0, groups), in
 *       column order (c / group_size) unless act-order without static groups,
 *       and then each group holding exactly group_size columns; scales finite,
 *       positive, exactly representable in fp16 and below fp16's largest
 *       value 65504 (a scale there is one the quantizer had to clamp); the
 *       statistics finite (h_trace and samples also non-negative)
 *   OmniQuant's record (method omniquant only, and then required): the loss
 *       curve and the learned parameters finite; each folded FP tensor (it
 *       replaces the model's norm or bias in the exports) one of the
 *       block's, of the model's length, finite
 *
 * A failure is QS_ERR_INPUT with one line naming the file, the linear and the
 * field: resume treats the checkpoint as corrupt (recomputes the block with a
 * warning), `qshard export` exits 2. The run checks its own fresh results
 * with the same value checks before it writes them (pipeline/run.c), and
 * `qshard layer` its scales, so a scale that does not fit the export's fp16
 * is an error naming the tensor and the row wherever it appears.
 *
 * The fuzz target tests/fuzz/fuzz_checkpoint.c feeds fuzzed field values into
 * these checks and then into the consumers: whatever passes must be safe to
 * dequantize and pack.
 */
#ifndef QS_CHECKPOINT_CHECK_H
#define QS_CHECKPOINT_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/quant_opts.h"
#include "pipeline/formats/model_config.h"
#include "workers/omniquant.h"
#include "workers/stage.h"

/* The largest finite fp16: a scale that reaches it was clamped by the grid. */
#define QS_FP16_MAX 65504.0f

/* What a block's checkpoint must hold for this model and these options. */
typedef struct qs_block_expect {
    int layer;
    int n_linears;
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS]; /* weight names and [out, in] */
    qs_quant_opts quant;                      /* method, bits, group_size, act_order, static_groups */
    char norm[4][QS_NAME_MAX];                /* the block's norms: attn w, b, mlp w, b ("" when none) */
    int64_t hidden;                           /* the norms' length */
} qs_block_expect;

void qs_block_expect_init(qs_block_expect *x, const qs_model_config *cfg, const qs_model_names *names, int layer,
                          const qs_quant_opts *quant);

/* The stored shapes of linear i (named `name` in the file), before anything
 * is allocated: codes [rows, cols], scales and zeros [groups, rows] (ndim 2),
 * g_idx [cols] (ndim 1). x may be NULL: then only self-consistency and sane
 * bounds (each dimension below 2^24, rows·cols below 2^32). */
typedef struct qs_linear_dims {
    int bits;
    int codes_ndim, scales_ndim, zeros_ndim, g_idx_ndim;
    int64_t codes[2], scales[2], zeros[2], g_idx;
} qs_linear_dims;

qs_status qs_checkpoint_check_dims(const char *origin, int i, const char *name, const qs_linear_dims *d,
                                   const qs_block_expect *x, qs_error *err);

/* Every value of one quantized linear (see above). fp16_scales: scales must
 * be fp16 values below 65504 (what the GPTQ export stores). group_size and
 * order come from q when non-NULL (then g_idx must follow the group order
 * those options make); with q NULL only g_idx's range is checked. */
qs_status qs_quant_result_check(const char *origin, const char *name, const qs_quant_result *r, bool fp16_scales,
                                const qs_quant_opts *q, qs_error *err);

/* The statistics of one linear: h_trace finite and >= 0, loss finite
 * (loss_rtn too unless NaN = not measured), samples >= 0. loss_measured
 * false (OmniQuant: no Hessian, the loss curve is in the record): loss may
 * be NaN = not measured, never ±Inf. */
qs_status qs_linear_stats_check(const char *origin, const char *name, const qs_linear_stats *s, bool loss_measured,
                                qs_error *err);

/* OmniQuant's record of one block (the `omniquant` group): epochs in
 * [1, 2^24), the loss curve finite, steps >= 0, every learned parameter
 * finite, and every folded FP tensor (what replaces the model's tensor in
 * the exports and in a resumed block) finite, 1-D, not named twice and
 * one of the block's norm weights/biases or linear biases with the
 * model's length. x may be NULL: then the names and lengths go unchecked. */
qs_status qs_omni_record_check(const char *origin, const qs_omni_record *m, const qs_block_expect *x, qs_error *err);

/* A whole block: the count and the names of its linears against x, then
 * each linear's values and statistics, then the OmniQuant record (omni,
 * NULL when the checkpoint has none: required exactly when x's method is
 * OmniQuant). names: n × QS_NAME_MAX. */
qs_status qs_block_results_check(const char *origin, int n, const char (*names)[QS_NAME_MAX],
                                 const qs_quant_result *res, const qs_linear_stats *stats, const qs_omni_record *omni,
                                 const qs_block_expect *x, qs_error *err);

#endif
