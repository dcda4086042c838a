/* stage.c — one rank's part of a quantization run (see stage.h). */
#include "workers/stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/hessian.h"
#include "kernels/quant.h"
#include "pipeline/formats/safetensors.h"
#include "workers/model.h"
#include "workers/replica.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wall-clock time for the per-block timeline (comparable across hosts). */
static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- per-rank state -------------------------------------------------------- */

typedef struct stage_state {
    const qs_stage_args *a;
    qs_stage_timing *t;
    int64_t hidden;
    int64_t n_micro;
    int64_t k0, k1;             /* this replica's micro-batches (calibration chunks) [k0, k1) */
    int64_t rows_local;         /* their rows: what acts/next/carry hold */
    qs_replica_group grp;       /* the stage's replicas (count 1: this rank alone) */
    size_t row_floats;          /* floats per calibration row: seq × hidden */
    float *acts, *next;         /* [rows, seq, hidden] */
    float *carry;               /* [rows, seq, max(attention width, ffn)]: the stage input kept at boundaries 1, 3 */
    bool carry_tried;           /* allocated (or found impossible) once */
    qs_comm_request *send_req;  /* one per micro-batch */
    double t_start;
    qs_stage_timing blk_snap;   /* the timing when the current block's interval began */
    double blk_wall0;           /* and the wall clock then */
    /* OmniQuant's FP stream (NULL otherwise): this block's FP input, the next one's */
    float *fp_acts, *fp_next;
    qs_comm_request *fp_send_req;
    /* On a device backend acts, next, carry (and the pipelined FP input) are
     * device memory: the activations stay there from block to block, and
     * `host` [rows, seq, hidden] stages what the transport and the embedding
     * see (per micro-batch, at hand-off only). */
    bool dev;
    float *host;
    /* On a device: a linear's captured input copied to the host, where the
     * Hessian's chunk tree is summed (every run sums it there: the bytes'
     * independence of the decomposition rests on that one order). */
    float *cap_host;
    size_t cap_host_floats;
} stage_state;

static int64_t mb_first(const stage_state *s, int64_t k) { return k * s->a->micro_batch; }
static int64_t mb_rows(const stage_state *s, int64_t k)
{
    int64_t r = s->a->rows - mb_first(s, k);
    return r < s->a->micro_batch ? r : s->a->micro_batch;
}
/* Buffers hold this replica's rows only: micro-batch k starts at its offset from k0. */
static float *mb_ptr(const stage_state *s, float *buf, int64_t k)
{
    return buf + (size_t)(mb_first(s, k) - mb_first(s, s->k0)) * s->row_floats;
}
static size_t mb_bytes(const stage_state *s, int64_t k) { return (size_t)mb_rows(s, k) * s->row_floats * sizeof(float); }
/* Micro-batch k's slice of the carry buffer when it holds `cols` columns. */
static float *mb_carry(const stage_state *s, int64_t k, int64_t cols)
{
    return s->carry + (size_t)(mb_first(s, k) - mb_first(s, s->k0)) * (size_t)s->a->seq * (size_t)cols;
}

/* ---- the activation store: host memory, or the device's ----------------------------- */

static float *act_alloc(const stage_state *s, size_t floats)
{
    const qs_backend_i *be = s->a->be;
    return s->dev ? be->alloc(be->ctx, floats * sizeof(float)) : qs_malloc(floats * sizeof(float));
}

static void act_free(const stage_state *s, float *p)
{
    if (!p) return;
    if (s->dev) s->a->be->free(s->a->be->ctx, p);
    else qs_free(p);
}

static qs_status act_copy(const stage_state *s, float *dst, const float *src, size_t bytes, qs_error *err)
{
    if (s->dev) return s->a->be->copy(s->a->be->ctx, dst, src, bytes, err);
    memcpy(dst, src, bytes);
    return QS_OK;
}

/* Whether hand-offs go through the host: activations on a device and a
 * transport of host buffers (MPI; NCCL takes the device's own). */
static bool staged(const stage_state *s) { return s->dev && !s->a->comm->device_buffers; }

/* Where micro-batch k of `buf` is sent from / received into: buf itself, or
 * its slot of the host staging buffer. */
static float *xfer_ptr(const stage_state *s, float *buf, int64_t k) { return mb_ptr(s, staged(s) ? s->host : buf, k); }

/* Sends micro-batch k of buf (staged to the host first where it must be). */
static qs_status send_mb(stage_state *s, float *buf, int64_t k, int tag, qs_comm_request *req, qs_error *err)
{
    const qs_comm_i *c = s->a->comm;
    if (staged(s)) QS_TRY(act_copy(s, xfer_ptr(s, buf, k), mb_ptr(s, buf, k), mb_bytes(s, k), err));
    return c->isend(c->ctx, xfer_ptr(s, buf, k), mb_bytes(s, k), s->a->next_rank, tag, req, err);
}

/* A span on micro-batch rows: its pointers are the store's (device memory on a device). */
static qs_status span_mb(const stage_state *s, const qs_block *blk, int64_t rows, qs_block_span *sp,
                         const qs_block_hooks *hooks, qs_error *err)
{
    if (s->dev) return qs_block_forward_span_on(blk, s->a->be, rows, s->a->seq, sp, hooks, err);
    return qs_block_forward_span(blk, s->a->be, rows, s->a->seq, sp, hooks, err);
}

/* ---- Hessian capture --------------------------------------------------------- */

/* Each stage's Hessian is a sum over calibration chunks along a fixed tree
 * (workers/replica.h): chunk = micro-batch, so the bits do not depend on
 * which replica computed which chunk. */
typedef struct capture_ctx {
    qs_chunk_sum h[QS_BLOCK_STAGES];
    int64_t chunk;              /* the micro-batch the forward is running on */
    const qs_backend_i *be;     /* the host backend the chunk sums are computed with */
    stage_state *s;             /* on a device: where the captured input is copied to the host */
    double seconds;             /* spent in Hessian updates (for the per-block timing) */
} capture_ctx;

static void capture_init(capture_ctx *c, stage_state *s)
{
    memset(c, 0, sizeof *c);
    c->be = s->dev ? qs_backend_cpu() : s->a->be;
    c->s = s;
}

/* Linears of one stage share their input: accumulate once, on the first. In
 * bf16 compute the Hessian is made of the bf16 input the GEMMs read. */
static qs_status on_capture(void *ctx, const qs_block *blk, int idx, const float *x, const uint16_t *xb,
                            int64_t rows, int64_t in, qs_error *err)
{
    capture_ctx *c = ctx;
    int st = blk->lin[idx].stage;
    for (int j = 0; j < idx; j++)
        if (blk->lin[j].stage == st) return QS_OK;
    double t0 = now();
    stage_state *s = c->s;
    if (s && s->dev) {
        /* x is device memory (bf16 compute is refused on a device, so no xb) */
        size_t n = (size_t)(rows * in);
        if (n > s->cap_host_floats) {
            qs_free(s->cap_host);
            s->cap_host = qs_malloc(n * sizeof(float));
            s->cap_host_floats = s->cap_host ? n : 0;
            if (!s->cap_host)
                return qs_error_set(err, QS_ERR_NOMEM, "host copy of the input of %s (%lld × %lld)", blk->lin[idx].weight,
                                    (long long)rows, (long long)in);
        }
        QS_TRY(s->a->be->copy(s->a->be->ctx, s->cap_host, x, n * sizeof(float), err));
        x = s->cap_host;
    }
    qs_status rc = xb ? qs_chunk_sum_add_bf16(&c->h[st], c->be, c->chunk, xb, rows, in, err)
                      : qs_chunk_sum_add(&c->h[st], c->be, c->chunk, x, rows, in, err);
    c->seconds += now() - t0;
    return rc;
}

/* ---- stopping at a safe point ----------------------------------------------------- */

static bool stop_now(stage_state *s)
{
    const qs_comm_i *c = s->a->comm;
    if (s->a->stop_flag && *s->a->stop_flag) {
        c->announce_stop(c->ctx);
        return true;
    }
    if (c->stop_requested(c->ctx)) {
        if (s->a->stop_flag) *s->a->stop_flag = 1;
        return true;
    }
    return false;
}

/* Waits for req, polling so that a stop request is seen while waiting. */
static qs_status wait_or_stop(stage_state *s, qs_comm_request *req, qs_error *err)
{
    const qs_comm_i *c = s->a->comm;
    for (;;) {
        int done = 0;
        QS_TRY(c->test(c->ctx, req, &done, err));
        if (done) return QS_OK;
        if (stop_now(s)) {
            c->cancel(c->ctx, req);
            return qs_error_set(err, QS_ERR_INTERRUPTED, "stopped while waiting for rank %d", s->a->prev_rank);
        }
        struct timespec ts = {0, 200000}; /* 0.2 ms */
        nanosleep(&ts, NULL);
    }
}

/* The replicas' transfers wait the same way (a stop is seen while waiting). */
static qs_status group_wait(void *ctx, qs_comm_request *req, qs_error *err) { return wait_or_stop(ctx, req, err); }

/* ---- the pieces of a schedule --------------------------------------------------- */

static qs_status wait_sends(stage_state *s, qs_error *err)
{
    double t0 = now();
    qs_status st = QS_OK;
    for (int64_t k = 0; k < s->n_micro && st == QS_OK; k++)
        if (s->send_req[k].n) st = wait_or_stop(s, &s->send_req[k], err);
    for (int64_t k = 0; s->fp_send_req && k < s->n_micro && st == QS_OK; k++)
        if (s->fp_send_req[k].n) st = wait_or_stop(s, &s->fp_send_req[k], err);
    if (st != QS_OK)
        for (int64_t k = 0; k < s->n_micro; k++) {
            s->a->comm->cancel(s->a->comm->ctx, &s->send_req[k]);
            if (s->fp_send_req) s->a->comm->cancel(s->a->comm->ctx, &s->fp_send_req[k]);
        }
    s->t->comm += now() - t0;
    return st;
}

/* Receives all micro-batches into acts (double-buffered: two receives in
 * flight); `each` runs on micro-batch k while k+1 is arriving. */
static qs_status receive_all(stage_state *s, float *acts, int tag_base,
                             qs_status (*each)(stage_state *, float *, int64_t, void *, qs_error *), void *ctx,
                             qs_error *err)
{
    const qs_comm_i *c = s->a->comm;
    qs_comm_request req[2] = {{0}, {0}};
    const int64_t k0 = s->k0;
    QS_TRY(c->irecv(c->ctx, xfer_ptr(s, acts, k0), mb_bytes(s, k0), s->a->prev_rank, tag_base + (int)k0, &req[0], err));
    for (int64_t k = k0; k < s->k1; k++) {
        if (k + 1 < s->k1)
            QS_TRY(c->irecv(c->ctx, xfer_ptr(s, acts, k + 1), mb_bytes(s, k + 1), s->a->prev_rank,
                            tag_base + (int)(k + 1), &req[(k + 1 - k0) % 2], err));
        double t0 = now();
        qs_status st = wait_or_stop(s, &req[(k - k0) % 2], err);
        s->t->comm += now() - t0;
        if (k == k0) s->t->wait_first += now() - t0;
        if (st != QS_OK) {
            c->cancel(c->ctx, &req[(k + 1 - k0) % 2]);
            if (st == QS_ERR_INTERRUPTED) return st;
            return qs_error_prefix(err, "receiving micro-batch %lld from rank %d", (long long)k, s->a->prev_rank);
        }
        if (staged(s)) {
            t0 = now();
            QS_TRY(act_copy(s, mb_ptr(s, acts, k), xfer_ptr(s, acts, k), mb_bytes(s, k), err));
            s->t->comm += now() - t0;
        }
        if (each) {
            t0 = now();
            QS_TRY(each(s, acts, k, ctx, err));
            s->t->compute += now() - t0;
        }
    }
    return QS_OK;
}

static qs_status embed_all(stage_state *s, float *acts, qs_error *err)
{
    double t0 = now();
    qs_embed_stage e;
    qs_status st = qs_embed_stage_load(&e, s->a->manifest, s->a->names, err);
    s->t->io += now() - t0;
    t0 = now();
    for (int64_t k = s->k0; k < s->k1 && st == QS_OK; k++) {
        /* the embedding runs on the host; on a device its rows go there at once */
        float *h = mb_ptr(s, s->dev ? s->host : acts, k);
        st = qs_embed_stage_forward(&e, s->a->tokens + mb_first(s, k) * s->a->seq, mb_rows(s, k), s->a->seq, h, err);
        if (st == QS_OK && s->dev) st = act_copy(s, mb_ptr(s, acts, k), h, mb_bytes(s, k), err);
    }
    if (st == QS_OK) qs_embed_stage_free(&e);
    s->t->compute += now() - t0;
    s->t->forward += now() - t0;
    return st;
}

typedef struct prefill_ctx {
    const qs_block *blk;
    capture_ctx *cap;
} prefill_ctx;

/* Stage-0 capture of the first block on a micro-batch that just arrived. */
static qs_status prefill_stage0(stage_state *s, float *acts, int64_t k, void *ctx, qs_error *err)
{
    prefill_ctx *p = ctx;
    p->cap->chunk = k;
    qs_block_hooks hooks = {on_capture, p->cap, 0, 0};
    double h0 = p->cap->seconds, t0 = now();
    qs_block_span sp = {.from = 0, .to = 0, .res_in = mb_ptr(s, acts, k)};
    qs_status st = span_mb(s, p->blk, mb_rows(s, k), &sp, &hooks, err);
    double h = p->cap->seconds - h0;
    s->t->hessian += h;
    s->t->forward += now() - t0 - h;
    s->t->forward_flops += sp.flops;
    return st;
}

static qs_status load_block(stage_state *s, qs_block *blk, int layer, qs_error *err)
{
    double t0 = now();
    qs_status st = qs_block_load(blk, s->a->manifest, s->a->names, layer, err);
    s->t->io += now() - t0;
    if (st == QS_OK && s->a->compute != QS_COMPUTE_F32) {
        t0 = now();
        st = qs_block_set_compute(blk, s->a->compute, err);
        s->t->forward += now() - t0;
        s->t->compute += now() - t0;
        if (st != QS_OK) qs_block_free(blk);
    }
    if (st == QS_OK && s->a->be->device) {
        /* a device backend: the block's weights live in its memory (docs/gpu.md) */
        t0 = now();
        st = qs_block_to_device(blk, s->a->be, err);
        s->t->io += now() - t0;
        if (st != QS_OK) qs_block_free(blk);
    }
    return st;
}

/* Forwards every micro-batch of `in` through blk into `out`; when send is set,
 * each finished micro-batch leaves for the next rank at once. */
static qs_status forward_all(stage_state *s, const qs_block *blk, float *in, float *out, bool send, int tag_base,
                             qs_error *err)
{
    for (int64_t k = s->k0; k < s->k1; k++) {
        double t0 = now();
        qs_block_span sp = {.from = 0, .to = QS_BLOCK_END, .res_in = mb_ptr(s, in, k), .res_out = mb_ptr(s, out, k)};
        QS_TRY(span_mb(s, blk, mb_rows(s, k), &sp, NULL, err));
        double dt = now() - t0;
        s->t->compute += dt;
        s->t->forward += dt;
        s->t->forward_flops += sp.flops;
        if (send)
            QS_TRY(send_mb(s, out, k, tag_base + (int)k, &s->send_req[k], err));
    }
    return QS_OK;
}

/* Message tags of the stage's replicas (workers/replica.h); each kind of
 * message between two replicas keeps its order (MPI does not overtake). */
#define REPLICA_TAG_HESSIAN 31000 /* +1, +2: the sample counts and the broadcast root */
#define REPLICA_TAG_GATHER 31010
#define REPLICA_TAG_RESUME 31020

static bool replicated(const stage_state *s) { return s->grp.count > 1; }

/* GPTQ of rows [r0, r1) of w (one replica's slice) into part, with the H-weighted
 * losses of the slice (GPTQ's and, when asked, RTN's) in loss[0], loss[1]. */
static qs_status gptq_rows(stage_state *s, const float *w, int64_t r0, int64_t r1, int64_t in, const float *h,
                           float *hw, const qs_quant_opts *qo, qs_quant_result *part, double loss[2], qs_error *err)
{
    const qs_stage_args *a = s->a;
    int64_t rows = r1 - r0;
    const float *wr = w + r0 * in;
    loss[0] = loss[1] = 0.0;
    QS_TRY(qs_quant_result_init(part, rows, in, qo, err));
    QS_TRY(qs_quant_gptq(a->be, wr, rows, in, hw, qo, part, err));
    QS_TRY(qs_quant_hloss(a->be, wr, part->q, rows, in, h, &loss[0], err));
    if (a->rtn_baseline) {
        /* the RTN baseline of the same grid, for the report: costs as much as the loss itself */
        qs_quant_result rtn;
        qs_quant_opts ro = *qo;
        ro.method = QS_QUANT_METHOD_RTN;
        ro.act_order = ro.static_groups = false;
        qs_status rc = qs_quant_result_init(&rtn, rows, in, &ro, err);
        if (rc == QS_OK) rc = qs_quant_rtn(wr, rows, in, &ro, &rtn, err);
        if (rc == QS_OK) rc = qs_quant_hloss(a->be, wr, rtn.q, rows, in, h, &loss[1], err);
        qs_quant_result_free(&rtn);
        QS_TRY(rc);
    }
    return QS_OK;
}

/* GPTQ of linear i on a device backend. H is the host's, summed over the
 * chunk tree like every run's (the bytes' independence of the decomposition
 * rests on it); it goes to the device once, kept there for the losses while a
 * copy is consumed by the backend's GPTQ (be->gptq); W is the block's host
 * weight (the backend copies it); the loss D·H·Dᵀ is a device GEMM per row
 * panel (qs_quant_hloss with H in backend memory). */
static qs_status quantize_gptq_device(stage_state *s, qs_block *blk, int i, const float *h, int64_t samples,
                                      const qs_quant_opts *qo, qs_block_outcome *o, qs_error *err)
{
    const qs_backend_i *be = s->a->be;
    const qs_tensor *w = qs_block_linear_weight(blk, i);
    int64_t out = w->shape[0], in = w->shape[1];
    size_t hb = (size_t)(in * in) * sizeof(float);
    qs_linear_stats *ls = &o->stats[i];
    float *hd = be->alloc(be->ctx, hb), *hwd = be->alloc(be->ctx, hb);
    qs_status rc = QS_OK;
    if (!hd || !hwd)
        rc = qs_error_set(err, QS_ERR_NOMEM, "Hessian of %s (%lld × %lld) on %s", blk->lin[i].weight, (long long)in,
                          (long long)in, be->name);
    if (rc == QS_OK) rc = be->copy(be->ctx, hd, h, hb, err);
    if (rc == QS_OK) rc = be->copy(be->ctx, hwd, hd, hb, err);
    if (rc == QS_OK) {
        ls->samples = samples;
        for (int64_t j = 0; j < in; j++) ls->h_trace += h[j * in + j];
        rc = qs_quant_run(be, w->data, out, in, hwd, qo, &o->res[i], err);
    }
    if (rc == QS_OK) rc = qs_quant_hloss(be, w->data, o->res[i].q, out, in, hd, &ls->loss, err);
    ls->loss_rtn = NAN;
    if (rc == QS_OK && s->a->rtn_baseline) {
        qs_quant_result rtn;
        qs_quant_opts ro = *qo;
        ro.method = QS_QUANT_METHOD_RTN;
        ro.act_order = ro.static_groups = false;
        rc = qs_quant_result_init(&rtn, out, in, &ro, err);
        if (rc == QS_OK) rc = qs_quant_rtn(w->data, out, in, &ro, &rtn, err);
        if (rc == QS_OK) rc = qs_quant_hloss(be, w->data, rtn.q, out, in, hd, &ls->loss_rtn, err);
        qs_quant_result_free(&rtn);
    }
    if (hd) be->free(be->ctx, hd);
    if (hwd) be->free(be->ctx, hwd);
    return rc == QS_OK ? QS_OK : qs_error_prefix(err, "block %d", blk->layer);
}

/* Quantizes the linears of stage `st` of blk with the Hessian in cap (GPTQ) and
 * writes the dequantized weights back into the block. With replicas the
 * Hessian's chunk tree is completed across them first, and each replica
 * quantizes its rows of each linear; the slices are exchanged so every replica
 * writes the whole quantized linear back. */
static qs_status quantize_stage(stage_state *s, qs_block *blk, int st, capture_ctx *cap, qs_block_outcome *o,
                                qs_error *err)
{
    const qs_stage_args *a = s->a;
    float *h = NULL, *hw = NULL; /* the stage's Hessian (all linears of a stage share it) and GPTQ's copy */
    int64_t samples = 0;
    qs_status rc = QS_OK;
    for (int i = 0; i < blk->n_linears && rc == QS_OK; i++) {
        if (blk->lin[i].stage != st) continue;
        double t0 = now();
        qs_tensor *w = qs_block_linear_weight(blk, i);
        int64_t out = w->shape[0], in = w->shape[1];
        qs_quant_opts qo = a->quant;
        qo.name = blk->lin[i].weight;
        QS_TRY(qs_quant_opts_check(&qo, out, in, err));
        QS_TRY(qs_quant_result_init(&o->res[i], out, in, &qo, err));
        qs_linear_stats *ls = &o->stats[i];
        if (qo.method == QS_QUANT_METHOD_GPTQ) {
            size_t hb = (size_t)(in * in);
            if (!h) {
                h = qs_malloc(hb * sizeof(float));
                hw = qs_malloc(hb * sizeof(float));
                if (!h || !hw) {
                    rc = qs_error_set(err, QS_ERR_NOMEM, "Hessian of %s (%lld × %lld)", blk->lin[i].weight,
                                      (long long)in, (long long)in);
                    break;
                }
                rc = qs_chunk_sum_finish(&cap->h[st], replicated(s) ? &s->grp : NULL, REPLICA_TAG_HESSIAN, h, &samples,
                                         err);
                if (rc != QS_OK) break;
            }
            if (a->be->device) {
                rc = quantize_gptq_device(s, blk, i, h, samples, &qo, o, err);
                if (rc != QS_OK) break;
                goto write_back;
            }
            memcpy(hw, h, hb * sizeof(float));
            ls->samples = samples;
            for (int64_t j = 0; j < in; j++) ls->h_trace += h[j * in + j];
            double loss[3];
            if (!replicated(s)) {
                qs_quant_result_free(&o->res[i]);
                rc = gptq_rows(s, w->data, 0, out, in, h, hw, &qo, &o->res[i], loss, err);
            } else {
                /* this replica's rows, then everyone's */
                int64_t r0, r1;
                qs_replica_rows(out, s->grp.count, s->grp.index, &r0, &r1);
                qs_quant_result part;
                memset(&part, 0, sizeof part);
                part.cols = in;
                part.groups = o->res[i].groups;
                loss[0] = loss[1] = loss[2] = 0.0;
                if (r1 > r0) rc = gptq_rows(s, w->data, r0, r1, in, h, hw, &qo, &part, loss, err);
                loss[2] = part.est_loss;
                /* an error here ends the run (MPI_Abort in pipeline/run.c), so the others do not wait */
                if (rc == QS_OK) rc = qs_replica_gather_result(&s->grp, &part, &o->res[i], loss, 3, REPLICA_TAG_GATHER,
                                                               err);
                o->res[i].est_loss = loss[2];
                o->res[i].seconds = part.seconds;
                o->res[i].seconds_factor = part.seconds_factor;
                o->res[i].seconds_sweep = part.seconds_sweep;
                o->res[i].seconds_update = part.seconds_update;
                o->res[i].update_flops = part.update_flops;
                if (r1 > r0) qs_quant_result_free(&part);
            }
            ls->loss = loss[0];
            ls->loss_rtn = a->rtn_baseline ? loss[1] : NAN;
            if (rc != QS_OK) rc = qs_error_prefix(err, "block %d", blk->layer);
        } else {
            rc = qs_quant_rtn(w->data, out, in, &qo, &o->res[i], err);
        }
        if (rc != QS_OK) break;
    write_back:
        memcpy(w->data, o->res[i].q, (size_t)(out * in) * sizeof(float));
        QS_TRY(qs_block_linear_sync(blk, i, err));
        ls->seconds = now() - t0;
    }
    qs_free(h), qs_free(hw);
    return rc;
}

/* The carry buffer, once per rank: every row's stage input at boundaries 1
 * and 3 (their widest). Without it (no memory, or QS_FORWARD_RECOMPUTE=1)
 * every stage re-runs the block from its input: the same numbers, more work. */
static void carry_alloc(stage_state *s, const qs_block *blk)
{
    if (s->carry_tried) return;
    s->carry_tried = true;
    const char *recompute = getenv("QS_FORWARD_RECOMPUTE");
    if (recompute && *recompute && strcmp(recompute, "0") != 0) return;
    int64_t c1 = qs_block_carry_cols(blk, 1), c3 = qs_block_carry_cols(blk, 3);
    size_t n = (size_t)s->rows_local * (size_t)s->a->seq * (size_t)(c1 > c3 ? c1 : c3);
    s->carry = act_alloc(s, n);
    if (!s->carry)
        fprintf(stderr, "qshard run: warning: no memory to keep %zu MiB of stage inputs; every true-sequential "
                        "stage re-runs its block from the input (same result, ~2.4x the forward work)\n",
                n * sizeof(float) >> 20);
}

/* Runs span from → to of blk over every micro-batch. The residual stream at
 * `from` is in *res (acts or next); a span that changes it writes next and
 * moves *res there. The stage input at 1 and 3 comes from / goes to the
 * carry buffer when there is one. */
static qs_status span_all(stage_state *s, const qs_block *blk, int from, int to, float **res,
                          const qs_block_hooks *hooks, capture_ctx *cap, bool send, int tag_base, qs_error *err)
{
    bool changes = (from <= 1 && to >= 2) || to == QS_BLOCK_END;
    int64_t cin = qs_block_carry_cols(blk, from), cout = s->carry ? qs_block_carry_cols(blk, to) : 0;
    for (int64_t k = s->k0; k < s->k1; k++) {
        if (cap) cap->chunk = k;
        double t0 = now(), h0 = cap ? cap->seconds : 0;
        qs_block_span sp = {.from = from, .to = to, .res_in = mb_ptr(s, *res, k),
                            .res_out = changes ? mb_ptr(s, s->next, k) : NULL,
                            .x_in = cin ? mb_carry(s, k, cin) : NULL, .x_out = cout ? mb_carry(s, k, cout) : NULL};
        QS_TRY(span_mb(s, blk, mb_rows(s, k), &sp, hooks, err));
        double dt = now() - t0, h = cap ? cap->seconds - h0 : 0;
        s->t->compute += dt;
        s->t->hessian += h;
        s->t->forward += dt - h;
        s->t->forward_flops += sp.flops;
        if (send)
            QS_TRY(send_mb(s, s->next, k, tag_base + (int)k, &s->send_req[k], err));
    }
    if (changes) *res = s->next;
    return QS_OK;
}

/* ---- OmniQuant: the FP stream and the block's training ------------------------------ */

#define OMNI_FP_TAG 3000 /* the FP stream's micro-batches, rank to rank (exact schedule) */

static bool is_omni(const stage_state *s) { return s->a->quant.method == QS_QUANT_METHOD_OMNIQUANT; }

/* The FP block's output on the FP input (the training target and the next
 * block's FP input), sent on at once when this is the rank's last block. */
static qs_status omni_fp_forward(stage_state *s, const qs_block *blk, bool send, qs_error *err)
{
    const qs_comm_i *c = s->a->comm;
    for (int64_t k = s->k0; k < s->k1; k++) {
        double t0 = now();
        QS_TRY(qs_block_forward(blk, s->a->be, mb_ptr(s, s->fp_acts, k), mb_rows(s, k), s->a->seq,
                                mb_ptr(s, s->fp_next, k), NULL, err));
        s->t->compute += now() - t0;
        s->t->forward += now() - t0;
        if (send)
            QS_TRY(c->isend(c->ctx, mb_ptr(s, s->fp_next, k), mb_bytes(s, k), s->a->next_rank, OMNI_FP_TAG + (int)k,
                            &s->fp_send_req[k], err));
    }
    return QS_OK;
}

/* Trains, folds and quantizes blk (FP on entry, quantized on return). */
static qs_status omni_block(stage_state *s, qs_block *blk, qs_block_outcome *o, qs_error *err)
{
    const qs_stage_args *a = s->a;
    double t0 = now();
    qs_status st = qs_omni_quantize_block(blk, a->be, &a->quant, a->manifest, a->names, s->acts, s->fp_acts,
                                          s->fp_next, a->rows, a->seq, o->res, o->omni, a->stop_flag, err);
    double dt = now() - t0;
    s->t->compute += dt;
    s->t->solve += dt; /* the report's "quantize" phase: training, folding, codes */
    if (st == QS_ERR_INTERRUPTED) {
        stop_now(s); /* tell the other ranks, as a stop at a block boundary does */
        return st;
    }
    for (int i = 0; i < blk->n_linears && st == QS_OK; i++) {
        o->stats[i].loss = o->stats[i].loss_rtn = NAN; /* no Hessian: the block's loss curve is in o->omni */
        o->stats[i].samples = a->rows * a->seq;
        o->stats[i].seconds = dt / blk->n_linears;
    }
    return st == QS_OK ? QS_OK : qs_error_prefix(err, "block %d", blk->layer);
}

/* The quantization loop over this rank's blocks, starting from `acts`. */
static qs_status quantize_blocks(stage_state *s, bool prefilled_first, qs_block *first, capture_ctx *first_cap,
                                 bool send_last, qs_error *err)
{
    const qs_stage_args *a = s->a;
    qs_status st = QS_OK;
    for (int layer = a->first_block; layer < a->end_block && st == QS_OK; layer++) {
        if (stop_now(s)) {
            if (layer == a->first_block && first) {
                qs_block_free(first);
                for (int x = 0; x < QS_BLOCK_STAGES; x++)
                    qs_chunk_sum_free(&first_cap->h[x]);
            }
            return qs_error_set(err, QS_ERR_INTERRUPTED, "stopped before block %d", layer);
        }
        double tb = now();
        qs_block blk_local, *blk = &blk_local;
        capture_ctx cap_local, *cap = &cap_local;
        bool is_first = layer == a->first_block && first;
        if (is_first) {
            blk = first;
            cap = first_cap;
        } else {
            capture_init(&cap_local, s);
            QS_TRY(load_block(s, blk, layer, err));
        }
        qs_block_outcome *o = calloc(1, sizeof *o);
        if (!o) {
            if (!is_first) qs_block_free(blk);
            return qs_error_set(err, QS_ERR_NOMEM, "block outcome");
        }
        o->layer = layer;
        o->blk = blk;
        bool gptq = a->quant.method == QS_QUANT_METHOD_GPTQ;
        bool last = layer == a->end_block - 1;
        s->t->forward_flops_one += qs_block_forward_flops(blk, s->rows_local, a->seq);
        if (gptq && a->true_sequential) carry_alloc(s, blk);
        bool lead = s->grp.index == 0; /* replica 0 reports, checkpoints and exports the stage's blocks */
        if (a->on_block_start && lead) st = a->on_block_start(a->on_block_ctx, layer, err);
        if (st == QS_OK && is_omni(s)) {
            /* the FP stream first, while blk still holds the FP weights */
            o->omni = calloc(1, sizeof *o->omni);
            st = o->omni ? omni_fp_forward(s, blk, send_last && last, err)
                         : qs_error_set(err, QS_ERR_NOMEM, "block %d: omniquant record", layer);
        }
        if (st == QS_OK && a->resume_block && !replicated(s)) {
            st = a->resume_block(a->resume_ctx, layer, o->res, o->stats, o->omni, &o->resumed, err);
        } else if (st == QS_OK && a->resume_block) {
            /* replica 0 decides whether the block is done; the others then read the same checkpoint */
            int64_t found = 0;
            if (lead) st = a->resume_block(a->resume_ctx, layer, o->res, o->stats, o->omni, &o->resumed, err);
            found = st == QS_OK && o->resumed;
            double c0 = s->grp.seconds;
            if (st == QS_OK) st = qs_replica_bcast(&s->grp, &found, sizeof found, REPLICA_TAG_RESUME, err);
            s->t->comm += s->grp.seconds - c0;
            if (st == QS_OK && !lead && found) {
                st = a->resume_block(a->resume_ctx, layer, o->res, o->stats, o->omni, &o->resumed, err);
                if (st == QS_OK && !o->resumed)
                    st = qs_error_set(err, QS_ERR_IO, "block %d: replica 0 of this stage resumed it from its checkpoint "
                                                      "but replica %d cannot read it", layer, s->grp.index);
            }
        }
        if (st == QS_OK && o->resumed && o->omni) st = qs_omni_apply_fp(blk, a->names, o->omni, err);
        if (st == QS_OK && o->resumed) {
            /* a finished block of a previous run: its quantized weights, then only the forward */
            for (int i = 0; i < blk->n_linears && st == QS_OK; i++) {
                qs_tensor *w = qs_block_linear_weight(blk, i);
                if (o->res[i].rows != w->shape[0] || o->res[i].cols != w->shape[1])
                    st = qs_error_set(err, QS_ERR_INPUT, "block %d: the checkpoint of %s has shape [%lld, %lld]",
                                      layer, blk->lin[i].weight, (long long)o->res[i].rows, (long long)o->res[i].cols);
                else {
                    memcpy(w->data, o->res[i].q, sizeof(float) * (size_t)(w->shape[0] * w->shape[1]));
                    st = qs_block_linear_sync(blk, i, err);
                }
            }
        }
        if (st == QS_OK && !o->resumed && is_omni(s)) st = omni_block(s, blk, o, err);
        /* the forward state: boundary `at`, the residual stream there in res */
        int at = 0;
        float *res = s->acts;
        bool keep = s->carry != NULL;
        for (int stg = 0; stg < QS_BLOCK_STAGES && st == QS_OK && !o->resumed && !is_omni(s); stg++) {
            bool has = false;
            for (int i = 0; i < blk->n_linears; i++) has |= blk->lin[i].stage == stg;
            if (!has) continue;
            if (gptq && !(is_first && prefilled_first && stg == 0) && (a->true_sequential || stg == 0)) {
                /* collect this stage's Hessian (all stages at once without true-sequential) */
                for (int x = 0; x < QS_BLOCK_STAGES; x++) {
                    bool need = a->true_sequential ? x == stg : true;
                    if (!need || qs_chunk_sum_active(&cap->h[x])) continue;
                    int64_t in = 0;
                    for (int i = 0; i < blk->n_linears; i++)
                        if (blk->lin[i].stage == x) in = blk->lin[i].in;
                    if (in) st = qs_chunk_sum_init(&cap->h[x], in, s->n_micro, err);
                }
                qs_block_hooks hooks = {on_capture, cap, a->true_sequential ? stg : -1, -1};
                if (st == QS_OK && a->true_sequential && keep) {
                    /* resume from where the previous stage stopped */
                    st = span_all(s, blk, at, stg, &res, &hooks, cap, false, 0, err);
                    at = stg;
                } else if (st == QS_OK) {
                    /* from the block's input (all stages at once, or no memory to keep the state) */
                    float *in = s->acts;
                    st = span_all(s, blk, 0, a->true_sequential ? stg : QS_BLOCK_STAGES - 1, &in, &hooks, cap, false,
                                  0, err);
                }
            }
            double t0 = now(), c0 = s->grp.seconds;
            if (st == QS_OK) st = quantize_stage(s, blk, stg, cap, o, err);
            double dc = s->grp.seconds - c0, dt = now() - t0 - dc; /* the replicas' messages are communication */
            s->t->compute += dt;
            s->t->solve += dt;
            s->t->comm += dc;
            qs_chunk_sum_free(&cap->h[stg]);
        }
        /* the rest of the forward: the quantized block's output into next */
        if (st == QS_OK) st = span_all(s, blk, at, QS_BLOCK_END, &res, NULL, NULL, send_last && last, 1000, err);
        o->seconds = now() - tb;
        /* the block's interval and phases: differences of the rank's running sums
         * (the spans added their Hessian time to s->t->hessian already) */
        cap->seconds = 0;
        const qs_stage_timing *p0 = &s->blk_snap, *p1 = s->t;
        o->timing.t_start = s->blk_wall0;
        o->timing.t_end = wall();
        o->timing.hessian = p1->hessian - p0->hessian;
        o->timing.solve = p1->solve - p0->solve;
        o->timing.forward = (p1->compute - p0->compute) - o->timing.hessian - o->timing.solve;
        o->timing.wait = p1->wait_first - p0->wait_first;
        o->timing.comm = (p1->comm - p0->comm) - o->timing.wait;
        o->timing.io = p1->io - p0->io;
        if (st == QS_OK && a->on_block && lead) st = a->on_block(a->on_block_ctx, o, err);
        s->blk_snap = *s->t;
        s->blk_wall0 = wall();
        for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) qs_quant_result_free(&o->res[i]);
        qs_omni_record_free(o->omni);
        free(o->omni);
        free(o);
        for (int x = 0; x < QS_BLOCK_STAGES; x++)
            qs_chunk_sum_free(&cap->h[x]);
        qs_block_free(blk);
        float *tmp = s->acts;
        s->acts = s->next;
        s->next = tmp;
        if (is_omni(s)) {
            tmp = s->fp_acts;
            s->fp_acts = s->fp_next;
            s->fp_next = tmp;
        }
        if (st == QS_OK && last && send_last) st = wait_sends(s, err);
    }
    return st;
}

/* The FP pass of the pipelined schedule: forward unquantized blocks and send
 * the result on. fp_in keeps this rank's own FP input. */
static qs_status fp_pass(stage_state *s, float *fp_in, qs_error *err)
{
    const qs_stage_args *a = s->a;
    if (a->embed) QS_TRY(embed_all(s, fp_in, err));
    else QS_TRY(receive_all(s, fp_in, 0, NULL, NULL, err));
    if (a->next_rank < 0) return QS_OK; /* the last rank needs no FP output */
    float *in = fp_in;
    for (int layer = a->first_block; layer < a->end_block; layer++) {
        qs_block blk;
        QS_TRY(load_block(s, &blk, layer, err));
        bool last = layer == a->end_block - 1;
        qs_status st = forward_all(s, &blk, in, s->next, last, 0, err);
        qs_block_free(&blk);
        QS_TRY(st);
        float *tmp = s->acts;
        s->acts = s->next;
        s->next = tmp;
        in = s->acts;
    }
    return wait_sends(s, err);
}

qs_status qs_stage_run(const qs_stage_args *a, qs_stage_timing *t, qs_error *err)
{
    memset(t, 0, sizeof *t);
    stage_state s = {0};
    s.a = a;
    s.t = t;
    s.t_start = now();
    s.blk_wall0 = wall();
    s.hidden = qs_manifest_config(a->manifest)->hidden;
    s.row_floats = (size_t)(a->seq * s.hidden);
    s.n_micro = (a->rows + a->micro_batch - 1) / a->micro_batch;
    s.grp.comm = a->comm;
    s.grp.count = a->replicas > 1 ? a->replicas : 1;
    s.grp.index = s.grp.count > 1 ? a->replica : 0;
    s.grp.first_rank = s.grp.count > 1 ? a->replica0_rank : a->comm->rank;
    s.grp.wait = group_wait;
    s.grp.wait_ctx = &s;
    if (s.grp.count > s.n_micro)
        return qs_error_set(err, QS_ERR_INPUT, "--replicas %d: the %lld calibration rows make %lld micro-batches of "
                                               "%lld rows and each replica needs at least one (lower --micro-batch)",
                            s.grp.count, (long long)a->rows, (long long)s.n_micro, (long long)a->micro_batch);
    if (s.grp.index < 0 || s.grp.index >= s.grp.count)
        return qs_error_set(err, QS_ERR_INTERNAL, "replica %d of %d", s.grp.index, s.grp.count);
    s.k0 = qs_replica_chunk_begin(s.n_micro, s.grp.count, s.grp.index);
    s.k1 = qs_replica_chunk_begin(s.n_micro, s.grp.count, s.grp.index + 1);
    s.rows_local = (s.k1 < s.n_micro ? mb_first(&s, s.k1) : a->rows) - mb_first(&s, s.k0);
    uint64_t bytes0 = qs_st_bytes_read();
    size_t total = (size_t)s.rows_local * s.row_floats;
    /* the activations live in the backend's memory (OmniQuant trains on the host) */
    s.dev = a->be->device && !is_omni(&s);
    bool need_host = s.dev && (!a->comm->device_buffers || a->embed); /* hand-offs through the host, the embedding */
    s.host = need_host ? qs_malloc(total * sizeof(float)) : NULL;
    s.acts = act_alloc(&s, total);
    s.next = act_alloc(&s, total);
    s.send_req = calloc((size_t)s.n_micro, sizeof *s.send_req);
    float *fp_in = NULL;
    qs_status st = QS_OK;
    if (!s.acts || !s.next || !s.send_req || (need_host && !s.host)) {
        st = qs_error_set(err, QS_ERR_NOMEM, "activations: 2 × %zu floats", total);
        goto done;
    }
    if (is_omni(&s)) {
        s.fp_acts = qs_malloc(total * sizeof(float));
        s.fp_next = qs_malloc(total * sizeof(float));
        s.fp_send_req = calloc((size_t)s.n_micro, sizeof *s.fp_send_req);
        if (!s.fp_acts || !s.fp_next || !s.fp_send_req) {
            st = qs_error_set(err, QS_ERR_NOMEM, "OmniQuant's FP activations: 2 × %zu floats", total);
            goto done;
        }
    }
    if (a->schedule == QS_SCHEDULE_PIPELINED) {
        fp_in = act_alloc(&s, total);
        if (!fp_in) {
            st = qs_error_set(err, QS_ERR_NOMEM, "FP activations: %zu floats", total);
            goto done;
        }
        st = fp_pass(&s, fp_in, err);
        if (st == QS_OK) {
            st = act_copy(&s, s.acts, fp_in, total * sizeof(float), err);
            if (s.fp_acts) memcpy(s.fp_acts, fp_in, total * sizeof(float)); /* OmniQuant's targets start there too */
            act_free(&s, fp_in);
            fp_in = NULL;
        }
        if (st == QS_OK) {
            st = quantize_blocks(&s, false, NULL, NULL, false, err);
        }
    } else if (a->embed) {
        st = embed_all(&s, s.acts, err);
        if (st == QS_OK && s.fp_acts) memcpy(s.fp_acts, s.acts, total * sizeof(float));
        if (st == QS_OK) st = quantize_blocks(&s, false, NULL, NULL, a->next_rank >= 0, err);
    } else {
        /* Load the first block while nothing has arrived yet, then collect its
         * first Hessian as micro-batches come in. */
        qs_block first;
        capture_ctx cap;
        capture_init(&cap, &s);
        /* the first Hessian can be collected on arrival only when stage 0 is
         * collected on its own (true-sequential) */
        bool gptq = a->quant.method == QS_QUANT_METHOD_GPTQ && a->true_sequential;
        st = load_block(&s, &first, a->first_block, err);
        if (st == QS_OK && gptq) {
            int64_t in = 0;
            for (int i = 0; i < first.n_linears; i++)
                if (first.lin[i].stage == 0) in = first.lin[i].in;
            st = qs_chunk_sum_init(&cap.h[0], in, s.n_micro, err);
        }
        prefill_ctx pc = {&first, &cap};
        bool loaded = st == QS_OK;
        if (st == QS_OK) st = receive_all(&s, s.acts, 1000, gptq ? prefill_stage0 : NULL, &pc, err);
        if (st == QS_OK && s.fp_acts) st = receive_all(&s, s.fp_acts, OMNI_FP_TAG, NULL, NULL, err);
        if (st == QS_OK) st = quantize_blocks(&s, gptq, &first, &cap, a->next_rank >= 0, err);
        else {
            if (loaded) qs_block_free(&first);
            qs_chunk_sum_free(&cap.h[0]);
        }
    }
done:
    act_free(&s, fp_in);
    act_free(&s, s.acts);
    act_free(&s, s.next);
    act_free(&s, s.carry);
    qs_free(s.host);
    qs_free(s.cap_host);
    free(s.send_req);
    qs_free(s.fp_acts);
    qs_free(s.fp_next);
    free(s.fp_send_req);
    t->total = now() - s.t_start;
    t->idle = t->total - t->compute - t->comm - t->io;
    if (t->idle < 0) t->idle = 0;
    t->bytes_read = qs_st_bytes_read() - bytes0;
    return st;
}
