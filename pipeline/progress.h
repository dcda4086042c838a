/* progress.h — what rank 0 prints while a run goes: a live line on a
 * terminal, one plain line per block otherwise, nothing with --quiet.
 *
 *   live   one line rewritten in place ("\r", erase to the end of the line):
 *          blocks done of all, each rank's blocks done of its own and the
 *          block it is on, calibration tokens per second, elapsed time and
 *          the ETA; cut to the terminal's width so it never wraps. Messages
 *          (set-up, the timing table) print above it.
 *   plain  one line per finished block (what a Slurm log or a pipe gets):
 *          "qshard run: block B of N quantized (rank R, S s); D/N done
 *          after T s, X tok/s, ETA E".
 *   quiet  nothing (errors and warnings still go to stderr).
 *
 * "auto" picks live when the stream is a terminal. Open MPI's mpirun hands
 * every rank a pseudo-terminal for stdout whatever its own stdout is, so
 * under Open MPI the question goes to the launcher: live only when mpirun's
 * own stdout is a terminal (/proc/PPID/fd/N); `mpirun ... > log` gets plain
 * lines. --progress live|plain overrides the guess.
 *
 * Tokens per second: calibration tokens (rows × seq) times the blocks
 * computed in this run, over the time since the run started — the rate at
 * which calibration tokens pass through blocks. The ETA is the blocks left
 * times the mean block time (exact schedule: ranks work in turn), or the
 * largest of the ranks' blocks left times it (pipelined: ranks work at once).
 */
#ifndef QS_PROGRESS_H
#define QS_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

#include "kernels/status.h"
#include "schedulers/partition.h"

typedef enum qs_progress_mode { QS_PROGRESS_QUIET = 0, QS_PROGRESS_PLAIN, QS_PROGRESS_LIVE } qs_progress_mode;

/* setting: "auto" (or NULL/""), "live" or "plain"; quiet wins over all. */
qs_progress_mode qs_progress_mode_for(FILE *f, const char *setting, bool quiet);

typedef struct qs_progress {
    FILE *f;
    qs_progress_mode mode;
    int n_ranks, n_blocks;
    bool pipelined;
    double tokens_per_block;
    int *first, *end;  /* [n_ranks] block ranges */
    int *current;      /* [n_ranks] block in progress, -1 none */
    int *done;         /* [n_ranks] blocks finished (computed or resumed) */
    double t0;         /* monotonic seconds at init */
    int reported, computed;
    double block_seconds; /* sum over computed blocks */
    bool shown;        /* the live line is on the screen */
    double last_draw;
} qs_progress;

qs_status qs_progress_init(qs_progress *p, FILE *f, qs_progress_mode mode, const qs_stage_plan *stages, int n_ranks,
                           int n_blocks, bool pipelined, double tokens_per_block, qs_error *err);
void qs_progress_free(qs_progress *p);

void qs_progress_block_start(qs_progress *p, int rank, int layer);
void qs_progress_block_done(qs_progress *p, int rank, int layer, double seconds, bool resumed);
/* Redraws the live line (elapsed time) at most twice a second. */
void qs_progress_tick(qs_progress *p);
/* A line of its own (not in quiet mode); the live line is redrawn below it. */
void qs_progress_message(qs_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the live line (a newline) so that what follows starts on its own line. */
void qs_progress_end(qs_progress *p);

/* "12 s", "7 min", "1.5 h". */
void qs_progress_fmt_eta(double seconds, char *buf, size_t cap);

#endif
