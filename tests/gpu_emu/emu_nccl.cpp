/* emu_nccl.cpp — NCCL for the CUDA emulator, over MPI, and
 * kernels/cuda/nccl_cuda.cu built on it (tests/gpu_emu/nccl.h).
 *
 * A communicator is MPI_COMM_WORLD split into a communicator of its own
 * (every rank of the world must join, as every rank of a qshard run does);
 * init checks that all ranks got the same unique id, and answers
 * ncclInProgress once (a non-blocking communicator), so the transport's
 * polling runs. ncclSend/ncclRecv post MPI_Isend/MPI_Irecv (one tag: MPI
 * keeps the order of messages between two ranks, as NCCL matches them in
 * posting order) and hand the request to the emulated stream; the event
 * recorded after them completes when the request does. The buffers must be
 * emulated device memory. Test code only. */
/* the C API only (no C++ bindings to link) */
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nccl.h"

struct qs_emu_nccl_comm {
    MPI_Comm comm;
    int rank, size;
    bool aborted;
    int init_polls; /* ncclInProgress answers left after init */
};

static size_t type_size(ncclDataType_t t) { return t == ncclFloat64 ? 8 : t == ncclFloat32 ? 4 : 1; }

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        id->internal[i] = (char)(x & 0xff);
    }
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t *config)
{
    int inited = 0, wr = -1, ws = 0;
    MPI_Initialized(&inited);
    if (!inited) return ncclSystemError;
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    if (wr != rank || ws != nranks) return ncclInvalidArgument;
    /* every rank must have the same id */
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) h = (h ^ (unsigned char)id.internal[i]) * 1099511628211ull;
    uint64_t lo = h, hi = h;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (lo != hi) return ncclInvalidUsage;
    qs_emu_nccl_comm *c = new qs_emu_nccl_comm();
    if (MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &c->comm) != MPI_SUCCESS) {
        delete c;
        return ncclSystemError;
    }
    c->rank = rank, c->size = nranks;
    *comm = c;
    if (config && !config->blocking) {
        c->init_polls = 2;
        return ncclInProgress;
    }
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *r)
{
    if (comm->aborted) *r = ncclInvalidUsage;
    else if (comm->init_polls > 0) *r = --comm->init_polls > 0 ? ncclInProgress : ncclSuccess;
    else *r = ncclSuccess;
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    comm->aborted = true; /* requests in flight are dropped by their events; the MPI communicator leaks */
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return comm->aborted ? ncclInvalidUsage : ncclSuccess; }

ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    if (!comm->aborted) MPI_Comm_free(&comm->comm);
    delete comm;
    return ncclSuccess;
}

/* ---- point to point: MPI requests completed through the stream ---------------- */

static int req_test(void *arg)
{
    int done = 0;
    MPI_Test((MPI_Request *)arg, &done, MPI_STATUS_IGNORE);
    return done;
}
static void req_wait(void *arg) { MPI_Wait((MPI_Request *)arg, MPI_STATUS_IGNORE); }
static void req_drop(void *arg)
{
    MPI_Request *r = (MPI_Request *)arg;
    if (*r != MPI_REQUEST_NULL) {
        MPI_Cancel(r);
        MPI_Request_free(r);
    }
    free(r);
}

static ncclResult_t p2p(bool send, void *buf, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                        cudaStream_t s)
{
    size_t bytes = count * type_size(t);
    if (comm->aborted) return ncclInvalidUsage;
    if (peer < 0 || peer >= comm->size || peer == comm->rank || bytes > (size_t)INT32_MAX) return ncclInvalidArgument;
    if (bytes && !qs_emu_is_device(buf, bytes)) {
        fprintf(stderr, "gpu emulator: nccl%s of %zu bytes from memory that is not the device's\n",
                send ? "Send" : "Recv", bytes);
        return ncclInvalidArgument;
    }
    MPI_Request *r = (MPI_Request *)malloc(sizeof *r);
    int rc = send ? MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, 7, comm->comm, r)
                  : MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, 7, comm->comm, r);
    if (rc != MPI_SUCCESS) {
        free(r);
        return ncclSystemError;
    }
    qs_emu_stream_add_async(s, qs_emu_async{req_test, req_wait, req_drop, r});
    return ncclSuccess;
}

ncclResult_t ncclSend(const void *buf, size_t count, ncclDataType_t t, int peer, ncclComm_t comm, cudaStream_t s)
{
    return p2p(true, (void *)buf, count, t, peer, comm, s);
}

ncclResult_t ncclRecv(void *buf, size_t count, ncclDataType_t t, int peer, ncclComm_t comm, cudaStream_t s)
{
    return p2p(false, buf, count, t, peer, comm, s);
}

ncclResult_t ncclAllReduce(const void *sendbuf, void *recvbuf, size_t count, ncclDataType_t t, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t s)
{
    if (comm->aborted) return ncclInvalidUsage;
    if (t == ncclChar || op != ncclSum || count > (size_t)INT32_MAX) return ncclInvalidArgument;
    if (!qs_emu_is_device(recvbuf, count * type_size(t))) return ncclInvalidArgument;
    cudaStreamSynchronize(s); /* after what the stream has in flight */
    MPI_Datatype dt = t == ncclFloat64 ? MPI_DOUBLE : MPI_FLOAT;
    int rc = MPI_Allreduce(sendbuf == recvbuf ? MPI_IN_PLACE : sendbuf, recvbuf, (int)count, dt, MPI_SUM, comm->comm);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

ncclResult_t ncclGroupStart(void) { return ncclSuccess; }
ncclResult_t ncclGroupEnd(void) { return ncclSuccess; }

const char *ncclGetErrorString(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclSystemError: return "unhandled system error";
    case ncclInProgress: return "operation in progress";
    default: return "emulated NCCL error";
    }
}

const char *ncclGetLastError(ncclComm_t comm) { return ""; }

/* the transport's NCCL calls, built on the above */
#include "kernels/cuda/nccl_cuda.cu"
