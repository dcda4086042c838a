/* tokenizer.h — Hugging Face `tokenizers` BPE (tokenizer.json) in C.
 *
 * Gives exactly the ids HF `tokenizers` gives for the BPE tokenizers in use:
 * the sentencepiece style (normalizer Prepend/Replace "▁", byte_fallback, as in
 * TinyStories/Llama-2) and the byte-level style (GPT-2 / BLOOM / Llama-3:
 * ByteLevel pre-tokenizer with its regex, Split with a regex, via PCRE2).
 *
 * Pipeline, as in HF: added tokens matched in the raw text (normalized=false
 * ones), the normalizer on the pieces between them, added tokens matched in
 * the normalized pieces (normalized=true ones, against their normalized
 * form), the pre-tokenizer, the BPE model per pre-tokenized word, and (when
 * asked) the post-processor's single template (BOS/EOS).
 *
 * Supported (anything else is refused at load with the file and json path):
 *   model:          BPE (vocab, merges as "a b" or ["a","b"], unk_token,
 *                   fuse_unk, byte_fallback, ignore_merges; dropout null/0)
 *   normalizer:     Sequence, Prepend, Replace (String or Regex), Strip,
 *                   NFC (only text that NFC leaves unchanged; see docs)
 *   pre_tokenizer:  Sequence, ByteLevel, Split, Metaspace, Digits,
 *                   Whitespace, WhitespaceSplit
 *   post_processor: TemplateProcessing, ByteLevel, BertProcessing,
 *                   RobertaProcessing, Sequence
 *   decoder:        Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip,
 *                   Metaspace
 * A loaded tokenizer is immutable; encode/decode may run from many threads.
 */
#ifndef QS_TOKENIZER_H
#define QS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/status.h"

typedef struct qs_tokenizer qs_tokenizer;

/* A growable id vector (encode appends to it). Zero-initialise, then free. */
typedef struct qs_token_ids {
    int32_t *ids;
    size_t n, cap;
} qs_token_ids;

void qs_token_ids_free(qs_token_ids *v);

typedef struct qs_encode_options {
    /* Add what the post-processor adds (HF add_special_tokens=True), e.g. BOS. */
    bool add_special_tokens;
    /* Do not put a prefix space / "▁" at the very start of the text (normalizer
     * Prepend, ByteLevel add_prefix_space, Metaspace prepend). Pieces after an
     * added token inside the text are treated as HF does. */
    bool no_prefix_space;
} qs_encode_options;

/* Loads tokenizer.json. Errors name the file and the json path of the problem. */
qs_status qs_tokenizer_load(const char *path, qs_tokenizer **out, qs_error *err);

/* Same from a JSON text in memory; `name` is used in error messages. */
qs_status qs_tokenizer_parse(const char *json, size_t len, const char *name, qs_tokenizer **out,
                             qs_error *err);

void qs_tokenizer_free(qs_tokenizer *tok);

/* Encodes UTF-8 text (len bytes; invalid UTF-8 is an input error) and appends
 * the ids to out. opts may be NULL (= HF encode(text, add_special_tokens=False)). */
qs_status qs_tokenizer_encode(const qs_tokenizer *tok, const char *text, size_t len,
                              const qs_encode_options *opts, qs_token_ids *out, qs_error *err);

/* Turns ids back into text with the tokenizer's decoder (HF decode). Ids that
 * are not in the vocabulary are skipped, as HF does. *out is malloc'd and
 * NUL-terminated; *out_len (may be NULL) gets its length. */
qs_status qs_tokenizer_decode(const qs_tokenizer *tok, const int32_t *ids, size_t n,
                              bool skip_special_tokens, char **out, size_t *out_len, qs_error *err);

/* Largest id + 1 over the vocabulary and the added tokens. */
int32_t qs_tokenizer_vocab_size(const qs_tokenizer *tok);

/* -1 when the token is unknown / the id has no token. */
int32_t qs_tokenizer_token_to_id(const qs_tokenizer *tok, const char *token);
const char *qs_tokenizer_id_to_token(const qs_tokenizer *tok, int32_t id);

/* The BOS id: the first special token of the post-processor's single
 * template (or BERT/RoBERTa cls), else the first added special token named
 * <s>, <|begin_of_text|>, <|startoftext|>, <bos>, <BOS>, [CLS] or
 * <|endoftext|> (GPT-2 uses it as BOS); -1 when none is known. */
int32_t qs_tokenizer_bos_id(const qs_tokenizer *tok);

/* The EOS id: the last special token after the sequence in the single
 * template, else an added special token named </s>, <|end_of_text|>,
 * <|endoftext|>, <eos>, <EOS> or [SEP]; -1 if none. */
int32_t qs_tokenizer_eos_id(const qs_tokenizer *tok);

/* True when id is an added token marked special. */
bool qs_tokenizer_is_special(const qs_tokenizer *tok, int32_t id);

#endif
