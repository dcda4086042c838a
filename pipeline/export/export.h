/* export.h — exports made from a work dir's block checkpoints.
 *
 * `qshard export --work WORK --format gptq|gguf|hdf5 --out PATH` re-exports a
 * finished run without recomputing: the model directory and the options come
 * from WORK/fingerprint.json, the quantized blocks from WORK/blocks/ (every
 * checkpoint is verified; a missing or corrupt one is an error naming it —
 * run `qshard run` again to recompute it). The run itself writes the HDF5
 * archive this way at the end (rank 0).
 */
#ifndef QS_EXPORT_H
#define QS_EXPORT_H

#include <stdbool.h>

#include "kernels/status.h"

typedef enum qs_export_format { QS_EXPORT_GPTQ = 0, QS_EXPORT_GGUF, QS_EXPORT_HDF5 } qs_export_format;

typedef struct qs_export_opts {
    qs_export_format format;
    bool gptq_v2;           /* gptq: checkpoint_format gptq_v2 */
    unsigned long long max_shard_size; /* gptq: 0 = 4 GiB */
    bool gguf_fallback_f16; /* gguf: write unrepresentable linears as F16 */
} qs_export_opts;

qs_status qs_export_parse_format(const char *name, qs_export_format *out, qs_error *err);

/* out: a directory (gptq) or a file (gguf, hdf5). */
qs_status qs_export_from_work(const char *work_dir, const char *out, const qs_export_opts *o, qs_error *err);

#endif
