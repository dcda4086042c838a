/* run.c — set-up, the per-rank stage, the gather of the exports and the report.
 *
 * Rank 0 also tells the operator what happens: the progress line
 * (pipeline/progress.h), the event stream (pipeline/events.h) and, at the
 * end, the HTML report (pipeline/report.h). Other ranks send it a short
 * message when they start a block and a qs_block_event when they finish one.
 */
#include "pipeline/run.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/cpu/threads.h"
#include "pipeline/checkpoint.h"
#include "pipeline/events.h"
#include "pipeline/export/export.h"
#include "pipeline/export/export_gguf.h"
#include "pipeline/export/export_gptq.h"
#include "pipeline/export/side_files.h"
#include "pipeline/fingerprint.h"
#include "pipeline/worklock.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/model_check.h"
#include "pipeline/formats/token_set.h"
#include "pipeline/progress.h"
#include "pipeline/report.h"
#include "schedulers/partition.h"
#include "workers/comm_nccl.h"
#include "workers/device_select.h"
#include "workers/heartbeat.h"
#include "workers/model.h"
#include "workers/stage.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* All ranks agree whether set-up failed anywhere; the lowest failing rank
 * keeps its message, the others say where to look. */
static qs_status agree(const qs_comm_i *c, qs_status st, qs_error *err)
{
    int64_t v[2] = {st != QS_OK ? (int64_t)(c->size - c->rank) : 0, st != QS_OK ? (int64_t)st : 0};
    qs_error cerr;
    if (c->allreduce_max_i64(c->ctx, v, 2, &cerr) != QS_OK) {
        if (err) *err = cerr;
        return cerr.code;
    }
    if (v[0] == 0) return QS_OK;
    int first = c->size - (int)v[0];
    if (c->rank != first) return qs_error_set(err, (qs_status)v[1], "rank %d failed during set-up", first);
    return st;
}

static qs_quant_opts quant_opts(const qs_run_options *o)
{
    qs_quant_opts q;
    qs_quant_opts_default(&q);
    q.method = o->method == QS_METHOD_RTN         ? QS_QUANT_METHOD_RTN
               : o->method == QS_METHOD_OMNIQUANT ? QS_QUANT_METHOD_OMNIQUANT
                                                  : QS_QUANT_METHOD_GPTQ;
    q.bits = o->bits;
    q.group_size = o->group_size;
    q.sym = o->sym;
    q.act_order = o->act_order;
    q.static_groups = o->static_groups;
    q.mse = o->mse;
    q.damp = o->damp;
    q.block_size = o->block_size;
    q.omni.epochs = qs_run_options_epochs(o);
    q.omni.lwc = o->lwc;
    q.omni.let = o->let;
    q.omni.lwc_lr = o->lwc_lr;
    q.omni.let_lr = o->let_lr;
    q.omni.batch = o->omni_batch;
    q.omni.seed = (uint64_t)o->omni_seed;
    q.omni.cosine = o->omni_cosine;
    return q;
}

/* ---- per-block callback: export shard + statistics ---------------------------- */

/* Progress: every rank tells rank 0 (the coordinator) when it starts a block
 * (a 16-byte message {wall clock, block}, tag START_TAG(b)) and when it has
 * finished one (a qs_block_event, tag DONE_TAG(b)); rank 0 shows the progress
 * and writes the events of every rank. */
#define PROGRESS_TAG 20000
#define START_TAG(b) (PROGRESS_TAG + 2 * (b))
#define DONE_TAG(b) (PROGRESS_TAG + 2 * (b) + 1)

typedef struct run_ctx {
    const qs_comm_i *c;
    int n_layers;
    const qs_stage_plan *stages;
    double t0;
    int reported;
    qs_block_event *done_msg;  /* rank 0: [n_layers] received; others: their sends */
    qs_comm_request *done_req; /* [n_layers] */
    double (*start_msg)[2];    /* [n_layers] {wall clock, block} */
    qs_comm_request *start_req;
    qs_events *ev;             /* rank 0: the event stream */
    qs_progress *pg;           /* rank 0: the progress display */
    const qs_model_config *cfg;
    const qs_model_names *names;
    double tokens;             /* calibration rows · seq */
    volatile int *stop_flag;
    bool stop_emitted;
    const qs_run_options *o;
    qs_gptq_export *exp;  /* NULL when gptq is not among --formats */
    qs_gguf_export *gguf; /* NULL when gguf is not among --formats */
    const char *fingerprint;
    bool resuming;
    int rank;
    int resumed_blocks;
    cJSON *layers; /* this rank's per-linear statistics */
} run_ctx;

/* Finished blocks of a previous run; a bad checkpoint is recomputed. */
static qs_status resume_block(void *ctx, int layer, qs_quant_result res[QS_MAX_BLOCK_LINEARS],
                              qs_linear_stats stats[QS_MAX_BLOCK_LINEARS], qs_omni_record *omni, bool *found,
                              qs_error *err)
{
    run_ctx *r = ctx;
    *found = false;
    if (!r->resuming) return QS_OK;
    char path[QS_PATH_MAX + 64];
    qs_checkpoint_block_path(r->o->work, layer, path, sizeof path);
    if (!qs_path_exists(path)) return QS_OK;
    qs_block_record rec;
    qs_error why;
    qs_block_expect want;
    qs_quant_opts q = quant_opts(r->o);
    qs_block_expect_init(&want, r->cfg, r->names, layer, &q);
    if (qs_checkpoint_read_block(r->o->work, layer, r->fingerprint, &want, &rec, &why) != QS_OK) {
        fprintf(stderr, "qshard run: warning: rank %d: %s; recomputing block %d\n", r->rank, why.msg, layer);
        qs_journal_append(r->o->work, "rank %d block %d checkpoint invalid (%s): recomputing", r->rank, layer, why.msg);
        return QS_OK;
    }
    if (omni && !rec.has_omni) {
        fprintf(stderr, "qshard run: warning: rank %d: block %d's checkpoint has no OmniQuant record; recomputing\n",
                r->rank, layer);
        qs_block_record_free(&rec);
        return QS_OK;
    }
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) {
        res[i] = rec.res[i]; /* ownership moves to the outcome */
        stats[i] = rec.stats[i];
    }
    memset(rec.res, 0, sizeof rec.res);
    if (omni) {
        *omni = rec.omni; /* so does the OmniQuant record */
        memset(&rec.omni, 0, sizeof rec.omni);
    }
    qs_block_record_free(&rec);
    *found = true;
    r->resumed_blocks++;
    (void)err;
    return QS_OK;
}

static int owner_of(const run_ctx *r, int layer)
{
    for (int k = 0; k < r->c->size; k++)
        if (layer >= r->stages[k].first_block && layer < r->stages[k].end_block) return k;
    return 0;
}

/* Rank 0: the events and the progress of a block that started. */
static void report_start(run_ctx *r, int rank, int layer, double t)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "rank", rank);
    cJSON_AddNumberToObject(e, "block", layer);
    cJSON_AddNumberToObject(e, "t_start", t);
    qs_events_emit(r->ev, "block_start", e);
    qs_progress_block_start(r->pg, rank, layer);
}

/* Rank 0: the events and the progress of a finished block (any rank's). */
static void report_block(run_ctx *r, const qs_block_event *b)
{
    r->reported++;
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
    const char *names[QS_MAX_BLOCK_LINEARS] = {0};
    int n = qs_block_linears(r->cfg, r->names, b->layer, lin);
    for (int i = 0; i < n && i < QS_MAX_BLOCK_LINEARS; i++) names[i] = lin[i].weight;
    if (!b->resumed) {
        cJSON *e = cJSON_CreateObject();
        char h[17];
        snprintf(h, sizeof h, "%016llx", (unsigned long long)b->xxh64);
        cJSON_AddNumberToObject(e, "rank", b->rank);
        cJSON_AddNumberToObject(e, "block", b->layer);
        cJSON_AddStringToObject(e, "xxh64", h);
        cJSON_AddNumberToObject(e, "seconds", b->checkpoint_s);
        qs_events_emit(r->ev, "checkpoint", e);
    }
    qs_events_emit(r->ev, "block_done", qs_block_event_json(b, names));
    qs_progress_block_done(r->pg, b->rank, b->layer, b->seconds, b->resumed != 0);
}

/* Rank 0: a stop request is news once. */
static void note_stop(run_ctx *r)
{
    if (r->stop_emitted) return;
    if (!((r->stop_flag && *r->stop_flag) || r->c->stop_requested(r->c->ctx))) return;
    r->stop_emitted = true;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "action", "stopping at the next block boundary (resumable)");
    qs_events_emit(r->ev, "stop_signal", e);
    qs_progress_message(r->pg, "qshard run: stop requested: the ranks stop at the next block boundary");
}

/* Rank 0: what other ranks have reported so far. */
static void poll_progress(run_ctx *r)
{
    for (int l = 0; l < r->n_layers; l++) {
        int done = 0;
        qs_error e;
        if (r->start_req[l].n && r->c->test(r->c->ctx, &r->start_req[l], &done, &e) == QS_OK && done)
            report_start(r, owner_of(r, l), l, r->start_msg[l][0]);
        done = 0;
        if (r->done_req[l].n && !r->start_req[l].n && r->c->test(r->c->ctx, &r->done_req[l], &done, &e) == QS_OK &&
            done)
            report_block(r, &r->done_msg[l]);
    }
    note_stop(r);
    qs_progress_tick(r->pg);
}

static qs_status on_block_start(void *ctx, int layer, qs_error *err)
{
    run_ctx *r = ctx;
    if (r->c->rank == 0) {
        report_start(r, 0, layer, qs_wall_clock());
        poll_progress(r);
        return QS_OK;
    }
    r->start_msg[layer][0] = qs_wall_clock();
    r->start_msg[layer][1] = layer;
    return r->c->isend(r->c->ctx, r->start_msg[layer], sizeof r->start_msg[layer], 0, START_TAG(layer),
                       &r->start_req[layer], err);
}

static qs_status on_block(void *ctx, const qs_block_outcome *b, qs_error *err)
{
    run_ctx *r = ctx;
    if (!b->resumed) {
        /* what was just computed passes the checks a checkpoint read back
         * must pass: a scale that does not fit the export's fp16 or a
         * non-finite loss is an error naming the tensor, never a success */
        char names[QS_MAX_BLOCK_LINEARS][QS_NAME_MAX];
        for (int i = 0; i < b->blk->n_linears; i++) snprintf(names[i], QS_NAME_MAX, "%s", b->blk->lin[i].weight);
        qs_block_expect want;
        qs_quant_opts q = quant_opts(r->o);
        qs_block_expect_init(&want, r->cfg, r->names, b->layer, &q);
        char origin[QS_PATH_MAX + 32];
        snprintf(origin, sizeof origin, "%s: block %d", r->o->model, b->layer);
        QS_TRY(qs_block_results_check(origin, b->blk->n_linears, names, b->res, b->stats, b->omni, &want, err));
    }
    double t_cb = now();
    qs_block_event ev;
    qs_block_event_from_outcome(&ev, b, r->rank, r->tokens);
    if (!b->resumed) {
        /* the checkpoint first: it is what a resumed run trusts */
        uint64_t h = 0;
        QS_TRY(qs_checkpoint_write_block(r->o->work, b, r->fingerprint, &h, err));
        qs_journal_append(r->o->work, "rank %d block %d done xxh64=%016llx seconds=%.3f", r->rank, b->layer,
                          (unsigned long long)h, b->seconds);
        ev.xxh64 = h;
    }
    ev.checkpoint_s = now() - t_cb;
    double t_exp = now();
    if (r->exp) QS_TRY(qs_gptq_export_block(r->exp, b, err));
    if (r->gguf) QS_TRY(qs_gguf_export_block(r->gguf, b, err));
    ev.export_s = now() - t_exp;
    for (int i = 0; i < b->blk->n_linears; i++) {
        const qs_linear_stats *s = &b->stats[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "block", b->layer);
        cJSON_AddStringToObject(e, "name", b->blk->lin[i].weight);
        cJSON_AddNumberToObject(e, "rows", (double)b->res[i].rows);
        cJSON_AddNumberToObject(e, "cols", (double)b->res[i].cols);
        cJSON_AddNumberToObject(e, "h_trace", s->h_trace);
        cJSON_AddNumberToObject(e, "loss", s->loss);
        if (!isnan(s->loss_rtn)) cJSON_AddNumberToObject(e, "loss_rtn", s->loss_rtn);
        cJSON_AddNumberToObject(e, "samples", (double)s->samples);
        cJSON_AddNumberToObject(e, "seconds", s->seconds);
        cJSON_AddItemToArray(r->layers, e);
    }
    if (b->omni) {
        /* one entry per block: the training's loss curve and time split (the report's "omniquant") */
        const qs_omni_record *m = b->omni;
        cJSON *e = cJSON_CreateObject(), *q = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "block", b->layer);
        cJSON_AddItemToObject(q, "loss", cJSON_CreateDoubleArray(m->loss, m->epochs));
        cJSON_AddNumberToObject(q, "steps", (double)m->steps);
        cJSON_AddNumberToObject(q, "seconds", b->seconds);
        cJSON_AddNumberToObject(q, "seconds_forward", m->seconds_forward);
        cJSON_AddNumberToObject(q, "seconds_backward", m->seconds_backward);
        cJSON_AddNumberToObject(q, "seconds_optimizer", m->seconds_optimizer);
        cJSON_AddItemToObject(e, "omniquant", q);
        cJSON_AddItemToArray(r->layers, e);
    }
    /* the block's interval ends after its checkpoint and exports: they are its I/O */
    double cb = now() - t_cb;
    ev.timing.io += cb;
    ev.timing.t_end += cb;
    ev.peak_rss = (double)qs_mem_peak_rss();
    if (r->c->rank == 0) {
        report_block(r, &ev);
        poll_progress(r);
        return QS_OK;
    }
    r->done_msg[b->layer] = ev;
    return r->c->isend(r->c->ctx, &r->done_msg[b->layer], sizeof r->done_msg[b->layer], 0, DONE_TAG(b->layer),
                       &r->done_req[b->layer], err);
}

/* ---- set-up ------------------------------------------------------------------------- */

typedef struct setup {
    qs_fingerprint fp;
    char fp_id[17];
    int64_t resuming;
    qs_manifest *m;
    qs_model_names names;
    qs_tensor tokens;
    int64_t dims[2]; /* rows, seq */
    int64_t compute; /* qs_compute_dtype, resolved on rank 0 */
    qs_plan plan;
    int replicas;            /* D: ranks per stage (stage s = ranks [s·D, s·D + D), workers/replica.h) */
    qs_stage_plan *by_rank;  /* [P]: each rank's stage (plan.stages[rank / D]) */
    qs_gptq_export *exp;
    qs_gguf_export *gguf;
    bool want_gptq, want_gguf, want_hdf5;
    char gguf_path[QS_PATH_MAX + 16];
    qs_events *ev; /* rank 0 */
    qs_worklock lock;  /* rank 0: held for the whole run */
    bool gguf_created; /* rank 0 made model.gguf.partial (and may remove it) */
} setup;

static qs_status load_calibration(const qs_run_options *o, const qs_model_config *cfg, qs_tensor *t, qs_error *err)
{
    QS_TRY(qs_token_set_read(o->calib, t, err));
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 2)
        return qs_error_set(err, QS_ERR_INPUT, "%s: expected token ids [rows, seq_len] with seq_len >= 2", o->calib);
    if (o->calib_rows > 0) {
        if (o->calib_rows > t->shape[0])
            return qs_error_set(err, QS_ERR_INPUT, "%s: --calib-rows %d but the file has %lld rows", o->calib,
                                o->calib_rows, (long long)t->shape[0]);
        t->shape[0] = o->calib_rows;
    }
    const int32_t *ids = t->data;
    for (int64_t i = 0; i < t->shape[0] * t->shape[1]; i++)
        if (ids[i] < 0 || ids[i] >= cfg->vocab)
            return qs_error_set(err, QS_ERR_INPUT, "%s: token %d at row %lld, position %lld is outside the vocabulary [0, %d)",
                                o->calib, ids[i], (long long)(i / t->shape[1]), (long long)(i % t->shape[1]),
                                cfg->vocab);
    return QS_OK;
}

/* No output may land in or over an input: the model dir, the calibration
 * set and the job file stay untouched whatever --out and --work say
 * (compared as resolved real paths, symlinks followed). */
static qs_status check_paths(const qs_run_options *o, qs_error *err)
{
    char model[QS_PATH_MAX], out[QS_PATH_MAX], work[QS_PATH_MAX], in[QS_PATH_MAX];
    QS_TRY(qs_path_resolve(o->model, model, sizeof model, err));
    QS_TRY(qs_path_resolve(o->out, out, sizeof out, err));
    QS_TRY(qs_path_resolve(o->work, work, sizeof work, err));
    if (qs_path_within(out, model) || qs_path_within(model, out))
        return qs_error_set(err, QS_ERR_INPUT, "--out %s %s the model directory %s: the export would write over the model; "
                            "choose another --out", o->out, !strcmp(out, model) ? "is" : qs_path_within(out, model) ? "is inside" : "contains", o->model);
    if (qs_path_within(work, model) || qs_path_within(model, work))
        return qs_error_set(err, QS_ERR_INPUT, "--work %s %s the model directory %s; choose another --work", o->work,
                            !strcmp(work, model) ? "is" : qs_path_within(work, model) ? "is inside" : "contains", o->model);
    if (!strcmp(out, work))
        return qs_error_set(err, QS_ERR_INPUT, "--out and --work are the same directory %s; give each its own", o->out);
    const char *inputs[2] = {o->calib, o->job_file};
    const char *what[2] = {"--calib", "the job file"};
    for (int i = 0; i < 2; i++) {
        if (!inputs[i][0]) continue;
        QS_TRY(qs_path_resolve(inputs[i], in, sizeof in, err));
        if (qs_path_within(in, out))
            return qs_error_set(err, QS_ERR_INPUT, "%s %s lies inside --out %s, which the export writes; move it",
                                what[i], inputs[i], o->out);
    }
    return QS_OK;
}

/* Set-up, in the order that leaves nothing behind when it fails: every
 * check (options, model, tensors, calibration, ranks, plan, exports, paths)
 * before the first file is created; then the directories, the work dir's
 * lock, a write probe, the fingerprint. */
static qs_status do_setup(const qs_run_options *o, const qs_comm_i *c, const qs_backend_i *be, setup *s,
                          qs_error *err)
{
    QS_TRY(qs_run_options_validate(o, err));
    if (be->device && o->method == QS_METHOD_OMNIQUANT)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "--device cuda: OmniQuant trains on the CPU only so far "
                                                     "(use --device cpu, docs/gpu.md)");
    if (be->device && o->replicas > 1)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "--device cuda: replicas (--replicas %d) run on the CPU only so "
                                                     "far (use --replicas 1 or --device cpu, docs/gpu.md)", o->replicas);
    QS_TRY(qs_manifest_open(o->model, &s->m, err));
    const qs_model_config *cfg = qs_manifest_config(s->m);
    QS_TRY(qs_model_names_from_manifest(s->m, &s->names, err));
    /* every tensor the run uses, as `qshard inspect` checks it; rank 0 also
     * reads the ones outside the blocks (the exports copy them) */
    QS_TRY(qs_model_check(s->m, &s->names, c->rank == 0 ? QS_MODEL_CHECK_VALUES_OUTSIDE : QS_MODEL_CHECK_SHAPES, NULL,
                          err));
    if (c->rank == 0) {
        QS_TRY(load_calibration(o, cfg, &s->tokens, err));
        s->dims[0] = s->tokens.shape[0];
        s->dims[1] = s->tokens.shape[1];
        int64_t chunks = (s->dims[0] + o->micro_batch - 1) / o->micro_batch;
        if (o->replicas > chunks)
            return qs_error_set(err, QS_ERR_INPUT, "--replicas %d: the %lld calibration rows make %lld micro-batches of "
                                                   "%d rows and each replica needs at least one (lower --micro-batch)",
                                o->replicas, (long long)s->dims[0], (long long)chunks, o->micro_batch);
        /* rank 0 decides the compute dtype for all (nodes may differ in what their CPUs have);
         * OmniQuant trains in f32 */
        qs_compute_dtype cd = QS_COMPUTE_F32;
        if (o->method != QS_METHOD_OMNIQUANT)
            QS_TRY(qs_compute_dtype_resolve(o->compute_dtype, s->m, &s->names, be, &cd, err));
        else if (!strcmp(o->compute_dtype, "bf16"))
            return qs_error_set(err, QS_ERR_INPUT, "--compute-dtype bf16: OmniQuant computes in f32 (use f32 or auto)");
        s->compute = cd;
    }
    /* every option must fit every linear before anything runs */
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
    int nl = qs_block_linears(cfg, &s->names, 0, lin);
    qs_quant_opts qo = quant_opts(o);
    for (int i = 0; i < nl; i++) {
        qo.name = lin[i].weight;
        QS_TRY(qs_quant_opts_check(&qo, lin[i].out, lin[i].in, err));
    }
    QS_TRY(qs_omni_check(cfg, &qo, err));
    s->replicas = o->replicas > 1 ? o->replicas : 1;
    if (c->size % s->replicas)
        return qs_error_set(err, QS_ERR_INPUT, "--replicas %d does not divide the %d ranks (ranks = stages × replicas)",
                            s->replicas, c->size);
    int stages = c->size / s->replicas;
    if (stages > cfg->n_layers) {
        if (s->replicas == 1)
            return qs_error_set(err, QS_ERR_INPUT, "%d ranks for a model of %d blocks: use at most %d ranks", c->size,
                                cfg->n_layers, cfg->n_layers);
        return qs_error_set(err, QS_ERR_INPUT, "%d stages (%d ranks / --replicas %d) for a model of %d blocks: use at "
                                               "most %d stages", stages, c->size, s->replicas, cfg->n_layers,
                            cfg->n_layers);
    }
    qs_cost_params p;
    qs_cost_params_default(&p);
    p.schedule = o->schedule;
    p.true_sequential = o->true_sequential;
    p.micro_batch = o->micro_batch;
    QS_TRY(qs_plan_make(cfg, &p, c->size, s->replicas, 0, 0, &s->plan, err));
    s->by_rank = calloc((size_t)c->size, sizeof *s->by_rank);
    if (!s->by_rank) return qs_error_set(err, QS_ERR_NOMEM, "plan of %d ranks", c->size);
    for (int r = 0; r < c->size; r++) s->by_rank[r] = s->plan.stages[r / s->replicas];
    qs_gptq_export_opts eo = {quant_opts(o), o->true_sequential, !strcmp(o->checkpoint_format, "gptq_v2"),
                              o->max_shard_size};
    /* --formats: a comma list of gptq, gguf, hdf5 (qs_run_options_validate checked it) */
    char list[sizeof o->formats];
    snprintf(list, sizeof list, "%s", o->formats);
    for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (!strcmp(t, "gptq")) s->want_gptq = true;
        else if (!strcmp(t, "gguf")) s->want_gguf = true;
        else if (!strcmp(t, "hdf5")) s->want_hdf5 = true;
        else return qs_error_set(err, QS_ERR_INPUT, "--formats: unknown format '%s' (expected gptq, gguf, hdf5)", t);
    }
    if (s->want_gptq) QS_TRY(qs_gptq_export_init(&s->exp, o->out, s->m, &s->names, &eo, err));
    if (s->want_gguf) {
        /* GGUF is one file: ranks pwrite their tensors into it at planned offsets */
        qs_gguf_export_opts go;
        memset(&go, 0, sizeof go);
        go.quant = quant_opts(o);
        go.fallback_f16 = !strcmp(o->gguf_fallback, "f16");
        snprintf(s->gguf_path, sizeof s->gguf_path, "%s/model.gguf", o->out);
        QS_TRY(qs_gguf_export_init(&s->gguf, s->gguf_path, s->m, &s->names, &go, err));
    }
    if (c->rank != 0) return QS_OK;
    if (s->want_gptq) QS_TRY(qs_side_files_check_dir(o->model, err));
    /* only now does anything touch the disk */
    QS_TRY(check_paths(o, err));
    QS_TRY(qs_mkdir_p(o->work, err));
    QS_TRY(qs_worklock_take(&s->lock, o->work, err));
    char blocks[QS_PATH_MAX + 16];
    snprintf(blocks, sizeof blocks, "%s/blocks", o->work);
    QS_TRY(qs_mkdir_p(blocks, err));
    QS_TRY(qs_dir_probe_writable(blocks, err));
    QS_TRY(qs_mkdir_p(o->out, err));
    QS_TRY(qs_dir_probe_writable(o->out, err));
    /* the fingerprint records the resolved compute dtype, not "auto" */
    qs_run_options *fo = malloc(sizeof *fo);
    if (!fo) return qs_error_set(err, QS_ERR_NOMEM, "run options");
    *fo = *o;
    snprintf(fo->compute_dtype, sizeof fo->compute_dtype, "%s", qs_compute_dtype_name((qs_compute_dtype)s->compute));
    /* the resolved device: a GPU's numbers are not the CPU's (docs/gpu.md) */
    snprintf(fo->device, sizeof fo->device, "%s", be->device ? "cuda" : "cpu");
    qs_status fst = qs_fingerprint_make(fo, s->m, &s->tokens, c->size, &s->fp, err);
    free(fo);
    QS_TRY(fst);
    bool resuming = false;
    QS_TRY(qs_fingerprint_check(o->work, &s->fp, o->force_resume, &resuming, err));
    s->resuming = resuming;
    memcpy(s->fp_id, s->fp.id, sizeof s->fp_id);
    /* a previous export's index/config would make a partial directory look complete */
    char ip[QS_PATH_MAX + 64];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", o->out);
    remove(ip);
    if (s->gguf) {
        QS_TRY(qs_gguf_export_create(s->gguf, err));
        s->gguf_created = true;
        if (qs_gguf_export_vocab_warning(s->gguf))
            fprintf(stderr, "qshard run: warning: %s: %s\n", s->gguf_path, qs_gguf_export_vocab_warning(s->gguf));
    }
    QS_TRY(qs_events_open(&s->ev, o->work, o->log_json, err));
    return QS_OK;
}

/* ---- the run ------------------------------------------------------------------------- */

/* Per-rank numbers gathered on rank 0 at the end (one allreduce of doubles). */
enum {
    T_TOTAL, T_COMPUTE, T_COMM, T_IO, T_IDLE, T_BYTES, T_HESSIAN, T_SOLVE, T_WAIT, T_PEAK_RSS, T_RSS_START,
    T_FORWARD, T_FWD_FLOPS, T_FWD_ONE, /* block forwards: seconds, flops run, flops of one forward of each block */
    T_N
};

static void print_timing(qs_progress *pg, const double *t, int ranks)
{
    qs_progress_message(pg, "\n%5s %9s %9s %9s %9s %9s %8s %8s %8s %10s %10s %10s", "rank", "total s", "compute s",
                        "forward s", "hessian s", "solve s", "comm s", "io s", "idle s", "read MiB", "peak MiB",
                        "fwd/block");
    for (int r = 0; r < ranks; r++) {
        const double *x = t + r * T_N;
        qs_progress_message(pg, "%5d %9.2f %9.2f %9.2f %9.2f %9.2f %8.2f %8.2f %8.2f %10.1f %10.1f %10.2f", r,
                            x[T_TOTAL], x[T_COMPUTE], x[T_FORWARD], x[T_HESSIAN], x[T_SOLVE], x[T_COMM], x[T_IO],
                            x[T_IDLE], x[T_BYTES] / 1048576.0, x[T_PEAK_RSS] / 1048576.0,
                            x[T_FWD_ONE] > 0 ? x[T_FWD_FLOPS] / x[T_FWD_ONE] : 0.0);
    }
}

/* Every rank's cores and threads, printed by rank 0 at the start; one
 * warning line when a rank is bound to fewer cores than its share of its
 * node (mpirun binds a rank to one core by default when ranks <= cores). */
static qs_status report_cores(const qs_comm_i *c, const qs_stage_plan *by_rank, int replicas, qs_progress *pg,
                              qs_error *err)
{
    enum { NC = 4 };
    qs_cpu_threads th;
    qs_cpu_threads_init(&th);
    qs_cpu_threads_share(&th, c->node_size > 0 ? c->node_size : 1);
    double *v = calloc((size_t)(c->size * NC), sizeof(double));
    if (!v) return qs_error_set(err, QS_ERR_NOMEM, "core report");
    double *mine = v + c->rank * NC;
    mine[0] = th.affinity, mine[1] = th.available, mine[2] = th.threads, mine[3] = c->node_size > 0 ? c->node_size : 1;
    qs_status st = c->allreduce_sum_f64(c->ctx, v, (size_t)(c->size * NC), err);
    if (st == QS_OK && c->rank == 0) {
        char short_ranks[256] = "";
        int n_short = 0, share = 0, per_node = 1;
        for (int r = 0; r < c->size; r++) {
            const double *x = v + r * NC;
            int aff = (int)x[0], avail = (int)x[1], thr = (int)x[2], ns = (int)x[3];
            int sh = avail / ns > 0 ? avail / ns : 1;
            char rep[80] = "";
            if (replicas > 1) snprintf(rep, sizeof rep, " (stage %d, replica %d of %d)", r / replicas, r % replicas,
                                       replicas);
            qs_progress_message(pg, "  rank %d: blocks [%d, %d)%s%s%s; %d core%s, %d thread%s (its node: %d cores, %d rank%s)",
                                r, by_rank[r].first_block, by_rank[r].end_block, by_rank[r].embed ? " + embedding" : "",
                                by_rank[r].head ? " + head" : "", rep, aff,
                                aff == 1 ? "" : "s", thr, thr == 1 ? "" : "s", avail, ns, ns == 1 ? "" : "s");
            if (aff < sh) {
                size_t len = strlen(short_ranks);
                if (len + 16 < sizeof short_ranks)
                    snprintf(short_ranks + len, sizeof short_ranks - len, "%s%d", n_short ? ", " : "", r);
                if (!n_short) share = sh, per_node = ns;
                n_short++;
            }
        }
        /* a warning: printed even with --quiet */
        if (n_short)
            fprintf(stderr, "qshard run: warning: rank%s %s run%s on fewer cores than %d, %s share of the node: launch "
                            "with `mpirun --map-by ppr:%d:node:pe=%d` or `mpirun --bind-to none` (Slurm: `srun "
                            "--cpus-per-task=%d`)\n",
                    n_short > 1 ? "s" : "", short_ranks, n_short > 1 ? "" : "s", share, n_short > 1 ? "their" : "its",
                    per_node, share, share);
    }
    free(v);
    return st;
}

static void add_option(void *ctx, const char *key, const char *value)
{
    cJSON_AddStringToObject(ctx, key, value);
}

/* Rank 0: the first event of a run — what it is, and what the plan predicts. */
static void emit_run_start(const qs_run_options *o, const qs_comm_i *c, const setup *s, const qs_plan *pred)
{
    const qs_model_config *cfg = qs_manifest_config(s->m);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "ranks", c->size);
    cJSON_AddNumberToObject(e, "blocks", cfg->n_layers);
    cJSON_AddStringToObject(e, "arch", qs_arch_name(cfg->arch));
    cJSON_AddNumberToObject(e, "hidden", (double)cfg->hidden);
    cJSON_AddStringToObject(e, "model", o->model);
    cJSON_AddStringToObject(e, "work", o->work);
    cJSON_AddStringToObject(e, "out", o->out);
    cJSON_AddStringToObject(e, "schedule", o->schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined");
    cJSON_AddStringToObject(e, "method", qs_method_name(o->method));
    cJSON_AddNumberToObject(e, "bits", o->bits);
    cJSON_AddNumberToObject(e, "group_size", o->group_size);
    cJSON_AddBoolToObject(e, "sym", o->sym);
    cJSON_AddBoolToObject(e, "rtn_baseline", o->rtn_baseline);
    cJSON_AddNumberToObject(e, "calib_rows", (double)s->dims[0]);
    cJSON_AddNumberToObject(e, "calib_len", (double)s->dims[1]);
    cJSON_AddBoolToObject(e, "resumed", s->resuming != 0);
    cJSON_AddStringToObject(e, "fingerprint", s->fp_id);
    if (o->command_line) cJSON_AddStringToObject(e, "command", o->command_line);
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    cJSON_AddStringToObject(e, "host", host);
    const char *job = getenv("SLURM_JOB_ID"), *restarts = getenv("SLURM_RESTART_COUNT");
    if (job) cJSON_AddStringToObject(e, "slurm_job_id", job);
    if (restarts) cJSON_AddStringToObject(e, "slurm_restart_count", restarts);
    cJSON_AddItemToObject(e, "versions", qs_versions_json());
    cJSON *opts = cJSON_AddObjectToObject(e, "options");
    qs_run_options_visit(o, add_option, opts);
    /* the plan's prediction for this run's calibration set (the memory chart compares with it) */
    cJSON *plan = cJSON_AddArrayToObject(e, "plan");
    for (int r = 0; pred && r < pred->n_ranks; r++) {
        const qs_stage_plan *sp = &s->by_rank[r], *pp = &pred->stages[r / s->replicas];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "rank", r);
        cJSON_AddNumberToObject(x, "first_block", sp->first_block);
        cJSON_AddNumberToObject(x, "end_block", sp->end_block);
        cJSON_AddBoolToObject(x, "embed", sp->embed);
        cJSON_AddBoolToObject(x, "head", sp->head);
        cJSON_AddNumberToObject(x, "peak_host_bytes", (double)pp->peak_host);
        cJSON_AddNumberToObject(x, "peak_device_bytes", (double)pp->peak_device);
        cJSON_AddNumberToObject(x, "seconds", pp->seconds);
        cJSON_AddItemToArray(plan, x);
    }
    if (s->fp.json) {
        cJSON *fp = cJSON_Parse(s->fp.json);
        if (fp) cJSON_AddItemToObject(e, "fingerprint_record", fp);
    }
    qs_events_emit(s->ev, "run_start", e);
}

/* Rank 0: the last event of a run, with every rank's totals. */
static void emit_run_end(qs_events *ev, const char *status, double seconds, const double *tt, int ranks)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "status", status);
    cJSON_AddNumberToObject(e, "seconds", seconds);
    cJSON *pr = cJSON_AddArrayToObject(e, "per_rank");
    for (int r = 0; tt && r < ranks; r++) {
        const double *x = tt + r * T_N;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "rank", r);
        cJSON_AddNumberToObject(o, "total_s", x[T_TOTAL]);
        cJSON_AddNumberToObject(o, "compute_s", x[T_COMPUTE]);
        cJSON_AddNumberToObject(o, "hessian_s", x[T_HESSIAN]);
        cJSON_AddNumberToObject(o, "solve_s", x[T_SOLVE]);
        cJSON_AddNumberToObject(o, "comm_s", x[T_COMM]);
        cJSON_AddNumberToObject(o, "wait_s", x[T_WAIT]);
        cJSON_AddNumberToObject(o, "io_s", x[T_IO]);
        cJSON_AddNumberToObject(o, "idle_s", x[T_IDLE]);
        cJSON_AddNumberToObject(o, "bytes_read", x[T_BYTES]);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", x[T_PEAK_RSS]);
        cJSON_AddNumberToObject(o, "rss_start_bytes", x[T_RSS_START]);
        cJSON_AddItemToArray(pr, o);
    }
    qs_events_emit(ev, "run_end", e);
}

static void emit_export(qs_events *ev, const char *format, const char *path)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "format", format);
    cJSON_AddStringToObject(e, "path", path);
    qs_events_emit(ev, "export", e);
}

/* Rank 0: report.html from the work dir; a report that cannot be written is a
 * warning (the exports are what the run is for). */
static void write_report(const qs_run_options *o, char *path, size_t cap)
{
    qs_error e;
    qs_error_clear(&e);
    if (qs_report_generate(o->work, NULL, path, cap, &e) != QS_OK) {
        fprintf(stderr, "qshard run: warning: no report: %s\n", e.msg);
        path[0] = '\0';
    }
}

/* With a GPU: this rank's blocks (the plan for this calibration set) against
 * what the device has free now; *nofit says the plan does not fit. */
static qs_status device_fit(const qs_run_options *o, const qs_comm_i *c, const setup *s, const qs_device_choice *dev,
                            bool *nofit, qs_error *err)
{
    qs_cost_params p;
    qs_cost_params_default(&p);
    p.schedule = o->schedule;
    p.true_sequential = o->true_sequential;
    p.micro_batch = o->micro_batch;
    p.calib_rows = s->dims[0];
    p.calib_len = s->dims[1];
    if (dev->kind != QS_DEVICE_CUDA) return QS_OK; /* a rank --device auto put on the CPU */
    qs_plan plan;
    QS_TRY(qs_plan_make(qs_manifest_config(s->m), &p, c->size, s->replicas, 0, 0, &plan, err));
    qs_device_info now;
    qs_status st = qs_cuda_device_info(dev->index, &now, err);
    if (st == QS_OK) {
        st = qs_device_check_plan(&plan, c->rank, &now, err);
        *nofit = st != QS_OK;
    }
    qs_plan_free(&plan);
    return st;
}

qs_status qs_run(const qs_run_options *o, const qs_comm_i *c, volatile int *stop_flag, qs_error *err)
{
    return qs_run_on(o, c, NULL, stop_flag, NULL, err);
}

static qs_status run_with(const qs_run_options *o, const qs_comm_i *c, const qs_comm_i *acts, const qs_backend_i *be,
                          const qs_device_choice *dev, volatile int *stop_flag, bool *nofit, qs_error *err);

/* The activations' transport: NCCL when every rank computes on a GPU, there
 * is more than one rank, --transport is not mpi and NCCL loads everywhere
 * (with auto, a note and MPI when it does not); MPI otherwise. */
static qs_status pick_transport(const qs_run_options *o, const qs_comm_i *c, const qs_device_choice *dev,
                                qs_comm_i *nccl, bool *use_nccl, qs_error *err)
{
    *use_nccl = false;
    int64_t not_gpu[1] = {dev->kind != QS_DEVICE_CUDA};
    QS_TRY(c->allreduce_max_i64(c->ctx, not_gpu, 1, err));
    bool want = !strcmp(o->transport, "nccl") || (!strcmp(o->transport, "auto") && c->size > 1);
    if (!want) return QS_OK;
    if (not_gpu[0])
        return strcmp(o->transport, "nccl") ? QS_OK
                                             : qs_error_set(err, QS_ERR_INPUT, "--transport nccl: not every rank has a "
                                                                               "GPU (--device auto chose the CPU somewhere)");
    qs_error nerr;
    qs_status st = qs_comm_nccl_init(c, dev->index, o->heartbeat_timeout, nccl, &nerr);
    if (st == QS_OK) {
        *use_nccl = true;
        return QS_OK;
    }
    if (!strcmp(o->transport, "nccl")) {
        if (err) *err = nerr;
        return st;
    }
    if (c->rank == 0 && !strstr(nerr.msg, "failed during set-up"))
        fprintf(stderr, "qshard run: note: --transport auto: activations over MPI (%s)\n", nerr.msg);
    return QS_OK;
}

qs_status qs_run_on(const qs_run_options *o, const qs_comm_i *c, const qs_device_choice *dev, volatile int *stop_flag,
                    bool *nofit, qs_error *err)
{
    bool nf = false;
    if (nofit) *nofit = false;
    if (!dev) return run_with(o, c, c, qs_backend_cpu(), NULL, stop_flag, &nf, err);
    /* one GPU per rank: its backend (stream, cuBLAS, cuSOLVER) for the whole run;
     * every rank agrees that it has one before anything is read (a rank that
     * --device auto put on the CPU computes there) */
    qs_backend_i cuda;
    memset(&cuda, 0, sizeof cuda);
    const bool gpu = dev->kind == QS_DEVICE_CUDA;
    qs_cuda_opts co = {.tf32 = false};
    qs_status st = agree(c, gpu ? qs_backend_cuda_init(&cuda, dev->index, &co, err) : QS_OK, err);
    if (st != QS_OK) {
        if (gpu) qs_backend_cuda_free(&cuda);
        return st;
    }
    qs_comm_i nccl;
    bool use_nccl = false;
    st = agree(c, pick_transport(o, c, dev, &nccl, &use_nccl, err), err);
    if (st == QS_OK)
        st = run_with(o, c, use_nccl ? &nccl : c, gpu ? &cuda : qs_backend_cpu(), dev, stop_flag, &nf, err);
    if (nofit) *nofit = nf;
    if (use_nccl) qs_comm_nccl_free(&nccl);
    if (gpu) qs_backend_cuda_free(&cuda);
    return st;
}

static qs_status run_with(const qs_run_options *o, const qs_comm_i *c, const qs_comm_i *acts, const qs_backend_i *be,
                          const qs_device_choice *dev, volatile int *stop_flag, bool *nofit, qs_error *err)
{
    double t0 = now();
    double rss_start = (double)qs_mem_rss();
    setup s;
    memset(&s, 0, sizeof s);
    s.lock.fd = -1;
    qs_progress pg;
    memset(&pg, 0, sizeof pg); /* mode QUIET until set up: prints nothing */
    qs_plan pred;
    memset(&pred, 0, sizeof pred);
    qs_status st = agree(c, do_setup(o, c, be, &s, err), err);
    if (st == QS_OK) st = c->bcast(c->ctx, s.dims, sizeof s.dims, 0, err);
    if (st == QS_OK) st = c->bcast(c->ctx, &s.compute, sizeof s.compute, 0, err);
    if (st == QS_OK) st = c->bcast(c->ctx, s.fp_id, sizeof s.fp_id, 0, err);
    if (st == QS_OK) st = c->bcast(c->ctx, &s.resuming, sizeof s.resuming, 0, err);
    if (st == QS_OK && s.replicas > 1) {
        /* every replica of the first stage embeds its own calibration rows: the
         * tokens to every rank (N·L int32, small next to one block) */
        if (c->rank != 0) {
            int64_t shape[2] = {s.dims[0], s.dims[1]};
            st = qs_tensor_init(&s.tokens, QS_DTYPE_I32, 2, shape, err);
        }
        if (st == QS_OK)
            st = c->bcast(c->ctx, s.tokens.data, (size_t)(s.dims[0] * s.dims[1]) * sizeof(int32_t), 0, err);
    }
    if (st == QS_OK && dev) {
        /* the plan's device bytes against cudaMemGetInfo, before any block is read */
        bool mine_nofit = false;
        st = agree(c, device_fit(o, c, &s, dev, &mine_nofit, err), err);
        int64_t any[1] = {mine_nofit};
        qs_error aerr;
        if (c->allreduce_max_i64(c->ctx, any, 1, &aerr) == QS_OK) *nofit = any[0] != 0;
    }
    if (st != QS_OK) goto out;
    const qs_stage_plan *mine = &s.by_rank[c->rank];
    const qs_model_config *cfg = qs_manifest_config(s.m);
    if (c->rank == 0) {
        const char *job = getenv("SLURM_JOB_ID"), *restarts = getenv("SLURM_RESTART_COUNT");
        qs_journal_append(o->work, "run %s: %d blocks on %d rank(s), fingerprint %s, slurm job %s, restart count %s",
                          s.resuming ? "resumed" : "started", qs_manifest_config(s.m)->n_layers, c->size, s.fp_id,
                          job ? job : "-", restarts ? restarts : "0");
        /* the plan's memory prediction for this calibration set (the run's own plan,
         * which only places blocks, keeps its defaults) */
        qs_cost_params p;
        qs_cost_params_default(&p);
        p.schedule = o->schedule;
        p.true_sequential = o->true_sequential;
        p.micro_batch = o->micro_batch;
        p.calib_rows = s.dims[0];
        p.calib_len = s.dims[1];
        qs_error perr;
        bool have_pred = qs_plan_make(cfg, &p, c->size, s.replicas, 0, 0, &pred, &perr) == QS_OK;
        emit_run_start(o, c, &s, have_pred ? &pred : NULL);
        /* --json keeps stdout for the JSON summary: progress goes to stderr then */
        FILE *pf = o->json ? stderr : stdout;
        /* replica 0 of each stage reports the stage's blocks: the other replicas own none here */
        qs_stage_plan *shown = malloc((size_t)c->size * sizeof *shown);
        if (!shown) c->abort(c->ctx, 1);
        for (int r = 0; r < c->size; r++) {
            shown[r] = s.by_rank[r];
            if (r % s.replicas) shown[r].first_block = shown[r].end_block = 0;
        }
        st = qs_progress_init(&pg, pf, qs_progress_mode_for(pf, o->progress, o->quiet), shown, c->size,
                              cfg->n_layers, o->schedule == QS_SCHEDULE_PIPELINED, (double)(s.dims[0] * s.dims[1]),
                              err);
        free(shown);
        if (st != QS_OK) c->abort(c->ctx, 1);
    }

    qs_progress_message(&pg, "qshard run: %s, %d blocks on %d rank(s), %s schedule, %s %d-bit g%d, %lld × %lld calibration tokens, %s compute%s%s%s%s",
                        qs_arch_name(cfg->arch), cfg->n_layers, c->size,
                        o->schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined", o->method == QS_METHOD_GPTQ ? "GPTQ" : o->method == QS_METHOD_OMNIQUANT ? "OmniQuant" : "RTN",
                        o->bits, o->group_size, (long long)s.dims[0], (long long)s.dims[1],
                        qs_compute_dtype_name((qs_compute_dtype)s.compute), s.compute == QS_COMPUTE_BF16 ? " (" : "",
                        s.compute == QS_COMPUTE_BF16 ? qs_backend_cpu()->bf16_kernel(qs_backend_cpu()->ctx) : "",
                        s.compute == QS_COMPUTE_BF16 ? ")" : "", s.resuming ? " (resuming)" : "");
    if (be->device)
        qs_progress_message(&pg, "qshard run: a GPU per rank (rank 0: %s, %s), activations handed off over %s",
                            be->name, dev->info.name, acts->device_buffers ? "nccl (GPU to GPU)" : "mpi (through host memory)");
    if ((st = report_cores(c, s.by_rank, s.replicas, &pg, err)) != QS_OK) goto out;

    run_ctx rc;
    memset(&rc, 0, sizeof rc);
    rc.c = c;
    rc.n_layers = cfg->n_layers;
    rc.stages = s.by_rank;
    rc.t0 = t0;
    rc.o = o;
    rc.exp = s.exp;
    rc.gguf = s.gguf;
    rc.fingerprint = s.fp_id;
    rc.resuming = s.resuming != 0;
    rc.rank = c->rank;
    rc.layers = cJSON_CreateArray();
    rc.ev = s.ev;
    rc.pg = &pg;
    rc.cfg = cfg;
    rc.names = &s.names;
    rc.tokens = (double)(s.dims[0] * s.dims[1]);
    rc.stop_flag = stop_flag;
    rc.done_msg = calloc((size_t)cfg->n_layers, sizeof *rc.done_msg);
    rc.done_req = calloc((size_t)cfg->n_layers, sizeof *rc.done_req);
    rc.start_msg = calloc((size_t)cfg->n_layers, sizeof *rc.start_msg);
    rc.start_req = calloc((size_t)cfg->n_layers, sizeof *rc.start_req);
    if (!rc.done_msg || !rc.done_req || !rc.start_msg || !rc.start_req) {
        st = qs_error_set(err, QS_ERR_NOMEM, "progress messages");
        c->abort(c->ctx, 1);
    }
    if (c->rank == 0)
        for (int l = mine->end_block; l < cfg->n_layers && st == QS_OK; l++) {
            st = c->irecv(c->ctx, rc.start_msg[l], sizeof rc.start_msg[l], owner_of(&rc, l), START_TAG(l),
                          &rc.start_req[l], err);
            if (st == QS_OK)
                st = c->irecv(c->ctx, &rc.done_msg[l], sizeof rc.done_msg[l], owner_of(&rc, l), DONE_TAG(l),
                              &rc.done_req[l], err);
        }
    qs_stage_args a;
    memset(&a, 0, sizeof a);
    a.comm = acts; /* the activations' transport (NCCL or MPI); progress and agreement stay on MPI (c) */
    a.be = be;
    a.manifest = s.m;
    a.names = &s.names;
    a.quant = quant_opts(o);
    a.compute = (qs_compute_dtype)s.compute;
    a.true_sequential = o->true_sequential;
    a.rtn_baseline = o->rtn_baseline;
    a.schedule = o->schedule;
    a.first_block = mine->first_block;
    a.end_block = mine->end_block;
    /* replica i of stage s is rank s·D + i; it hands its rows to replica i of stage s + 1 */
    a.prev_rank = c->rank - s.replicas >= 0 ? c->rank - s.replicas : -1;
    a.next_rank = c->rank + s.replicas < c->size ? c->rank + s.replicas : -1;
    a.replicas = s.replicas;
    a.replica = c->rank % s.replicas;
    a.replica0_rank = c->rank - a.replica;
    a.rows = s.dims[0];
    a.seq = s.dims[1];
    a.micro_batch = o->micro_batch;
    a.tokens = mine->embed ? s.tokens.data : NULL;
    a.embed = mine->embed;
    a.on_block = on_block;
    a.on_block_ctx = &rc;
    a.on_block_start = on_block_start;
    a.resume_block = resume_block;
    a.resume_ctx = &rc;
    a.stop_flag = stop_flag;
    qs_stage_timing tm;
    st = qs_stage_run(&a, &tm, err);
    if (st == QS_OK && mine->embed && s.exp) st = qs_gptq_export_embed(s.exp, err);
    if (st == QS_OK && mine->head && s.exp) st = qs_gptq_export_head(s.exp, err);
    if (st == QS_OK && mine->embed && s.gguf) st = qs_gguf_export_embed(s.gguf, err);
    if (st == QS_OK && mine->head && s.gguf) st = qs_gguf_export_head(s.gguf, err);
    /* rank 0 hears of every block before the final collectives; a stop ends the wait */
    while (st == QS_OK && c->rank == 0 && rc.reported < cfg->n_layers) {
        poll_progress(&rc);
        if ((stop_flag && *stop_flag) || c->stop_requested(c->ctx)) {
            if (stop_flag) *stop_flag = 1;
            st = qs_error_set(err, QS_ERR_INTERRUPTED, "stopped while waiting for the other ranks");
            break;
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        qs_comm_request *reqs[2] = {&rc.start_req[l], &rc.done_req[l]};
        for (int k = 0; k < 2; k++) {
            if (!reqs[k]->n) continue;
            if (st == QS_OK) {
                qs_error e;
                c->wait(c->ctx, reqs[k], &e);
            } else {
                c->cancel(c->ctx, reqs[k]);
            }
        }
    }
    /* a stop request: every rank gets here (waits poll for it); agree, then exit 3 */
    int64_t stopped[1] = {st == QS_ERR_INTERRUPTED};
    if (st == QS_OK || st == QS_ERR_INTERRUPTED) {
        qs_error e2;
        if (c->allreduce_max_i64(c->ctx, stopped, 1, &e2) != QS_OK) {
            st = e2.code;
            *err = e2;
        } else if (stopped[0]) {
            if (c->rank == 0) {
                qs_journal_append(o->work, "run interrupted at a block boundary; resumable");
                note_stop(&rc);
                if (!rc.stop_emitted) {
                    /* another rank's stop that rank 0 learnt of through the agreement */
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddStringToObject(e, "action", "stopped at a block boundary (resumable)");
                    qs_events_emit(s.ev, "stop_signal", e);
                }
                emit_run_end(s.ev, "interrupted", now() - t0, NULL, c->size);
                qs_progress_end(&pg);
                char rp[QS_PATH_MAX + 64];
                write_report(o, rp, sizeof rp);
                fprintf(stderr, "qshard run: interrupted: finished blocks are checkpointed in %s; run the same "
                                "command again to resume%s%s\n", o->work, rp[0] ? "; report so far in " : "", rp);
            }
            cJSON_Delete(rc.layers);
            free(rc.done_msg);
            free(rc.done_req);
            free(rc.start_msg);
            free(rc.start_req);
            st = qs_error_set(err, QS_ERR_INTERRUPTED, "interrupted (resumable)");
            goto out;
        }
    }
    if (st != QS_OK) {
        /* mid-run: report with the rank and stop every rank (no hang) */
        qs_progress_end(&pg);
        /* mid-run: report with the rank and stop every rank (no hang). A dead
         * peer surfaces here as an MPI error too: the heartbeat gets a moment
         * to name it (and end this process); else the goodbye keeps the
         * others from reporting this rank as lost. */
        qs_heartbeat_stop(1.0);
        /* the GGUF file every rank writes into is not resumable: remove it */
        if (s.gguf_created) unlink(qs_gguf_export_partial_path(s.gguf));
        fprintf(stderr, "qshard run: error: rank %d: %s\n", c->rank, err->msg);
        fflush(stderr);
        c->abort(c->ctx, qs_status_exit_code(st) ? qs_status_exit_code(st) : 1);
    }
    qs_progress_end(&pg);

    /* per-rank statistics to the work dir, then everyone's timing to rank 0 */
    char path[QS_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/stats.rank%05d.json", o->work, c->rank);
    char *txt = cJSON_PrintUnformatted(rc.layers);
    st = qs_write_file_durable(path, txt, strlen(txt), err);
    free(txt);
    double *tt = calloc((size_t)(c->size * T_N), sizeof(double));
    double *x = tt + c->rank * T_N;
    x[T_TOTAL] = tm.total;
    x[T_COMPUTE] = tm.compute;
    x[T_COMM] = tm.comm;
    x[T_IO] = tm.io;
    x[T_IDLE] = tm.idle;
    x[T_BYTES] = (double)tm.bytes_read;
    x[T_HESSIAN] = tm.hessian;
    x[T_SOLVE] = tm.solve;
    x[T_WAIT] = tm.wait_first;
    x[T_PEAK_RSS] = (double)qs_mem_peak_rss();
    x[T_RSS_START] = rss_start;
    x[T_FORWARD] = tm.forward;
    x[T_FWD_FLOPS] = tm.forward_flops;
    x[T_FWD_ONE] = tm.forward_flops_one;
    if (st == QS_OK) st = agree(c, st, err);
    if (st == QS_OK) st = c->allreduce_sum_f64(c->ctx, tt, (size_t)(c->size * T_N), err);
    /* every shard is durable on every rank here: now the index and configs */
    if (st == QS_OK && c->rank == 0 && s.gguf) {
        st = qs_gguf_export_finish(s.gguf, err);
        if (st == QS_OK) emit_export(s.ev, "gguf", s.gguf_path);
    }
    if (st == QS_OK && c->rank == 0 && s.want_hdf5) {
        /* the archive is made from the block checkpoints (the work dir is shared) */
        char h5[QS_PATH_MAX + 16];
        snprintf(h5, sizeof h5, "%s/qshard.h5", o->out);
        qs_export_opts xo = {.format = QS_EXPORT_HDF5};
        st = qs_export_from_work(o->work, h5, &xo, err);
        if (st == QS_OK) emit_export(s.ev, "hdf5", h5);
    }
    /* the GPTQ index last: its presence marks a complete export */
    if (st == QS_OK && c->rank == 0 && s.exp) {
        st = qs_gptq_export_finish(s.exp, err);
        if (st == QS_OK) emit_export(s.ev, "gptq", o->out);
    }
    if (st == QS_OK && c->rank == 0) {
        /* the report: every rank's per-layer statistics, in block order */
        cJSON *rep = cJSON_CreateObject();
        cJSON_AddNumberToObject(rep, "ranks", c->size);
        cJSON_AddNumberToObject(rep, "blocks", cfg->n_layers);
        cJSON_AddStringToObject(rep, "schedule", o->schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined");
        cJSON_AddStringToObject(rep, "compute_dtype", qs_compute_dtype_name((qs_compute_dtype)s.compute));
        if (s.compute == QS_COMPUTE_BF16)
            cJSON_AddStringToObject(rep, "bf16_kernel", qs_backend_cpu()->bf16_kernel(qs_backend_cpu()->ctx));
        cJSON_AddNumberToObject(rep, "seconds", now() - t0);
        cJSON *layers = cJSON_AddArrayToObject(rep, "layers");
        cJSON *omni = o->method == QS_METHOD_OMNIQUANT ? cJSON_AddArrayToObject(rep, "omniquant") : NULL;
        for (int r = 0; r < c->size && st == QS_OK; r++) {
            snprintf(path, sizeof path, "%s/stats.rank%05d.json", o->work, r);
            char *data = NULL;
            st = qs_read_file(path, &data, NULL, err);
            cJSON *arr = st == QS_OK ? cJSON_Parse(data) : NULL;
            free(data);
            cJSON *e;
            cJSON_ArrayForEach(e, arr)
            {
                bool per_block = cJSON_GetObjectItemCaseSensitive(e, "omniquant") != NULL;
                cJSON_AddItemToArray(per_block && omni ? omni : layers, cJSON_Duplicate(e, 1));
            }
            cJSON_Delete(arr);
        }
        cJSON *ranks = cJSON_AddArrayToObject(rep, "per_rank");
        for (int r = 0; r < c->size; r++) {
            cJSON *e = cJSON_CreateObject();
            const double *y = tt + r * T_N;
            cJSON_AddNumberToObject(e, "rank", r);
            cJSON_AddNumberToObject(e, "first_block", s.by_rank[r].first_block);
            cJSON_AddNumberToObject(e, "end_block", s.by_rank[r].end_block);
            cJSON_AddNumberToObject(e, "stage", r / s.replicas);
            cJSON_AddNumberToObject(e, "replica", r % s.replicas);
            cJSON_AddNumberToObject(e, "total_s", y[T_TOTAL]);
            cJSON_AddNumberToObject(e, "compute_s", y[T_COMPUTE]);
            cJSON_AddNumberToObject(e, "comm_s", y[T_COMM]);
            cJSON_AddNumberToObject(e, "io_s", y[T_IO]);
            cJSON_AddNumberToObject(e, "idle_s", y[T_IDLE]);
            cJSON_AddNumberToObject(e, "bytes_read", y[T_BYTES]);
            cJSON_AddNumberToObject(e, "hessian_s", y[T_HESSIAN]);
            cJSON_AddNumberToObject(e, "solve_s", y[T_SOLVE]);
            cJSON_AddNumberToObject(e, "forward_s", y[T_FORWARD]);
            cJSON_AddNumberToObject(e, "forward_flops", y[T_FWD_FLOPS]);
            /* forward work in units of one forward of the rank's blocks over all calibration rows */
            cJSON_AddNumberToObject(e, "forward_equivalents", y[T_FWD_ONE] > 0 ? y[T_FWD_FLOPS] / y[T_FWD_ONE] : 0.0);
            cJSON_AddNumberToObject(e, "wait_s", y[T_WAIT]);
            cJSON_AddNumberToObject(e, "peak_rss_bytes", y[T_PEAK_RSS]);
            if (pred.stages) {
                cJSON_AddNumberToObject(e, "plan_peak_host_bytes", (double)pred.stages[r / s.replicas].peak_host);
                cJSON_AddNumberToObject(e, "plan_peak_device_bytes", (double)pred.stages[r / s.replicas].peak_device);
            }
            cJSON_AddItemToArray(ranks, e);
        }
        snprintf(path, sizeof path, "%s/qshard_report.json", o->work);
        txt = cJSON_Print(rep);
        if (st == QS_OK) st = qs_write_file_durable(path, txt, strlen(txt), err);
        if (st == QS_OK && o->json) {
            char *one = cJSON_PrintUnformatted(rep);
            printf("%s\n", one);
            free(one);
        }
        free(txt);
        cJSON_Delete(rep);
        print_timing(&pg, tt, c->size);
        if (st == QS_OK) {
            qs_journal_append(o->work, "run finished: %d blocks, export in %s", cfg->n_layers, o->out);
            emit_run_end(s.ev, "done", now() - t0, tt, c->size);
            char rp[QS_PATH_MAX + 64];
            write_report(o, rp, sizeof rp);
            qs_progress_message(&pg, "qshard run: done in %.1f s: %s%s%s in %s; report %s", now() - t0,
                                s.exp ? "GPTQ safetensors" : "", s.gguf ? " + model.gguf" : "",
                                s.want_hdf5 ? " + qshard.h5" : "", o->out, rp[0] ? rp : "(none)");
        }
    }
    free(tt);
    free(rc.done_msg);
    free(rc.done_req);
    free(rc.start_msg);
    free(rc.start_req);
    cJSON_Delete(rc.layers);
out:
    if (st != QS_OK && st != QS_ERR_INTERRUPTED && s.gguf_created) unlink(qs_gguf_export_partial_path(s.gguf));
    qs_worklock_release(&s.lock);
    qs_progress_free(&pg);
    qs_events_close(s.ev);
    qs_plan_free(&pred);
    qs_fingerprint_free(&s.fp);
    qs_gptq_export_free(s.exp);
    qs_gguf_export_free(s.gguf);
    qs_plan_free(&s.plan);
    free(s.by_rank);
    qs_tensor_free(&s.tokens);
    qs_manifest_close(s.m);
    return st;
}
