/* test_comm_mpi.c — the MPI transport with real ranks: a ring of double-
 * buffered micro-batches split into several chunks, and the collectives.
 * Each rank checks what it received against the pattern the sender wrote. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workers/comm.h"

#define FAIL(...)                                  \
    do {                                           \
        fprintf(stderr, "rank %d: ", comm.rank);   \
        fprintf(stderr, __VA_ARGS__);              \
        fprintf(stderr, "\n");                     \
        comm.abort(comm.ctx, 1);                   \
    } while (0)

static float pattern(int sender, int batch, size_t i) { return (float)(sender * 1000003 + batch * 7919) + (float)(i % 4099); }

int main(int argc, char **argv)
{
    qs_comm_i comm;
    qs_error err;
    if (qs_comm_mpi_init(&argc, &argv, &comm, &err) != QS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    /* Force several chunks per message so the chunking path is exercised. */
    qs_comm_mpi_set_chunk_bytes(4096 + 12);
    enum { N = 10000, BATCHES = 5 };
    float *send[2], *recv[2];
    for (int b = 0; b < 2; b++) {
        send[b] = malloc(N * sizeof(float));
        recv[b] = malloc(N * sizeof(float));
    }
    int next = (comm.rank + 1) % comm.size, prev = (comm.rank + comm.size - 1) % comm.size;
    qs_comm_request sreq[2] = {0}, rreq[2] = {0};
    /* Double-buffered ring: batch k uses buffer k%2; its receive is posted
     * before batch k-1 is checked. */
    if (comm.irecv(comm.ctx, recv[0], N * sizeof(float), prev, 0, &rreq[0], &err)) FAIL("%s", err.msg);
    for (int k = 0; k < BATCHES; k++) {
        int b = k % 2;
        if (sreq[b].n && comm.wait(comm.ctx, &sreq[b], &err)) FAIL("%s", err.msg);
        for (size_t i = 0; i < N; i++) send[b][i] = pattern(comm.rank, k, i);
        if (comm.isend(comm.ctx, send[b], N * sizeof(float), next, k, &sreq[b], &err)) FAIL("%s", err.msg);
        if (k + 1 < BATCHES &&
            comm.irecv(comm.ctx, recv[1 - b], N * sizeof(float), prev, k + 1, &rreq[1 - b], &err))
            FAIL("%s", err.msg);
        if (comm.wait(comm.ctx, &rreq[b], &err)) FAIL("%s", err.msg);
        for (size_t i = 0; i < N; i++)
            if (recv[b][i] != pattern(prev, k, i)) FAIL("batch %d element %zu: got %g", k, i, recv[b][i]);
    }
    for (int b = 0; b < 2; b++)
        if (sreq[b].n && comm.wait(comm.ctx, &sreq[b], &err)) FAIL("%s", err.msg);

    double s[3] = {comm.rank, 1.0, 0.5 * comm.rank};
    if (comm.allreduce_sum_f64(comm.ctx, s, 3, &err)) FAIL("%s", err.msg);
    double want = comm.size * (comm.size - 1) / 2.0;
    if (s[0] != want || s[1] != comm.size || s[2] != 0.5 * want) FAIL("allreduce sum %g %g %g", s[0], s[1], s[2]);
    int64_t m[2] = {comm.rank == 1 ? 7 : 0, -comm.rank};
    if (comm.allreduce_max_i64(comm.ctx, m, 2, &err)) FAIL("%s", err.msg);
    if (m[0] != 7 || m[1] != 0) FAIL("allreduce max %lld %lld", (long long)m[0], (long long)m[1]);
    char msg[32] = {0};
    if (comm.rank == comm.size - 1) strcpy(msg, "from the last rank");
    if (comm.bcast(comm.ctx, msg, sizeof msg, comm.size - 1, &err)) FAIL("%s", err.msg);
    if (strcmp(msg, "from the last rank") != 0) FAIL("bcast got '%s'", msg);
    if (comm.barrier(comm.ctx, &err)) FAIL("%s", err.msg);
    for (int b = 0; b < 2; b++) {
        free(send[b]);
        free(recv[b]);
    }
    if (comm.rank == 0) printf("comm_mpi: %d ranks ok\n", comm.size);
    qs_comm_mpi_finalize(&comm);
    return 0;
}
