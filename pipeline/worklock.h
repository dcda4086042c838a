/* worklock.h — one run per work dir at a time.
 *
 * `qshard run` (rank 0) takes an exclusive lock on WORK/run.lock for the
 * whole run: flock(2), non-blocking, held by an open file descriptor. A
 * second run on the same work dir gets QS_ERR_INPUT (exit 2) naming the
 * holder's host and pid, which the holder writes into the file. The lock
 * belongs to the open file: when the holder exits or dies (even SIGKILL),
 * the OS releases it; the stale host/pid text left in the file means
 * nothing and is overwritten by the next holder.
 *
 * On NFS, Linux implements flock(2) as a POSIX byte-range lock over the
 * whole file, which the NFS server arbitrates (NLM for NFSv3, the protocol's
 * own locks for NFSv4), so runs on different hosts exclude each other too;
 * a holder whose host dies keeps the lock until the server's lease or lock
 * recovery expires (NFSv4: about 90 s).
 */
#ifndef QS_WORKLOCK_H
#define QS_WORKLOCK_H

#include "kernels/status.h"

typedef struct qs_worklock {
    int fd; /* -1 when not held */
} qs_worklock;

/* Takes the lock of work_dir (which must exist). */
qs_status qs_worklock_take(qs_worklock *l, const char *work_dir, qs_error *err);
/* Releases it (safe when not held). */
void qs_worklock_release(qs_worklock *l);

#endif
