/* fingerprint.h — what makes a run's numbers, so a resumed run can prove it
 * continues the same computation.
 *
 * Fields: the model (a hash of the tensor table — names, dtypes, shapes,
 * sizes — and config.json; each file's size and mtime), the calibration
 * tokens (xxh64 of the ids and their shape), and every option that changes
 * results (method, bits, group size, sym, act-order, static groups,
 * true-sequential, mse, damp, block size, calibration rows, micro-batch,
 * schedule, and the number of ranks for the pipelined schedule, whose stage
 * boundaries change the numbers; the exact schedule does not depend on it;
 * for OmniQuant also epochs, LWC, LET, both learning rates, batch, seed and
 * LET's alpha).
 * `id` is a hash over all of it except the mtimes.
 *
 * WORK/fingerprint.json is written when the work dir is new. On resume a
 * different id is refused with the fields that differ; different mtimes
 * alone are refused too unless --force-resume (the user vouches the files
 * are the same).
 */
#ifndef QS_FINGERPRINT_H
#define QS_FINGERPRINT_H

#include <stdbool.h>

#include "kernels/tensor.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/run_options.h"

typedef struct qs_fingerprint {
    char id[17];
    char *json; /* the whole record, pretty-printed */
} qs_fingerprint;

qs_status qs_fingerprint_make(const qs_run_options *o, const qs_manifest *m, const qs_tensor *tokens, int ranks,
                              qs_fingerprint *fp, qs_error *err);
void qs_fingerprint_free(qs_fingerprint *fp);

/* Writes WORK/fingerprint.json when absent (*resuming = false); otherwise
 * compares and sets *resuming = true, or refuses with what differs. */
qs_status qs_fingerprint_check(const char *work_dir, const qs_fingerprint *fp, bool force, bool *resuming,
                               qs_error *err);

#endif
