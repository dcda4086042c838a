/* gguf_vocab.h — private to pipeline/export/: the vocabulary of the GGUF
 * export (gguf_vocab.c), read from tokenizer.json and written as the
 * tokenizer.ggml.* metadata keys. export_gguf.c loads it while it plans the
 * file and adds its keys after the general.* and llama.* ones. */
#ifndef QS_GGUF_VOCAB_H
#define QS_GGUF_VOCAB_H

#include <stdint.h>

#include "kernels/status.h"
#include "pipeline/formats/gguf_format.h"

typedef struct qs_gguf_vocab qs_gguf_vocab;

/* Reads tokenizer.json at tok_path (+ tokenizer_config.json and config.json in
 * model_dir when they exist) into the vocabulary of n_vocab tokens (the
 * embedding's rows; missing ids become "[PADn]"), plus, for a sentencepiece-
 * style vocabulary without a token for every byte, the "<0xXX>" byte tokens
 * llama.cpp needs, appended after them (qs_gguf_vocab_padding). Without tokenizer.json the
 * vocabulary is "no_vocab". A tokenizer llama.cpp has no vocabulary type for is
 * QS_ERR_UNSUPPORTED; ids beyond n_vocab or malformed files QS_ERR_INPUT. */
qs_status qs_gguf_vocab_load(qs_gguf_vocab **out, const char *tok_path, const char *model_dir, int64_t n_vocab,
                             qs_error *err);
/* Adds tokenizer.ggml.* (and tokenizer.chat_template) to l, in a fixed order. */
void qs_gguf_vocab_add_metadata(qs_gguf_layout *l, const qs_gguf_vocab *v);
/* NULL, or one line saying what llama.cpp will tokenize differently from HF
 * `tokenizers` with this vocabulary (docs/gguf.md, "Vocabulary"). */
const char *qs_gguf_vocab_warning(const qs_gguf_vocab *v);
/* How many byte tokens follow the embedding's rows (0 when none): the
 * embedding (and an untied output) need as many more rows, each a copy of row
 * *unk_id (HF's unknown token), or zeros when *unk_id is -1. */
int64_t qs_gguf_vocab_padding(const qs_gguf_vocab *v, int64_t *unk_id);
void qs_gguf_vocab_free(qs_gguf_vocab *v);

#endif
