/* llama2c.h — llama2.c legacy (version 0) checkpoints and their conversion to
 * an HF llama directory.
 *
 * Layout (all little-endian): 7 int32 (dim, hidden_dim, n_layers, n_heads,
 * n_kv_heads, vocab_size, seq_len) then float32 arrays token_embedding
 * [vocab][dim], rms_att [L][dim], wq [L][dim][dim], wk [L][kv_dim][dim],
 * wv [L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim], w1 [L][hidden][dim],
 * w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim], freq_cis_real
 * [seq_len][head_size/2], freq_cis_imag [seq_len][head_size/2], and — only when
 * vocab_size is negative — wcls [vocab][dim]. A positive vocab_size means the
 * classifier is the token embedding.
 */
#ifndef QS_LLAMA2C_H
#define QS_LLAMA2C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pipeline/formats/model_config.h"

typedef struct qs_llama2c {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len;
    int head_size, kv_dim;
    bool shared; /* classifier == token embedding (vocab_size > 0 in the header) */
    /* pointers into the read-only mapping; per-layer arrays are contiguous over layers */
    const float *tok_emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final;
    const float *freq_real, *freq_imag, *wcls;
    void *map;
    size_t map_size;
    char path[4096];
} qs_llama2c;

/* Maps and validates a checkpoint: header values, shape consistency and the
 * exact file size. Errors name the file and the field. */
qs_status qs_llama2c_open(const char *path, qs_llama2c *m, qs_error *err);
void qs_llama2c_close(qs_llama2c *m);

/* The HF llama config of a checkpoint (rms_norm_eps 1e-5, rope_theta 10000,
 * max_position_embeddings = seq_len, tied when shared, float32). */
void qs_llama2c_config(const qs_llama2c *m, qs_model_config *cfg);

/* Reorders the rows of a q or k projection [n_heads * head_size, cols] from
 * llama2.c's interleaved RoPE pairs to HF's rotate-half pairs:
 *   dst row h·hs + p·hs/2 + j  =  src row h·hs + 2j + p   (j < hs/2, p ∈ {0,1}).
 * The proof that the converted model computes the same function is in llama2c.c. */
void qs_llama2c_permute_rope(const float *src, float *dst, int n_heads, int head_size, int64_t cols);

/* Writes config.json and model.safetensors (F32) into dir (created). The
 * legacy RoPE table is dropped; wq and wk are permuted as above. */
qs_status qs_llama2c_to_hf(const qs_llama2c *m, const char *dir, qs_error *err);

#endif
