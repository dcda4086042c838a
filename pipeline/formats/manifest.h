/* manifest.h — a model directory: config.json plus its safetensors files.
 *
 * Opens model.safetensors, or every shard named by model.safetensors.index.json
 * (checking that each tensor the index names exists in its shard), and maps
 * tensor names to (file, info). Files are mmapped, not read: a rank that asks
 * for its own blocks touches only their pages.
 */
#ifndef QS_MANIFEST_H
#define QS_MANIFEST_H

#include "pipeline/formats/model_config.h"
#include "pipeline/formats/safetensors.h"

typedef struct qs_manifest qs_manifest;

/* dir: an HF model directory. Loads config.json into the manifest too. */
qs_status qs_manifest_open(const char *dir, qs_manifest **out, qs_error *err);
void qs_manifest_close(qs_manifest *m);

const char *qs_manifest_dir(const qs_manifest *m);
const qs_model_config *qs_manifest_config(const qs_manifest *m);

size_t qs_manifest_count(const qs_manifest *m);
/* i-th tensor (sorted by name) and the file it is in. */
const qs_st_info *qs_manifest_at(const qs_manifest *m, size_t i, const qs_st_file **file);
/* NULL when absent. */
const qs_st_info *qs_manifest_find(const qs_manifest *m, const char *name, const qs_st_file **file);

/* Reads a tensor as f32 into a new owned tensor; a missing tensor is an error
 * naming the model dir and the tensor; with check_finite NaN/Inf are errors. */
qs_status qs_manifest_read_f32(const qs_manifest *m, const char *name, qs_tensor *out, bool check_finite,
                               qs_error *err);

/* Like qs_manifest_open, with the weights taken from `file` in dir: a
 * *.safetensors file (e.g. "model.f32.safetensors") or a *.index.json. With
 * file == NULL: model.safetensors.index.json, else model.safetensors, else the
 * directory's only *.safetensors file. */
qs_status qs_manifest_open_file(const char *dir, const char *file, qs_manifest **out, qs_error *err);

/* The distinct safetensors files, in the order they were opened. */
size_t qs_manifest_file_count(const qs_manifest *m);
const qs_st_file *qs_manifest_file(const qs_manifest *m, size_t i);

/* Tied weights saved once: a "__metadata__" entry {"removed name": "kept name"}
 * (what safetensors' save_model writes, e.g. model.embed_tokens.weight →
 * lm_head.weight) makes qs_manifest_find resolve the removed name too.
 * qs_manifest_count/at list stored tensors only. */

/* ---- model.safetensors.index.json ----------------------------------------- */

typedef struct qs_st_index {
    size_t count;
    char **names;      /* tensor names, sorted */
    size_t *shard;     /* names[i] lives in shards[shard[i]] */
    size_t n_shards;
    char **shards;     /* distinct file names, in order of first appearance */
} qs_st_index;

/* Parses an index (len bytes, need not be NUL-terminated): "weight_map" must
 * map every name to a relative file name inside the model directory. */
qs_status qs_st_index_parse(const char *json, size_t len, const char *origin, qs_st_index *out, qs_error *err);
void qs_st_index_free(qs_st_index *ix);

#endif
