/* generate.c — greedy decoding (see generate.h). */
#include "pipeline/generate.h"

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
