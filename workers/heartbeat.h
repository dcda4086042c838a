/* heartbeat.h — peer liveness for runs across hosts.
 *
 * Open MPI notices a dead peer when its TCP connections break: a killed
 * process closes them at once, but a host whose link goes down (or that
 * loses power) leaves the other ranks blocked in a wait or a collective
 * until TCP keepalives give up, minutes later or never. The heartbeat is a
 * side channel that bounds that: every rank runs one thread that keeps a
 * TCP connection to rank 0 (rank 0 holds one to every rank), sends a small
 * frame every period and watches for the others'. A peer is lost when its
 * connection closes without a goodbye (its process died: seen at once) or
 * when nothing came from it for `timeout` seconds (its host or link is
 * gone). Rank 0 tells every other rank which rank it lost; a rank that
 * loses rank 0 knows by itself. The thread then calls the on_lost callback
 * (the command line prints one line and exits with code 3: every write in
 * the work dir is atomic, so the run resumes), wherever the main thread is,
 * in a computation, an MPI wait or a collective.
 *
 * The thread never calls MPI; setting up uses the transport's bcast once
 * (rank 0's addresses and port). Connections are checked with a per-run
 * nonce, so a stray connection is refused. One heartbeat per process.
 */
#ifndef QS_HEARTBEAT_H
#define QS_HEARTBEAT_H

#include "kernels/status.h"
#include "workers/comm.h"

typedef struct qs_heartbeat_opts {
    double period_s;  /* a frame every period (default 1 s) */
    double timeout_s; /* silence after which a peer is lost (default 30 s) */
    double setup_s;   /* how long set-up waits for every rank to connect (default 60 s) */
} qs_heartbeat_opts;

void qs_heartbeat_opts_default(qs_heartbeat_opts *o);

/* Called once, from the heartbeat thread, when a peer is lost: lost_rank and
 * a one-line description ("rank 1 on host n2 (10.0.0.2): no heartbeat for
 * 30.0 s"). It may end the process (_exit); if it returns, the thread stops
 * and qs_heartbeat_lost() reports the loss. */
typedef void (*qs_heartbeat_lost_fn)(int lost_rank, const char *what, void *ctx);

/* Collective over comm (every rank calls it): connects the ranks and starts
 * the thread. A no-op with one rank. */
qs_status qs_heartbeat_start(const qs_comm_i *comm, const qs_heartbeat_opts *o, qs_heartbeat_lost_fn on_lost,
                             void *ctx, qs_error *err);

/* The lost rank (what filled) or -1 while every peer is alive. */
int qs_heartbeat_lost(char *what, size_t cap);

/* Says goodbye to the peers (they stop watching this rank), stops the thread
 * and closes the connections. Call it before every orderly exit, including
 * MPI_Abort after an error of this rank (so the others do not report it as
 * lost). grace_s > 0 first waits that long for a loss the thread may be about
 * to report (a dead peer also surfaces as an MPI error in the main thread:
 * the heartbeat names it better). Safe to call twice, or without a heartbeat. */
void qs_heartbeat_stop(double grace_s);

#endif
