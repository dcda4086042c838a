/* cmd_inspect.c — `qshard inspect MODEL_DIR [--json] [--file NAME] [--check]`:
 * what is in a checkpoint. Architecture and sizes from config.json; for each
 * block its quantizable linears (shape, dtype) and bytes; the tensors outside
 * the blocks; totals. Every tensor a run uses is checked against config.json
 * with the run's rules (pipeline/formats/model_check.h); --check also reads
 * them, and every other float tensor, and fails on NaN/Inf.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/cli/cli.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/model_check.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: qshard inspect MODEL_DIR [--json] [--file NAME.safetensors] [--check]\n\n"
               "What is in an HF checkpoint: architecture, blocks, the quantizable linears of each\n"
               "block (shape, dtype), bytes per block, the other tensors, totals.\n\n"
               "  --json        print one JSON object instead of text\n"
               "  --file NAME   weights file in MODEL_DIR (default: model.safetensors.index.json,\n"
               "                else model.safetensors, else the only *.safetensors file)\n"
               "  --check       read every tensor and fail on NaN/Inf (names tensor and index)\n\n"
               "The tensors `qshard run` uses (the blocks' linears, biases and norms, the\n"
               "embedding, positions, final norm and LM head) must exist with a float dtype and\n"
               "the shapes config.json implies; exit 2 with one line naming the tensor otherwise.\n");
}

/* 1234567 → "1,234,567" */
static const char *grouped(uint64_t v, char *buf, size_t cap)
{
    char raw[32];
    int n = snprintf(raw, sizeof raw, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = raw[i];
    }
    buf[o] = '\0';
    return buf;
}

static bool name_exists(const char *name, void *ctx) { return qs_manifest_find(ctx, name, NULL) != NULL; }

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static cJSON *shape_json(const qs_st_info *t)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < t->ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)t->shape[i]));
    return a;
}

typedef struct block_info {
    char prefix[QS_BLOCK_PREFIX_MAX];
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
    int n_lin;
    uint64_t params, bytes;
    size_t n_tensors;
} block_info;

/* Finds the blocks' linears, checks them against config.json, sums sizes. */
static qs_status survey(const qs_manifest *m, const qs_model_names *names, block_info *blocks, bool *in_block,
                        qs_error *err)
{
    const qs_model_config *cfg = qs_manifest_config(m);
    for (int b = 0; b < cfg->n_layers; b++) {
        block_info *bi = &blocks[b];
        bi->n_lin = qs_block_linears(cfg, names, b, bi->lin);
        for (int j = 0; j < bi->n_lin; j++) {
            const qs_block_linear *l = &bi->lin[j];
            const qs_st_info *t = qs_manifest_find(m, l->weight, NULL);
            if (!t)
                return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' (block %d %s) is missing", qs_manifest_dir(m),
                                    l->weight, b, l->short_name);
            if (t->ndim != 2 || t->shape[0] != l->out || t->shape[1] != l->in) {
                char sh[160];
                return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' has shape %s, config.json implies [%lld,%lld]",
                                    qs_manifest_dir(m), l->weight, qs_shape_str(t->ndim, t->shape, sh, sizeof sh),
                                    (long long)l->out, (long long)l->in);
            }
        }
        if (bi->n_lin == 0) continue;
        qs_block_prefix(cfg, names, b, bi->prefix);
    }
    for (size_t i = 0; i < qs_manifest_count(m); i++) {
        const qs_st_info *t = qs_manifest_at(m, i, NULL);
        in_block[i] = false;
        for (int b = 0; b < cfg->n_layers; b++) {
            if (blocks[b].prefix[0] && starts_with(t->name, blocks[b].prefix)) {
                blocks[b].params += (uint64_t)qs_shape_numel(t->ndim, t->shape);
                blocks[b].bytes += t->nbytes;
                blocks[b].n_tensors++;
                in_block[i] = true;
                break;
            }
        }
    }
    return QS_OK;
}

/* Reads every float tensor with the finite check on. */
static qs_status check_all(const qs_manifest *m, size_t *n_checked, qs_error *err)
{
    size_t cap = 0;
    float *buf = NULL;
    *n_checked = 0;
    for (size_t i = 0; i < qs_manifest_count(m); i++) {
        const qs_st_file *f;
        const qs_st_info *t = qs_manifest_at(m, i, &f);
        if (t->dtype != QS_DTYPE_F32 && t->dtype != QS_DTYPE_F16 && t->dtype != QS_DTYPE_BF16 &&
            t->dtype != QS_DTYPE_F64)
            continue;
        size_t n = (size_t)(t->nbytes / qs_dtype_size(t->dtype));
        if (n > cap) {
            float *nb = realloc(buf, n * sizeof *buf);
            if (!nb) {
                free(buf);
                return qs_error_set(err, QS_ERR_NOMEM, "%s: cannot allocate %zu floats", t->name, n);
            }
            buf = nb;
            cap = n;
        }
        qs_status s = qs_st_read_f32(f, t, buf, true, err);
        if (s != QS_OK) {
            free(buf);
            return s;
        }
        (*n_checked)++;
    }
    free(buf);
    return QS_OK;
}

static void print_text(const qs_manifest *m, const block_info *blocks, const bool *in_block, bool checked,
                       size_t n_checked)
{
    const qs_model_config *cfg = qs_manifest_config(m);
    char g1[32], g2[32];
    printf("model: %s\n", qs_manifest_dir(m));
    for (size_t i = 0; i < qs_manifest_file_count(m); i++) {
        const qs_st_file *f = qs_manifest_file(m, i);
        const char *p = qs_st_path(f), *slash = strrchr(p, '/');
        printf("file: %s (%zu tensors, %s bytes)\n", slash ? slash + 1 : p, qs_st_count(f),
               grouped(qs_st_file_size(f), g1, sizeof g1));
    }
    printf("architecture: %s (model_type %s), %d blocks, hidden %d, heads %d (kv %d), ffn %d, vocab %d%s\n",
           qs_arch_name(cfg->arch), cfg->model_type, cfg->n_layers, cfg->hidden, cfg->n_heads, cfg->n_kv_heads,
           cfg->ffn, cfg->vocab, cfg->tie_embeddings ? ", tied embeddings" : "");
    for (int b = 0; b < cfg->n_layers; b++) {
        const block_info *bi = &blocks[b];
        printf("block %d (%s): %d linears, %zu tensors, %s parameters, %s bytes\n", b, bi->prefix, bi->n_lin,
               bi->n_tensors, grouped(bi->params, g1, sizeof g1), grouped(bi->bytes, g2, sizeof g2));
        for (int j = 0; j < bi->n_lin; j++) {
            const qs_st_info *t = qs_manifest_find(m, bi->lin[j].weight, NULL);
            char sh[160];
            printf("  %-32s %-12s %s%s\n", bi->lin[j].short_name, qs_shape_str(t->ndim, t->shape, sh, sizeof sh),
                   qs_dtype_name(t->dtype),
                   bi->lin[j].bias[0] && qs_manifest_find(m, bi->lin[j].bias, NULL) ? " +bias" : "");
        }
    }
    printf("non-block tensors:\n");
    uint64_t params = 0, bytes = 0;
    for (size_t i = 0; i < qs_manifest_count(m); i++) {
        const qs_st_info *t = qs_manifest_at(m, i, NULL);
        params += (uint64_t)qs_shape_numel(t->ndim, t->shape);
        bytes += t->nbytes;
        if (in_block[i]) continue;
        char sh[160];
        printf("  %-40s %-12s %-5s %s bytes\n", t->name, qs_shape_str(t->ndim, t->shape, sh, sizeof sh),
               qs_dtype_name(t->dtype), grouped(t->nbytes, g1, sizeof g1));
    }
    printf("total: %zu tensors, %s parameters, %s bytes\n", qs_manifest_count(m), grouped(params, g1, sizeof g1),
           grouped(bytes, g2, sizeof g2));
    if (checked) printf("check: %zu float tensors read, all values finite\n", n_checked);
}

static void print_json(const qs_manifest *m, const block_info *blocks, const bool *in_block, bool checked,
                       size_t n_checked)
{
    const qs_model_config *cfg = qs_manifest_config(m);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "dir", qs_manifest_dir(m));
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    for (size_t i = 0; i < qs_manifest_file_count(m); i++) {
        const qs_st_file *f = qs_manifest_file(m, i);
        const char *p = qs_st_path(f), *slash = strrchr(p, '/');
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", slash ? slash + 1 : p);
        cJSON_AddNumberToObject(o, "bytes", (double)qs_st_file_size(f));
        cJSON_AddNumberToObject(o, "tensors", (double)qs_st_count(f));
        cJSON_AddItemToArray(files, o);
    }
    cJSON_AddStringToObject(root, "architecture", qs_arch_name(cfg->arch));
    cJSON_AddStringToObject(root, "model_type", cfg->model_type);
    cJSON_AddNumberToObject(root, "n_blocks", cfg->n_layers);
    cJSON_AddNumberToObject(root, "hidden", cfg->hidden);
    cJSON_AddNumberToObject(root, "n_heads", cfg->n_heads);
    cJSON_AddNumberToObject(root, "n_kv_heads", cfg->n_kv_heads);
    cJSON_AddNumberToObject(root, "ffn", cfg->ffn);
    cJSON_AddNumberToObject(root, "vocab", cfg->vocab);
    cJSON_AddBoolToObject(root, "tie_embeddings", cfg->tie_embeddings);
    cJSON *jb = cJSON_AddArrayToObject(root, "blocks");
    for (int b = 0; b < cfg->n_layers; b++) {
        const block_info *bi = &blocks[b];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", b);
        cJSON_AddStringToObject(o, "prefix", bi->prefix);
        cJSON_AddNumberToObject(o, "n_tensors", (double)bi->n_tensors);
        cJSON_AddNumberToObject(o, "params", (double)bi->params);
        cJSON_AddNumberToObject(o, "bytes", (double)bi->bytes);
        cJSON *ls = cJSON_AddArrayToObject(o, "linears");
        for (int j = 0; j < bi->n_lin; j++) {
            const qs_st_info *t = qs_manifest_find(m, bi->lin[j].weight, NULL);
            cJSON *l = cJSON_CreateObject();
            cJSON_AddStringToObject(l, "name", bi->lin[j].short_name);
            cJSON_AddStringToObject(l, "tensor", bi->lin[j].weight);
            cJSON_AddItemToObject(l, "shape", shape_json(t));
            cJSON_AddStringToObject(l, "dtype", qs_dtype_name(t->dtype));
            cJSON_AddNumberToObject(l, "stage", bi->lin[j].stage);
            if (bi->lin[j].bias[0] && qs_manifest_find(m, bi->lin[j].bias, NULL))
                cJSON_AddStringToObject(l, "bias", bi->lin[j].bias);
            else cJSON_AddNullToObject(l, "bias");
            cJSON_AddItemToArray(ls, l);
        }
        cJSON_AddItemToArray(jb, o);
    }
    cJSON *other = cJSON_AddArrayToObject(root, "other_tensors");
    uint64_t params = 0, bytes = 0;
    for (size_t i = 0; i < qs_manifest_count(m); i++) {
        const qs_st_info *t = qs_manifest_at(m, i, NULL);
        params += (uint64_t)qs_shape_numel(t->ndim, t->shape);
        bytes += t->nbytes;
        if (in_block[i]) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddItemToObject(o, "shape", shape_json(t));
        cJSON_AddStringToObject(o, "dtype", qs_dtype_name(t->dtype));
        cJSON_AddNumberToObject(o, "bytes", (double)t->nbytes);
        cJSON_AddItemToArray(other, o);
    }
    cJSON_AddNumberToObject(root, "n_tensors", (double)qs_manifest_count(m));
    cJSON_AddNumberToObject(root, "total_params", (double)params);
    cJSON_AddNumberToObject(root, "total_bytes", (double)bytes);
    if (checked) cJSON_AddNumberToObject(root, "checked_tensors", (double)n_checked);
    char *txt = cJSON_Print(root);
    if (txt) puts(txt);
    free(txt);
    cJSON_Delete(root);
}

int qs_cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"file", required_argument, NULL, 'f'},
        {"check", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false, check = false;
    const char *file = NULL;
    optind = 0; /* full getopt re-initialisation: tests call commands more than once */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'f': file = optarg; break;
        case 'c': check = true; break;
        case 'h': usage(stdout); return 0;
        case ':': return qs_cli_usage_error("inspect", "%s needs a value", argv[optind - 1]);
        default: return qs_cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return qs_cli_usage_error("inspect", "expected one MODEL_DIR");
    const char *dir = argv[optind];

    qs_error err = {0};
    qs_manifest *m = NULL;
    if (qs_manifest_open_file(dir, file, &m, &err) != QS_OK) return qs_cli_report("inspect", &err);
    const qs_model_config *cfg = qs_manifest_config(m);
    qs_model_names names;
    block_info *blocks = calloc(cfg->n_layers > 0 ? (size_t)cfg->n_layers : 1, sizeof *blocks);
    bool *in_block = calloc(qs_manifest_count(m) + 1, sizeof *in_block);
    qs_status s = QS_OK;
    size_t n_checked = 0;
    if (!blocks || !in_block) s = qs_error_set(&err, QS_ERR_NOMEM, "out of memory");
    if (s == QS_OK && (s = qs_model_names_init(cfg, name_exists, m, &names, &err)) != QS_OK)
        qs_error_prefix(&err, "%s", qs_manifest_dir(m));
    /* the tensors a run uses, with the run's rules; --check also their values */
    if (s == QS_OK) s = qs_model_check(m, &names, check ? QS_MODEL_CHECK_VALUES : QS_MODEL_CHECK_SHAPES, NULL, &err);
    if (s == QS_OK) s = survey(m, &names, blocks, in_block, &err);
    if (s == QS_OK && check) s = check_all(m, &n_checked, &err);
    int rc = 0;
    if (s != QS_OK) rc = qs_cli_report("inspect", &err);
    else if (json) print_json(m, blocks, in_block, check, n_checked);
    else print_text(m, blocks, in_block, check, n_checked);
    free(blocks);
    free(in_block);
    qs_manifest_close(m);
    return rc;
}
