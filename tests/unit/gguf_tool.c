/* gguf_tool.c — test-only: quantizes every linear of a model directory (RTN or
 * GPTQ), writes a GGUF with pipeline/export/export_gguf.h the way the ranks of a run
 * do (rank 0 creates the partial file, P forked processes write their own
 * blocks, rank 0 finishes), and dumps the dequantized weights as .npy so the
 * Python interop test can compare them with PyPI gguf's dequantization.
 *
 * usage: gguf_tool --model DIR --out OUT.gguf [--file F.safetensors] [--npy DIR]
 *          [--bits B] [--group G] [--asym] [--method rtn|gptq] [--hessian identity|random]
 *          [--act-order] [--static-groups] [--fallback-f16] [--embed-f16]
 *          [--ranks P] [--reverse] [--tokenizer tokenizer.json] [--name NAME]
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/quant.h"
#include "pipeline/export/export_gguf.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/npy.h"
#include "workers/block.h"
#include "workers/model.h"
#include "workers/stage.h"

typedef struct tool {
    const char *model, *file, *out, *npy, *tokenizer, *name;
    qs_quant_opts q;
    bool random_h, fallback, embed_f16, reverse;
    int ranks;
} tool;

static int fail(const qs_error *err)
{
    fprintf(stderr, "gguf_tool: error: %s\n", err->msg);
    return qs_status_exit_code(err->code);
}

/* H = 2/n XᵀX for a fixed pseudo-random X [n, cols] with a few loud columns,
 * so act-order has an order to follow. */
static float *random_hessian(int64_t cols, uint64_t seed)
{
    int64_t n = 2 * cols;
    double *x = malloc(sizeof(double) * (size_t)(n * cols));
    float *h = malloc(sizeof(float) * (size_t)(cols * cols));
    if (!x || !h) {
        free(x), free(h);
        return NULL;
    }
    uint64_t s = seed * 2654435761u + 12345;
    for (int64_t i = 0; i < n * cols; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) / 9007199254740992.0 - 0.5;
        x[i] = u * (1.0 + 4.0 * (double)((i % cols) % 7 == 0));
    }
    for (int64_t a = 0; a < cols; a++)
        for (int64_t b = a; b < cols; b++) {
            double acc = 0;
            for (int64_t r = 0; r < n; r++) acc += x[r * cols + a] * x[r * cols + b];
            h[a * cols + b] = h[b * cols + a] = (float)(2.0 * acc / (double)n);
        }
    free(x);
    return h;
}

static qs_status quantize_block(const tool *t, qs_block *blk, qs_block_outcome *o, qs_error *err)
{
    memset(o, 0, sizeof *o);
    o->layer = blk->layer;
    o->blk = blk;
    for (int i = 0; i < blk->n_linears; i++) {
        const qs_block_linear *l = &blk->lin[i];
        qs_quant_opts q = t->q;
        q.name = l->weight;
        QS_TRY(qs_quant_opts_check(&q, l->out, l->in, err));
        QS_TRY(qs_quant_result_init(&o->res[i], l->out, l->in, &q, err));
        float *h = NULL;
        if (q.method == QS_QUANT_METHOD_GPTQ) {
            if (t->random_h) {
                h = random_hessian(l->in, (uint64_t)(blk->layer * 16 + i));
            } else {
                h = calloc((size_t)(l->in * l->in), sizeof(float));
                for (int64_t c = 0; h && c < l->in; c++) h[c * l->in + c] = 1.0f;
            }
            if (!h) return qs_error_set(err, QS_ERR_NOMEM, "hessian");
        }
        qs_status st = qs_quant_run(qs_backend_cpu(), blk->weight[i].data, l->out, l->in, h, &q, &o->res[i], err);
        free(h);
        QS_TRY(st);
        if (t->npy) {
            char path[4200];
            snprintf(path, sizeof path, "%s/%s.npy", t->npy, l->weight);
            qs_tensor w = {.dtype = QS_DTYPE_F32, .ndim = 2, .shape = {l->out, l->in}, .data = o->res[i].q,
                           .borrowed = true};
            QS_TRY(qs_npy_write(path, &w, err));
        }
    }
    return QS_OK;
}

/* What one rank does: plan, then write its blocks (and the embedding / head). */
static qs_status run_rank(const tool *t, const qs_gguf_export_opts *eo, int rank, qs_error *err)
{
    qs_manifest *m = NULL;
    QS_TRY(qs_manifest_open_file(t->model, t->file, &m, err));
    qs_model_names names;
    qs_gguf_export *x = NULL;
    qs_status st = qs_model_names_from_manifest(m, &names, err);
    if (st == QS_OK) st = qs_gguf_export_init(&x, t->out, m, &names, eo, err);
    int nl = qs_manifest_config(m)->n_layers;
    int first = rank * nl / t->ranks, end = (rank + 1) * nl / t->ranks;
    for (int k = first; k < end && st == QS_OK; k++) {
        int layer = t->reverse ? end - 1 - (k - first) : k;
        qs_block blk;
        st = qs_block_load(&blk, m, &names, layer, err);
        if (st != QS_OK) break;
        qs_block_outcome o;
        st = quantize_block(t, &blk, &o, err);
        if (st == QS_OK) st = qs_gguf_export_block(x, &o, err);
        for (int i = 0; i < blk.n_linears; i++) qs_quant_result_free(&o.res[i]);
        qs_block_free(&blk);
    }
    if (st == QS_OK && rank == t->ranks - 1) st = qs_gguf_export_head(x, err);
    if (st == QS_OK && rank == 0) st = qs_gguf_export_embed(x, err);
    qs_gguf_export_free(x);
    qs_manifest_close(m);
    return st;
}

int main(int argc, char **argv)
{
    tool t;
    memset(&t, 0, sizeof t);
    qs_quant_opts_default(&t.q);
    t.q.method = QS_QUANT_METHOD_RTN;
    t.q.group_size = 32;
    t.ranks = 1;
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},     {"file", required_argument, 0, 'f'},
        {"out", required_argument, 0, 'o'},       {"npy", required_argument, 0, 'n'},
        {"bits", required_argument, 0, 'b'},      {"group", required_argument, 0, 'g'},
        {"asym", no_argument, 0, 'a'},            {"method", required_argument, 0, 'M'},
        {"hessian", required_argument, 0, 'H'},   {"act-order", no_argument, 0, 'A'},
        {"static-groups", no_argument, 0, 'S'},   {"fallback-f16", no_argument, 0, 'F'},
        {"embed-f16", no_argument, 0, 'E'},       {"ranks", required_argument, 0, 'r'},
        {"reverse", no_argument, 0, 'R'},         {"tokenizer", required_argument, 0, 't'},
        {"name", required_argument, 0, 'N'},      {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': t.model = optarg; break;
        case 'f': t.file = optarg; break;
        case 'o': t.out = optarg; break;
        case 'n': t.npy = optarg; break;
        case 'b': t.q.bits = atoi(optarg); break;
        case 'g': t.q.group_size = atoi(optarg); break;
        case 'a': t.q.sym = false; break;
        case 'M': t.q.method = !strcmp(optarg, "gptq") ? QS_QUANT_METHOD_GPTQ : QS_QUANT_METHOD_RTN; break;
        case 'H': t.random_h = !strcmp(optarg, "random"); break;
        case 'A': t.q.act_order = true; break;
        case 'S': t.q.static_groups = true; break;
        case 'F': t.fallback = true; break;
        case 'E': t.embed_f16 = true; break;
        case 'r': t.ranks = atoi(optarg); break;
        case 'R': t.reverse = true; break;
        case 't': t.tokenizer = optarg; break;
        case 'N': t.name = optarg; break;
        default: return 2;
        }
    }
    if (!t.model || !t.out || t.ranks < 1) {
        fprintf(stderr, "usage: gguf_tool --model DIR --out OUT.gguf [options]\n");
        return 2;
    }
    qs_gguf_export_opts eo = {.quant = t.q, .fallback_f16 = t.fallback, .embed_f16 = t.embed_f16,
                              .name = t.name, .tokenizer = t.tokenizer};
    qs_error err;
    qs_error_clear(&err);

    /* rank 0: plan and create the partial file (the run does this before a barrier) */
    qs_manifest *m = NULL;
    qs_model_names names;
    qs_gguf_export *x = NULL;
    qs_status st = qs_manifest_open_file(t.model, t.file, &m, &err);
    if (st == QS_OK) st = qs_model_names_from_manifest(m, &names, &err);
    if (st == QS_OK) st = qs_gguf_export_init(&x, t.out, m, &names, &eo, &err);
    if (st == QS_OK) st = qs_gguf_export_create(x, &err);
    if (st != QS_OK) {
        qs_gguf_export_free(x);
        qs_manifest_close(m);
        return fail(&err);
    }
    if (qs_gguf_export_vocab_warning(x)) fprintf(stderr, "gguf_tool: warning: %s\n", qs_gguf_export_vocab_warning(x));
    if (qs_gguf_export_fallbacks(x))
        printf("fallback F16: %d linears (%s)\n", qs_gguf_export_fallbacks(x), qs_gguf_export_fallback_reason(x));

    /* the ranks, as separate processes writing into the same file */
    if (t.ranks == 1) {
        st = run_rank(&t, &eo, 0, &err);
    } else {
        fflush(NULL);
        pid_t pids[64];
        int nr = t.ranks < 64 ? t.ranks : 64;
        for (int r = 0; r < nr; r++) {
            pids[r] = fork();
            if (pids[r] == 0) {
                qs_error cerr;
                qs_error_clear(&cerr);
                qs_status cs = run_rank(&t, &eo, r, &cerr);
                if (cs != QS_OK) fprintf(stderr, "gguf_tool: rank %d: error: %s\n", r, cerr.msg);
                fflush(NULL);
                _exit(cs == QS_OK ? 0 : qs_status_exit_code(cs));
            }
        }
        int worst = 0;
        for (int r = 0; r < nr; r++) {
            int ws = 0;
            if (pids[r] < 0 || waitpid(pids[r], &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws))
                worst = pids[r] < 0 || !WIFEXITED(ws) ? 1 : WEXITSTATUS(ws);
        }
        if (worst) st = qs_error_set(&err, worst == 2 ? QS_ERR_INPUT : QS_ERR_UNSUPPORTED, "a rank failed (see above)");
    }
    if (st == QS_OK) st = qs_gguf_export_finish(x, &err);
    if (st == QS_OK)
        printf("wrote %s: %llu bytes, %zu tensors\n", t.out, (unsigned long long)qs_gguf_export_file_size(x),
               qs_gguf_export_layout(x)->n_tensors);
    qs_gguf_export_free(x);
    qs_manifest_close(m);
    return st == QS_OK ? 0 : fail(&err);
}
