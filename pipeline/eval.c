/* eval.c — perplexity, KL(ref ‖ model) and top-1 agreement over a token set. */
#include "pipeline/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/ops_cpu.h"
#include "pipeline/formats/npy.h"
#include "pipeline/formats/token_set.h"
#include "workers/model.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

qs_status qs_eval_read_tokens(const char *path, qs_tensor *tokens, qs_error *err)
{
    QS_TRY(qs_token_set_read(path, tokens, err));
    if (tokens->ndim != 2 || tokens->shape[0] < 1 || tokens->shape[1] < 2) {
        char got[96];
        qs_status s = qs_error_set(err, QS_ERR_INPUT, "%s: token set has shape %s, expected [rows >= 1, L >= 2]",
                                   path, qs_shape_str(tokens->ndim, tokens->shape, got, sizeof got));
        qs_tensor_free(tokens);
        return s;
    }
    return QS_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double qs_percentile(double *v, int64_t n, double q)
{
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double pos = q / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos);
    if (lo >= n - 1) return v[n - 1];
    double frac = pos - (double)lo;
    return v[lo] + frac * (v[lo + 1] - v[lo]);
}

qs_status qs_eval_run(const qs_eval_opts *o, const qs_backend_i *be, qs_eval_result *r, qs_error *err)
{
    memset(r, 0, sizeof *r);
    qs_tensor tok = {0}, dump = {0};
    qs_model model = {0}, ref = {0};
    bool have_model = false, have_ref = false;
    float *logits = NULL, *ref_logits = NULL;
    double *nll = NULL, *kl = NULL;
    uint8_t *same = NULL;
    qs_status s;

    if ((s = qs_eval_read_tokens(o->tokens_path, &tok, err)) != QS_OK) return s;
    const int64_t rows = tok.shape[0], L = tok.shape[1];
    const int32_t *ids = tok.data;
    int64_t batch = o->batch > 0 ? (o->batch < rows ? o->batch : rows) : 1;

    if ((s = qs_model_load_file(&model, o->model_dir, o->file, err)) != QS_OK) goto done;
    have_model = true;
    if ((s = qs_compute_dtype_resolve(o->compute_dtype, model.manifest, &model.names, be, &r->compute, err)) != QS_OK ||
        (s = qs_model_set_compute(&model, r->compute, err)) != QS_OK ||
        (s = qs_model_to_device(&model, be, err)) != QS_OK)
        goto done;
    const int64_t V = model.cfg.vocab;
    /* logits are batch·L·V floats (twice with --ref): keep them under ~1 GiB so a
     * 250k vocabulary with long rows does not take the host down */
    while (batch > 1 && batch * L * V * (int64_t)sizeof(float) > ((int64_t)1 << 30)) batch /= 2;
    if (o->ref_dir) {
        if ((s = qs_model_load(&ref, o->ref_dir, err)) != QS_OK) goto done;
        have_ref = true;
        if ((s = qs_model_set_compute(&ref, r->compute, err)) != QS_OK ||
            (s = qs_model_to_device(&ref, be, err)) != QS_OK)
            goto done;
        if (ref.cfg.vocab != V) {
            s = qs_error_set(err, QS_ERR_INPUT, "%s: vocabulary %d differs from the model's %lld (%s)", o->ref_dir,
                             ref.cfg.vocab, (long long)V, o->model_dir);
            goto done;
        }
    }
    for (int64_t i = 0; i < rows * L; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            s = qs_error_set(err, QS_ERR_INPUT, "%s: row %lld, position %lld: token id %d is outside the vocabulary "
                             "[0, %lld) of %s", o->tokens_path, (long long)(i / L), (long long)(i % L), ids[i],
                             (long long)V, o->model_dir);
            goto done;
        }
    if (model.cfg.pos == QS_POS_LEARNED && model.embed.pos.data &&
        L > model.embed.pos.shape[0] - model.cfg.pos_offset) {
        s = qs_error_set(err, QS_ERR_INPUT, "%s: rows of %lld tokens exceed the model's %lld learned positions",
                         o->tokens_path, (long long)L, (long long)(model.embed.pos.shape[0] - model.cfg.pos_offset));
        goto done;
    }

    logits = qs_malloc(sizeof(float) * (size_t)(batch * L * V));
    nll = malloc(sizeof(double) * (size_t)(rows * (L - 1)));
    if (have_ref) {
        ref_logits = qs_malloc(sizeof(float) * (size_t)(batch * L * V));
        kl = malloc(sizeof(double) * (size_t)(rows * (L - 1)));
        same = malloc((size_t)(rows * (L - 1)));
    }
    if (!logits || !nll || (have_ref && (!ref_logits || !kl || !same))) {
        s = qs_error_set(err, QS_ERR_NOMEM, "eval: out of memory for %lld×%lld logits", (long long)(batch * L),
                         (long long)V);
        goto done;
    }
    if (o->dump_logits) {
        int64_t shape[3] = {rows, L, V};
        if ((s = qs_tensor_init(&dump, QS_DTYPE_F32, 3, shape, err)) != QS_OK) goto done;
    }

    double t_fwd = 0.0;
    for (int64_t r0 = 0; r0 < rows; r0 += batch) {
        int64_t nb = rows - r0 < batch ? rows - r0 : batch;
        double t0 = now_s();
        if ((s = qs_model_forward(&model, be, ids + r0 * L, nb, L, logits, err)) != QS_OK) goto done;
        for (int64_t b = 0; b < nb; b++)
            qs_cpu_nll_rows(logits + b * L * V, L - 1, V, ids + (r0 + b) * L + 1, nll + (r0 + b) * (L - 1));
        t_fwd += now_s() - t0;
        if (dump.data) memcpy((float *)dump.data + r0 * L * V, logits, sizeof(float) * (size_t)(nb * L * V));
        if (have_ref) {
            if ((s = qs_model_forward(&ref, be, ids + r0 * L, nb, L, ref_logits, err)) != QS_OK) {
                qs_error_prefix(err, "reference %s", o->ref_dir);
                goto done;
            }
            for (int64_t b = 0; b < nb; b++)
                qs_cpu_kl_rows(ref_logits + b * L * V, logits + b * L * V, L - 1, V, kl + (r0 + b) * (L - 1),
                               same + (r0 + b) * (L - 1));
        }
    }

    const int64_t n = rows * (L - 1);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += nll[i];
    r->rows = rows;
    r->seq_len = L;
    r->tokens = n;
    r->nll = sum / (double)n;
    r->ppl = exp(r->nll);
    r->seconds = t_fwd;
    r->tokens_per_s = t_fwd > 0 ? (double)(rows * L) / t_fwd : 0.0;
    if (have_ref) {
        double ks = 0.0;
        int64_t agree = 0;
        for (int64_t i = 0; i < n; i++) ks += kl[i], agree += same[i];
        r->has_ref = true;
        r->kl_mean = ks / (double)n;
        r->top1 = (double)agree / (double)n;
        r->kl_p99 = qs_percentile(kl, n, 99.0);
    }
    if (dump.data) s = qs_npy_write(o->dump_logits, &dump, err);

done:
    qs_free(logits);
    qs_free(ref_logits);
    free(nll);
    free(kl);
    free(same);
    qs_tensor_free(&dump);
    qs_tensor_free(&tok);
    if (have_model) qs_model_free(&model);
    if (have_ref) qs_model_free(&ref);
    return s;
}
