/* comm.h — the activation transport between ranks (`struct qs_comm_i`).
 *
 * A transport is a table of function pointers with a context pointer. The MPI
 * transport (workers/comm_mpi.c) moves host buffers; the NCCL transport
 * (workers/comm_nccl.c) moves device buffers through the same table
 * (device_buffers), with the control messages over MPI. Point-to-point calls are
 * non-blocking so a stage can post the receive of micro-batch i+1 while it
 * computes micro-batch i (double buffering); collectives are blocking.
 *
 * Messages of any size are allowed: the MPI transport splits them into chunks
 * below MPI's int count limit.
 */
#ifndef QS_COMM_H
#define QS_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/status.h"

#define QS_COMM_MAX_CHUNKS 64

/* An outstanding non-blocking transfer (opaque to callers). */
typedef struct qs_comm_request {
    int n;                     /* chunks in flight (0: nothing posted / completed) */
    void *impl[QS_COMM_MAX_CHUNKS];
} qs_comm_request;

typedef struct qs_comm_i {
    const char *name;
    void *ctx;
    int rank;
    int size;
    int node_rank;  /* this rank among the ranks on its node (host) */
    int node_size;  /* ranks on this rank's node */
    bool device_buffers; /* isend/irecv take device memory (NCCL); false: host memory (MPI) */

    qs_status (*isend)(void *ctx, const void *buf, size_t bytes, int dst, int tag, qs_comm_request *req,
                       qs_error *err);
    qs_status (*irecv)(void *ctx, void *buf, size_t bytes, int src, int tag, qs_comm_request *req, qs_error *err);
    /* Completes a request; a receive that got a different byte count is an error. */
    qs_status (*wait)(void *ctx, qs_comm_request *req, qs_error *err);
    /* Non-blocking completion check: *done = 1 when every chunk completed. */
    qs_status (*test)(void *ctx, qs_comm_request *req, int *done, qs_error *err);
    /* Cancels what is still pending of a request (a stop while waiting). */
    void (*cancel)(void *ctx, qs_comm_request *req);

    /* Stop requests travel point to point so that a rank busy in a block and a
     * rank waiting for activations both see them: announce_stop tells every
     * other rank once; stop_requested polls for such a message. */
    void (*announce_stop)(void *ctx);
    int (*stop_requested)(void *ctx);

    /* In-place sum over all ranks (host memory). */
    qs_status (*allreduce_sum_f64)(void *ctx, double *buf, size_t n, qs_error *err);
    /* In-place sum over all ranks of n floats (f64: doubles) of device memory
     * (the replicas' Hessians); NULL where the transport has none (MPI). */
    qs_status (*allreduce_sum_dev)(void *ctx, void *buf, size_t n, bool f64, qs_error *err);
    /* In-place max over all ranks (used to agree on stop flags and errors). */
    qs_status (*allreduce_max_i64)(void *ctx, int64_t *buf, size_t n, qs_error *err);
    qs_status (*bcast)(void *ctx, void *buf, size_t bytes, int root, qs_error *err);
    qs_status (*barrier)(void *ctx, qs_error *err);
    /* Stops every rank at once after an unrecoverable error on this one. */
    void (*abort)(void *ctx, int code);
} qs_comm_i;

/* Initializes MPI (if not yet) and returns the MPI transport on MPI_COMM_WORLD.
 * Works without mpirun too (a singleton run with one rank). */
qs_status qs_comm_mpi_init(int *argc, char ***argv, qs_comm_i *out, qs_error *err);
/* Finalizes MPI if qs_comm_mpi_init initialized it. */
void qs_comm_mpi_finalize(qs_comm_i *comm);
/* Test hook: the chunk size large messages are split into (0 restores 1 GiB). */
void qs_comm_mpi_set_chunk_bytes(size_t bytes);

#endif
