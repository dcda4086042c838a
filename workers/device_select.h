/* device_select.h — the device of each rank: `--device cpu|cuda|auto`, one
 * GPU per rank by node-local rank, agreed by all ranks; and the memory check
 * of a plan's device bytes against what the GPU has free.
 *
 * The node-local rank comes from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED):
 * the ranks of one node, ordered by their world rank, take GPUs 0, 1, ... of
 * that node (as CUDA_VISIBLE_DEVICES shows them). The decisions themselves are
 * kernels/device.h's pure functions (tested on the CPU).
 */
#ifndef QS_DEVICE_SELECT_H
#define QS_DEVICE_SELECT_H

#include "kernels/device.h"
#include "kernels/status.h"
#include "schedulers/partition.h"
#include "workers/comm.h"

typedef struct qs_device_choice {
    qs_device_kind kind;       /* QS_DEVICE_CPU or QS_DEVICE_CUDA, never AUTO */
    int index;                 /* the CUDA device; -1 on the CPU */
    int local_rank, local_size;/* this rank among the ranks of its node */
    int n_cuda;                /* CUDA devices on this node */
    qs_device_info info;       /* kind == CUDA: name, memory */
    char why_cpu[640];         /* auto chose the CPU: why */
} qs_device_choice;

/* The device of this rank for `requested`. cpu: the CPU at once (no MPI call,
 * local_rank/local_size not looked up). comm NULL (or not MPI): a single
 * process, local rank 0 of 1. With comm, every rank calls this and all agree:
 * when any rank fails, all fail, and only the lowest failing rank's err says
 * why; the others' messages contain "failed during set-up" (what the run
 * command prints nothing for). */
qs_status qs_device_select(qs_device_kind requested, const qs_comm_i *comm, qs_device_choice *out, qs_error *err);

/* Whether `rank`'s share of the plan (its peak device bytes, from the cost
 * model: the stage rank / D of a plan of S stages × D replicas) fits in the device's free memory (kernels/device.h's
 * qs_device_fit_check; dev->free_bytes from cudaMemGetInfo). */
qs_status qs_device_check_plan(const qs_plan *plan, int rank, const qs_device_info *dev, qs_error *err);

#endif
