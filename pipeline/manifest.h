/* manifest.h — a model directory: config.json plus its safetensors files.
 *
 * Opens model.safetensors, or every shard named by model.safetensors.index.json
 * (checking that each tensor the index names exists in its shard), and maps
 * tensor names to (file, info). Files are mmapped, not read: a rank that asks
 * for its own blocks touches only their pages.
 */
#ifndef QS_MANIFEST_H
#define QS_MANIFEST_H

#include "pipeline/model_config.h"
#include "pipeline/safetensors.h"

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

#endif
