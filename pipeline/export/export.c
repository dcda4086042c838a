/* export.c — gptq/gguf/hdf5 exports from a finished work dir. */
#include "pipeline/export/export.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/checkpoint.h"
#include "pipeline/export/export_gguf.h"
#include "pipeline/export/export_gptq.h"
#include "pipeline/export/export_hdf5.h"
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
#define NUM(key, field)                                                     \
    if ((v = cJSON_GetObjectItemCaseSensitive(op, key)) && cJSON_IsNumber(v)) \
    field = v->valuedouble
#define BOOL(key, field)                                                     \
    if ((v = cJSON_GetObjectItemCaseSensitive(op, key)) && cJSON_IsBool(v)) \
    field = cJSON_IsTrue(v)
    NUM("bits", q->bits);
    NUM("group_size", q->group_size);
    NUM("damp", q->damp);
    NUM("block_size", q->block_size);
    BOOL("sym", q->sym);
    BOOL("act_order", q->act_order);
    BOOL("static_groups", q->static_groups);
    BOOL("mse", q->mse);
    BOOL("true_sequential", *true_seq);
#undef NUM
#undef BOOL
    v = cJSON_GetObjectItemCaseSensitive(op, "method");
    q->method = !cJSON_IsString(v)                       ? QS_QUANT_METHOD_GPTQ
                : !strcmp(v->valuestring, "rtn")       ? QS_QUANT_METHOD_RTN
                : !strcmp(v->valuestring, "omniquant") ? QS_QUANT_METHOD_OMNIQUANT
                                                       : QS_QUANT_METHOD_GPTQ;
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
    if (st == QS_OK) st = qs_manifest_open(model, &m, err);
    qs_model_names names;
    if (st == QS_OK) st = qs_model_names_from_manifest(m, &names, err);
    const qs_model_config *cfg = m ? qs_manifest_config(m) : NULL;
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
            st = qs_mkdir_p(out, err);
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
        st = qs_checkpoint_read_block(work, l, id->valuestring, &r, err);
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
    qs_gptq_export_free(gx);
    qs_gguf_export_free(ux);
    qs_manifest_close(m);
    cJSON_Delete(rec);
    free(text);
    return st;
}
