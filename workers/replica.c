/* replica.c — replicas inside a stage: chunk and row ownership, the Hessian
 * sum over the fixed chunk tree, the stage's broadcast and all-gather
 * (replica.h says why the tree makes every decomposition give the same bits). */
#include "workers/replica.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/hessian.h"
#include "kernels/tensor.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- ownership -------------------------------------------------------------------------- */

int64_t qs_replica_chunk_begin(int64_t chunks, int replicas, int i)
{
    if (replicas < 1) replicas = 1;
    return (int64_t)((__int128)chunks * i / replicas);
}

int qs_replica_of_chunk(int64_t chunks, int replicas, int64_t c)
{
    if (replicas < 1) return 0;
    /* the last replica whose first chunk is <= c */
    int i = (int)((__int128)c * replicas / (chunks > 0 ? chunks : 1));
    if (i >= replicas) i = replicas - 1;
    while (i > 0 && qs_replica_chunk_begin(chunks, replicas, i) > c) i--;
    while (i + 1 < replicas && qs_replica_chunk_begin(chunks, replicas, i + 1) <= c) i++;
    return i;
}

void qs_replica_rows(int64_t rows, int replicas, int i, int64_t *r0, int64_t *r1)
{
    if (replicas < 1) replicas = 1;
    int64_t units = (rows + QS_REPLICA_ROW_UNIT - 1) / QS_REPLICA_ROW_UNIT;
    int64_t u0 = units * i / replicas, u1 = units * (i + 1) / replicas;
    *r0 = u0 * QS_REPLICA_ROW_UNIT < rows ? u0 * QS_REPLICA_ROW_UNIT : rows;
    *r1 = u1 * QS_REPLICA_ROW_UNIT < rows ? u1 * QS_REPLICA_ROW_UNIT : rows;
}

/* ---- the chunk tree ------------------------------------------------------------------------ */

int64_t qs_chunk_tree_mid(int64_t lo, int64_t hi)
{
    int64_t p = 1;
    while (2 * p < hi - lo) p *= 2;
    return lo + p;
}

bool qs_chunk_tree_is_node(int64_t chunks, int64_t lo, int64_t hi)
{
    int64_t a = 0, b = chunks;
    for (;;) {
        if (a == lo && b == hi) return true;
        if (b - a < 2 || lo < a || hi > b) return false;
        int64_t m = qs_chunk_tree_mid(a, b);
        if (hi <= m) b = m;
        else if (lo >= m) a = m;
        else return false;
    }
}

/* ---- the group's messages -------------------------------------------------------------------- */

static qs_status group_wait(qs_replica_group *g, qs_comm_request *req, qs_error *err)
{
    if (g->wait) return g->wait(g->wait_ctx, req, err);
    return g->comm->wait(g->comm->ctx, req, err);
}

static int rank_of(const qs_replica_group *g, int replica) { return g->first_rank + replica; }

static qs_status send_to(qs_replica_group *g, const void *buf, size_t bytes, int replica, int tag, qs_error *err)
{
    double t0 = now();
    qs_comm_request req = {0};
    qs_status st = g->comm->isend(g->comm->ctx, buf, bytes, rank_of(g, replica), tag, &req, err);
    if (st == QS_OK) st = group_wait(g, &req, err);
    g->seconds += now() - t0;
    return st;
}

static qs_status recv_from(qs_replica_group *g, void *buf, size_t bytes, int replica, int tag, qs_error *err)
{
    double t0 = now();
    qs_comm_request req = {0};
    qs_status st = g->comm->irecv(g->comm->ctx, buf, bytes, rank_of(g, replica), tag, &req, err);
    if (st == QS_OK) st = group_wait(g, &req, err);
    g->seconds += now() - t0;
    return st;
}

qs_status qs_replica_bcast(qs_replica_group *g, void *buf, size_t bytes, int tag, qs_error *err)
{
    if (!g || g->count <= 1) return QS_OK;
    int r = g->index, D = g->count, mask = 1;
    /* binomial tree from replica 0: receive from the parent, then send to the children */
    while (mask < D) {
        if (r & mask) {
            QS_TRY(recv_from(g, buf, bytes, r - mask, tag, err));
            break;
        }
        mask <<= 1;
    }
    for (mask >>= 1; mask > 0; mask >>= 1)
        if (r + mask < D) QS_TRY(send_to(g, buf, bytes, r + mask, tag, err));
    return QS_OK;
}

qs_status qs_replica_allgather(qs_replica_group *g, void *const *bufs, const size_t *bytes, int tag, qs_error *err)
{
    if (!g || g->count <= 1) return QS_OK;
    int D = g->count;
    qs_comm_request *req = calloc((size_t)(2 * D), sizeof *req);
    if (!req) return qs_error_set(err, QS_ERR_NOMEM, "replica all-gather: %d requests", 2 * D);
    double t0 = now();
    qs_status st = QS_OK;
    /* every receive first, then every send: no pair waits on the other's order */
    for (int j = 0; j < D && st == QS_OK; j++)
        if (j != g->index && bytes[j])
            st = g->comm->irecv(g->comm->ctx, bufs[j], bytes[j], rank_of(g, j), tag, &req[j], err);
    for (int j = 0; j < D && st == QS_OK; j++)
        if (j != g->index && bytes[g->index])
            st = g->comm->isend(g->comm->ctx, bufs[g->index], bytes[g->index], rank_of(g, j), tag, &req[D + j], err);
    for (int k = 0; k < 2 * D && st == QS_OK; k++)
        if (req[k].n) st = group_wait(g, &req[k], err);
    if (st != QS_OK)
        for (int k = 0; k < 2 * D; k++)
            if (req[k].n) g->comm->cancel(g->comm->ctx, &req[k]);
    free(req);
    g->seconds += now() - t0;
    return st;
}

/* ---- the chunk sum ----------------------------------------------------------------------------- */

static size_t nn_bytes(const qs_chunk_sum *s) { return (size_t)s->n * (size_t)s->n * sizeof(float); }

qs_status qs_chunk_sum_init(qs_chunk_sum *s, int64_t n, int64_t chunks, qs_error *err)
{
    memset(s, 0, sizeof *s);
    if (n <= 0 || chunks <= 0)
        return qs_error_set(err, QS_ERR_INPUT, "chunk sum: %lld features over %lld chunks, expected > 0", (long long)n,
                            (long long)chunks);
    s->n = n;
    s->chunks = chunks;
    return QS_OK;
}

bool qs_chunk_sum_active(const qs_chunk_sum *s) { return s->n > 0; }

void qs_chunk_sum_free(qs_chunk_sum *s)
{
    for (int i = 0; i < s->top; i++) qs_free(s->stack[i].sum);
    for (int i = 0; i < s->n_pool; i++) qs_free(s->pool[i]);
    memset(s, 0, sizeof *s);
}

static float *take_buffer(qs_chunk_sum *s)
{
    float *b = s->n_pool ? s->pool[--s->n_pool] : qs_malloc(nn_bytes(s));
    if (b && s->top + 1 > s->peak) s->peak = s->top + 1;
    return b;
}

static void give_buffer(qs_chunk_sum *s, float *b)
{
    if (!b) return;
    if (s->n_pool < QS_CHUNK_TREE_MAX_DEPTH) s->pool[s->n_pool++] = b;
    else qs_free(b);
}

/* a += b on the upper triangle: the tree's one addition */
static void add_upper(float *a, const float *b, int64_t n)
{
#pragma omp parallel for schedule(dynamic, 16) if (n >= 512)
    for (int64_t i = 0; i < n; i++) {
        float *x = a + i * n;
        const float *y = b + i * n;
        for (int64_t j = i; j < n; j++) x[j] += y[j];
    }
}

qs_status qs_chunk_sum_leaf(qs_chunk_sum *s, int64_t c, float **buf, qs_error *err)
{
    int64_t prev = s->top ? s->stack[s->top - 1].hi : -1;
    if (s->open || c < 0 || c >= s->chunks || (prev >= 0 && c != prev))
        return qs_error_set(err, QS_ERR_INTERNAL, "chunk sum: chunk %lld after chunk %lld (of %lld), expected the next",
                            (long long)c, (long long)prev - 1, (long long)s->chunks);
    if (s->top >= QS_CHUNK_TREE_MAX_DEPTH)
        return qs_error_set(err, QS_ERR_INTERNAL, "chunk sum: stack of %d nodes is full", s->top);
    float *b = take_buffer(s);
    if (!b)
        return qs_error_set(err, QS_ERR_NOMEM, "Hessian chunk sum: cannot allocate [%lld,%lld] f32 (%d held)",
                            (long long)s->n, (long long)s->n, s->top);
    s->stack[s->top++] = (qs_chunk_node){c, c + 1, b};
    s->open = true;
    *buf = b;
    return QS_OK;
}

/* Adds the top two while they are the two children of a node. */
static void merge_top(qs_chunk_sum *s)
{
    while (s->top >= 2) {
        qs_chunk_node *l = &s->stack[s->top - 2], *r = &s->stack[s->top - 1];
        if (l->hi != r->lo || !qs_chunk_tree_is_node(s->chunks, l->lo, r->hi)) break;
        add_upper(l->sum, r->sum, s->n);
        l->hi = r->hi;
        give_buffer(s, r->sum);
        s->top--;
    }
}

void qs_chunk_sum_close(qs_chunk_sum *s, int64_t samples)
{
    s->open = false;
    s->samples += samples;
    merge_top(s);
}

qs_status qs_chunk_sum_add(qs_chunk_sum *s, const qs_backend_i *be, int64_t c, const float *x, int64_t m,
                           int64_t ldx, qs_error *err)
{
    if (ldx < s->n)
        return qs_error_set(err, QS_ERR_INPUT, "chunk sum: leading dimension %lld, expected >= %lld", (long long)ldx,
                            (long long)s->n);
    float *b;
    QS_TRY(qs_chunk_sum_leaf(s, c, &b, err));
    if (m > 0) be->ssyrk_t(be->ctx, s->n, m, 1.0f, x, ldx, 0.0f, b, s->n);
    else memset(b, 0, nn_bytes(s));
    qs_chunk_sum_close(s, m);
    return QS_OK;
}

qs_status qs_chunk_sum_add_bf16(qs_chunk_sum *s, const qs_backend_i *be, int64_t c, const uint16_t *x, int64_t m,
                                int64_t ldx, qs_error *err)
{
    float *b;
    QS_TRY(qs_chunk_sum_leaf(s, c, &b, err));
    memset(b, 0, nn_bytes(s));
    /* the bf16 Hessian's raw sum on a zeroed buffer: its GEMMs add onto zeros */
    qs_hessian h;
    memset(&h, 0, sizeof h);
    h.n = s->n;
    h.h32 = b;
    qs_status st = qs_hessian_add_bf16(&h, be, x, m, ldx, err);
    qs_chunk_sum_close(s, m);
    return st;
}

/* Where node [lo, hi) ends up: the replica of its first chunk. */
typedef struct tree_walk {
    qs_chunk_sum *s;
    qs_replica_group *g;
    int tag;
    int D, me;
    float *held;    /* the node this replica holds at the current point of the walk (its sum) */
} tree_walk;

static int64_t replica_end(const tree_walk *w, int r) { return qs_replica_chunk_begin(w->s->chunks, w->D, r + 1); }

/* Finds this replica's stack entry for a node inside its range. */
static float *local_node(qs_chunk_sum *s, int64_t lo, int64_t hi)
{
    for (int i = 0; i < s->top; i++)
        if (s->stack[i].lo == lo && s->stack[i].hi == hi) return s->stack[i].sum;
    return NULL;
}

/* Post-order walk of the tree; returns the owner of [lo, hi) and, when that
 * is this replica, the node's sum in *sum. Every replica walks the same tree
 * and acts only where it is the sender or the receiver, in the same order. */
static qs_status walk(tree_walk *w, int64_t lo, int64_t hi, int *owner, float **sum, qs_error *err)
{
    int r = qs_replica_of_chunk(w->s->chunks, w->D, lo);
    *sum = NULL;
    if (hi <= replica_end(w, r)) {
        /* inside one replica's range: that replica computed it while streaming */
        *owner = r;
        if (r == w->me) {
            *sum = local_node(w->s, lo, hi);
            if (!*sum)
                return qs_error_set(err, QS_ERR_INTERNAL, "chunk sum: node [%lld, %lld) missing on replica %d",
                                    (long long)lo, (long long)hi, w->me);
        }
        return QS_OK;
    }
    int64_t mid = qs_chunk_tree_mid(lo, hi);
    int ol, orr;
    float *sl, *sr;
    QS_TRY(walk(w, lo, mid, &ol, &sl, err));
    QS_TRY(walk(w, mid, hi, &orr, &sr, err));
    *owner = ol;
    size_t bytes = nn_bytes(w->s);
    if (ol == w->me && orr == w->me) {
        add_upper(sl, sr, w->s->n);
    } else if (orr == w->me) {
        QS_TRY(send_to(w->g, sr, bytes, ol, w->tag, err));
    } else if (ol == w->me) {
        float *tmp = take_buffer(w->s);
        if (!tmp) return qs_error_set(err, QS_ERR_NOMEM, "Hessian chunk sum: receive buffer");
        qs_status st = recv_from(w->g, tmp, bytes, orr, w->tag, err);
        if (st == QS_OK) add_upper(sl, tmp, w->s->n);
        give_buffer(w->s, tmp);
        QS_TRY(st);
    }
    if (ol == w->me) *sum = sl;
    return QS_OK;
}

qs_status qs_chunk_sum_finish(qs_chunk_sum *s, qs_replica_group *g, int tag, float *h_out, int64_t *samples_out,
                              qs_error *err)
{
    int D = g ? g->count : 1, me = g ? g->index : 0;
    if (s->open) return qs_error_set(err, QS_ERR_INTERNAL, "chunk sum: a leaf is still open");
    int64_t want_lo = qs_replica_chunk_begin(s->chunks, D, me), want_hi = qs_replica_chunk_begin(s->chunks, D, me + 1);
    if (want_hi > want_lo && (s->top == 0 || s->stack[0].lo != want_lo || s->stack[s->top - 1].hi != want_hi))
        return qs_error_set(err, QS_ERR_INTERNAL, "chunk sum: replica %d holds chunks [%lld, %lld), expected [%lld, %lld)",
                            me, s->top ? (long long)s->stack[0].lo : -1LL,
                            s->top ? (long long)s->stack[s->top - 1].hi : -1LL, (long long)want_lo, (long long)want_hi);
    tree_walk w = {s, g, tag, D, me, NULL};
    int owner;
    float *root = NULL;
    QS_TRY(walk(&w, 0, s->chunks, &owner, &root, err));
    int64_t n = s->n;
    /* the root's sum and the sample count to every replica */
    float *sum = root;
    if (!sum) {
        sum = take_buffer(s);
        if (!sum) return qs_error_set(err, QS_ERR_NOMEM, "Hessian chunk sum: broadcast buffer");
    }
    int64_t samples = s->samples;
    if (g && g->count > 1) {
        /* token rows over all chunks: a sum of integers, exact in any order */
        int64_t *all = calloc((size_t)D, sizeof *all);
        void **bufs = calloc((size_t)D, sizeof *bufs);
        size_t *bytes = calloc((size_t)D, sizeof *bytes);
        qs_status st = all && bufs && bytes ? QS_OK : qs_error_set(err, QS_ERR_NOMEM, "chunk sum: counts");
        for (int j = 0; j < D && st == QS_OK; j++) {
            bufs[j] = &all[j];
            bytes[j] = sizeof all[j];
        }
        if (st == QS_OK) {
            all[me] = s->samples;
            st = qs_replica_allgather(g, bufs, bytes, tag + 1, err);
        }
        samples = 0;
        for (int j = 0; j < D && st == QS_OK; j++) samples += all[j];
        free(all), free(bufs), free(bytes);
        if (st == QS_OK) st = qs_replica_bcast(g, sum, nn_bytes(s), tag + 2, err);
        if (st != QS_OK) {
            if (sum != root) give_buffer(s, sum);
            return st;
        }
    }
    /* H = 2/samples · Σ, mirrored: the raw-sum reader of kernels/hessian */
    qs_hessian h;
    memset(&h, 0, sizeof h);
    h.n = n;
    h.count = samples;
    h.h32 = sum;
    h.raw = true;
    qs_hessian_get_f32(&h, h_out);
    if (sum != root) give_buffer(s, sum);
    *samples_out = samples;
    /* release everything: the next stage's sum starts empty */
    for (int i = 0; i < s->top; i++) give_buffer(s, s->stack[i].sum);
    s->top = 0;
    return QS_OK;
}

/* ---- a quantized linear from its row slices ---------------------------------------------------- */

/* One replica's slice on the wire: codes [r, cols] u8, scales [groups, r] f32,
 * zeros [groups, r] i32, g_idx [cols] i32, damp and dead columns (2 doubles),
 * then n_extra doubles. The last replica always has rows (it ends at `rows`),
 * so its g_idx and damping are the ones kept (every replica's are the same). */
#define GATHER_MAX_EXTRA 8

static size_t slice_bytes(int64_t r, int64_t cols, int64_t groups, int n_extra)
{
    return (size_t)(r * cols) + (size_t)(groups * r) * (sizeof(float) + sizeof(int32_t)) +
           (size_t)cols * sizeof(int32_t) + (size_t)(2 + n_extra) * sizeof(double);
}

qs_status qs_replica_gather_result(qs_replica_group *g, const qs_quant_result *mine, qs_quant_result *full,
                                   double *extra, int n_extra, int tag, qs_error *err)
{
    int D = g ? g->count : 1, me = g ? g->index : 0;
    if (n_extra > GATHER_MAX_EXTRA)
        return qs_error_set(err, QS_ERR_INTERNAL, "replica gather: %d extras, at most %d", n_extra, GATHER_MAX_EXTRA);
    int64_t rows = full->rows, cols = full->cols, groups = full->groups;
    void **bufs = calloc((size_t)D, sizeof *bufs);
    size_t *bytes = calloc((size_t)D, sizeof *bytes);
    qs_status st = bufs && bytes ? QS_OK : qs_error_set(err, QS_ERR_NOMEM, "replica gather");
    for (int j = 0; j < D && st == QS_OK; j++) {
        int64_t r0, r1;
        qs_replica_rows(rows, D, j, &r0, &r1);
        bytes[j] = slice_bytes(r1 - r0, cols, groups, n_extra);
        bufs[j] = calloc(1, bytes[j]);
        if (!bufs[j]) st = qs_error_set(err, QS_ERR_NOMEM, "replica gather: %zu bytes", bytes[j]);
    }
    if (st == QS_OK) {
        /* pack this replica's slice (an empty one sends its extras only) */
        int64_t r = mine->rows;
        unsigned char *p = bufs[me];
        if (r > 0) {
            memcpy(p, mine->codes, (size_t)(r * cols));
            p += r * cols;
            memcpy(p, mine->scales, (size_t)(groups * r) * sizeof(float));
            p += (size_t)(groups * r) * sizeof(float);
            memcpy(p, mine->zeros, (size_t)(groups * r) * sizeof(int32_t));
            p += (size_t)(groups * r) * sizeof(int32_t);
            memcpy(p, mine->g_idx, (size_t)cols * sizeof(int32_t));
        }
        p += (size_t)cols * sizeof(int32_t);
        double d[2 + GATHER_MAX_EXTRA] = {mine->damp_abs, (double)mine->dead_columns};
        for (int k = 0; k < n_extra; k++) d[2 + k] = extra[k];
        memcpy(p, d, (size_t)(2 + n_extra) * sizeof(double));
        st = qs_replica_allgather(g, bufs, bytes, tag, err);
    }
    for (int k = 0; k < n_extra && st == QS_OK; k++) extra[k] = 0.0;
    for (int j = 0; j < D && st == QS_OK; j++) {
        int64_t r0, r1;
        qs_replica_rows(rows, D, j, &r0, &r1);
        int64_t r = r1 - r0;
        const unsigned char *p = bufs[j];
        if (r > 0) {
            memcpy(full->codes + r0 * cols, p, (size_t)(r * cols));
            p += r * cols;
            const unsigned char *sc = p, *ze = p + (size_t)(groups * r) * sizeof(float);
            for (int64_t gi = 0; gi < groups; gi++) {
                memcpy(full->scales + gi * rows + r0, sc + (size_t)(gi * r) * sizeof(float), (size_t)r * sizeof(float));
                memcpy(full->zeros + gi * rows + r0, ze + (size_t)(gi * r) * sizeof(int32_t),
                       (size_t)r * sizeof(int32_t));
            }
            p += (size_t)(groups * r) * (sizeof(float) + sizeof(int32_t));
            if (j == D - 1) memcpy(full->g_idx, p, (size_t)cols * sizeof(int32_t));
        }
        p += (size_t)cols * sizeof(int32_t);
        double d[2 + GATHER_MAX_EXTRA];
        memcpy(d, p, (size_t)(2 + n_extra) * sizeof(double));
        if (j == D - 1) {
            full->damp_abs = d[0];
            full->dead_columns = (int64_t)d[1];
        }
        for (int k = 0; k < n_extra; k++) extra[k] += d[2 + k]; /* in replica order: the same sum on every replica */
    }
    if (st == QS_OK) qs_quant_dequantize(full, full->q);
    for (int j = 0; bufs && j < D; j++) free(bufs[j]);
    free(bufs);
    free(bytes);
    return st;
}
