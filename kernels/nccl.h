/* nccl.h — NCCL between the ranks' GPUs, as a few C calls on device memory:
 * the data plane of the NCCL transport (workers/comm_nccl.c builds
 * `struct qs_comm_i` on it, with MPI for the unique id and the control
 * messages).
 *
 * The calls are implemented in the CUDA module (kernels/cuda/nccl_cuda.cu,
 * in libqshard_cuda.so), which loads libnccl.so.2 itself with dlopen the
 * first time they are used: qshard, the CUDA backend and a machine without
 * NCCL keep working, and a build without CUDA answers that there is no
 * NCCL. The communicator is non-blocking (ncclConfig_t.blocking = 0): every
 * call returns at once and its progress is polled with
 * ncclCommGetAsyncError, so a peer that never answers is a timeout (the
 * communicator is then aborted with ncclCommAbort), not a hang.
 *
 * Point to point: qs_nccl_send/recv enqueue one ncclSend/ncclRecv (in a
 * group) on the communicator's own stream and return a handle; test/wait
 * complete it. NCCL has no tags: sends and receives between two ranks match
 * in the order they are posted, which the stage's hand-off keeps.
 */
#ifndef QS_NCCL_H
#define QS_NCCL_H

#include <stdbool.h>
#include <stddef.h>

#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* implemented in C++ (nccl_cuda.cu) and in C (the loader) */
#endif

#define QS_NCCL_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */

typedef struct qs_nccl_id {
    char bytes[QS_NCCL_ID_BYTES];
} qs_nccl_id;

typedef struct qs_nccl qs_nccl;           /* a communicator on one device */
typedef struct qs_nccl_op qs_nccl_op;     /* one posted send or receive */

/* A new unique id (rank 0; the others get it over MPI). QS_ERR_UNSUPPORTED
 * when NCCL cannot be loaded, saying why. */
qs_status qs_nccl_get_id(qs_nccl_id *id, qs_error *err);

/* Joins communicator `id` as `rank` of `size` on CUDA device `device`;
 * timeout_s > 0 bounds the wait for the other ranks (then the communicator
 * is aborted and the call fails). */
qs_status qs_nccl_init(qs_nccl **out, const qs_nccl_id *id, int rank, int size, int device, double timeout_s,
                       qs_error *err);

/* Posts a send (recv) of `bytes` of device memory to (from) `peer`. */
qs_status qs_nccl_send(qs_nccl *c, const void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err);
qs_status qs_nccl_recv(qs_nccl *c, void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err);

/* *done = 1 when op completed (op is then freed); an asynchronous NCCL
 * error of the communicator is the error. */
qs_status qs_nccl_test(qs_nccl *c, qs_nccl_op *op, int *done, qs_error *err);

/* Waits for op (polling; timeout_s > 0: then aborts the communicator and
 * fails naming the peer). op is freed either way. */
qs_status qs_nccl_wait(qs_nccl *c, qs_nccl_op *op, double timeout_s, qs_error *err);

/* In-place sum over all ranks of n floats (f64: doubles) of device memory;
 * waits (timeout_s as qs_nccl_wait). */
qs_status qs_nccl_allreduce_sum(qs_nccl *c, void *buf, size_t n, bool f64, double timeout_s, qs_error *err);

/* Aborts the communicator (what is in flight is dropped); later calls fail. */
void qs_nccl_abort(qs_nccl *c);

/* Frees an op that will not be completed (after an abort). */
void qs_nccl_op_free(qs_nccl_op *op);

/* Destroys the communicator (aborting it when something failed). */
void qs_nccl_free(qs_nccl *c);

#ifdef __cplusplus
}
#endif

#endif
