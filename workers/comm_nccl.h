/* comm_nccl.h — the NCCL transport: `struct qs_comm_i` on device buffers.
 *
 * Activations move GPU to GPU with NCCL (kernels/nccl.h: ncclSend/ncclRecv
 * on a non-blocking communicator, its own stream, completion by CUDA
 * events); the replicas' Hessian sum is ncclAllReduce (allreduce_sum_dev).
 * Everything else — the unique id (rank 0 makes it, MPI broadcasts it), stop
 * announcements, agreement, host collectives, abort — goes over the MPI
 * transport it is made from. NCCL is loaded by the CUDA module on first use;
 * a build or machine without it gets QS_ERR_UNSUPPORTED from init, saying why.
 *
 * Timeouts: a transfer that does not complete within timeout_s (the run's
 * --heartbeat-timeout) aborts the communicator (ncclCommAbort) and fails
 * with one line naming the peer; asynchronous NCCL errors are polled
 * (ncclCommGetAsyncError) on every test. NCCL has no tags and cannot cancel:
 * sends and receives between two ranks match in posting order (the stage
 * posts them in the same order on both sides), and cancel aborts.
 */
#ifndef QS_COMM_NCCL_H
#define QS_COMM_NCCL_H

#include "kernels/status.h"
#include "workers/comm.h"

/* Every rank of `mpi` calls this (collective): the NCCL transport on CUDA
 * device `device`. When any rank fails, all fail (the lowest failing rank's
 * err says why; the others' say "failed during set-up"). `mpi` must outlive
 * the transport. */
qs_status qs_comm_nccl_init(const qs_comm_i *mpi, int device, double timeout_s, qs_comm_i *out, qs_error *err);

/* Destroys the communicator (finalizing it, or aborting it after a failure). */
void qs_comm_nccl_free(qs_comm_i *comm);

#endif
