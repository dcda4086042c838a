/* generate.c — greedy decoding and sampling (see generate.h). */
#include "pipeline/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops_cpu.h"

qs_status qs_generate_greedy(const qs_model *model, const qs_backend_i *be, const int32_t *prompt, int64_t n_prompt,
                             int64_t n_new, int32_t stop_id, int32_t *out, int64_t *n_out, qs_error *err)
{
    const qs_model_config *c = &model->cfg;
    if (n_prompt < 1) return qs_error_set(err, QS_ERR_INPUT, "generate: the prompt needs at least one token");
    int64_t limit = n_prompt + n_new;
    if (c->pos == QS_POS_LEARNED && model->embed.pos.data) {
        int64_t n_pos = model->embed.pos.shape[0] - c->pos_offset;
        if (limit > n_pos) limit = n_pos;
    }
    memcpy(out, prompt, sizeof(int32_t) * (size_t)n_prompt);
    *n_out = n_prompt;
    float *x = qs_malloc(sizeof(float) * (size_t)(limit * c->hidden));
    float *logits = qs_malloc(sizeof(float) * (size_t)c->vocab);
    qs_status s = QS_OK;
    if (!x || !logits) s = qs_error_set(err, QS_ERR_NOMEM, "generate: out of memory");
    for (int64_t n = n_prompt; s == QS_OK && n < limit; n++) {
        s = qs_embed_stage_forward(&model->embed, out, 1, n, x, err);
        for (int l = 0; s == QS_OK && l < c->n_layers; l++)
            s = qs_block_forward(&model->blocks[l], be, x, 1, n, x, NULL, err);
        if (s == QS_OK) s = qs_head_stage_forward(&model->head, be, x + (n - 1) * c->hidden, 1, logits, err);
        if (s != QS_OK) break;
        int32_t next = (int32_t)qs_cpu_argmax(logits, c->vocab);
        out[n] = next;
        *n_out = n + 1;
        if (stop_id >= 0 && next == stop_id) break;
    }
    qs_free(x);
    qs_free(logits);
    return s;
}

/* ---- sampling ---------------------------------------------------------------------------- */

/* splitmix64: a small, well-known generator; one stream per row. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-53; }

/* One token from logits[v] at temperature t (> 0): inverse CDF of the softmax, in double. */
static int32_t sample_one(const float *logits, int64_t v, double t, uint64_t *rng)
{
    double mx = -INFINITY;
    for (int64_t i = 0; i < v; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int64_t i = 0; i < v; i++) sum += exp(((double)logits[i] - mx) / t);
    double u = uniform01(rng) * sum, acc = 0;
    for (int64_t i = 0; i < v; i++) {
        acc += exp(((double)logits[i] - mx) / t);
        if (u < acc) return (int32_t)i;
    }
    return (int32_t)(v - 1);
}

/* Decodes rows [r0, r0 + nb) in lockstep: every step runs the blocks over all
 * nb rows of the current length and the head over their last positions. */
static qs_status sample_batch(const qs_model *model, const qs_backend_i *be, int64_t n_prompt, int64_t limit,
                              int64_t width, int64_t r0, int64_t nb, const qs_sample_opts *so, int32_t *out,
                              int64_t *lens, qs_error *err)
{
    const qs_model_config *c = &model->cfg;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(nb * limit));
    float *x = qs_malloc(sizeof(float) * (size_t)(nb * limit * c->hidden));
    float *last = qs_malloc(sizeof(float) * (size_t)(nb * c->hidden));
    float *logits = qs_malloc(sizeof(float) * (size_t)(nb * c->vocab));
    uint64_t *rng = malloc(sizeof(uint64_t) * (size_t)nb);
    bool *ended = calloc((size_t)nb, sizeof(bool));
    qs_status s = QS_OK;
    if (!ids || !x || !last || !logits || !rng || !ended) s = qs_error_set(err, QS_ERR_NOMEM, "generate: out of memory");
    for (int64_t b = 0; s == QS_OK && b < nb; b++) {
        /* row r's own stream starts from the seed mixed with r: rows differ, and a row does not depend on the batch */
        rng[b] = so->seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(r0 + b + 1));
        lens[r0 + b] = n_prompt;
    }
    int64_t active = nb;
    for (int64_t n = n_prompt; s == QS_OK && n < limit && active > 0; n++) {
        for (int64_t b = 0; b < nb; b++) memcpy(ids + b * n, out + (r0 + b) * width, sizeof(int32_t) * (size_t)n);
        s = qs_embed_stage_forward(&model->embed, ids, nb, n, x, err);
        for (int l = 0; s == QS_OK && l < c->n_layers; l++) s = qs_block_forward(&model->blocks[l], be, x, nb, n, x, NULL, err);
        if (s != QS_OK) break;
        for (int64_t b = 0; b < nb; b++)
            memcpy(last + b * c->hidden, x + (b * n + n - 1) * c->hidden, sizeof(float) * (size_t)c->hidden);
        if ((s = qs_head_stage_forward(&model->head, be, last, nb, logits, err)) != QS_OK) break;
        for (int64_t b = 0; b < nb; b++) {
            int32_t *row = out + (r0 + b) * width;
            /* an ended row keeps running with the others (lockstep) on filler tokens */
            int32_t next = ended[b] ? so->stop_id : so->temperature > 0
                                                         ? sample_one(logits + b * c->vocab, c->vocab, so->temperature, &rng[b])
                                                         : (int32_t)qs_cpu_argmax(logits + b * c->vocab, c->vocab);
            row[n] = next;
            if (ended[b]) continue;
            lens[r0 + b] = n + 1;
            if (so->stop_id >= 0 && next == so->stop_id) ended[b] = true, active--;
        }
    }
    free(ids);
    qs_free(x);
    qs_free(last);
    qs_free(logits);
    free(rng);
    free(ended);
    return s;
}

qs_status qs_generate_sample(const qs_model *model, const qs_backend_i *be, const int32_t *prompt, int64_t n_prompt,
                             int64_t rows, int64_t n_new, const qs_sample_opts *so, int32_t *out, int64_t *lens,
                             qs_error *err)
{
    const qs_model_config *c = &model->cfg;
    if (n_prompt < 1) return qs_error_set(err, QS_ERR_INPUT, "generate: the prompt needs at least one token");
    if (!(so->temperature >= 0)) return qs_error_set(err, QS_ERR_INPUT, "generate: temperature %g < 0", so->temperature);
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab)
            return qs_error_set(err, QS_ERR_INPUT, "generate: prompt token %d is outside the vocabulary [0, %d)",
                                prompt[i], c->vocab);
    int64_t width = n_prompt + n_new, limit = width;
    if (c->pos == QS_POS_LEARNED && model->embed.pos.data) {
        int64_t n_pos = model->embed.pos.shape[0] - c->pos_offset;
        if (limit > n_pos) limit = n_pos;
    }
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < width; i++) out[r * width + i] = -1;
        memcpy(out + r * width, prompt, sizeof(int32_t) * (size_t)n_prompt);
    }
    int64_t batch = so->batch > 0 ? so->batch : 1;
    for (int64_t r0 = 0; r0 < rows; r0 += batch)
        QS_TRY(sample_batch(model, be, n_prompt, limit, width, r0, rows - r0 < batch ? rows - r0 : batch, so, out,
                            lens, err));
    return QS_OK;
}
