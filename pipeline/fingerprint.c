/* fingerprint.c — the identity of a run's numbers (see fingerprint.h). */
#include "pipeline/fingerprint.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "pipeline/formats/fsutil.h"

static void hex64(uint64_t h, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

qs_status qs_fingerprint_make(const qs_run_options *o, const qs_manifest *m, const qs_tensor *tokens, int ranks,
                              qs_fingerprint *fp, qs_error *err)
{
    memset(fp, 0, sizeof *fp);
    /* model: the tensor table and config.json */
    XXH64_state_t *s = XXH64_createState();
    XXH64_reset(s, 0);
    size_t n = qs_manifest_count(m);
    const char **files = calloc(n ? n : 1, sizeof *files);
    size_t nf = 0;
    for (size_t i = 0; i < n; i++) {
        const qs_st_file *f = NULL;
        const qs_st_info *t = qs_manifest_at(m, i, &f);
        XXH64_update(s, t->name, strlen(t->name) + 1);
        int64_t meta[2 + QS_MAX_DIMS] = {t->dtype, t->ndim};
        for (int d = 0; d < t->ndim; d++) meta[2 + d] = t->shape[d];
        XXH64_update(s, meta, sizeof meta);
        XXH64_update(s, &t->nbytes, sizeof t->nbytes);
        const char *p = qs_st_path(f);
        bool seen = false;
        for (size_t k = 0; k < nf && !seen; k++) seen = !strcmp(files[k], p);
        if (!seen) files[nf++] = p;
    }
    char cfg_path[QS_PATH_MAX + 16], *cfg = NULL;
    size_t cfg_len = 0;
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", qs_manifest_dir(m));
    if (qs_read_file(cfg_path, &cfg, &cfg_len, err) != QS_OK) {
        XXH64_freeState(s);
        free(files);
        return err->code;
    }
    XXH64_update(s, cfg, cfg_len);
    free(cfg);
    qsort(files, nf, sizeof *files, cmp_str);
    cJSON *j = cJSON_CreateObject();
    cJSON *model = cJSON_AddObjectToObject(j, "model");
    /* absolute, so `qshard export`/`status` find the model from any directory */
    char *abs = realpath(qs_manifest_dir(m), NULL);
    cJSON_AddStringToObject(model, "dir", abs ? abs : qs_manifest_dir(m));
    free(abs);
    cJSON *fl = cJSON_AddArrayToObject(model, "files");
    for (size_t k = 0; k < nf; k++) {
        struct stat sb;
        cJSON *e = cJSON_CreateObject();
        const char *base = strrchr(files[k], '/');
        cJSON_AddStringToObject(e, "name", base ? base + 1 : files[k]);
        if (stat(files[k], &sb) == 0) {
            cJSON_AddNumberToObject(e, "size", (double)sb.st_size);
            cJSON_AddNumberToObject(e, "mtime", (double)sb.st_mtime);
            int64_t sz = sb.st_size;
            XXH64_update(s, &sz, sizeof sz);
        }
        cJSON_AddItemToArray(fl, e);
    }
    free(files);
    char h[17];
    hex64(XXH64_digest(s), h);
    XXH64_freeState(s);
    cJSON_AddStringToObject(model, "tensors", h);

    /* calibration */
    int64_t shape[2] = {tokens->shape[0], tokens->shape[1]};
    uint64_t th = XXH64(tokens->data, sizeof(int32_t) * (size_t)(shape[0] * shape[1]), (uint64_t)(shape[0] * 1000003 + shape[1]));
    hex64(th, h);
    cJSON *cal = cJSON_AddObjectToObject(j, "calibration");
    cJSON_AddNumberToObject(cal, "rows", (double)shape[0]);
    cJSON_AddNumberToObject(cal, "seq_len", (double)shape[1]);
    cJSON_AddStringToObject(cal, "tokens", h);

    /* options */
    cJSON *op = cJSON_AddObjectToObject(j, "options");
    cJSON_AddStringToObject(op, "method", qs_method_name(o->method));
    cJSON_AddNumberToObject(op, "bits", o->bits);
    cJSON_AddNumberToObject(op, "group_size", o->group_size);
    cJSON_AddBoolToObject(op, "sym", o->sym);
    cJSON_AddBoolToObject(op, "act_order", o->act_order);
    cJSON_AddBoolToObject(op, "static_groups", o->static_groups);
    cJSON_AddBoolToObject(op, "true_sequential", o->true_sequential);
    cJSON_AddBoolToObject(op, "mse", o->mse);
    cJSON_AddNumberToObject(op, "damp", o->damp);
    cJSON_AddNumberToObject(op, "block_size", o->block_size);
    cJSON_AddNumberToObject(op, "micro_batch", o->micro_batch);
    /* How the Hessian's micro-batch partials are added (docs/scheduling.md): the
     * fixed chunk tree that makes the bytes independent of the replicas. A work
     * dir from a build that summed them in order has no such field, so its
     * checkpoints are never mixed with this build's. */
    cJSON_AddStringToObject(op, "hessian_sum", "chunk_tree");
    /* the resolved compute dtype (run.c); f32 leaves the record as it always was */
    if (!strcmp(o->compute_dtype, "bf16")) cJSON_AddStringToObject(op, "compute_dtype", "bf16");
    /* the resolved device (run.c): the CPU leaves the record as it always was */
    if (!strcmp(o->device, "cuda")) cJSON_AddStringToObject(op, "device", "cuda");
    cJSON_AddStringToObject(op, "schedule", o->schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined");
    if (o->schedule == QS_SCHEDULE_PIPELINED) cJSON_AddNumberToObject(op, "ranks", ranks);
    if (o->method == QS_METHOD_OMNIQUANT) {
        /* only for OmniQuant, so GPTQ/RTN work dirs keep their ids */
        cJSON_AddNumberToObject(op, "epochs", qs_run_options_epochs(o));
        cJSON_AddBoolToObject(op, "lwc", o->lwc);
        cJSON_AddBoolToObject(op, "let", o->let);
        cJSON_AddNumberToObject(op, "lwc_lr", o->lwc_lr);
        cJSON_AddNumberToObject(op, "let_lr", o->let_lr);
        cJSON_AddNumberToObject(op, "omni_batch", o->omni_batch);
        cJSON_AddNumberToObject(op, "omni_seed", o->omni_seed);
        cJSON_AddNumberToObject(op, "let_alpha", 0.5);
        cJSON_AddBoolToObject(op, "omni_cosine", o->omni_cosine);
    }

    /* id: everything except file names/mtimes (a copied model keeps its id) */
    cJSON *idj = cJSON_Duplicate(j, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(idj, "model"), "files");
    cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(idj, "model"), "dir");
    char *idtxt = cJSON_PrintUnformatted(idj);
    /* file sizes are part of the tensor hash above */
    hex64(XXH64(idtxt, strlen(idtxt), 0), fp->id);
    free(idtxt);
    cJSON_Delete(idj);
    cJSON_AddStringToObject(j, "id", fp->id);
    fp->json = cJSON_Print(j);
    cJSON_Delete(j);
    return QS_OK;
}

void qs_fingerprint_free(qs_fingerprint *fp)
{
    if (!fp) return;
    free(fp->json);
    fp->json = NULL;
}

/* Lists leaf fields that differ between two records, "a.b: x → y; ...". */
static void diff(const cJSON *a, const cJSON *b, const char *path, char *out, size_t cap)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        if (!e->string || !strcmp(e->string, "id") || !strcmp(e->string, "files") || !strcmp(e->string, "dir"))
            continue;
        char p[256];
        snprintf(p, sizeof p, "%s%s%s", path, path[0] ? "." : "", e->string);
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(b, e->string);
        if (cJSON_IsObject(e) && cJSON_IsObject(f)) {
            diff(e, f, p, out, cap);
            continue;
        }
        if (f && cJSON_Compare(e, f, true)) continue;
        char *x = cJSON_PrintUnformatted(e), *y = f ? cJSON_PrintUnformatted(f) : strdup("(absent)");
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s: %s → %s", len ? "; " : "", p, y ? y : "?", x ? x : "?");
        free(x), free(y);
    }
    /* fields only the old record has (e.g. options.compute_dtype "bf16" → f32) */
    cJSON_ArrayForEach(e, b)
    {
        if (!e->string || cJSON_GetObjectItemCaseSensitive(a, e->string)) continue;
        char p[256];
        snprintf(p, sizeof p, "%s%s%s", path, path[0] ? "." : "", e->string);
        char *y = cJSON_PrintUnformatted(e);
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s: %s → (absent)", len ? "; " : "", p, y ? y : "?");
        free(y);
    }
}

qs_status qs_fingerprint_check(const char *work_dir, const qs_fingerprint *fp, bool force, bool *resuming,
                               qs_error *err)
{
    char path[QS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/fingerprint.json", work_dir);
    *resuming = false;
    if (!qs_path_exists(path)) return qs_write_file_durable(path, fp->json, strlen(fp->json), err);
    char *old = NULL;
    QS_TRY(qs_read_file(path, &old, NULL, err));
    cJSON *a = cJSON_Parse(fp->json), *b = cJSON_Parse(old);
    free(old);
    qs_status st = QS_OK;
    if (!b) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: unreadable; use a new --work directory", path);
    } else {
        const cJSON *bid = cJSON_GetObjectItemCaseSensitive(b, "id");
        if (!cJSON_IsString(bid) || strcmp(bid->valuestring, fp->id) != 0) {
            char what[768] = "";
            diff(a, b, "", what, sizeof what);
            st = qs_error_set(err, QS_ERR_INPUT,
                              "%s: the work dir belongs to a different run (%s); use a new --work directory", work_dir,
                              what[0] ? what : "fingerprint differs");
        } else {
            /* same numbers; the files' mtimes say whether they were touched */
            const cJSON *fa = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(a, "model"), "files");
            const cJSON *fb = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(b, "model"), "files");
            if (!cJSON_Compare(fa, fb, true) && !force)
                st = qs_error_set(err, QS_ERR_INPUT,
                                  "%s: the model files changed since this work dir was made (modification times "
                                  "differ); --force-resume if they hold the same weights",
                                  work_dir);
            else *resuming = true;
        }
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return st;
}
