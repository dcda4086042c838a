/* device_select.c — one GPU per rank by node-local rank, agreed by all ranks,
 * and the plan's device memory against cudaMemGetInfo. */
#include "workers/device_select.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>

/* This rank's place among the ranks of its node (0 of 1 without MPI). */
static qs_status node_local(const qs_comm_i *comm, int *local_rank, int *local_size, qs_error *err)
{
    *local_rank = 0;
    *local_size = 1;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!comm || !inited) return QS_OK;
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return qs_error_set(err, QS_ERR_IO, "device: MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) failed");
    MPI_Comm_rank(node, local_rank);
    MPI_Comm_size(node, local_size);
    MPI_Comm_free(&node);
    return QS_OK;
}

static qs_status select_here(qs_device_kind requested, const qs_comm_i *comm, qs_device_choice *out, qs_error *err)
{
    QS_TRY(node_local(comm, &out->local_rank, &out->local_size, err));
    char why[512] = "";
    out->n_cuda = requested == QS_DEVICE_CPU ? 0 : qs_cuda_device_count(why, sizeof why);
    QS_TRY(qs_device_pick(requested, out->local_rank, out->local_size, out->n_cuda, why, &out->kind, &out->index,
                          err));
    if (out->kind == QS_DEVICE_CUDA) return qs_cuda_device_info(out->index, &out->info, err);
    if (requested == QS_DEVICE_AUTO) {
        if (out->n_cuda == 0) snprintf(out->why_cpu, sizeof out->why_cpu, "no CUDA device (%s)", why);
        else
            snprintf(out->why_cpu, sizeof out->why_cpu, "%d ranks on this node but %d CUDA devices",
                     out->local_size, out->n_cuda);
    }
    return QS_OK;
}

qs_status qs_device_select(qs_device_kind requested, const qs_comm_i *comm, qs_device_choice *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    out->index = -1;
    if (requested == QS_DEVICE_CPU) { /* nothing to find or agree on: no MPI call, no CUDA module */
        out->kind = QS_DEVICE_CPU;
        out->local_size = 1;
        return QS_OK;
    }
    qs_error mine;
    qs_error_clear(&mine);
    qs_status st = select_here(requested, comm, out, &mine);
    if (!comm || comm->size <= 1 || !comm->allreduce_max_i64) {
        if (st != QS_OK && err) *err = mine;
        return st;
    }
    /* agree: the lowest failing rank speaks (size - rank is largest for it) */
    int64_t flag[2] = {st != QS_OK ? (int64_t)(comm->size - comm->rank) : 0, (int64_t)st};
    qs_error aerr;
    if (comm->allreduce_max_i64(comm->ctx, flag, 2, &aerr) != QS_OK) {
        if (err) *err = aerr;
        return aerr.code;
    }
    if (flag[0] == 0) return QS_OK;
    int speaker = comm->size - (int)flag[0];
    if (comm->rank == speaker) {
        if (err) *err = mine;
        return st;
    }
    qs_status code = st != QS_OK ? st : (qs_status)flag[1];
    return qs_error_set(err, code, "device selection failed during set-up on rank %d", speaker);
}

qs_status qs_device_check_plan(const qs_plan *plan, int rank, const qs_device_info *dev, qs_error *err)
{
    if (rank < 0 || rank >= plan->n_ranks)
        return qs_error_set(err, QS_ERR_INTERNAL, "device check: rank %d of a %d-rank plan", rank, plan->n_ranks);
    /* ranks are stage-major: stage s holds ranks [s·D, s·D + D) (schedulers/partition.h) */
    int D = plan->n_replicas > 0 ? plan->n_replicas : 1;
    if (rank / D >= plan->n_stages)
        return qs_error_set(err, QS_ERR_INTERNAL, "device check: rank %d of %d stages × %d replicas", rank,
                            plan->n_stages, D);
    const qs_stage_plan *s = &plan->stages[rank / D];
    char what[192], device[320];
    if (D > 1)
        snprintf(what, sizeof what, "rank %d (stage %d, replica %d: blocks %d..%d%s%s)", rank, rank / D, rank % D,
                 s->first_block, s->end_block - 1, s->embed ? ", embedding" : "", s->head ? ", head" : "");
    else
        snprintf(what, sizeof what, "rank %d (blocks %d..%d%s%s)", rank, s->first_block, s->end_block - 1,
                 s->embed ? ", embedding" : "", s->head ? ", head" : "");
    snprintf(device, sizeof device, "cuda:%d (%s)", dev->index, dev->name);
    return qs_device_fit_check(s->peak_device, dev->free_bytes, dev->total_bytes, device, what, err);
}
