/* comm_mpi.c — the MPI activation transport (host buffers). */
#include <limits.h>
#include <stdbool.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "workers/comm.h"

/* One chunk stays well below INT_MAX bytes so counts fit MPI's int. */
static size_t CHUNK_BYTES = (size_t)1 << 30;

void qs_comm_mpi_set_chunk_bytes(size_t bytes) { CHUNK_BYTES = bytes ? bytes : ((size_t)1 << 30); }

static int g_initialized_here;

#define QS_MPI_CHECK(call, err)                                                                              \
    do {                                                                                                     \
        int rc_ = (call);                                                                                    \
        if (rc_ != MPI_SUCCESS) {                                                                            \
            char s_[MPI_MAX_ERROR_STRING];                                                                   \
            int l_ = 0;                                                                                      \
            MPI_Error_string(rc_, s_, &l_);                                                                  \
            return qs_error_set(err, QS_ERR_IO, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call, s_);      \
        }                                                                                                    \
    } while (0)

static qs_status post(bool send, void *buf, size_t bytes, int peer, int tag, qs_comm_request *req, qs_error *err)
{
    size_t chunks = bytes ? (bytes + CHUNK_BYTES - 1) / CHUNK_BYTES : 1;
    if (chunks > QS_COMM_MAX_CHUNKS)
        return qs_error_set(err, QS_ERR_INTERNAL, "message of %zu bytes exceeds %d chunks", bytes,
                            QS_COMM_MAX_CHUNKS);
    req->n = 0;
    for (size_t c = 0; c < chunks; c++) {
        size_t off = c * CHUNK_BYTES;
        size_t len = bytes - off < CHUNK_BYTES ? bytes - off : CHUNK_BYTES;
        MPI_Request *r = malloc(sizeof *r);
        if (!r) return qs_error_set(err, QS_ERR_NOMEM, "MPI request");
        int rc = send ? MPI_Isend((char *)buf + off, (int)len, MPI_BYTE, peer, tag, MPI_COMM_WORLD, r)
                      : MPI_Irecv((char *)buf + off, (int)len, MPI_BYTE, peer, tag, MPI_COMM_WORLD, r);
        if (rc != MPI_SUCCESS) {
            free(r);
            return qs_error_set(err, QS_ERR_IO, "MPI_%s of %zu bytes to/from rank %d failed", send ? "Isend" : "Irecv",
                                len, peer);
        }
        req->impl[req->n++] = r;
    }
    return QS_OK;
}

static qs_status mpi_isend(void *ctx, const void *buf, size_t bytes, int dst, int tag, qs_comm_request *req,
                           qs_error *err)
{
    (void)ctx;
    return post(true, (void *)buf, bytes, dst, tag, req, err);
}

static qs_status mpi_irecv(void *ctx, void *buf, size_t bytes, int src, int tag, qs_comm_request *req, qs_error *err)
{
    (void)ctx;
    return post(false, buf, bytes, src, tag, req, err);
}

static qs_status mpi_wait(void *ctx, qs_comm_request *req, qs_error *err)
{
    (void)ctx;
    qs_status st = QS_OK;
    for (int i = 0; i < req->n; i++) {
        MPI_Request *r = req->impl[i];
        MPI_Status status;
        int rc = MPI_Wait(r, &status);
        if (rc != MPI_SUCCESS && st == QS_OK) st = qs_error_set(err, QS_ERR_IO, "MPI_Wait failed (chunk %d)", i);
        free(r);
        req->impl[i] = NULL;
    }
    req->n = 0;
    return st;
}

static qs_status mpi_test(void *ctx, qs_comm_request *req, int *done, qs_error *err)
{
    (void)ctx;
    for (int i = 0; i < req->n; i++) {
        MPI_Request *r = req->impl[i];
        if (!r) continue;
        int flag = 0;
        if (MPI_Test(r, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return qs_error_set(err, QS_ERR_IO, "MPI_Test failed (chunk %d)", i);
        if (!flag) {
            *done = 0;
            return QS_OK;
        }
        free(r);
        req->impl[i] = NULL;
    }
    req->n = 0;
    *done = 1;
    return QS_OK;
}

static void mpi_cancel(void *ctx, qs_comm_request *req)
{
    (void)ctx;
    for (int i = 0; i < req->n; i++) {
        MPI_Request *r = req->impl[i];
        if (!r) continue;
        MPI_Cancel(r);
        MPI_Request_free(r);
        free(r);
        req->impl[i] = NULL;
    }
    req->n = 0;
}

/* A reserved tag no activation message uses (they count up from 0 and 1000). */
#define STOP_TAG 32000

static int g_stop_sent;
static int g_stop_seen;
static int g_stop_payload = 1;

static void mpi_announce_stop(void *ctx)
{
    (void)ctx;
    if (g_stop_sent) return;
    g_stop_sent = 1;
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int r = 0; r < size; r++) {
        if (r == rank) continue;
        MPI_Request req;
        /* one int: sent eagerly, never waited for */
        if (MPI_Isend(&g_stop_payload, 1, MPI_INT, r, STOP_TAG, MPI_COMM_WORLD, &req) == MPI_SUCCESS)
            MPI_Request_free(&req);
    }
}

static int mpi_stop_requested(void *ctx)
{
    (void)ctx;
    if (g_stop_seen) return 1;
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, STOP_TAG, MPI_COMM_WORLD, &flag, &st) == MPI_SUCCESS && flag) {
        int v;
        MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, STOP_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        g_stop_seen = 1;
    }
    return g_stop_seen;
}

static qs_status mpi_allreduce_sum_f64(void *ctx, double *buf, size_t n, qs_error *err)
{
    (void)ctx;
    for (size_t off = 0; off < n; off += INT_MAX / 8) {
        size_t len = n - off < (size_t)INT_MAX / 8 ? n - off : (size_t)INT_MAX / 8;
        QS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)len, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), err);
    }
    return QS_OK;
}

static qs_status mpi_allreduce_max_i64(void *ctx, int64_t *buf, size_t n, qs_error *err)
{
    (void)ctx;
    QS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD), err);
    return QS_OK;
}

static qs_status mpi_bcast(void *ctx, void *buf, size_t bytes, int root, qs_error *err)
{
    (void)ctx;
    for (size_t off = 0; off < bytes || off == 0; off += CHUNK_BYTES) {
        size_t len = bytes - off < CHUNK_BYTES ? bytes - off : CHUNK_BYTES;
        QS_MPI_CHECK(MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, root, MPI_COMM_WORLD), err);
        if (bytes == 0) break;
    }
    return QS_OK;
}

static qs_status mpi_barrier(void *ctx, qs_error *err)
{
    (void)ctx;
    QS_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD), err);
    return QS_OK;
}

static void mpi_abort(void *ctx, int code)
{
    (void)ctx;
    MPI_Abort(MPI_COMM_WORLD, code);
}

qs_status qs_comm_mpi_init(int *argc, char ***argv, qs_comm_i *out, qs_error *err)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        /* FUNNELED: only the main thread calls MPI; OpenMP threads compute. */
        QS_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), err);
        g_initialized_here = 1;
    }
    /* Errors come back as codes so we can report them with context. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    memset(out, 0, sizeof *out);
    out->name = "mpi";
    MPI_Comm_rank(MPI_COMM_WORLD, &out->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &out->size);
    /* the ranks sharing this node's memory: they share its cores too */
    MPI_Comm node;
    out->node_rank = 0;
    out->node_size = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, out->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &out->node_rank);
        MPI_Comm_size(node, &out->node_size);
        MPI_Comm_free(&node);
    }
    out->isend = mpi_isend;
    out->irecv = mpi_irecv;
    out->wait = mpi_wait;
    out->test = mpi_test;
    out->cancel = mpi_cancel;
    out->announce_stop = mpi_announce_stop;
    out->stop_requested = mpi_stop_requested;
    out->allreduce_sum_f64 = mpi_allreduce_sum_f64;
    out->allreduce_max_i64 = mpi_allreduce_max_i64;
    out->bcast = mpi_bcast;
    out->barrier = mpi_barrier;
    out->abort = mpi_abort;
    return QS_OK;
}

void qs_comm_mpi_finalize(qs_comm_i *comm)
{
    (void)comm;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (g_initialized_here && !finalized) MPI_Finalize();
}
