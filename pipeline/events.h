/* events.h — the run's event stream: one JSON object per line (JSON Lines),
 * for cluster dashboards and for the run report.
 *
 * Rank 0 is the one writer. Other ranks' block events reach it as fixed-size
 * messages (qs_block_event, sent by pipeline/run.c) and it writes every event
 * of every rank, in the order it learns of them, to
 *   WORK/events.jsonl   always (appended across resumed runs: each run starts
 *                       with a run_start line); `qshard report` reads it
 *   --log-json FILE     when given: the same lines
 * Each line is written whole and flushed at once; a line torn by a crash is
 * the last one, and readers skip lines that do not parse. A sink that fails
 * to write is reported once on stderr and dropped: the event log never stops
 * a run (the checkpoints are what a resumed run trusts).
 *
 * Events (every one has "event" and "t", wall-clock seconds since the epoch):
 *   run_start    ranks, blocks, schedule, method, options, fingerprint, plan, command, versions
 *   block_start  rank, block
 *   checkpoint   rank, block, xxh64, seconds
 *   block_done   rank, block, resumed, t_start, t_end, phases {forward, hessian, solve,
 *                comm, wait, io}, loss, loss_rtn, linears [...], peak_rss_bytes, host
 *   stop_signal  a stop (SIGTERM/SIGUSR1) was seen; the run stops at the next block boundary
 *   export       format, path
 *   run_end      status (done | interrupted), seconds, per_rank [...]
 */
#ifndef QS_EVENTS_H
#define QS_EVENTS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernels/status.h"
#include "workers/stage.h"

/* ---- one finished block, as it travels from its rank to rank 0 ----------------- */

typedef struct qs_block_event {
    int32_t layer, rank, resumed, n_linears;
    qs_block_timing timing;       /* t_end and io include the checkpoint and the exports */
    double seconds;               /* the block in the stage (outcome->seconds) */
    double checkpoint_s, export_s;
    double peak_rss;              /* bytes: the rank's peak resident set so far */
    double tokens;                /* calibration tokens through the block (rows · seq) */
    uint64_t xxh64;               /* the checkpoint's checksum; 0 for a resumed block */
    double loss[QS_MAX_BLOCK_LINEARS], loss_rtn[QS_MAX_BLOCK_LINEARS]; /* loss_rtn NaN: not measured */
    double h_trace[QS_MAX_BLOCK_LINEARS], lin_seconds[QS_MAX_BLOCK_LINEARS];
    int64_t samples[QS_MAX_BLOCK_LINEARS];
    char host[64];
} qs_block_event;

/* Fills e from a finished block (names and exports are added by the caller). */
void qs_block_event_from_outcome(qs_block_event *e, const qs_block_outcome *o, int rank, double tokens);

/* The block_done object of e; names[i] names linear i. */
cJSON *qs_block_event_json(const qs_block_event *e, const char *const *names);

/* ---- the sinks ------------------------------------------------------------------- */

typedef struct qs_events qs_events;

/* Opens WORK/events.jsonl for appending and, when log_json is not NULL/empty,
 * log_json (truncated: one file per run). */
qs_status qs_events_open(qs_events **ev, const char *work_dir, const char *log_json, qs_error *err);
void qs_events_close(qs_events *ev);

/* Adds "event" and "t" in front of obj's members, writes it as one line to
 * every sink and frees obj. ev may be NULL (then obj is only freed). */
void qs_events_emit(qs_events *ev, const char *event, cJSON *obj);

/* ---- what a process knows about itself -------------------------------------------- */

double qs_wall_clock(void);          /* CLOCK_REALTIME, seconds since the epoch */
uint64_t qs_mem_peak_rss(void);      /* peak resident set (VmHWM) in bytes; 0 unknown */
uint64_t qs_mem_rss(void);           /* current resident set (VmRSS) in bytes; 0 unknown */

/* {"qshard": ..., "compiler": ..., "cjson": ..., "hdf5": ..., "xxhash": ..., "openblas": ...} */
cJSON *qs_versions_json(void);

#endif
