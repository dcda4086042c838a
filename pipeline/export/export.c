/* export.c — gptq/gguf/hdf5 exports from a finished work dir. */
#include "pipeline/export/export.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/checkpoint.h"
#include "pipeline/export/export_gguf.h"
#include "pipeline/export/export_gptq.h"
#include "pipeline/export/export_hdf5.h"
#include "pipeline/export/side_files.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/manifest.h"
#include "workers/model.h"

qs_status qs_export_parse_format(const char *name, qs_export_format *out, qs_error *err)
{
    if (!strcmp(name, "gptq")) *out = QS_EXPORT_GPTQ;
    else if (!strcmp(name, "gguf")) *out = QS_EXPORT_GGUF;
    else if (!strcmp(name, "hdf5")) *out = QS_EXPORT_HDF5;
    else return qs_error_set(err, QS_ERR_INPUT, "--format: expected gptq, gguf or hdf5, got '%s'", name);
    return QS_OK;
}

/* The options a run used, back from its fingerprint record. */
static qs_status run_record(const char *work, cJSON **rec, char **text, char model[4096], qs_quant_opts *q,
                            bool *true_seq, qs_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fingerprint.json", work);
    if (!qs_path_exists(path))
        return qs_error_set(err, QS_ERR_INPUT, "%s: not a qshard work dir (no fingerprint.json)", work);
    QS_TRY(qs_read_file(path, text, NULL, err));
    *rec = cJSON_Parse(*text);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(*rec, "model");
    const cJSON *dir = cJSON_GetObjectItemCaseSensitive(m, "dir");
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(*rec, "options");
    if (!cJSON_IsString(dir) || !cJSON_IsObject(op))
        return qs_error_set(err, QS_ERR_INPUT, "%s: model.dir or options missing", path);
    snprintf(model, 4096, "%s", dir->valuestring);
    qs_quant_opts_default(q);
    const cJSON *v;
    /* every number is range-checked before it becomes an int: the record is
     * a file in the work dir like the checkpoints, and as little trusted */
#define INT(key, field, lo, hi)                                                                                       \
    if ((v = cJSON_GetObjectItemCaseSensitive(op, key))) {                                                            \
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (lo) ||               \
            v->valuedouble > (hi))                                                                                    \
            return qs_error_set(err, QS_ERR_INPUT, "%s: field 'options.%s': expected an integer in [%d, %d]", path, key, \
                                (int)(lo), (int)(hi));                                                                \
        field = (int)v->valuedouble;                                                                                  \
    }
#define BOOL(key, field)                                                     \
    if ((v = cJSON_GetObjectItemCaseSensitive(op, key)) && cJSON_IsBool(v)) \
    field = cJSON_IsTrue(v)
    INT("bits", q->bits, 2, 8);
    INT("group_size", q->group_size, -1, 1 << 24);
    INT("block_size", q->block_size, 1, 1 << 16);
    if ((v = cJSON_GetObjectItemCaseSensitive(op, "damp"))) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 1))
            return qs_error_set(err, QS_ERR_INPUT, "%s: field 'options.damp': expected a number in [0, 1)", path);
        q->damp = v->valuedouble;
    }
    BOOL("sym", q->sym);
    BOOL("act_order", q->act_order);
    BOOL("static_groups", q->static_groups);
    BOOL("mse", q->mse);
    BOOL("true_sequential", *true_seq);
#undef INT
#undef BOOL
    v = cJSON_GetObjectItemCaseSensitive(op, "method");
    q->method = QS_QUANT_METHOD_GPTQ;
    if (v && !(cJSON_IsString(v) && (!strcmp(v->valuestring, "gptq") || !strcmp(v->valuestring, "rtn") ||
                                     !strcmp(v->valuestring, "omniquant"))))
        return qs_error_set(err, QS_ERR_INPUT, "%s: field 'options.method': expected \"gptq\", \"rtn\" or \"omniquant\"",
                            path);
    if (v && !strcmp(v->valuestring, "rtn")) q->method = QS_QUANT_METHOD_RTN;
    if (v && !strcmp(v->valuestring, "omniquant")) q->method = QS_QUANT_METHOD_OMNIQUANT;
    if (q->bits != 2 && q->bits != 3 && q->bits != 4 && q->bits != 8)
        return qs_error_set(err, QS_ERR_INPUT, "%s: field 'options.bits' = %d, expected 2, 3, 4 or 8", path, q->bits);
    if (q->group_size == 0)
        return qs_error_set(err, QS_ERR_INPUT, "%s: field 'options.group_size' = 0, expected -1 or a size", path);
    return QS_OK;
}

/* The export never lands in or over what it is made from: the model dir and
 * the work dir's checkpoints and record (resolved real paths). */
static qs_status check_out(const char *work, const char *model, const char *out, qs_error *err)
{
    char m[4096], w[4096], x[4096], p[4200];
    QS_TRY(qs_path_resolve(model, m, sizeof m, err));
    QS_TRY(qs_path_resolve(out, x, sizeof x, err));
    if (qs_path_within(x, m) || qs_path_within(m, x))
        return qs_error_set(err, QS_ERR_INPUT, "--out %s %s the model directory %s the run read; choose another --out",
                            out, qs_path_within(x, m) ? "is or lies inside" : "contains", model);
    snprintf(p, sizeof p, "%s/blocks", work);
    QS_TRY(qs_path_resolve(p, w, sizeof w, err));
    bool over = qs_path_within(x, w) || qs_path_within(w, x);
    snprintf(p, sizeof p, "%s/fingerprint.json", work);
    QS_TRY(qs_path_resolve(p, w, sizeof w, err));
    over = over || !strcmp(x, w);
    if (over)
        return qs_error_set(err, QS_ERR_INPUT, "--out %s would write over %s's checkpoints or record; choose another --out",
                            out, work);
    return QS_OK;
}

qs_status qs_export_from_work(const char *work, const char *out, const qs_export_opts *o, qs_error *err)
{
    cJSON *rec = NULL;
    char *text = NULL, model[4096];
    qs_quant_opts q;
    bool true_seq = true;
    qs_manifest *m = NULL;
    qs_gptq_export *gx = NULL;
    qs_gguf_export *ux = NULL;
    qs_hdf5_export *hx = NULL;
    qs_status st = run_record(work, &rec, &text, model, &q, &true_seq, err);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(rec, "id");
    if (st == QS_OK && !cJSON_IsString(id)) st = qs_error_set(err, QS_ERR_INPUT, "%s/fingerprint.json: no id", work);
    if (st == QS_OK) st = check_out(work, model, out, err);
    if (st == QS_OK) st = qs_manifest_open(model, &m, err);
    qs_model_names names;
    if (st == QS_OK) st = qs_model_names_from_manifest(m, &names, err);
    const qs_model_config *cfg = m ? qs_manifest_config(m) : NULL;
    /* the recorded options must fit the model's linears, as the run checked them */
    if (st == QS_OK) {
        qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
        int nl = qs_block_linears(cfg, &names, 0, lin);
        for (int i = 0; i < nl && st == QS_OK; i++) {
            q.name = lin[i].weight;
            st = qs_quant_opts_check(&q, lin[i].out, lin[i].in, err);
        }
        q.name = NULL;
        if (st != QS_OK) qs_error_prefix(err, "%s/fingerprint.json", work);
    }
    /* every block must be there and sound before anything is written */
    for (int l = 0; st == QS_OK && l < cfg->n_layers; l++) {
        char path[4200];
        qs_checkpoint_block_path(work, l, path, sizeof path);
        if (!qs_path_exists(path))
            st = qs_error_set(err, QS_ERR_INPUT, "%s: block %d of %d is not finished (%s missing); run qshard run again",
                              work, l, cfg->n_layers, path);
    }
    if (st == QS_OK) {
        switch (o->format) {
        case QS_EXPORT_GPTQ: {
            qs_gptq_export_opts eo = {q, true_seq, o->gptq_v2, o->max_shard_size ? o->max_shard_size : 4ull << 30};
            st = qs_side_files_check_dir(model, err);
            if (st == QS_OK) st = qs_mkdir_p(out, err);
            if (st == QS_OK) st = qs_gptq_export_init(&gx, out, m, &names, &eo, err);
            break;
        }
        case QS_EXPORT_GGUF: {
            qs_gguf_export_opts go;
            memset(&go, 0, sizeof go);
            go.quant = q;
            go.fallback_f16 = o->gguf_fallback_f16;
            st = qs_gguf_export_init(&ux, out, m, &names, &go, err);
            if (st == QS_OK) st = qs_gguf_export_create(ux, err);
            if (st == QS_OK && qs_gguf_export_vocab_warning(ux))
                fprintf(stderr, "qshard export: warning: %s: %s\n", out, qs_gguf_export_vocab_warning(ux));
            break;
        }
        case QS_EXPORT_HDF5: {
            char *run_json = cJSON_PrintUnformatted(rec);
            st = qs_hdf5_export_open(&hx, out, id->valuestring, run_json, err);
            free(run_json);
            break;
        }
        }
    }
    for (int l = 0; st == QS_OK && l < cfg->n_layers; l++) {
        qs_block_record r;
        qs_block_expect want;
        qs_block_expect_init(&want, cfg, &names, l, &q);
        st = qs_checkpoint_read_block(work, l, id->valuestring, &want, &r, err);
        if (st != QS_OK) {
            qs_error_prefix(err, "run qshard run again to recompute it");
            break;
        }
        if (o->format == QS_EXPORT_HDF5) {
            st = qs_hdf5_export_block(hx, &r, err);
        } else {
            /* the exporters need the block's linears (names, shapes) and the results */
            qs_block blk;
            memset(&blk, 0, sizeof blk);
            blk.cfg = *cfg;
            blk.layer = l;
            blk.n_linears = qs_block_linears(cfg, &names, l, blk.lin);
            if (blk.n_linears != r.n_linears)
                st = qs_error_set(err, QS_ERR_INPUT, "block %d: checkpoint has %d linears, the model %d", l,
                                  r.n_linears, blk.n_linears);
            for (int i = 0; i < blk.n_linears && st == QS_OK; i++)
                if (strcmp(blk.lin[i].weight, r.names[i]) != 0)
                    st = qs_error_set(err, QS_ERR_INPUT, "block %d: checkpoint linear %d is %s, the model's %s", l, i,
                                      r.names[i], blk.lin[i].weight);
            qs_block_outcome oc;
            memset(&oc, 0, sizeof oc);
            oc.layer = l;
            oc.blk = &blk;
            oc.resumed = true;
            oc.seconds = r.seconds;
            memcpy(oc.res, r.res, sizeof oc.res);
            memcpy(oc.stats, r.stats, sizeof oc.stats);
            oc.omni = r.has_omni ? &r.omni : NULL; /* folded FP tensors replace the model's */
            if (st == QS_OK)
                st = o->format == QS_EXPORT_GPTQ ? qs_gptq_export_block(gx, &oc, err) : qs_gguf_export_block(ux, &oc, err);
        }
        qs_block_record_free(&r);
    }
    if (st == QS_OK) {
        switch (o->format) {
        case QS_EXPORT_GPTQ:
            st = qs_gptq_export_embed(gx, err);
            if (st == QS_OK) st = qs_gptq_export_head(gx, err);
            if (st == QS_OK) st = qs_gptq_export_finish(gx, err);
            break;
        case QS_EXPORT_GGUF:
            st = qs_gguf_export_embed(ux, err);
            if (st == QS_OK) st = qs_gguf_export_head(ux, err);
            if (st == QS_OK) st = qs_gguf_export_finish(ux, err);
            break;
        case QS_EXPORT_HDF5:
            st = qs_hdf5_export_finish(hx, err);
            hx = NULL;
            break;
        }
    }
    if (hx) qs_hdf5_export_abort(hx);
    /* a failed export (a full disk, a bad checkpoint) leaves no partial file behind */
    if (st != QS_OK && ux) unlink(qs_gguf_export_partial_path(ux));
    qs_gptq_export_free(gx);
    qs_gguf_export_free(ux);
    qs_manifest_close(m);
    cJSON_Delete(rec);
    free(text);
    return st;
}
