/* model_config.h — HF config.json → an architecture description, and the
 * tensor names of each architecture.
 *
 * Supported: model_type "llama" (also "mistral", "qwen2": GQA, rotate-half RoPE,
 * rope_theta, llama3 rope_scaling, optional q/k/v bias, tied embeddings),
 * "opt" (LayerNorm, learned positions with offset 2, ReLU, biases), "bloom"
 * (ALiBi, fused query_key_value, word_embeddings_layernorm, GELU-tanh).
 */
#ifndef QS_MODEL_CONFIG_H
#define QS_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/tensor.h"

typedef enum qs_arch { QS_ARCH_LLAMA = 0, QS_ARCH_OPT, QS_ARCH_BLOOM } qs_arch;
typedef enum qs_norm_kind { QS_NORM_RMS = 0, QS_NORM_LAYER } qs_norm_kind;
typedef enum qs_act_kind { QS_ACT_SILU = 0, QS_ACT_RELU, QS_ACT_GELU_TANH } qs_act_kind;
typedef enum qs_pos_kind { QS_POS_ROPE = 0, QS_POS_LEARNED, QS_POS_ALIBI } qs_pos_kind;
typedef enum qs_rope_scaling_kind { QS_ROPE_SCALING_NONE = 0, QS_ROPE_SCALING_LINEAR, QS_ROPE_SCALING_LLAMA3 } qs_rope_scaling_kind;

typedef struct qs_model_config {
    qs_arch arch;
    char model_type[32];      /* as written in config.json ("llama", "qwen2", ...) */
    int n_layers;
    int hidden;
    int n_heads;
    int n_kv_heads;           /* == n_heads without GQA */
    int head_dim;             /* hidden / n_heads unless config says otherwise */
    int ffn;                  /* intermediate / ffn_dim; bloom: 4 * hidden */
    int vocab;
    int max_positions;        /* max_position_embeddings (0 for bloom: ALiBi) */
    double norm_eps;
    qs_norm_kind norm;
    qs_act_kind act;
    qs_pos_kind pos;
    /* RoPE (llama) */
    double rope_theta;
    qs_rope_scaling_kind rope_scaling;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_positions;
    /* biases */
    bool qkv_bias;            /* q/k/v (llama: attention_bias or qwen2) */
    bool o_bias;
    bool mlp_bias;
    bool tie_embeddings;      /* lm_head shares the token embedding */
    /* opt */
    bool do_layer_norm_before;
    int pos_offset;           /* 2 for opt's learned positions */
    /* bloom */
    bool embed_layernorm;     /* word_embeddings_layernorm after the embedding */
    int bos_id, eos_id;       /* -1 when absent */
    qs_dtype torch_dtype;     /* declared dtype (F32 when absent) */
} qs_model_config;

/* path: a config.json file or a directory holding one. Unknown model_type,
 * missing fields, inconsistent sizes (hidden % heads, heads % kv_heads) are
 * QS_ERR_INPUT/QS_ERR_UNSUPPORTED with the file and field named. */
qs_status qs_model_config_load(const char *path, qs_model_config *cfg, qs_error *err);
/* origin: a name for error messages (the file path). */
qs_status qs_model_config_parse(const char *json, const char *origin, qs_model_config *cfg, qs_error *err);

const char *qs_arch_name(qs_arch a);
/* "llama" | "opt" | "bloom" → arch; false for anything else. */
bool qs_arch_parse(const char *name, qs_arch *out);

/* Fills cfg with the HF defaults of arch (what config.json leaves out):
 * sizes 0, eps, activation, positions, biases, tying, dtype F32. */
void qs_model_config_defaults(qs_model_config *cfg, qs_arch arch);

/* Writes cfg as an HF config.json that transformers accepts for its arch
 * (architectures, model_type and every field qs_model_config_parse reads);
 * *json is malloc'd, the caller frees it. Parsing the result gives back cfg. */
qs_status qs_model_config_to_json(const qs_model_config *cfg, char **json, qs_error *err);

/* ---- tensor names ----------------------------------------------------------
 *
 * Every name is "<prefix><fixed part>". The prefix of a checkpoint is decided
 * by what is in it (BLOOM is saved with "transformer." or without; OPT with
 * "model.decoder." or "decoder."), so names come from a qs_model_names that
 * qs_model_names_init() fills by probing a name-existence callback.
 */

typedef enum qs_linear_role {
    QS_LIN_Q = 0, QS_LIN_K, QS_LIN_V,
    QS_LIN_QKV,               /* bloom's fused query_key_value, rows [heads, 3, head_dim] */
    QS_LIN_O,
    QS_LIN_GATE, QS_LIN_UP, QS_LIN_DOWN,   /* llama SwiGLU */
    QS_LIN_FC1, QS_LIN_FC2,               /* opt fc1/fc2, bloom dense_h_to_4h/dense_4h_to_h */
    QS_LIN_ROLE_COUNT
} qs_linear_role;

#define QS_NAME_MAX 256
#define QS_MAX_BLOCK_LINEARS 8

typedef struct qs_block_linear {
    qs_linear_role role;
    const char *short_name;   /* "self_attn.q_proj", "mlp.down_proj", "self_attention.query_key_value", ... */
    char weight[QS_NAME_MAX]; /* full tensor name of the weight [out, in] */
    char bias[QS_NAME_MAX];   /* full name of the bias, "" when none */
    int64_t out, in;
    /* true-sequential stage inside the block: 0 = q/k/v (or qkv), 1 = o,
     * 2 = gate/up/fc1, 3 = down/fc2. Linears of one stage see the same input. */
    int stage;
} qs_block_linear;

typedef struct qs_model_names {
    char prefix[64];          /* "model.", "transformer.", "", "model.decoder.", "decoder." */
    char embed[QS_NAME_MAX];  /* token embedding [vocab, hidden] */
    char pos_embed[QS_NAME_MAX];        /* opt learned positions, "" otherwise */
    char embed_norm_w[QS_NAME_MAX], embed_norm_b[QS_NAME_MAX]; /* bloom word_embeddings_layernorm */
    char final_norm_w[QS_NAME_MAX], final_norm_b[QS_NAME_MAX]; /* b "" for RMSNorm */
    char lm_head[QS_NAME_MAX];          /* == embed when tied and no lm_head tensor exists */
} qs_model_names;

typedef bool (*qs_name_exists_fn)(const char *name, void *ctx);

/* With exists == NULL the canonical HF names are produced (what transformers
 * saves: "model." / "model.decoder." / "transformer.", lm_head == embed when
 * tied); that is the layout `qshard synth` writes. */

qs_status qs_model_names_init(const qs_model_config *cfg, qs_name_exists_fn exists, void *ctx,
                              qs_model_names *names, qs_error *err);

/* "model.layers.12." — what every tensor name of block `layer` starts with. */
#define QS_BLOCK_PREFIX_MAX 128 /* prefix (< 64) + "layers." + a number */
void qs_block_prefix(const qs_model_config *cfg, const qs_model_names *names, int layer,
                     char out[QS_BLOCK_PREFIX_MAX]);

/* The quantizable linears of block `layer`, in forward order; returns the count. */
int qs_block_linears(const qs_model_config *cfg, const qs_model_names *names, int layer,
                     qs_block_linear out[QS_MAX_BLOCK_LINEARS]);

/* Names of a block's norm parameters (bias "" for RMSNorm). */
void qs_block_norm_names(const qs_model_config *cfg, const qs_model_names *names, int layer,
                         char attn_norm_w[QS_NAME_MAX], char attn_norm_b[QS_NAME_MAX],
                         char mlp_norm_w[QS_NAME_MAX], char mlp_norm_b[QS_NAME_MAX]);

/* Parameters of one block (linears + biases + norms) and bytes at `dt`. */
int64_t qs_block_param_count(const qs_model_config *cfg);

#endif
