/* tokenizer_internal.h — what the parts of the tokenizer share, private to
 * pipeline/formats/tokenizer/: the loaded tokenizer (struct qs_tokenizer and
 * the normalizer, pre-tokenizer and decoder steps read from tokenizer.json),
 * the per-call encode state, a few small inline helpers, and the functions
 * each part gives the others, grouped by the file that defines them. The
 * public tokenizer.h is implemented by tok_load.c, tok_encode.c and
 * tok_decode.c.
 *
 * Strings flow through encode as "pieces": (offset, length) into one growing
 * arena, an id when the piece is an added token, and an `origin` flag (the
 * piece starts at byte 0 of the input; Metaspace "first" and no_prefix_space
 * need it). Normalizers and the byte-level mapping append new bytes to the
 * arena; splits only make more (offset, length) pairs.
 */
#ifndef QS_TOKENIZER_INTERNAL_H
#define QS_TOKENIZER_INTERNAL_H

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/formats/strbuf.h"
#include "pipeline/formats/tokenizer/tok_map.h"
#include "pipeline/formats/tokenizer/tokenizer.h"
#include "pipeline/formats/tokenizer/utf8.h"

/* ---- the loaded tokenizer ------------------------------------------------ */

typedef enum norm_kind { NORM_PREPEND, NORM_REPLACE, NORM_STRIP, NORM_NFC } norm_kind;

typedef struct norm_op {
    norm_kind kind;
    char *s; /* Prepend text / Replace literal pattern */
    size_t slen;
    char *content; /* Replace content */
    size_t clen;
    pcre2_code *re; /* Replace regex pattern */
    bool left, right;
    char *path; /* json path, for errors at encode time */
} norm_op;

typedef enum split_behavior {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_PREV,
    SPLIT_MERGED_NEXT,
    SPLIT_CONTIGUOUS
} split_behavior;

typedef enum pre_kind { PRE_BYTELEVEL, PRE_SPLIT, PRE_METASPACE, PRE_DIGITS, PRE_WHITESPACE, PRE_WSSPLIT } pre_kind;

typedef enum prepend_scheme { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;

typedef struct pre_op {
    pre_kind kind;
    bool add_prefix_space, use_regex;
    pcre2_code *re; /* Split pattern; ByteLevel uses the shared GPT-2 regex */
    char *lit;      /* Split String pattern (literal) */
    size_t lit_len;
    split_behavior behavior;
    bool invert;
    char rep[8]; /* Metaspace replacement (one char, UTF-8) */
    size_t rep_len;
    prepend_scheme scheme;
    bool split;
    bool individual_digits;
} pre_op;

typedef enum dec_kind { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE } dec_kind;

typedef struct dec_op {
    dec_kind kind;
    char *lit; /* Replace String pattern */
    size_t lit_len;
    pcre2_code *re;
    char *content;
    size_t clen;
    uint32_t strip_char;
    long start, stop;
    char rep[8];
    size_t rep_len;
    prepend_scheme scheme;
} dec_op;

typedef struct added_tok {
    char *content;
    size_t len;
    int32_t id;
    bool special, normalized, lstrip, rstrip, single_word;
} added_tok;

/* Patterns for leftmost-longest matching, bucketed by first byte, longest first. */
typedef struct match_pat {
    const char *pat;
    size_t len;
    int tok;   /* index into qs_tokenizer.added */
    int order; /* registration order in HF: special tokens first */
} match_pat;

typedef struct match_set {
    match_pat *pats;
    size_t n;
    size_t bucket[257];
} match_set;

struct qs_tokenizer {
    char *name;
    /* model */
    qs_strmap vocab;
    char **vocab_r; /* id → token (owned strings), NULL where no token */
    uint32_t *vocab_r_len;
    int32_t vocab_r_size;
    char bl_utf8[256][2]; /* ByteLevel: each byte's character, UTF-8 (1 or 2 bytes) */
    uint8_t bl_len[256];
    qs_strmap bigrams; /* every pair of adjacent characters inside a vocab token */
    char **extra;      /* further tokens that share an id (owned) */
    size_t n_extra;
    qs_pairmap merges;
    char *unk_token;
    bool fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256];
    /* added tokens */
    added_tok *added;
    size_t n_added;
    qs_strmap added_map;  /* content → id */
    int32_t *added_of_id; /* id → index into added, -1 */
    char **norm_contents; /* normalized form of each added token (or NULL) */
    match_set raw_set, norm_set;
    /* pipeline */
    norm_op *norms;
    size_t n_norms;
    pre_op *pres;
    size_t n_pres;
    pcre2_code *gpt2_re, *word_re, *digit_re, *ws_re, *space_re;
    dec_op *decs;
    size_t n_decs;
    bool has_decoder;
    int32_t *post_pre, *post_suf;
    size_t n_post_pre, n_post_suf;
    char *post_unsupported; /* message, when the post-processor cannot run */
    int32_t size, bos, eos;
};

/* ---- per-call state -------------------------------------------------------- */

/* Per-call matching state (keeps encode thread-safe). */
typedef struct re_state {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *js;
} re_state;

typedef struct piece {
    size_t off, len; /* into enc.arena */
    int32_t id;      /* >= 0: an added token, already an id */
    bool origin;     /* starts at byte 0 of the input */
} piece;

typedef struct pvec {
    piece *p;
    size_t n, cap;
} pvec;

typedef struct span span; /* a match or a split (tok_pretokenize.c) */
typedef struct sym sym;   /* a symbol of a word being merged (tok_bpe.c) */
typedef struct hent hent; /* a heap entry of the merge loop (tok_bpe.c) */

/* The state of one encode call. */
typedef struct enc {
    const qs_tokenizer *t;
    qs_error *err;
    bool no_prefix;
    re_state rs;
    qs_strbuf arena, nb, tmp;
    pvec cur, nxt;
    span *sp;
    size_t n_sp, cap_sp;
    sym *sy;
    size_t cap_sy;
    hent *heap;
    size_t n_heap, cap_heap;
    /* word cache: piece text → run of ids in cache_ids (words repeat a lot) */
    qs_strmap cache;
    qs_token_ids cache_ids;
    uint32_t *cache_run; /* pairs (offset, count) */
    size_t n_run, cap_run;
} enc;

/* ---- small helpers ----------------------------------------------------------- */

/* Token ids are bounded by the vocabulary actually present: below twice the
 * number of tokens the file defines plus 1024 (HF vocabularies are dense;
 * the slack allows gaps). Tables indexed by id are sized by the largest id,
 * so memory stays proportional to the file, not to a number written in it. */
static inline long qs_tok_id_limit(size_t tokens_present)
{
    size_t lim = 2 * tokens_present + 1024;
    return lim > (size_t)INT32_MAX - 1 ? INT32_MAX - 1 : (long)lim;
}

static inline qs_status nomem(const qs_tokenizer *t, qs_error *err)
{
    return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", t->name);
}

static inline char *mem_dup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static inline bool ids_push(qs_token_ids *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        int32_t *p = realloc(v->ids, cap * sizeof *p);
        if (!p) return false;
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return true;
}

static inline bool pvec_push(pvec *v, piece p)
{
    if (!p.len && p.id < 0) return true; /* HF drops empty pieces */
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        piece *q = realloc(v->p, cap * sizeof *q);
        if (!q) return false;
        v->p = q;
        v->cap = cap;
    }
    v->p[v->n++] = p;
    return true;
}

/* Appends bytes to the arena and returns their offset (SIZE_MAX on OOM). */
static inline size_t arena_add(enc *e, const char *s, size_t n)
{
    size_t off = e->arena.len;
    qs_strbuf_put(&e->arena, s, n);
    return e->arena.oom ? SIZE_MAX : off;
}

/* ---- tok_regex.c: PCRE2 with UTF + UCP --------------------------------------- */

/* Compiles pat (len bytes, or PCRE2_ZERO_TERMINATED); NULL with the reason in
 * why on failure. */
pcre2_code *qs_tok_re_compile(const char *pat, size_t len, char *why, size_t why_cap);
bool qs_tok_re_state_init(re_state *st);
void qs_tok_re_state_free(re_state *st);
/* Next non-empty match at or after `from`: 1 found, 0 none, -1 error. */
int qs_tok_re_next(const pcre2_code *re, re_state *st, const char *s, size_t n, size_t from, size_t *ms, size_t *me);
/* Appends s with every occurrence of the literal/regex replaced by content to
 * out: 0, or -1 when the regex match fails, -2 when out of memory. */
int qs_tok_replace_all(const char *lit, size_t lit_len, const pcre2_code *re, re_state *st, const char *s, size_t n,
                       const char *content, size_t clen, qs_strbuf *out);

/* ---- tok_json.c: values of tokenizer.json, errors naming the json path -------- */

/* Sets err to "<file>: <path>: <message>" and returns code. */
qs_status qs_tok_jfail(const qs_tokenizer *t, qs_error *err, qs_status code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
const cJSON *qs_tok_jget(const cJSON *o, const char *key);
/* Missing or null. */
bool qs_tok_jnull(const cJSON *v);
/* Optional bool; missing/null gives def. */
qs_status qs_tok_jbool(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, bool def, bool *out,
                       qs_error *err);
/* Optional string (NULL when missing/null). */
qs_status qs_tok_jstr(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, const char **out,
                      qs_error *err);
/* An integer in [lo, hi]. */
qs_status qs_tok_jint(const qs_tokenizer *t, const cJSON *v, const char *path, long lo, long hi, long *out,
                      qs_error *err);
/* {"String": s} or {"Regex": r} → a literal or a compiled regex. */
qs_status qs_tok_jpattern(const qs_tokenizer *t, const cJSON *o, const char *path, char **lit, size_t *lit_len,
                          pcre2_code **re, qs_error *err);
/* A one-character string (Metaspace replacement, Strip content). */
qs_status qs_tok_jchar(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, const char *def,
                       char out[8], size_t *out_len, qs_error *err);
/* Metaspace's prepend_scheme (or the legacy add_prefix_space). */
qs_status qs_tok_jprepend_scheme(const qs_tokenizer *t, const cJSON *o, const char *path, prepend_scheme *out,
                                 qs_error *err);

/* ---- tok_normalize.c ----------------------------------------------------------- */

/* Appends the normalizer n (a Sequence is flattened) to t->norms. */
qs_status qs_tok_load_normalizer(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err);
/* Normalizes s[0..n) into out (replacing its contents); tmp is scratch.
 * skip_prepend leaves out the Prepend normalizer (no_prefix_space). */
qs_status qs_tok_normalize(const qs_tokenizer *t, re_state *st, const char *s, size_t n, bool skip_prepend,
                           qs_strbuf *out, qs_strbuf *tmp, qs_error *err);

/* ---- tok_added.c ---------------------------------------------------------------- */

/* Reads "added_tokens" (normalizing the normalized ones) and builds the two
 * match sets. Needs the model and the normalizer loaded. */
qs_status qs_tok_load_added_tokens(qs_tokenizer *t, const cJSON *list, re_state *st, qs_error *err);
/* The id of the first of names that is an added special token, or -1. */
int32_t qs_tok_find_special(const qs_tokenizer *t, const char *const *names);
/* Splits piece p on the added tokens of `set` (HF AddedVocabulary::find_matches:
 * leftmost-longest, then single_word / lstrip / rstrip). */
qs_status qs_tok_split_added(enc *e, const match_set *set, piece p);

/* ---- tok_pretokenize.c ---------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 to U+0100.. in byte order. */
void qs_tok_bytelevel_table(uint32_t b2c[256]);
/* Compiles the built-in regexes (ByteLevel's GPT-2 pattern, Digits,
 * Whitespace, WhitespaceSplit, \w for single_word) and fills t->bl_utf8. */
qs_status qs_tok_compile_builtins(qs_tokenizer *t, qs_error *err);
/* Appends the pre-tokenizer n (a Sequence is flattened) to t->pres. */
qs_status qs_tok_load_pretokenizer(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err);
/* Runs one pre-tokenizer on piece p, appending the pieces it makes to e->nxt. */
qs_status qs_tok_pretokenize(enc *e, const pre_op *op, piece p);

/* ---- tok_bpe.c ------------------------------------------------------------------- */

/* Reads "model" (BPE only): vocab, merges and options. */
qs_status qs_tok_load_model(qs_tokenizer *t, const cJSON *m, qs_error *err);
/* Appends the ids of piece p: its id when it is an added token, else BPE of its text. */
qs_status qs_tok_bpe_encode(enc *e, piece p, qs_token_ids *out);

/* ---- tok_postprocess.c ----------------------------------------------------------- */

/* Reads the post-processor into t->post_pre / t->post_suf, or notes in
 * t->post_unsupported why it cannot run. */
qs_status qs_tok_load_post_processor(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err);
/* Puts the post-processor's ids around out->ids[base..] (add_special_tokens). */
qs_status qs_tok_post_process(const qs_tokenizer *t, qs_token_ids *out, size_t base, qs_error *err);

/* ---- tok_decode.c ---------------------------------------------------------------- */

/* Appends the decoder n (a Sequence is flattened) to t->decs. */
qs_status qs_tok_load_decoder(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err);

#endif
