/* side_files.h — the tokenizer and generation files copied from the model
 * dir into a GPTQ export (tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json, generation_config.json, vocab.json, merges.txt,
 * tokenizer.model).
 *
 * Symlinks are followed — a Hugging Face cache snapshot is made of symlinks
 * into ../../blobs — so such a file may live anywhere. What makes the copy
 * safe is its content, checked before anything is written: a regular file of
 * at most 64 MiB that is what its name claims. The JSON files must parse as
 * one JSON object and nothing after it, and the export gets that object
 * re-serialized (never the bytes as found); merges.txt must be UTF-8 text of
 * "a b" merge lines; tokenizer.model must be a well-formed protobuf message
 * (sentencepiece's ModelProto, with pieces). So a symlink to a private key or
 * /etc/shadow in a hostile model dir is refused (exit 2 naming the file), not
 * published with the export. A JSON file of secrets is valid JSON and would
 * be copied: the model dir is trusted to hold its own tokenizer files.
 */
#ifndef QS_SIDE_FILES_H
#define QS_SIDE_FILES_H

#include "kernels/status.h"

#define QS_SIDE_FILE_MAX (64u << 20)

/* The names copied, NULL-terminated. */
extern const char *const qs_side_file_names[];

/* Checks src (named by its base name, one of qs_side_file_names) and writes
 * dst durably. QS_ERR_INPUT naming src when it is not what it claims. */
qs_status qs_side_file_copy(const char *src, const char *dst, qs_error *err);

/* Checks every one of them that model_dir holds, writing nothing (a run
 * refuses a bad one at set-up, not after its last block). */
qs_status qs_side_files_check_dir(const char *model_dir, qs_error *err);

/* The check alone, on bytes in memory (the tests and the fuzz target use it):
 * *out (malloc'd, *out_len bytes) is what would be written. */
qs_status qs_side_file_check(const char *name, const char *origin, const char *data, size_t len, char **out,
                             size_t *out_len, qs_error *err);

#endif
