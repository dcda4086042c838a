/* tok_postprocess.c — the post-processor (HF processors::*): reading it from
 * tokenizer.json (TemplateProcessing's single template, BertProcessing,
 * RobertaProcessing, ByteLevel, Sequence) into the ids to put before and
 * after the sequence, and putting them around encode's ids when
 * add_special_tokens is asked for. A post-processor qshard cannot run is an
 * error only then. */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <stdio.h>

static qs_status ids_append(const qs_tokenizer *t, int32_t **arr, size_t *n, const int32_t *src, size_t k,
                            bool front, qs_error *err)
{
    int32_t *p = realloc(*arr, (*n + k + 1) * sizeof *p);
    if (!p) return nomem(t, err);
    if (front) {
        memmove(p + k, p, *n * sizeof *p);
        memcpy(p, src, k * sizeof *p);
    } else {
        memcpy(p + *n, src, k * sizeof *p);
    }
    *arr = p;
    *n += k;
    return QS_OK;
}

/* One post-processor: pre/suf get the ids put before/after the sequence. */
qs_status qs_tok_load_post_processor(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err)
{
    const char *type;
    QS_TRY(qs_tok_jstr(t, n, "type", path, &type, err));
    if (!type) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'type' missing");
    int32_t pre[64], suf[64];
    size_t npre = 0, nsuf = 0;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = qs_tok_jget(n, "processors"), *it;
        if (!cJSON_IsArray(list)) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'processors' must be an array");
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char p[256];
            snprintf(p, sizeof p, "%s.processors[%d]", path, i++);
            QS_TRY(qs_tok_load_post_processor(t, it, p, err));
        }
        return QS_OK;
    } else if (strcmp(type, "ByteLevel") == 0) {
        return QS_OK; /* offsets only */
    } else if (strcmp(type, "TemplateProcessing") == 0) {
        const cJSON *single = qs_tok_jget(n, "single"), *specials = qs_tok_jget(n, "special_tokens"), *it;
        if (!cJSON_IsArray(single)) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'single' must be an array");
        bool seen_seq = false;
        int i = 0;
        cJSON_ArrayForEach(it, single) {
            char p[256];
            snprintf(p, sizeof p, "%s.single[%d]", path, i++);
            const cJSON *sp = qs_tok_jget(it, "SpecialToken"), *sq = qs_tok_jget(it, "Sequence");
            if (sq) {
                seen_seq = true;
                continue;
            }
            const char *name;
            QS_TRY(qs_tok_jstr(t, sp, "id", p, &name, err));
            if (!name) return qs_tok_jfail(t, err, QS_ERR_INPUT, p, "expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
            const cJSON *ids = qs_tok_jget(qs_tok_jget(specials, name), "ids"), *idv;
            if (!cJSON_IsArray(ids))
                return qs_tok_jfail(t, err, QS_ERR_INPUT, p, "special token '%s' is not in %s.special_tokens", name,
                                    path);
            cJSON_ArrayForEach(idv, ids) {
                long id = 0;
                QS_TRY(qs_tok_jint(t, idv, p, 0, INT32_MAX - 1, &id, err));
                if ((seen_seq ? nsuf : npre) >= 64) return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, p, "too many special tokens");
                if (seen_seq) suf[nsuf++] = (int32_t)id;
                else pre[npre++] = (int32_t)id;
            }
        }
    } else if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0) {
        const cJSON *cls = qs_tok_jget(n, "cls"), *sep = qs_tok_jget(n, "sep");
        long a = 0, b = 0;
        if (!cJSON_IsArray(cls) || cJSON_GetArraySize(cls) != 2 || !cJSON_IsArray(sep) || cJSON_GetArraySize(sep) != 2)
            return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'cls' and 'sep' must be [token, id]");
        QS_TRY(qs_tok_jint(t, cJSON_GetArrayItem(cls, 1), path, 0, INT32_MAX - 1, &a, err));
        QS_TRY(qs_tok_jint(t, cJSON_GetArrayItem(sep, 1), path, 0, INT32_MAX - 1, &b, err));
        pre[npre++] = (int32_t)a;
        suf[nsuf++] = (int32_t)b;
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, "%s: %s.type: post-processor '%s' is not supported", t->name, path, type);
        free(t->post_unsupported);
        if (!(t->post_unsupported = strdup(msg))) return nomem(t, err);
        return QS_OK;
    }
    /* processors apply in order: this one wraps what the earlier ones made */
    QS_TRY(ids_append(t, &t->post_pre, &t->n_post_pre, pre, npre, true, err));
    QS_TRY(ids_append(t, &t->post_suf, &t->n_post_suf, suf, nsuf, false, err));
    return QS_OK;
}

qs_status qs_tok_post_process(const qs_tokenizer *t, qs_token_ids *out, size_t base, qs_error *err)
{
    if (t->n_post_pre) {
        for (size_t i = 0; i < t->n_post_pre; i++)
            if (!ids_push(out, 0)) return nomem(t, err);
        memmove(out->ids + base + t->n_post_pre, out->ids + base, (out->n - base - t->n_post_pre) * sizeof *out->ids);
        memcpy(out->ids + base, t->post_pre, t->n_post_pre * sizeof *out->ids);
    }
    for (size_t i = 0; i < t->n_post_suf; i++)
        if (!ids_push(out, t->post_suf[i])) return nomem(t, err);
    return QS_OK;
}
