/* run.h — a quantization run across the MPI ranks (`qshard run`).
 *
 * Every rank calls qs_run with the same options. Rank 0 is coordinator and
 * worker: it reads the calibration tokens, runs the embedding stage and its
 * own blocks. The scheduler (schedulers/partition.h) gives each rank a
 * contiguous range of blocks; workers/stage.h runs them; each rank writes the
 * export shards of its own blocks as they finish; rank 0 writes the index and
 * configs last, after every rank has reported its shards complete.
 *
 * Resume: the work dir keeps a fingerprint, a journal and one checkpoint per
 * finished block (pipeline/checkpoint.h). Running the same command again
 * skips finished blocks: a rank forwards its stage's activations through them
 * (quantized weights from the checkpoint — a forward is cheap next to the
 * Hessians and GPTQ, and storing N×L×hidden activations at every block would
 * cost more disk than the model), then continues. The exact schedule gives
 * byte-identical exports whether or not, and wherever, it was interrupted.
 */
#ifndef QS_RUN_H
#define QS_RUN_H

#include "pipeline/run_options.h"
#include "workers/comm.h"
#include "workers/device_select.h"

/* On failure on any rank during set-up, every rank returns the error (the
 * lowest failing rank's message is in err on that rank; others get a short
 * pointer to it). During the run a failing rank reports and aborts all. */
/* stop_flag: set from a signal handler; the run stops at the next block
 * boundary and returns QS_ERR_INTERRUPTED (exit code 3, resumable). */
qs_status qs_run(const qs_run_options *o, const qs_comm_i *comm, volatile int *stop_flag, qs_error *err);

/* The same on this rank's device (workers/device_select.h; NULL or a CPU
 * choice: qs_run). On a GPU the rank's blocks run there (docs/gpu.md), and
 * before any block is read every rank checks the plan's device bytes for
 * this calibration set against the free memory of its GPU: when a rank's
 * blocks do not fit, all ranks fail with that rank's one line and *nofit
 * set (the command exits 4, a plan that does not fit). nofit may be NULL. */
qs_status qs_run_on(const qs_run_options *o, const qs_comm_i *comm, const qs_device_choice *dev,
                    volatile int *stop_flag, bool *nofit, qs_error *err);

#endif
