/* export_gguf.h — one GGUF v3 file for llama-architecture models (what
 * llama.cpp loads), written in parallel by the ranks.
 *
 * The interface has the shape of the GPTQ exporter (export_gptq.h) so the run
 * calls both the same way:
 *
 *   every rank:  qs_gguf_export_init()      plan the whole file from the manifest,
 *                                           the tokenizer and the options alone
 *   rank 0:      qs_gguf_export_create()    create "<out>.partial" at its final size
 *   (barrier)
 *   block ranks: qs_gguf_export_block()     pwrite the block's tensors at their offsets
 *   first rank:  qs_gguf_export_embed()     token_embd.weight
 *   last rank:   qs_gguf_export_head()      output_norm.weight, output.weight (untied),
 *                                           rope_freqs.weight (llama3 RoPE scaling)
 *   (barrier: every rank done)
 *   rank 0:      qs_gguf_export_finish()    header + metadata + tensor infos, fsync,
 *                                           rename to <out>, fsync the directory
 *
 * Every export_* call fsyncs what it wrote before returning, so when all
 * ranks have returned (barrier) the data is durable even on a shared file
 * system. The layout is decided by init alone, and padding is zeros, so the
 * file is byte-identical for any number of ranks and any order of writes.
 *
 * Tensors (llama.cpp's names; dims fastest first, so a [out, in] weight has
 * ne = {in, out}): token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v,
 * attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight (+ .bias of each
 * linear that has one), output_norm, output (omitted when tied), rope_freqs
 * (llama3 RoPE scaling). When the vocabulary gets byte tokens appended for
 * llama.cpp (a sentencepiece-style tokenizer without a token for every byte;
 * see docs/gguf.md, "Vocabulary"), token_embd and an untied output get as
 * many extra rows, copies of the unknown token's row.
 * Q and K rows (and biases) are permuted from HF's rotate-half order to
 * llama.cpp's interleaved order: row h·hd + 2i + j takes HF row h·hd + j·hd/2 + i.
 *
 * Quantized linears carry the GPTQ integers over exactly:
 *   4-bit sym  → Q4_0: d = scale, q = code            (zero is 8; exact)
 *   8-bit sym  → Q8_0: d = scale, q = code − 128      (zero is 128; exact)
 *   4-bit asym → Q4_1: d = scale, m = fp16(−scale·zero), q = code
 *                (m is rounded to fp16: |error| ≤ 2^-11·|scale·zero| + 2^-25
 *                 plus f32 rounding; see docs/gguf.md)
 * Each 32-column block needs one (scale, zero) per row: group_size −1 or a
 * multiple of 32, and g_idx constant over every 32 original columns (true
 * without act-order, and with act-order + static groups). Anything else is
 * QS_ERR_UNSUPPORTED naming the tensor and why, or — with fallback_f16 — that
 * tensor is written F16 from the dequantized weights. Norms and biases are
 * F32; the embedding and output F32 (F16 with embed_f16).
 */
#ifndef QS_EXPORT_GGUF_H
#define QS_EXPORT_GGUF_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/quant_opts.h"
#include "pipeline/formats/gguf_format.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/model_config.h"
#include "workers/stage.h"

typedef struct qs_gguf_export qs_gguf_export;

typedef struct qs_gguf_export_opts {
    qs_quant_opts quant;      /* bits, group_size, sym, act_order, static_groups, scales_fp16 */
    bool fallback_f16;        /* --gguf-fallback f16: unrepresentable linears → F16 */
    bool embed_f16;           /* token_embd/output as F16 instead of F32 (norms stay F32) */
    const char *name;         /* general.name; NULL: the model directory's name */
    const char *tokenizer;    /* tokenizer.json; NULL: <model dir>/tokenizer.json. When that
                                 file does not exist the vocabulary is "no_vocab". */
} qs_gguf_export_opts;

/* Plans the file (every rank does the same; reads config, tokenizer.json,
 * tokenizer_config.json; no writes). out_path is the final file, e.g.
 * "out/model.gguf". Refuses non-llama models (opt, bloom, qwen2) and
 * unrepresentable quantization (unless fallback_f16) with QS_ERR_UNSUPPORTED. */
qs_status qs_gguf_export_init(qs_gguf_export **out, const char *out_path, const qs_manifest *m,
                              const qs_model_names *names, const qs_gguf_export_opts *o, qs_error *err);
void qs_gguf_export_free(qs_gguf_export *x);

/* Rank 0, before a barrier: creates (truncates) "<out_path>.partial" and sizes
 * it to the final file size. */
qs_status qs_gguf_export_create(qs_gguf_export *x, qs_error *err);

/* The tensors of one quantized block (its rank). */
qs_status qs_gguf_export_block(qs_gguf_export *x, const qs_block_outcome *o, qs_error *err);
/* token_embd.weight (first rank) and output_norm/output/rope_freqs (last rank). */
qs_status qs_gguf_export_embed(qs_gguf_export *x, qs_error *err);
qs_status qs_gguf_export_head(qs_gguf_export *x, qs_error *err);
/* Rank 0, after every rank's writes: header, fsync, rename, fsync dir. */
qs_status qs_gguf_export_finish(qs_gguf_export *x, qs_error *err);

/* ---- the plan, for reports and tests ---------------------------------------- */

const char *qs_gguf_export_path(const qs_gguf_export *x);         /* the final path */
const char *qs_gguf_export_partial_path(const qs_gguf_export *x); /* "<path>.partial" */
uint64_t qs_gguf_export_file_size(const qs_gguf_export *x);
/* The planned layout (tensor infos with types, dims and absolute offsets). */
const qs_gguf_layout *qs_gguf_export_layout(const qs_gguf_export *x);
/* Linears written F16 because their quantization has no exact GGUF type
 * (only with fallback_f16), and why the first one was. */
int qs_gguf_export_fallbacks(const qs_gguf_export *x);
const char *qs_gguf_export_fallback_reason(const qs_gguf_export *x);
/* NULL, or one line: what llama.cpp will tokenize differently from HF
 * `tokenizers` with the vocabulary written (the caller prints it once, as a
 * warning; see docs/gguf.md, "Vocabulary"). */
const char *qs_gguf_export_vocab_warning(const qs_gguf_export *x);

/* The Q/K row permutation: the HF (rotate-half) row that GGUF row r takes,
 * for a projection of `rows` rows in n_head heads of hd = rows / n_head:
 * GGUF row h·hd + 2i + j ← HF row h·hd + j·hd/2 + i. */
int64_t qs_gguf_permuted_row(int64_t r, int64_t rows, int n_head);

#endif
