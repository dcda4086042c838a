/* replica.h — data-parallel replicas inside a stage: which calibration
 * chunks and GPTQ rows a replica owns, the Hessian sum over a fixed tree of
 * chunks, and the stage's own collectives (point to point over qs_comm_i).
 *
 * Layout (the planner's, schedulers/partition.h): P = S·D ranks, stage s is
 * ranks [s·D, s·D + D), replica i of stage s is rank s·D + i; it receives its
 * rows from rank (s−1)·D + i and hands them to rank (s+1)·D + i.
 *
 * Chunks. The calibration rows are cut into K = ceil(N / M) chunks of M rows
 * (M = --micro-batch, the unit activations travel in); replica i holds chunks
 * [i·K/D, (i+1)·K/D). Every number a chunk produces (its forward, its
 * partial Hessian Xᵀ X) depends on the chunk's rows alone, never on which
 * rank computes it.
 *
 * The Hessian sum (why exports do not depend on S, D or P). Floating-point
 * addition is not associative, so the partial sums of the K chunks are added
 * along one binary tree that depends on K only: node [lo, hi) with hi − lo ≥ 2
 * is left [lo, mid) + right [mid, hi), mid = lo + the largest power of two
 * below hi − lo (the left child is always a full aligned power-of-two block).
 * A replica streams its chunks into a stack, adding two neighbours as soon as
 * they form a tree node, so it holds only the largest nodes inside its chunk
 * range (at most ceil(log2 K) + 1 partial sums of n² floats). The nodes that
 * straddle replicas are then added by the replica that owns the node's first
 * chunk, after receiving the right child from the replica that holds it, and
 * the root (on replica 0) is broadcast to the stage. D = 1 runs the same tree
 * locally, so every D gives the same bits. (IEEE addition is commutative, so
 * only the tree matters, not which side sends.)
 *
 * GPTQ rows. The rows (output features) of a linear are independent given
 * H⁻¹; replica i quantizes rows [r0, r1) in whole tiles of QS_REPLICA_ROW_UNIT
 * rows (the GPTQ sweep's SIMD tile), every replica factoring H itself (the
 * same bits on each), and the slices are exchanged so that every replica
 * holds the whole quantized linear.
 */
#ifndef QS_REPLICA_H
#define QS_REPLICA_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/quant_opts.h"
#include "kernels/status.h"
#include "workers/comm.h"

#define QS_REPLICA_ROW_UNIT 16     /* GPTQ rows are split in whole tiles of this many rows */
#define QS_CHUNK_TREE_MAX_DEPTH 64 /* nodes kept on a replica's stack: log2(K) + 2 */

/* ---- who owns what (pure) ------------------------------------------------------------- */

/* First chunk of replica i of D over K chunks: i·K/D (replica D: K). */
int64_t qs_replica_chunk_begin(int64_t chunks, int replicas, int i);
/* Replica holding chunk c. */
int qs_replica_of_chunk(int64_t chunks, int replicas, int64_t c);
/* GPTQ rows [*r0, *r1) of replica i: whole units of QS_REPLICA_ROW_UNIT rows. */
void qs_replica_rows(int64_t rows, int replicas, int i, int64_t *r0, int64_t *r1);

/* The tree over chunks [0, K): the split point of node [lo, hi) (hi − lo ≥ 2),
 * and whether [lo, hi) is a node of the tree of K chunks. */
int64_t qs_chunk_tree_mid(int64_t lo, int64_t hi);
bool qs_chunk_tree_is_node(int64_t chunks, int64_t lo, int64_t hi);

/* ---- the stage's replicas and their messages ------------------------------------------ */

/* Completes a request (a caller's wait can poll for stop requests). */
typedef qs_status (*qs_replica_wait_fn)(void *ctx, qs_comm_request *req, qs_error *err);

typedef struct qs_replica_group {
    const qs_comm_i *comm;
    int first_rank;             /* rank of replica 0 of this stage */
    int index;                  /* this rank's replica, 0..count-1 */
    int count;                  /* D */
    qs_replica_wait_fn wait;    /* NULL: comm->wait */
    void *wait_ctx;
    double seconds;             /* spent in this group's transfers */
} qs_replica_group;

/* Replica 0's buffer to every replica (binomial tree). */
qs_status qs_replica_bcast(qs_replica_group *g, void *buf, size_t bytes, int tag, qs_error *err);

/* Every replica's piece to every replica: piece j (bytes[j]) lands in
 * bufs[j]; this replica's own piece is bufs[index] (not copied). */
qs_status qs_replica_allgather(qs_replica_group *g, void *const *bufs, const size_t *bytes, int tag, qs_error *err);

/* ---- the Hessian sum over the chunk tree ----------------------------------------------- */

typedef struct qs_chunk_node {
    int64_t lo, hi;             /* chunks [lo, hi) */
    float *sum;                 /* Σ over those chunks of Xᵀ X, upper triangle of [n, n] */
} qs_chunk_node;

typedef struct qs_chunk_sum {
    int64_t n;                  /* features */
    int64_t chunks;             /* K */
    int64_t samples;            /* token rows added on this replica */
    qs_chunk_node stack[QS_CHUNK_TREE_MAX_DEPTH];
    int top;                    /* entries on the stack */
    float *pool[QS_CHUNK_TREE_MAX_DEPTH]; /* spare n² buffers */
    int n_pool;
    int peak;                   /* most n² buffers held at once */
    bool open;                  /* a leaf was handed out and not closed */
} qs_chunk_sum;

qs_status qs_chunk_sum_init(qs_chunk_sum *s, int64_t n, int64_t chunks, qs_error *err);
void qs_chunk_sum_free(qs_chunk_sum *s);
bool qs_chunk_sum_active(const qs_chunk_sum *s);

/* The buffer chunk c's partial sum goes into (upper triangle, ldc = n; its
 * contents are undefined: write it with beta = 0, or zero it first). Chunks
 * come in increasing order; qs_chunk_sum_close adds what can be added. */
qs_status qs_chunk_sum_leaf(qs_chunk_sum *s, int64_t c, float **buf, qs_error *err);
void qs_chunk_sum_close(qs_chunk_sum *s, int64_t samples);

/* Chunk c's partial from f32 samples x [m, n] (ld ldx): one syrk, beta 0;
 * from bf16 samples: the bf16 Hessian's accumulating GEMMs on a zeroed leaf. */
qs_status qs_chunk_sum_add(qs_chunk_sum *s, const qs_backend_i *be, int64_t c, const float *x, int64_t m,
                           int64_t ldx, qs_error *err);
qs_status qs_chunk_sum_add_bf16(qs_chunk_sum *s, const qs_backend_i *be, int64_t c, const uint16_t *x, int64_t m,
                                int64_t ldx, qs_error *err);

/* Adds the nodes that straddle replicas (g NULL: one replica holding every
 * chunk) and gives every replica the full H = 2/samples · Σ as a symmetric
 * [n, n] f32 matrix in h_out; *samples_out = token rows over all chunks
 * (every replica's). The sum's buffers are released. */
qs_status qs_chunk_sum_finish(qs_chunk_sum *s, qs_replica_group *g, int tag, float *h_out, int64_t *samples_out,
                              qs_error *err);

/* ---- a quantized linear from its replicas' row slices ---------------------------------- */

/* Replica index's rows [r0, r1) of a quantized linear are in `mine` (a result
 * of r1 − r0 rows; also for an empty slice); fills `full` (rows × cols,
 * initialized by the caller) on every replica, q by dequantization (the same
 * bits GPTQ wrote), and sums the replicas' `extra` doubles in replica order
 * (losses). */
qs_status qs_replica_gather_result(qs_replica_group *g, const qs_quant_result *mine, qs_quant_result *full,
                                   double *extra, int n_extra, int tag, qs_error *err);

#endif
