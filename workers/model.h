/* model.h — the stages around the blocks (embedding, head) and a whole-model
 * forward for eval and generation.
 *
 * The embedding stage and the head stage are separate objects so that the
 * ranks owning the first and the last blocks can load only them:
 *   embedding: token embedding; opt adds learned positions embed_positions[t + 2]
 *              (t counts from 0 in an unpadded row); bloom applies
 *              word_embeddings_layernorm.
 *   head:      final norm (llama norm, opt decoder final_layer_norm when
 *              do_layer_norm_before, bloom ln_f), then the LM head (its own
 *              lm_head.weight, or the token embedding when tied).
 */
#ifndef QS_MODEL_H
#define QS_MODEL_H

#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/tensor.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/model_config.h"
#include "workers/block.h"

typedef struct qs_embed_stage {
    qs_model_config cfg;
    qs_tensor tok;            /* [vocab, hidden] */
    qs_tensor pos;            /* opt: [max_positions + 2, hidden]; data NULL otherwise */
    qs_tensor norm_w, norm_b; /* bloom word_embeddings_layernorm; data NULL otherwise */
} qs_embed_stage;

typedef struct qs_head_stage {
    qs_model_config cfg;
    qs_tensor norm_w, norm_b; /* final norm; data NULL when the model has none (post-LN opt) */
    qs_tensor lm_head;        /* [vocab, hidden] */
    uint16_t *lm_head_bf16;   /* its bf16 copy in bf16 compute (qs_head_stage_set_compute), else NULL */
} qs_head_stage;

/* The tensor names of a checkpoint: qs_model_names_init probing the manifest. */
qs_status qs_model_names_from_manifest(const qs_manifest *m, qs_model_names *names, qs_error *err);

qs_status qs_embed_stage_load(qs_embed_stage *e, const qs_manifest *m, const qs_model_names *names, qs_error *err);
void qs_embed_stage_free(qs_embed_stage *e);
/* ids [batch, seq] → out [batch, seq, hidden]. Ids outside the vocabulary and
 * (opt) sequences longer than the learned positions are QS_ERR_INPUT. */
qs_status qs_embed_stage_forward(const qs_embed_stage *e, const int32_t *ids, int64_t batch, int64_t seq, float *out,
                                 qs_error *err);

qs_status qs_head_stage_load(qs_head_stage *h, const qs_manifest *m, const qs_model_names *names, qs_error *err);
void qs_head_stage_free(qs_head_stage *h);
/* The LM head's GEMM in f32 or bf16 (a bf16 copy of lm_head is made). */
qs_status qs_head_stage_set_compute(qs_head_stage *h, qs_compute_dtype dt, qs_error *err);

/* x [rows, hidden] (not modified) → logits [rows, vocab]. */
qs_status qs_head_stage_forward(const qs_head_stage *h, const qs_backend_i *be, const float *x, int64_t rows,
                                float *logits, qs_error *err);

/* A whole model in memory (eval, generation, tests). */
typedef struct qs_model {
    qs_manifest *manifest;
    qs_model_config cfg;
    qs_model_names names;
    qs_embed_stage embed;
    qs_block *blocks; /* cfg.n_layers */
    qs_head_stage head;
} qs_model;

/* Opens an HF model directory (or a qshard GPTQ export: linears are
 * dequantized on load, see qs_linear_load) and loads every stage. */
qs_status qs_model_load(qs_model *model, const char *dir, qs_error *err);
/* The same with the weights from `file` in dir (see qs_manifest_open_file);
 * file NULL is qs_model_load. */
qs_status qs_model_load_file(qs_model *model, const char *dir, const char *file, qs_error *err);
void qs_model_free(qs_model *model);

/* Every block and the head compute in dt from now on. */
qs_status qs_model_set_compute(qs_model *model, qs_compute_dtype dt, qs_error *err);

/* The compute dtype for `option` ("auto", "f32" or "bf16"; NULL or "" is
 * auto). auto is bf16 when the backend runs bf16 GEMMs natively and the
 * checkpoint stores its weights as bf16/fp16 (the token embedding's dtype,
 * which a GPTQ export keeps), f32 otherwise. */
qs_status qs_compute_dtype_resolve(const char *option, const qs_manifest *m, const qs_model_names *names,
                                   const qs_backend_i *be, qs_compute_dtype *out, qs_error *err);

/* Copies every block into device backend be's memory (a no-op on the CPU):
 * what qs_model_forward on be needs. */
qs_status qs_model_to_device(qs_model *model, const qs_backend_i *be, qs_error *err);

/* ids [batch, seq] → logits [batch, seq, vocab]. On a device backend the
 * blocks run there (qs_model_to_device first) with the activations kept on
 * the device from the first block to the last; the embedding and the head
 * run on the CPU. */
qs_status qs_model_forward(const qs_model *model, const qs_backend_i *be, const int32_t *ids, int64_t batch,
                           int64_t seq, float *logits, qs_error *err);

#endif
