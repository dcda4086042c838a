/* export_gptq.h — the HF GPTQ checkpoint directory (what vLLM, transformers
 * and GPTQModel load), written in parallel by the ranks.
 *
 * Layout (decided from the model and the options alone, so it is the same
 * for any number of ranks and the files are byte-identical across P):
 *   model-00001-of-NNNNN.safetensors   embedding tensors            (first rank)
 *   one shard per block (more if a block exceeds --max-shard-size)  (the block's rank)
 *   a last shard with the remaining tensors: final norm, lm_head    (last rank)
 *   model.safetensors.index.json, config.json (+ quantization_config),
 *   quantize_config.json, tokenizer files                            (rank 0, LAST)
 * The index and configs are written only after every shard is complete, so a
 * directory without them is never mistaken for a finished export.
 *
 * Per quantized linear P (weight "P.weight" [out, in]):
 *   P.qweight I32 [in·bits/32, out], P.qzeros I32 [groups, out·bits/32],
 *   P.scales F16 [groups, out], P.g_idx I32 [in], and P.bias as it was.
 * Every other tensor is copied with its dtype and bytes unchanged.
 */
#ifndef QS_EXPORT_GPTQ_H
#define QS_EXPORT_GPTQ_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/quant_opts.h"
#include "pipeline/formats/manifest.h"
#include "pipeline/formats/model_config.h"
#include "workers/stage.h"

typedef struct qs_gptq_export qs_gptq_export;

typedef struct qs_gptq_export_opts {
    qs_quant_opts quant;
    bool true_sequential;
    bool v2;                    /* checkpoint_format gptq_v2 (zeros stored as is) */
    uint64_t max_shard_size;
} qs_gptq_export_opts;

/* Plans the export (every rank does the same, no I/O besides the manifest). */
qs_status qs_gptq_export_init(qs_gptq_export **out, const char *out_dir, const qs_manifest *m,
                              const qs_model_names *names, const qs_gptq_export_opts *o, qs_error *err);
void qs_gptq_export_free(qs_gptq_export *x);

int qs_gptq_export_shards(const qs_gptq_export *x);

/* The shard(s) of one quantized block. */
qs_status qs_gptq_export_block(qs_gptq_export *x, const qs_block_outcome *o, qs_error *err);
/* The embedding shard (first rank) and the head shard (last rank). */
qs_status qs_gptq_export_embed(qs_gptq_export *x, qs_error *err);
qs_status qs_gptq_export_head(qs_gptq_export *x, qs_error *err);
/* Index, config.json, quantize_config.json, tokenizer files: after all shards. */
qs_status qs_gptq_export_finish(qs_gptq_export *x, qs_error *err);

#endif
