/* export_gptq.c — the GPTQ safetensors directory (see export_gptq.h). */
#include "pipeline/export/export_gptq.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gptq_pack.h"
#include "kernels/half.h"
#include "pipeline/export/side_files.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/safetensors.h"

typedef enum entry_kind { E_COPY = 0, E_QWEIGHT, E_QZEROS, E_SCALES, E_GIDX } entry_kind;

/* Where a block's tensors go: group 0 = embedding, 1 + layer = block, n + 1 = head. */
typedef struct entry {
    char name[QS_NAME_MAX + 16];
    const char *src;      /* manifest name (E_COPY) or the linear's weight name */
    entry_kind kind;
    int group;
    int lin;              /* index into the block's linears (quantized kinds) */
    qs_dtype dtype;
    int ndim;
    int64_t shape[QS_MAX_DIMS];
    uint64_t bytes;
    int shard;            /* 0-based file index */
} entry;

struct qs_gptq_export {
    char dir[4096];
    const qs_manifest *m;
    const qs_model_names *names;
    qs_model_config cfg;
    qs_gptq_export_opts o;
    entry *e;
    size_t n;
    int n_shards;
    uint64_t total_bytes;
};

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->group != y->group) return x->group < y->group ? -1 : 1;
    return strcmp(x->name, y->name);
}

static qs_status add_entry(qs_gptq_export *x, size_t *cap, const entry *e, qs_error *err)
{
    if (x->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        entry *ne = realloc(x->e, nc * sizeof *ne);
        if (!ne) return qs_error_set(err, QS_ERR_NOMEM, "export plan");
        x->e = ne;
        *cap = nc;
    }
    x->e[x->n++] = *e;
    return QS_OK;
}

qs_status qs_gptq_export_init(qs_gptq_export **out, const char *out_dir, const qs_manifest *m,
                              const qs_model_names *names, const qs_gptq_export_opts *o, qs_error *err)
{
    qs_gptq_export *x = calloc(1, sizeof *x);
    if (!x) return qs_error_set(err, QS_ERR_NOMEM, "export");
    snprintf(x->dir, sizeof x->dir, "%s", out_dir);
    x->m = m;
    x->names = names;
    x->cfg = *qs_manifest_config(m);
    x->o = *o;
    int nl = x->cfg.n_layers;
    int bits = o->quant.bits;
    size_t cap = 0;
    qs_status st = QS_OK;

    /* prefixes of every block, to assign tensors to groups */
    char (*prefix)[QS_BLOCK_PREFIX_MAX] = calloc((size_t)nl, sizeof *prefix);
    qs_block_linear(*lins)[QS_MAX_BLOCK_LINEARS] = calloc((size_t)nl, sizeof *lins);
    int *nlin = calloc((size_t)nl, sizeof *nlin);
    if (!prefix || !lins || !nlin) {
        st = qs_error_set(err, QS_ERR_NOMEM, "export plan");
        goto fail;
    }
    for (int l = 0; l < nl; l++) {
        qs_block_prefix(&x->cfg, names, l, prefix[l]);
        nlin[l] = qs_block_linears(&x->cfg, names, l, lins[l]);
    }
    for (size_t i = 0; i < qs_manifest_count(m) && st == QS_OK; i++) {
        const qs_st_info *t = qs_manifest_at(m, i, NULL);
        entry e;
        memset(&e, 0, sizeof e);
        e.src = t->name;
        e.group = -1;
        for (int l = 0; l < nl && e.group < 0; l++)
            if (strncmp(t->name, prefix[l], strlen(prefix[l])) == 0) e.group = 1 + l;
        if (e.group < 0) {
            bool embed = !strcmp(t->name, names->embed) || (names->pos_embed[0] && !strcmp(t->name, names->pos_embed)) ||
                         (names->embed_norm_w[0] && !strcmp(t->name, names->embed_norm_w)) ||
                         (names->embed_norm_b[0] && !strcmp(t->name, names->embed_norm_b));
            e.group = embed ? 0 : nl + 1;
        }
        int li = -1;
        if (e.group >= 1 && e.group <= nl)
            for (int j = 0; j < nlin[e.group - 1]; j++)
                if (!strcmp(lins[e.group - 1][j].weight, t->name)) li = j;
        if (li < 0) {
            snprintf(e.name, sizeof e.name, "%s", t->name);
            e.kind = E_COPY;
            e.dtype = t->dtype;
            e.ndim = t->ndim;
            memcpy(e.shape, t->shape, sizeof e.shape);
            e.bytes = t->nbytes;
            st = add_entry(x, &cap, &e, err);
            continue;
        }
        /* a quantized linear: four tensors instead of the weight */
        const qs_block_linear *bl = &lins[e.group - 1][li];
        int64_t outf = bl->out, inf = bl->in;
        if ((inf * bits) % 32 || (outf * bits) % 32) {
            st = qs_error_set(err, QS_ERR_UNSUPPORTED,
                              "%s: [%lld, %lld] cannot be packed at %d bits (in·bits and out·bits must be multiples of 32)",
                              t->name, (long long)outf, (long long)inf, bits);
            break;
        }
        int64_t groups = qs_quant_groups(&o->quant, inf);
        size_t base = strlen(t->name) >= 7 && !strcmp(t->name + strlen(t->name) - 7, ".weight") ? strlen(t->name) - 7
                                                                                                 : strlen(t->name);
        static const struct { const char *suffix; entry_kind kind; qs_dtype dt; } parts[] = {
            {"qweight", E_QWEIGHT, QS_DTYPE_I32}, {"qzeros", E_QZEROS, QS_DTYPE_I32},
            {"scales", E_SCALES, QS_DTYPE_F16},   {"g_idx", E_GIDX, QS_DTYPE_I32}};
        for (int p = 0; p < 4 && st == QS_OK; p++) {
            entry q = e;
            snprintf(q.name, sizeof q.name, "%.*s.%s", (int)base, t->name, parts[p].suffix);
            q.kind = parts[p].kind;
            q.lin = li;
            q.dtype = parts[p].dt;
            switch (q.kind) {
            case E_QWEIGHT: q.ndim = 2, q.shape[0] = inf * bits / 32, q.shape[1] = outf; break;
            case E_QZEROS: q.ndim = 2, q.shape[0] = groups, q.shape[1] = outf * bits / 32; break;
            case E_SCALES: q.ndim = 2, q.shape[0] = groups, q.shape[1] = outf; break;
            default: q.ndim = 1, q.shape[0] = inf; break;
            }
            q.bytes = (uint64_t)qs_shape_numel(q.ndim, q.shape) * qs_dtype_size(q.dtype);
            st = add_entry(x, &cap, &q, err);
        }
    }
    if (st != QS_OK) goto fail;
    for (int l = 0; l < nl; l++)
        for (int j = 0; j < nlin[l]; j++)
            if (!qs_manifest_find(m, lins[l][j].weight, NULL)) {
                st = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' is missing", qs_manifest_dir(m),
                                  lins[l][j].weight);
                goto fail;
            }
    qsort(x->e, x->n, sizeof *x->e, cmp_entry);
    /* shards: a new file per group, and within a group when it would exceed the cap */
    int shard = -1, last_group = -2;
    uint64_t in_shard = 0;
    for (size_t i = 0; i < x->n; i++) {
        entry *e = &x->e[i];
        if (e->group != last_group || (in_shard > 0 && o->max_shard_size && in_shard + e->bytes > o->max_shard_size)) {
            shard++;
            in_shard = 0;
            last_group = e->group;
        }
        e->shard = shard;
        in_shard += e->bytes;
        x->total_bytes += e->bytes;
    }
    x->n_shards = shard + 1;
    free(prefix), free(lins), free(nlin);
    *out = x;
    return QS_OK;
fail:
    free(prefix), free(lins), free(nlin);
    qs_gptq_export_free(x);
    return st;
}

void qs_gptq_export_free(qs_gptq_export *x)
{
    if (!x) return;
    free(x->e);
    free(x);
}

int qs_gptq_export_shards(const qs_gptq_export *x) { return x->n_shards; }

static void shard_name(const qs_gptq_export *x, int shard, char *buf, size_t cap)
{
    snprintf(buf, cap, "model-%05d-of-%05d.safetensors", shard + 1, x->n_shards);
}

static int64_t numel_of(const entry *e) { return qs_shape_numel(e->ndim, e->shape); }

/* Packed forms of one quantized linear. */
typedef struct packed {
    int32_t *qweight, *qzeros, *g_idx;
    uint16_t *scales;
} packed;

static void packed_free(packed *p)
{
    free(p->qweight), free(p->qzeros), free(p->g_idx), free(p->scales);
    memset(p, 0, sizeof *p);
}

static qs_status pack_linear(const qs_gptq_export *x, const qs_quant_result *r, const char *name, packed *p,
                             qs_error *err)
{
    int bits = r->bits;
    int64_t rows = r->rows, cols = r->cols, g = r->groups;
    p->qweight = malloc(sizeof(int32_t) * (size_t)(cols * bits / 32 * rows));
    p->qzeros = malloc(sizeof(int32_t) * (size_t)(g * rows * bits / 32));
    p->scales = malloc(sizeof(uint16_t) * (size_t)(g * rows));
    p->g_idx = malloc(sizeof(int32_t) * (size_t)cols);
    if (!p->qweight || !p->qzeros || !p->scales || !p->g_idx) return qs_error_set(err, QS_ERR_NOMEM, "%s", name);
    qs_gptq_pack_qweight(r->codes, rows, cols, bits, p->qweight);
    qs_status st = qs_gptq_pack_qzeros(r->zeros, g, rows, bits, !x->o.v2, p->qzeros, err);
    if (st != QS_OK) return qs_error_prefix(err, "%s", name);
    for (int64_t i = 0; i < g * rows; i++) {
        p->scales[i] = qs_f32_to_f16(r->scales[i]);
        if (qs_f16_to_f32(p->scales[i]) != r->scales[i])
            return qs_error_set(err, QS_ERR_INTERNAL, "%s: scale %g is not representable in fp16", name,
                                (double)r->scales[i]);
    }
    memcpy(p->g_idx, r->g_idx, sizeof(int32_t) * (size_t)cols);
    return QS_OK;
}

/* Writes the shards of one group; o is the block outcome for block groups. */
static qs_status write_group(qs_gptq_export *x, int group, const qs_block_outcome *o, qs_error *err)
{
    packed pk[QS_MAX_BLOCK_LINEARS];
    memset(pk, 0, sizeof pk);
    qs_status st = QS_OK;
    if (o) {
        for (int i = 0; i < o->blk->n_linears && st == QS_OK; i++)
            st = pack_linear(x, &o->res[i], o->blk->lin[i].weight, &pk[i], err);
    }
    for (size_t i = 0; i < x->n && st == QS_OK;) {
        if (x->e[i].group != group) {
            i++;
            continue;
        }
        int shard = x->e[i].shard;
        size_t j = i;
        while (j < x->n && x->e[j].shard == shard) j++;
        char name[64], path[4200];
        shard_name(x, shard, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", x->dir, name);
        qs_st_writer *w = NULL;
        st = qs_st_writer_open(path, &w, err);
        if (st == QS_OK) st = qs_st_writer_metadata(w, "format", "pt", err);
        for (size_t k = i; k < j && st == QS_OK; k++)
            st = qs_st_writer_declare(w, x->e[k].name, x->e[k].dtype, x->e[k].ndim, x->e[k].shape, err);
        if (st == QS_OK) st = qs_st_writer_begin(w, err);
        for (size_t n = 0; n < j - i && st == QS_OK; n++) {
            const char *tn = qs_st_writer_order(w, n);
            const entry *e = NULL;
            for (size_t k = i; k < j; k++)
                if (!strcmp(x->e[k].name, tn)) e = &x->e[k];
            const void *data = NULL;
            const qs_omni_tensor *folded = o && o->omni ? qs_omni_record_fp(o->omni, e->src) : NULL;
            void *conv = NULL;
            if (folded) {
                /* OmniQuant's LET changed this tensor: its folded value, in the model's dtype */
                if (numel_of(e) != folded->shape[0] || !(conv = malloc(e->bytes))) {
                    st = qs_error_set(err, QS_ERR_INTERNAL, "%s: folded tensor of %lld elements", e->name,
                                      (long long)folded->shape[0]);
                    break;
                }
                st = qs_convert_from_f32(folded->data, (size_t)folded->shape[0], e->dtype, conv, err);
                data = conv;
            } else if (e->kind == E_COPY) {
                const qs_st_file *f = NULL;
                const qs_st_info *t = qs_manifest_find(x->m, e->src, &f);
                data = qs_st_data(f, t);
            } else if (!o) {
                st = qs_error_set(err, QS_ERR_INTERNAL, "%s: quantized tensor outside a block", e->name);
                break;
            } else {
                const packed *p = &pk[e->lin];
                data = e->kind == E_QWEIGHT ? (const void *)p->qweight
                       : e->kind == E_QZEROS ? (const void *)p->qzeros
                       : e->kind == E_SCALES ? (const void *)p->scales
                                             : (const void *)p->g_idx;
            }
            if (st == QS_OK) st = qs_st_writer_tensor(w, e->name, data, e->bytes, err);
            free(conv);
        }
        if (st == QS_OK) st = qs_st_writer_finish(w, err);
        else qs_st_writer_abort(w);
        i = j;
    }
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) packed_free(&pk[i]);
    return st;
}

qs_status qs_gptq_export_block(qs_gptq_export *x, const qs_block_outcome *o, qs_error *err)
{
    return write_group(x, 1 + o->layer, o, err);
}

qs_status qs_gptq_export_embed(qs_gptq_export *x, qs_error *err) { return write_group(x, 0, NULL, err); }

qs_status qs_gptq_export_head(qs_gptq_export *x, qs_error *err)
{
    return write_group(x, x->cfg.n_layers + 1, NULL, err);
}

static qs_status write_json(const char *path, cJSON *j, qs_error *err)
{
    char *txt = cJSON_Print(j);
    if (!txt) return qs_error_set(err, QS_ERR_NOMEM, "%s", path);
    size_t n = strlen(txt);
    char *withnl = malloc(n + 2);
    if (!withnl) {
        free(txt);
        return qs_error_set(err, QS_ERR_NOMEM, "%s", path);
    }
    memcpy(withnl, txt, n);
    withnl[n] = '\n';
    qs_status st = qs_write_file_durable(path, withnl, n + 1, err);
    free(withnl);
    free(txt);
    return st;
}

static cJSON *quant_config(const qs_gptq_export *x)
{
    const qs_quant_opts *q = &x->o.quant;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "bits", q->bits);
    cJSON_AddNumberToObject(c, "group_size", q->group_size);
    cJSON_AddNumberToObject(c, "damp_percent", q->damp);
    cJSON_AddBoolToObject(c, "desc_act", q->act_order);
    cJSON_AddBoolToObject(c, "static_groups", q->static_groups);
    cJSON_AddBoolToObject(c, "sym", q->sym);
    cJSON_AddBoolToObject(c, "true_sequential", x->o.true_sequential);
    cJSON_AddBoolToObject(c, "lm_head", false);
    cJSON_AddStringToObject(c, "quant_method", "gptq");
    cJSON_AddStringToObject(c, "checkpoint_format", x->o.v2 ? "gptq_v2" : "gptq");
    cJSON_AddStringToObject(c, "model_file_base_name", "model");
    cJSON_AddStringToObject(c, "quantizer", "qshard");
    return c;
}

qs_status qs_gptq_export_finish(qs_gptq_export *x, qs_error *err)
{
    char path[4200];
    qs_status st = QS_OK;
    /* tokenizer and generation files, checked to be what they claim (side_files.h) */
    const char *const *copy = qs_side_file_names;
    for (int i = 0; copy[i] && st == QS_OK; i++) {
        char src[4200];
        snprintf(src, sizeof src, "%s/%s", qs_manifest_dir(x->m), copy[i]);
        snprintf(path, sizeof path, "%s/%s", x->dir, copy[i]);
        if (qs_path_exists(src)) st = qs_side_file_copy(src, path, err);
    }
    if (st != QS_OK) return st;

    /* quantize_config.json */
    cJSON *qc = quant_config(x);
    snprintf(path, sizeof path, "%s/quantize_config.json", x->dir);
    st = write_json(path, qc, err);
    cJSON_Delete(qc);
    if (st != QS_OK) return st;

    /* config.json: the original with quantization_config added */
    char src[4200], *text = NULL;
    snprintf(src, sizeof src, "%s/config.json", qs_manifest_dir(x->m));
    QS_TRY(qs_read_file(src, &text, NULL, err));
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return qs_error_set(err, QS_ERR_INPUT, "%s: not a JSON object", src);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "quantization_config");
    cJSON_AddItemToObject(cfg, "quantization_config", quant_config(x));
    snprintf(path, sizeof path, "%s/config.json", x->dir);
    st = write_json(path, cfg, err);
    cJSON_Delete(cfg);
    if (st != QS_OK) return st;

    /* the index last: its presence marks a complete export */
    cJSON *idx = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(idx, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)x->total_bytes);
    cJSON *map = cJSON_AddObjectToObject(idx, "weight_map");
    entry *sorted = malloc(x->n * sizeof *sorted);
    if (!sorted) {
        cJSON_Delete(idx);
        return qs_error_set(err, QS_ERR_NOMEM, "index");
    }
    memcpy(sorted, x->e, x->n * sizeof *sorted);
    for (size_t i = 0; i < x->n; i++) sorted[i].group = 0; /* sort by name only */
    qsort(sorted, x->n, sizeof *sorted, cmp_entry);
    for (size_t i = 0; i < x->n; i++) {
        char name[64];
        shard_name(x, sorted[i].shard, name, sizeof name);
        cJSON_AddStringToObject(map, sorted[i].name, name);
    }
    free(sorted);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", x->dir);
    st = write_json(path, idx, err);
    cJSON_Delete(idx);
    return st;
}
