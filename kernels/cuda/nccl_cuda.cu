/* nccl_cuda.cu — kernels/nccl.h on NCCL, loaded with dlopen (libnccl.so.2)
 * the first time it is used, so that the CUDA module has no link-time
 * dependency on NCCL: the backend works where NCCL is missing, and only the
 * NCCL transport then says why it cannot run.
 *
 * The communicator is non-blocking (config.blocking = 0): a call that
 * returns ncclInProgress is polled with ncclCommGetAsyncError, with a
 * timeout where the caller gives one (the run's --heartbeat-timeout); on
 * timeout the communicator is aborted (ncclCommAbort). Every failure is one
 * line in the backend's shape: "cuda:N: kernels/cuda/nccl_cuda.cu:LINE:
 * ncclSend(...) failed: <NCCL's error name> (<its last error message>)".
 */
#include "kernels/nccl.h"

#ifdef QS_NO_NCCL_HEADER
/* built without nccl.h: every call says so */
#include <stdlib.h>
static qs_status no_nccl(qs_error *err)
{
    return qs_error_set(err, QS_ERR_UNSUPPORTED, "NCCL: this CUDA module was built without nccl.h "
                                                 "(configure with -DQS_NCCL_INCLUDE_DIR=...)");
}
extern "C" qs_status qs_nccl_get_id(qs_nccl_id *id, qs_error *err) { return no_nccl(err); }
extern "C" qs_status qs_nccl_init(qs_nccl **out, const qs_nccl_id *id, int rank, int size, int device,
                                  double timeout_s, qs_error *err)
{
    *out = NULL;
    return no_nccl(err);
}
extern "C" qs_status qs_nccl_send(qs_nccl *c, const void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err)
{
    return no_nccl(err);
}
extern "C" qs_status qs_nccl_recv(qs_nccl *c, void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err)
{
    return no_nccl(err);
}
extern "C" qs_status qs_nccl_test(qs_nccl *c, qs_nccl_op *op, int *done, qs_error *err) { return no_nccl(err); }
extern "C" qs_status qs_nccl_wait(qs_nccl *c, qs_nccl_op *op, double timeout_s, qs_error *err) { return no_nccl(err); }
extern "C" qs_status qs_nccl_allreduce_sum(qs_nccl *c, void *buf, size_t n, bool f64, double timeout_s, qs_error *err)
{
    return no_nccl(err);
}
extern "C" void qs_nccl_abort(qs_nccl *c) {}
extern "C" void qs_nccl_op_free(qs_nccl_op *op) {}
extern "C" void qs_nccl_free(qs_nccl *c) {}
#else

#include <dlfcn.h>
#include <nccl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda_util.cuh"

static_assert(sizeof(ncclUniqueId) == QS_NCCL_ID_BYTES, "NCCL's unique id size");

/* ---- NCCL, loaded on first use -------------------------------------------------- */

static struct {
    bool tried;
    void *lib;
    char why[512];
    ncclResult_t (*GetUniqueId)(ncclUniqueId *);
    ncclResult_t (*CommInitRankConfig)(ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *);
    ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t *);
    ncclResult_t (*CommAbort)(ncclComm_t);
    ncclResult_t (*CommFinalize)(ncclComm_t);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    ncclResult_t (*Send)(const void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*Recv)(void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*AllReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*GroupStart)(void);
    ncclResult_t (*GroupEnd)(void);
    const char *(*GetErrorString)(ncclResult_t);
    const char *(*GetLastError)(ncclComm_t);
} L;

static bool nccl_load(qs_error *err)
{
#ifdef QS_CUDA_EMU /* the emulator's NCCL (tests/gpu_emu/emu_nccl.cpp) is linked in */
    if (!L.tried) {
        L.tried = true;
        L.lib = (void *)&L;
        L.GetUniqueId = ncclGetUniqueId, L.CommInitRankConfig = ncclCommInitRankConfig;
        L.CommGetAsyncError = ncclCommGetAsyncError, L.CommAbort = ncclCommAbort;
        L.CommFinalize = ncclCommFinalize, L.CommDestroy = ncclCommDestroy, L.Send = ncclSend, L.Recv = ncclRecv;
        L.AllReduce = ncclAllReduce, L.GroupStart = ncclGroupStart, L.GroupEnd = ncclGroupEnd;
        L.GetErrorString = ncclGetErrorString, L.GetLastError = ncclGetLastError;
    }
#else
    if (!L.tried) {
        L.tried = true;
        const char *names[] = {"libnccl.so.2", "libnccl.so"};
        for (int i = 0; i < 2 && !L.lib; i++) L.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!L.lib) {
            const char *e = dlerror();
            snprintf(L.why, sizeof L.why, "NCCL could not be loaded: %s", e ? e : "libnccl.so.2 not found");
        }
#define QS_NCCL_SYM(field, sym)                                                                  \
    if (L.lib && !(L.field = (decltype(L.field))dlsym(L.lib, sym))) {                            \
        snprintf(L.why, sizeof L.why, "NCCL (libnccl.so.2) has no %s: version 2.14 or later needed", sym); \
        dlclose(L.lib);                                                                          \
        L.lib = NULL;                                                                            \
    }
        QS_NCCL_SYM(GetUniqueId, "ncclGetUniqueId")
        QS_NCCL_SYM(CommInitRankConfig, "ncclCommInitRankConfig")
        QS_NCCL_SYM(CommGetAsyncError, "ncclCommGetAsyncError")
        QS_NCCL_SYM(CommAbort, "ncclCommAbort")
        QS_NCCL_SYM(CommFinalize, "ncclCommFinalize")
        QS_NCCL_SYM(CommDestroy, "ncclCommDestroy")
        QS_NCCL_SYM(Send, "ncclSend")
        QS_NCCL_SYM(Recv, "ncclRecv")
        QS_NCCL_SYM(AllReduce, "ncclAllReduce")
        QS_NCCL_SYM(GroupStart, "ncclGroupStart")
        QS_NCCL_SYM(GroupEnd, "ncclGroupEnd")
        QS_NCCL_SYM(GetErrorString, "ncclGetErrorString")
        QS_NCCL_SYM(GetLastError, "ncclGetLastError")
#undef QS_NCCL_SYM
    }
#endif
    if (!L.lib) qs_error_set(err, QS_ERR_UNSUPPORTED, "%s", L.why);
    return L.lib != NULL;
}

/* ---- the communicator ------------------------------------------------------------- */

struct qs_nccl {
    ncclComm_t comm;
    cudaStream_t stream; /* the transport's own: compute never waits behind a transfer */
    int device, rank, size;
    bool failed;         /* aborted or errored: destroy aborts */
    char name[32];       /* "cuda:N" */
};

struct qs_nccl_op {
    cudaEvent_t ev;
    int peer;
    bool send;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static qs_status nccl_fail(qs_nccl *c, qs_error *err, const char *file, int line, const char *call, ncclResult_t r)
{
    if (c) c->failed = true;
    const char *last = c && c->comm && L.GetLastError ? L.GetLastError(c->comm) : "";
    return qs_error_set(err, QS_ERR_IO, "%s: %s:%d: %s failed: %s%s%s%s", c ? c->name : "nccl",
                        qs_cu_short_path(file), line, call, L.GetErrorString ? L.GetErrorString(r) : "NCCL error",
                        last && *last ? " (" : "", last ? last : "", last && *last ? ")" : "");
}

/* r from a call on a non-blocking communicator: polled to completion. */
static qs_status nccl_settle(qs_nccl *c, ncclResult_t r, double timeout_s, const char *file, int line,
                             const char *call, qs_error *err)
{
    double t0 = now_s();
    while (r == ncclInProgress) {
        if (timeout_s > 0 && now_s() - t0 > timeout_s) {
            qs_nccl_abort(c);
            return qs_error_set(err, QS_ERR_IO, "%s: %s:%d: %s did not complete in %.0f s: communicator aborted",
                                c->name, qs_cu_short_path(file), line, call, timeout_s);
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
        if (L.CommGetAsyncError(c->comm, &r) != ncclSuccess) r = ncclInternalError;
    }
    return r == ncclSuccess ? QS_OK : nccl_fail(c, err, file, line, call, r);
}

#define QS_NCCL_CALL(c, timeout, err, call) nccl_settle((c), (call), (timeout), __FILE__, __LINE__, #call, (err))

#define QS_NCCL_CUDA(c, err, call)                                                                           \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess) {                                                                             \
            (c)->failed = true;                                                                              \
            return qs_error_set(err, QS_ERR_IO, "%s: %s:%d: %s failed: %s (%s)", (c)->name,                  \
                                qs_cu_short_path(__FILE__), __LINE__, #call, cudaGetErrorName(e_),           \
                                cudaGetErrorString(e_));                                                     \
        }                                                                                                    \
    } while (0)

extern "C" qs_status qs_nccl_get_id(qs_nccl_id *id, qs_error *err)
{
    if (!nccl_load(err)) return QS_ERR_UNSUPPORTED;
    ncclUniqueId u;
    ncclResult_t r = L.GetUniqueId(&u);
    if (r != ncclSuccess) return nccl_fail(NULL, err, __FILE__, __LINE__, "ncclGetUniqueId(&u)", r);
    memcpy(id->bytes, u.internal, QS_NCCL_ID_BYTES);
    return QS_OK;
}

extern "C" qs_status qs_nccl_init(qs_nccl **out, const qs_nccl_id *id, int rank, int size, int device,
                                  double timeout_s, qs_error *err)
{
    *out = NULL;
    if (!nccl_load(err)) return QS_ERR_UNSUPPORTED;
    qs_nccl *c = (qs_nccl *)calloc(1, sizeof *c);
    if (!c) return qs_error_set(err, QS_ERR_NOMEM, "nccl communicator");
    c->device = device, c->rank = rank, c->size = size;
    snprintf(c->name, sizeof c->name, "cuda:%d", device);
    qs_status s = QS_OK;
    cudaError_t ce = cudaSetDevice(device);
    if (ce == cudaSuccess) ce = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (ce != cudaSuccess)
        s = qs_error_set(err, QS_ERR_IO, "%s: the NCCL transport's stream: %s", c->name, cudaGetErrorName(ce));
    if (s == QS_OK) {
        ncclUniqueId u;
        memcpy(u.internal, id->bytes, QS_NCCL_ID_BYTES);
        ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
        config.blocking = 0;
        s = QS_NCCL_CALL(c, timeout_s, err, L.CommInitRankConfig(&c->comm, size, u, rank, &config));
    }
    if (s != QS_OK) {
        qs_nccl_free(c);
        return s;
    }
    *out = c;
    return QS_OK;
}

static qs_status post(qs_nccl *c, bool send, void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err)
{
    *op = NULL;
    if (c->failed) return qs_error_set(err, QS_ERR_IO, "%s: the NCCL communicator failed earlier", c->name);
    QS_NCCL_CUDA(c, err, cudaSetDevice(c->device));
    qs_nccl_op *o = (qs_nccl_op *)calloc(1, sizeof *o);
    if (!o) return qs_error_set(err, QS_ERR_NOMEM, "nccl op");
    o->peer = peer, o->send = send;
    /* posting waits for nothing but NCCL's own progress (a peer that is late to
     * post its side is not an error here; test/wait bound the transfer) */
    qs_status s = QS_NCCL_CALL(c, 0, err, L.GroupStart());
    if (s == QS_OK)
        s = send ? QS_NCCL_CALL(c, 0, err, L.Send(buf, bytes, ncclChar, peer, c->comm, c->stream))
                 : QS_NCCL_CALL(c, 0, err, L.Recv(buf, bytes, ncclChar, peer, c->comm, c->stream));
    if (s == QS_OK) s = QS_NCCL_CALL(c, 0, err, L.GroupEnd());
    cudaError_t ce = cudaSuccess;
    if (s == QS_OK && (ce = cudaEventCreateWithFlags(&o->ev, cudaEventDisableTiming)) == cudaSuccess)
        ce = cudaEventRecord(o->ev, c->stream);
    if (s == QS_OK && ce != cudaSuccess) {
        c->failed = true;
        s = qs_error_set(err, QS_ERR_IO, "%s: the %s's event: %s", c->name, send ? "send" : "receive",
                         cudaGetErrorName(ce));
    }
    if (s != QS_OK) {
        qs_nccl_op_free(o);
        return s;
    }
    *op = o;
    return QS_OK;
}

extern "C" qs_status qs_nccl_send(qs_nccl *c, const void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err)
{
    return post(c, true, (void *)buf, bytes, peer, op, err);
}

extern "C" qs_status qs_nccl_recv(qs_nccl *c, void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err)
{
    return post(c, false, buf, bytes, peer, op, err);
}

extern "C" qs_status qs_nccl_test(qs_nccl *c, qs_nccl_op *op, int *done, qs_error *err)
{
    *done = 0;
    ncclResult_t r = ncclSuccess;
    if (L.CommGetAsyncError(c->comm, &r) != ncclSuccess || (r != ncclSuccess && r != ncclInProgress))
        return nccl_fail(c, err, __FILE__, __LINE__, op->send ? "ncclSend (in flight)" : "ncclRecv (in flight)", r);
    cudaError_t e = cudaEventQuery(op->ev);
    if (e == cudaErrorNotReady) return QS_OK;
    if (e != cudaSuccess) {
        c->failed = true;
        return qs_error_set(err, QS_ERR_IO, "%s: the %s rank %d: %s", c->name, op->send ? "send to" : "receive from",
                            op->peer, cudaGetErrorName(e));
    }
    qs_nccl_op_free(op);
    *done = 1;
    return QS_OK;
}

extern "C" qs_status qs_nccl_wait(qs_nccl *c, qs_nccl_op *op, double timeout_s, qs_error *err)
{
    double t0 = now_s();
    for (;;) {
        int done = 0;
        qs_status s = qs_nccl_test(c, op, &done, err);
        if (s != QS_OK) {
            qs_nccl_op_free(op);
            return s;
        }
        if (done) return QS_OK;
        if (timeout_s > 0 && now_s() - t0 > timeout_s) {
            int peer = op->peer;
            bool send = op->send;
            qs_nccl_op_free(op);
            qs_nccl_abort(c);
            return qs_error_set(err, QS_ERR_IO, "%s: the %s rank %d did not complete in %.0f s: NCCL communicator "
                                "aborted", c->name, send ? "send to" : "receive from", peer, timeout_s);
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

extern "C" qs_status qs_nccl_allreduce_sum(qs_nccl *c, void *buf, size_t n, bool f64, double timeout_s, qs_error *err)
{
    if (c->failed) return qs_error_set(err, QS_ERR_IO, "%s: the NCCL communicator failed earlier", c->name);
    QS_NCCL_CUDA(c, err, cudaSetDevice(c->device));
    QS_TRY(QS_NCCL_CALL(c, timeout_s, err,
                        L.AllReduce(buf, buf, n, f64 ? ncclFloat64 : ncclFloat32, ncclSum, c->comm, c->stream)));
    qs_nccl_op o = {NULL, -1, false};
    QS_NCCL_CUDA(c, err, cudaEventCreateWithFlags(&o.ev, cudaEventDisableTiming));
    cudaError_t e = cudaEventRecord(o.ev, c->stream);
    if (e != cudaSuccess) {
        cudaEventDestroy(o.ev);
        QS_NCCL_CUDA(c, err, e);
    }
    qs_nccl_op *op = (qs_nccl_op *)malloc(sizeof *op);
    if (!op) {
        cudaEventDestroy(o.ev);
        return qs_error_set(err, QS_ERR_NOMEM, "nccl op");
    }
    *op = o;
    return qs_nccl_wait(c, op, timeout_s, err);
}

extern "C" void qs_nccl_abort(qs_nccl *c)
{
    if (!c || !c->comm) return;
    c->failed = true;
    L.CommAbort(c->comm);
    c->comm = NULL;
}

extern "C" void qs_nccl_op_free(qs_nccl_op *op)
{
    if (!op) return;
    if (op->ev) cudaEventDestroy(op->ev);
    free(op);
}

extern "C" void qs_nccl_free(qs_nccl *c)
{
    if (!c) return;
    if (c->comm) {
        if (c->failed) L.CommAbort(c->comm);
        else {
            qs_error e;
            /* finalize flushes what is in flight; then destroy */
            if (QS_NCCL_CALL(c, 30.0, &e, L.CommFinalize(c->comm)) == QS_OK && c->comm) L.CommDestroy(c->comm);
            else if (c->comm) L.CommAbort(c->comm);
        }
    }
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

#endif /* QS_NO_NCCL_HEADER */
