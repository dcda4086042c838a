/* checkpoint.h — the work directory of a run: fingerprint, journal and the
 * per-block result files that make a run resumable.
 *
 *   WORK/fingerprint.json   what makes the numbers: model (tensor table hash,
 *                           file sizes and mtimes), calibration tokens (xxh64),
 *                           every option that changes results
 *   WORK/journal.log        append-only events (run start, block done, stop)
 *   WORK/blocks/block_NNNNN.h5  one per finished block, written by its rank:
 *                           per linear codes, scales, zeros, g_idx and
 *                           statistics; OmniQuant: group "omniquant" with the
 *                           per-epoch loss, params/ (γ, β, LET scales and
 *                           shifts) and fp/ (the folded FP tensors the
 *                           exports write); attribute xxh64 over all of it
 *
 * Block files are written durably (temp → fsync → rename → fsync dir) and
 * verified on read: a truncated or bit-flipped file is reported as invalid
 * (with a warning) and that block is recomputed.
 */
#ifndef QS_CHECKPOINT_H
#define QS_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/quant_opts.h"
#include "pipeline/checkpoint_check.h"
#include "workers/stage.h"

/* One finished block as stored: enough to rebuild the block's quantized
 * weights and to export it again without recomputing. */
typedef struct qs_block_record {
    int layer;
    int n_linears;
    char names[QS_MAX_BLOCK_LINEARS][QS_NAME_MAX];
    qs_quant_result res[QS_MAX_BLOCK_LINEARS]; /* q is filled by dequantizing */
    qs_linear_stats stats[QS_MAX_BLOCK_LINEARS];
    double seconds;
    uint64_t xxh64;
    bool has_omni;        /* an OmniQuant block: omni holds its record */
    qs_omni_record omni;
} qs_block_record;

void qs_block_record_free(qs_block_record *r);

/* Path of block `layer`'s file in work_dir. */
void qs_checkpoint_block_path(const char *work_dir, int layer, char *buf, size_t cap);

/* Writes the outcome of one block durably; returns its checksum in *xxh. */
qs_status qs_checkpoint_write_block(const char *work_dir, const qs_block_outcome *o, const char *fingerprint,
                                    uint64_t *xxh, qs_error *err);

/* Reads and verifies a block file. QS_ERR_INPUT when it is missing, truncated,
 * fails its checksum, was made by a run with another fingerprint, or holds a
 * field out of range for `expect` (the model's linears and the run's options;
 * NULL: self-consistency only) — see checkpoint_check.h; the message names
 * the file and the field. Nothing is allocated from a stored size before the
 * sizes are checked. */
qs_status qs_checkpoint_read_block(const char *work_dir, int layer, const char *fingerprint, const qs_block_expect *expect,
                                   qs_block_record *r, qs_error *err);

/* Appends one line to WORK/journal.log (O_APPEND, fsync); control bytes in the
 * text (a newline in a path) are written as '?', so one event stays one line. */
qs_status qs_journal_append(const char *work_dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
