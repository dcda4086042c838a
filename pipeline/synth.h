/* synth.h — deterministic synthetic HF checkpoints (llama, opt, bloom) with the
 * statistical structure that makes quantization interesting.
 *
 * Every element is a pure function of (seed, tensor name, element index), so
 * any tensor, or any chunk of one, can be generated on its own: the writer
 * streams each tensor in chunks of a few MB into the safetensors writer and a
 * multi-GB model needs only a few MB of memory. Same options → byte-identical
 * files. The structure (scales, outlier channels, tails) is described in
 * synth.c next to the code that makes it.
 */
#ifndef QS_SYNTH_H
#define QS_SYNTH_H

#include <stdint.h>

#include "pipeline/formats/model_config.h"

#define QS_SYNTH_MAX_OUTLIERS 16
/* Activation outlier channels are this many times the median channel. */
#define QS_SYNTH_OUTLIER_RATIO 20.0
/* Embedding rows share this many directions, which carry 3/4 of their variance. */
#define QS_SYNTH_EMBED_RANK 16

typedef struct qs_synth_opts {
    qs_model_config cfg;      /* arch, sizes, tying; cfg.torch_dtype is the storage dtype */
    uint64_t seed;
    uint64_t max_shard_bytes; /* shard when the tensor bytes exceed this; 0 = 2 GiB */
    int n_outliers;           /* outlier hidden channels; < 0 = automatic (hidden/128, 1..6) */
} qs_synth_opts;

/* What a tensor is, which decides how it is generated. */
typedef enum qs_synth_kind {
    QS_SYNTH_EMBED = 0,    /* token embedding [vocab, hidden] */
    QS_SYNTH_POS_EMBED,    /* opt learned positions [max_pos + 2, hidden] */
    QS_SYNTH_EMBED_NORM_W, /* bloom word_embeddings_layernorm weight */
    QS_SYNTH_BLOCK_NORM_W, /* a norm feeding linears: attention / MLP norm, untied final norm */
    QS_SYNTH_FINAL_NORM_W, /* final norm in front of a tied lm_head */
    QS_SYNTH_NORM_B,       /* LayerNorm bias */
    QS_SYNTH_LIN_READ,     /* linear reading the residual stream (q/k/v/qkv/gate/up/fc1, untied lm_head) */
    QS_SYNTH_LIN_WRITE,    /* linear writing the residual stream (o/dense, down/fc2) */
    QS_SYNTH_BIAS_MID,     /* bias of a reading linear */
    QS_SYNTH_BIAS_WRITE    /* bias of a writing linear (its rows are residual channels) */
} qs_synth_kind;

typedef struct qs_synth_tensor {
    char name[QS_NAME_MAX];
    qs_synth_kind kind;
    int ndim;
    int64_t shape[2];
    int shard;                /* index of the file it goes to */
} qs_synth_tensor;

typedef struct qs_synth_model {
    qs_synth_opts opts;
    qs_model_names names;
    qs_synth_tensor *tensors; /* forward order: embedding, blocks, final norm, lm_head */
    size_t count;
    int n_shards;
    uint64_t total_bytes;
    int outliers[QS_SYNTH_MAX_OUTLIERS]; /* sorted ascending */
    int n_outliers;
    unsigned char *is_outlier;           /* [hidden] */
    float *embed_factors;                /* [QS_SYNTH_EMBED_RANK][hidden]: shared embedding directions */
} qs_synth_model;

/* Validates the options (sizes, dtype) and lays out the tensors and shards. */
qs_status qs_synth_model_init(qs_synth_model *m, const qs_synth_opts *opts, qs_error *err);
void qs_synth_model_free(qs_synth_model *m);

const qs_synth_tensor *qs_synth_find(const qs_synth_model *m, const char *name);

/* Elements [start, start + n) of tensor t (row-major) as f32. */
void qs_synth_fill(const qs_synth_model *m, const qs_synth_tensor *t, int64_t start, int64_t n, float *dst);

/* Writes config.json, model.safetensors (or model-0000i-of-0000n.safetensors and
 * model.safetensors.index.json) into dir, creating it. */
qs_status qs_synth_write(const qs_synth_model *m, const char *dir, qs_error *err);

#endif
