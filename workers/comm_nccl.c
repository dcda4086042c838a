/* comm_nccl.c — the NCCL transport (see comm_nccl.h): point to point and the
 * device all-reduce through kernels/nccl.h, the control plane through the
 * MPI transport it wraps. */
#include "workers/comm_nccl.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/nccl.h"

typedef struct nccl_ctx {
    const qs_comm_i *mpi;
    qs_nccl *nc;
    double timeout_s;
} nccl_ctx;

/* ---- point to point on device buffers ----------------------------------------- */

/* A request holds one NCCL op in impl[0]. */
static qs_status t_isend(void *ctx, const void *buf, size_t bytes, int dst, int tag, qs_comm_request *req,
                         qs_error *err)
{
    nccl_ctx *c = ctx;
    qs_nccl_op *op = NULL;
    req->n = 0;
    QS_TRY(qs_nccl_send(c->nc, buf, bytes, dst, &op, err));
    req->impl[0] = op;
    req->n = 1;
    return QS_OK;
}

static qs_status t_irecv(void *ctx, void *buf, size_t bytes, int src, int tag, qs_comm_request *req, qs_error *err)
{
    nccl_ctx *c = ctx;
    qs_nccl_op *op = NULL;
    req->n = 0;
    QS_TRY(qs_nccl_recv(c->nc, buf, bytes, src, &op, err));
    req->impl[0] = op;
    req->n = 1;
    return QS_OK;
}

static qs_status t_test(void *ctx, qs_comm_request *req, int *done, qs_error *err)
{
    nccl_ctx *c = ctx;
    *done = 1;
    if (!req->n) return QS_OK;
    *done = 0;
    qs_status s = qs_nccl_test(c->nc, req->impl[0], done, err);
    if (s != QS_OK) {
        qs_nccl_op_free(req->impl[0]);
        req->n = 0;
        return s;
    }
    if (*done) req->n = 0; /* the op freed itself */
    return QS_OK;
}

static qs_status t_wait(void *ctx, qs_comm_request *req, qs_error *err)
{
    nccl_ctx *c = ctx;
    if (!req->n) return QS_OK;
    req->n = 0; /* freed by the wait, either way */
    return qs_nccl_wait(c->nc, req->impl[0], c->timeout_s, err);
}

/* NCCL cannot take a posted transfer back: the communicator is aborted, and
 * what follows is a stop (every caller of cancel is stopping). */
static void t_cancel(void *ctx, qs_comm_request *req)
{
    nccl_ctx *c = ctx;
    if (!req->n) return;
    qs_nccl_abort(c->nc);
    qs_nccl_op_free(req->impl[0]);
    req->n = 0;
}

static qs_status t_allreduce_sum_dev(void *ctx, void *buf, size_t n, bool f64, qs_error *err)
{
    nccl_ctx *c = ctx;
    return qs_nccl_allreduce_sum(c->nc, buf, n, f64, c->timeout_s, err);
}

/* ---- the control plane: MPI's ------------------------------------------------------ */

static void t_announce_stop(void *ctx)
{
    const qs_comm_i *m = ((nccl_ctx *)ctx)->mpi;
    m->announce_stop(m->ctx);
}

static int t_stop_requested(void *ctx)
{
    const qs_comm_i *m = ((nccl_ctx *)ctx)->mpi;
    return m->stop_requested(m->ctx);
}

static qs_status t_allreduce_sum_f64(void *ctx, double *buf, size_t n, qs_error *err)
{
    const qs_comm_i *m = ((nccl_ctx *)ctx)->mpi;
    return m->allreduce_sum_f64(m->ctx, buf, n, err);
}

static qs_status t_allreduce_max_i64(void *ctx, int64_t *buf, size_t n, qs_error *err)
{
    const qs_comm_i *m = ((nccl_ctx *)ctx)->mpi;
    return m->allreduce_max_i64(m->ctx, buf, n, err);
}

static qs_status t_bcast(void *ctx, void *buf, size_t bytes, int root, qs_error *err)
{
    const qs_comm_i *m = ((nccl_ctx *)ctx)->mpi;
    return m->bcast(m->ctx, buf, bytes, root, err);
}

static qs_status t_barrier(void *ctx, qs_error *err)
{
    const qs_comm_i *m = ((nccl_ctx *)ctx)->mpi;
    return m->barrier(m->ctx, err);
}

static void t_abort(void *ctx, int code)
{
    nccl_ctx *c = ctx;
    qs_nccl_abort(c->nc);
    c->mpi->abort(c->mpi->ctx, code);
}

/* ---- set-up ------------------------------------------------------------------------ */

/* All ranks agree on st: the lowest failing rank keeps its message. */
static qs_status agree(const qs_comm_i *m, qs_status st, qs_error *mine, qs_error *err)
{
    int64_t v[2] = {st != QS_OK ? (int64_t)(m->size - m->rank) : 0, (int64_t)st};
    qs_error aerr;
    if (m->allreduce_max_i64(m->ctx, v, 2, &aerr) != QS_OK) {
        if (err) *err = aerr;
        return aerr.code;
    }
    if (v[0] == 0) return QS_OK;
    int first = m->size - (int)v[0];
    if (m->rank == first) {
        if (err) *err = *mine;
        return st;
    }
    return qs_error_set(err, (qs_status)v[1], "NCCL transport failed during set-up on rank %d", first);
}

qs_status qs_comm_nccl_init(const qs_comm_i *mpi, int device, double timeout_s, qs_comm_i *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    qs_error mine;
    qs_error_clear(&mine);
    qs_nccl_id id;
    memset(&id, 0, sizeof id);
    /* rank 0 makes the id; every rank learns whether it could */
    qs_status st = mpi->rank == 0 ? qs_nccl_get_id(&id, &mine) : QS_OK;
    QS_TRY(agree(mpi, st, &mine, err));
    QS_TRY(mpi->bcast(mpi->ctx, &id, sizeof id, 0, err));
    nccl_ctx *c = calloc(1, sizeof *c);
    st = c ? QS_OK : qs_error_set(&mine, QS_ERR_NOMEM, "NCCL transport");
    if (st == QS_OK) st = qs_nccl_init(&c->nc, &id, mpi->rank, mpi->size, device, timeout_s, &mine);
    if ((st = agree(mpi, st, &mine, err)) != QS_OK) {
        if (c) qs_nccl_free(c->nc);
        free(c);
        return st;
    }
    c->mpi = mpi;
    c->timeout_s = timeout_s;
    out->name = "nccl";
    out->ctx = c;
    out->rank = mpi->rank;
    out->size = mpi->size;
    out->node_rank = mpi->node_rank;
    out->node_size = mpi->node_size;
    out->device_buffers = true;
    out->isend = t_isend;
    out->irecv = t_irecv;
    out->wait = t_wait;
    out->test = t_test;
    out->cancel = t_cancel;
    out->announce_stop = t_announce_stop;
    out->stop_requested = t_stop_requested;
    out->allreduce_sum_f64 = t_allreduce_sum_f64;
    out->allreduce_sum_dev = t_allreduce_sum_dev;
    out->allreduce_max_i64 = t_allreduce_max_i64;
    out->bcast = t_bcast;
    out->barrier = t_barrier;
    out->abort = t_abort;
    return QS_OK;
}

void qs_comm_nccl_free(qs_comm_i *comm)
{
    if (!comm || !comm->ctx) return;
    nccl_ctx *c = comm->ctx;
    qs_nccl_free(c->nc);
    free(c);
    memset(comm, 0, sizeof *comm);
}
