/* run.c — set-up, the per-rank stage, the gather of the exports and the report. */
#include "pipeline/run.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "pipeline/checkpoint.h"
#include "pipeline/export/export.h"
#include "pipeline/export/export_gguf.h"
#include "pipeline/export/export_gptq.h"
#include "pipeline/fingerprint.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/token_set.h"
#include "schedulers/partition.h"
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

/* Progress: every rank tells rank 0 (the coordinator) when it has finished a
 * block, in a 16-byte message tagged PROGRESS_TAG + block; rank 0 prints one
 * line per block with the ETA of the whole run. */
#define PROGRESS_TAG 20000

typedef struct run_ctx {
    const qs_comm_i *c;
    int n_layers;
    const qs_stage_plan *stages;
    double t0;
    int reported;
    double block_seconds;   /* sum over blocks computed (not resumed) in this run */
    int computed;
    double (*msg)[2];       /* rank 0: [n_layers] {seconds, resumed} received; others: their sends */
    qs_comm_request *req;   /* [n_layers] */
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
    if (qs_checkpoint_read_block(r->o->work, layer, r->fingerprint, &rec, &why) != QS_OK) {
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

static void fmt_eta(double s, char *buf, size_t cap)
{
    if (s < 90) snprintf(buf, cap, "%.0f s", s);
    else if (s < 5400) snprintf(buf, cap, "%.0f min", s / 60);
    else snprintf(buf, cap, "%.1f h", s / 3600);
}

static int owner_of(const run_ctx *r, int layer)
{
    for (int k = 0; k < r->c->size; k++)
        if (layer >= r->stages[k].first_block && layer < r->stages[k].end_block) return k;
    return 0;
}

/* Rank 0: one line for a finished block, with the ETA of the whole run. */
static void report_block(run_ctx *r, int layer, double seconds, bool resumed)
{
    r->reported++;
    if (!resumed) {
        r->block_seconds += seconds;
        r->computed++;
    }
    char eta[32] = "-";
    /* ranks of the exact schedule run in turn: what is left costs the mean block time each */
    if (r->computed) fmt_eta((r->n_layers - r->reported) * r->block_seconds / r->computed, eta, sizeof eta);
    fprintf(stderr, "qshard run: block %d of %d %s (rank %d, %.2f s); %d/%d done after %.1f s, ETA %s\n", layer + 1,
            r->n_layers, resumed ? "resumed from its checkpoint" : "quantized", owner_of(r, layer), seconds,
            r->reported, r->n_layers, now() - r->t0, eta);
}

/* Rank 0: prints what other ranks have reported so far. */
static void poll_progress(run_ctx *r)
{
    for (int l = 0; l < r->n_layers; l++) {
        if (!r->req[l].n) continue;
        int done = 0;
        qs_error e;
        if (r->c->test(r->c->ctx, &r->req[l], &done, &e) == QS_OK && done)
            report_block(r, l, r->msg[l][0], r->msg[l][1] != 0);
    }
}

static qs_status on_block(void *ctx, const qs_block_outcome *b, qs_error *err)
{
    run_ctx *r = ctx;
    if (r->c->rank == 0) {
        report_block(r, b->layer, b->seconds, b->resumed);
        poll_progress(r);
    } else {
        r->msg[b->layer][0] = b->seconds;
        r->msg[b->layer][1] = b->resumed;
        QS_TRY(r->c->isend(r->c->ctx, r->msg[b->layer], sizeof r->msg[b->layer], 0, PROGRESS_TAG + b->layer,
                           &r->req[b->layer], err));
    }
    if (!b->resumed) {
        /* the checkpoint first: it is what a resumed run trusts */
        uint64_t h = 0;
        QS_TRY(qs_checkpoint_write_block(r->o->work, b, r->fingerprint, &h, err));
        qs_journal_append(r->o->work, "rank %d block %d done xxh64=%016llx seconds=%.3f", r->rank, b->layer,
                          (unsigned long long)h, b->seconds);
    }
    if (r->exp) QS_TRY(qs_gptq_export_block(r->exp, b, err));
    if (r->gguf) QS_TRY(qs_gguf_export_block(r->gguf, b, err));
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
    return QS_OK;
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
    qs_plan plan;
    qs_gptq_export *exp;
    qs_gguf_export *gguf;
    bool want_gptq, want_gguf, want_hdf5;
    char gguf_path[QS_PATH_MAX + 16];
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

static qs_status do_setup(const qs_run_options *o, const qs_comm_i *c, setup *s, qs_error *err)
{
    QS_TRY(qs_run_options_validate(o, err));
    QS_TRY(qs_manifest_open(o->model, &s->m, err));
    const qs_model_config *cfg = qs_manifest_config(s->m);
    QS_TRY(qs_model_names_from_manifest(s->m, &s->names, err));
    if (c->rank == 0) {
        QS_TRY(load_calibration(o, cfg, &s->tokens, err));
        s->dims[0] = s->tokens.shape[0];
        s->dims[1] = s->tokens.shape[1];
        QS_TRY(qs_mkdir_p(o->out, err));
        QS_TRY(qs_mkdir_p(o->work, err));
        QS_TRY(qs_fingerprint_make(o, s->m, &s->tokens, c->size, &s->fp, err));
        bool resuming = false;
        QS_TRY(qs_fingerprint_check(o->work, &s->fp, o->force_resume, &resuming, err));
        s->resuming = resuming;
        memcpy(s->fp_id, s->fp.id, sizeof s->fp_id);
        /* a previous export's index/config would make a partial directory look complete */
        char p[QS_PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", o->out);
        remove(p);
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
    if (c->size > cfg->n_layers)
        return qs_error_set(err, QS_ERR_INPUT, "%d ranks for a model of %d blocks: use at most %d ranks", c->size,
                            cfg->n_layers, cfg->n_layers);
    qs_cost_params p;
    qs_cost_params_default(&p);
    p.schedule = o->schedule;
    p.true_sequential = o->true_sequential;
    p.micro_batch = o->micro_batch;
    QS_TRY(qs_plan_make(cfg, &p, c->size, 0, 0, &s->plan, err));
    qs_gptq_export_opts eo = {quant_opts(o), o->true_sequential, !strcmp(o->checkpoint_format, "gptq_v2"),
                              o->max_shard_size};
    /* --formats: a comma list of gptq, gguf, hdf5 */
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
        if (c->rank == 0) QS_TRY(qs_gguf_export_create(s->gguf, err));
        if (c->rank == 0 && qs_gguf_export_vocab_warning(s->gguf))
            fprintf(stderr, "qshard run: warning: %s: %s\n", s->gguf_path, qs_gguf_export_vocab_warning(s->gguf));
    }
    return QS_OK;
}

/* ---- the run ------------------------------------------------------------------------- */

static void print_timing(const qs_comm_i *c, const double *t, int n_per_rank, bool json_mode)
{
    if (c->rank != 0 || json_mode) return;
    fprintf(stderr, "\n%5s %10s %10s %10s %10s %10s %12s\n", "rank", "total s", "compute s", "comm s", "io s",
            "idle s", "read MiB");
    for (int r = 0; r < c->size; r++) {
        const double *x = t + r * n_per_rank;
        fprintf(stderr, "%5d %10.2f %10.2f %10.2f %10.2f %10.2f %12.1f\n", r, x[0], x[1], x[2], x[3], x[4],
                x[5] / 1048576.0);
    }
}

qs_status qs_run(const qs_run_options *o, const qs_comm_i *c, volatile int *stop_flag, qs_error *err)
{
    double t0 = now();
    setup s;
    memset(&s, 0, sizeof s);
    qs_status st = agree(c, do_setup(o, c, &s, err), err);
    if (st == QS_OK) st = c->bcast(c->ctx, s.dims, sizeof s.dims, 0, err);
    if (st == QS_OK) st = c->bcast(c->ctx, s.fp_id, sizeof s.fp_id, 0, err);
    if (st == QS_OK) st = c->bcast(c->ctx, &s.resuming, sizeof s.resuming, 0, err);
    if (st != QS_OK) goto out;
    if (c->rank == 0) {
        const char *job = getenv("SLURM_JOB_ID"), *restarts = getenv("SLURM_RESTART_COUNT");
        qs_journal_append(o->work, "run %s: %d blocks on %d rank(s), fingerprint %s, slurm job %s, restart count %s",
                          s.resuming ? "resumed" : "started", qs_manifest_config(s.m)->n_layers, c->size, s.fp_id,
                          job ? job : "-", restarts ? restarts : "0");
    }

    const qs_stage_plan *mine = &s.plan.stages[c->rank];
    const qs_model_config *cfg = qs_manifest_config(s.m);
    if (c->rank == 0)
        fprintf(stderr, "qshard run: %s, %d blocks on %d rank(s), %s schedule, %s %d-bit g%d, %lld × %lld calibration tokens\n",
                qs_arch_name(cfg->arch), cfg->n_layers, c->size,
                o->schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined", o->method == QS_METHOD_GPTQ ? "GPTQ" : o->method == QS_METHOD_OMNIQUANT ? "OmniQuant" : "RTN",
                o->bits, o->group_size, (long long)s.dims[0], (long long)s.dims[1]);
    for (int r = 0; r < c->size && c->rank == 0; r++)
        fprintf(stderr, "  rank %d: blocks [%d, %d)%s%s\n", r, s.plan.stages[r].first_block,
                s.plan.stages[r].end_block, s.plan.stages[r].embed ? " + embedding" : "",
                s.plan.stages[r].head ? " + head" : "");

    run_ctx rc = {c, cfg->n_layers, s.plan.stages, t0, 0, 0, 0, NULL, NULL, o, s.exp, s.gguf, s.fp_id,
                  s.resuming != 0, c->rank, 0, cJSON_CreateArray()};
    rc.msg = calloc((size_t)cfg->n_layers, sizeof *rc.msg);
    rc.req = calloc((size_t)cfg->n_layers, sizeof *rc.req);
    if (!rc.msg || !rc.req) {
        st = qs_error_set(err, QS_ERR_NOMEM, "progress messages");
        c->abort(c->ctx, 1);
    }
    if (c->rank == 0)
        for (int l = mine->end_block; l < cfg->n_layers && st == QS_OK; l++)
            st = c->irecv(c->ctx, rc.msg[l], sizeof rc.msg[l], owner_of(&rc, l), PROGRESS_TAG + l, &rc.req[l], err);
    qs_stage_args a;
    memset(&a, 0, sizeof a);
    a.comm = c;
    a.be = qs_backend_cpu();
    a.manifest = s.m;
    a.names = &s.names;
    a.quant = quant_opts(o);
    a.true_sequential = o->true_sequential;
    a.rtn_baseline = o->rtn_baseline;
    a.schedule = o->schedule;
    a.first_block = mine->first_block;
    a.end_block = mine->end_block;
    a.prev_rank = c->rank > 0 ? c->rank - 1 : -1;
    a.next_rank = c->rank + 1 < c->size ? c->rank + 1 : -1;
    a.rows = s.dims[0];
    a.seq = s.dims[1];
    a.micro_batch = o->micro_batch;
    a.tokens = c->rank == 0 ? s.tokens.data : NULL;
    a.embed = mine->embed;
    a.on_block = on_block;
    a.on_block_ctx = &rc;
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
        if (!rc.req[l].n) continue;
        if (st == QS_OK) {
            qs_error e;
            c->wait(c->ctx, &rc.req[l], &e);
        } else {
            c->cancel(c->ctx, &rc.req[l]);
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
                fprintf(stderr, "qshard run: interrupted: finished blocks are checkpointed in %s; run the same "
                                "command again to resume\n", o->work);
            }
            cJSON_Delete(rc.layers);
            free(rc.msg);
            free(rc.req);
            st = qs_error_set(err, QS_ERR_INTERRUPTED, "interrupted (resumable)");
            goto out;
        }
    }
    if (st != QS_OK) {
        /* mid-run: report with the rank and stop every rank (no hang) */
        fprintf(stderr, "qshard run: error: rank %d: %s\n", c->rank, err->msg);
        fflush(stderr);
        c->abort(c->ctx, qs_status_exit_code(st) ? qs_status_exit_code(st) : 1);
    }

    /* per-rank statistics to the work dir, then everyone's timing to rank 0 */
    char path[QS_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/stats.rank%05d.json", o->work, c->rank);
    char *txt = cJSON_PrintUnformatted(rc.layers);
    st = qs_write_file_durable(path, txt, strlen(txt), err);
    free(txt);
    enum { NT = 6 };
    double *tt = calloc((size_t)(c->size * NT), sizeof(double));
    tt[c->rank * NT + 0] = tm.total;
    tt[c->rank * NT + 1] = tm.compute;
    tt[c->rank * NT + 2] = tm.comm;
    tt[c->rank * NT + 3] = tm.io;
    tt[c->rank * NT + 4] = tm.idle;
    tt[c->rank * NT + 5] = (double)tm.bytes_read;
    if (st == QS_OK) st = agree(c, st, err);
    if (st == QS_OK) st = c->allreduce_sum_f64(c->ctx, tt, (size_t)(c->size * NT), err);
    /* every shard is durable on every rank here: now the index and configs */
    if (st == QS_OK && c->rank == 0 && s.gguf) st = qs_gguf_export_finish(s.gguf, err);
    if (st == QS_OK && c->rank == 0 && s.want_hdf5) {
        /* the archive is made from the block checkpoints (the work dir is shared) */
        char h5[QS_PATH_MAX + 16];
        snprintf(h5, sizeof h5, "%s/qshard.h5", o->out);
        qs_export_opts xo = {.format = QS_EXPORT_HDF5};
        st = qs_export_from_work(o->work, h5, &xo, err);
    }
    /* the GPTQ index last: its presence marks a complete export */
    if (st == QS_OK && c->rank == 0 && s.exp) st = qs_gptq_export_finish(s.exp, err);
    if (st == QS_OK && c->rank == 0) {
        /* the report: every rank's per-layer statistics, in block order */
        cJSON *rep = cJSON_CreateObject();
        cJSON_AddNumberToObject(rep, "ranks", c->size);
        cJSON_AddNumberToObject(rep, "blocks", cfg->n_layers);
        cJSON_AddStringToObject(rep, "schedule", o->schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined");
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
            const double *x = tt + r * NT;
            cJSON_AddNumberToObject(e, "rank", r);
            cJSON_AddNumberToObject(e, "first_block", s.plan.stages[r].first_block);
            cJSON_AddNumberToObject(e, "end_block", s.plan.stages[r].end_block);
            cJSON_AddNumberToObject(e, "total_s", x[0]);
            cJSON_AddNumberToObject(e, "compute_s", x[1]);
            cJSON_AddNumberToObject(e, "comm_s", x[2]);
            cJSON_AddNumberToObject(e, "io_s", x[3]);
            cJSON_AddNumberToObject(e, "idle_s", x[4]);
            cJSON_AddNumberToObject(e, "bytes_read", x[5]);
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
        print_timing(c, tt, NT, o->json);
        if (st == QS_OK) {
            qs_journal_append(o->work, "run finished: %d blocks, export in %s", cfg->n_layers, o->out);
            fprintf(stderr, "qshard run: done in %.1f s: %s%s%s in %s, report in %s/qshard_report.json\n",
                    now() - t0, s.exp ? "GPTQ safetensors" : "", s.gguf ? " + model.gguf" : "",
                    s.want_hdf5 ? " + qshard.h5" : "", o->out, o->work);
        }
    }
    free(tt);
    free(rc.msg);
    free(rc.req);
    cJSON_Delete(rc.layers);
out:
    qs_fingerprint_free(&s.fp);
    qs_gptq_export_free(s.exp);
    qs_gguf_export_free(s.gguf);
    qs_plan_free(&s.plan);
    qs_tensor_free(&s.tokens);
    qs_manifest_close(s.m);
    return st;
}
