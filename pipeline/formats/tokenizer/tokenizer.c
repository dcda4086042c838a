/* tokenizer.c — HF `tokenizers` BPE for tokenizer.json, bit-exact with HF.
 *
 * Sections: buffers and UTF-8 · hash maps · regex (PCRE2) · JSON loading
 * (model, added tokens, normalizer, pre-tokenizer, post-processor, decoder)
 * · encode (added-token split → normalize → pre-tokenize → BPE) · decode.
 *
 * Strings flow through encode as "pieces": (offset, length) into one growing
 * arena, an id when the piece is an added token, and an `origin` flag (the
 * piece starts at byte 0 of the input; Metaspace "first" and no_prefix_space
 * need it). Normalizers and the byte-level mapping append new bytes to the
 * arena; splits only make more (offset, length) pairs.
 */
#define _GNU_SOURCE /* memmem */
#include "pipeline/formats/tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ======================================================================
 * Buffers and UTF-8
 * ==================================================================== */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static bool sbuf_reserve(sbuf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static bool sbuf_add(sbuf *b, const void *s, size_t n)
{
    if (!sbuf_reserve(b, n)) return false;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

static void sbuf_free(sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static bool ids_push(qs_token_ids *v, int32_t id)
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

void qs_token_ids_free(qs_token_ids *v)
{
    if (!v) return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

static char *mem_dup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid; on
 * invalid input *sub gets the length of the maximal subpart to replace with
 * one U+FFFD (the Unicode "substitution of maximal subparts" practice, which
 * Rust's from_utf8_lossy follows). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *sub)
{
    unsigned char b = s[0];
    if (b < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b == 0xE0) need = 3, lo = 0xA0;
    else if (b == 0xED) need = 3, hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF) need = 3;
    else if (b == 0xF0) need = 4, lo = 0x90;
    else if (b == 0xF4) need = 4, hi = 0x8F;
    else if (b >= 0xF1 && b <= 0xF3) need = 4;
    else {
        if (sub) *sub = 1;
        return 0;
    }
    for (size_t k = 1; k < need; k++) {
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (k >= n || s[k] < lo_k || s[k] > hi_k) {
            if (sub) *sub = k;
            return 0;
        }
    }
    return need;
}

/* Byte offset of the first invalid UTF-8 sequence, or n when all is valid. */
static size_t utf8_check(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_seq((const unsigned char *)s + i, n - i, NULL);
        if (!l) return i;
        i += l;
    }
    return n;
}

/* Decodes one code point from valid UTF-8; *len gets its byte length. */
static uint32_t utf8_get(const char *s, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) {
        *len = 1;
        return u[0];
    }
    if (u[0] < 0xE0) {
        *len = 2;
        return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    }
    if (u[0] < 0xF0) {
        *len = 3;
        return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
           ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
}

static size_t utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Unicode White_Space (Rust's char::is_whitespace). */
static bool uni_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Code points that NFC provably leaves unchanged (NFC_Quick_Check=Yes, no
 * composition with a neighbour): everything below U+0300, general
 * punctuation U+2010–U+2027 and U+2030–U+205E, CJK ideographs, emoji. The
 * test suite checks these ranges against Python's unicodedata. */
static bool nfc_stable(uint32_t c)
{
    return c < 0x300 || (c >= 0x2010 && c <= 0x2027) || (c >= 0x2030 && c <= 0x205E) ||
           (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x1F300 && c <= 0x1FAFF);
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 to U+0100.. in byte order. */
static void bytelevel_table(uint32_t b2c[256])
{
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        b2c[b] = keep ? b : 256 + n++;
    }
}

/* ======================================================================
 * Hash maps: string → id, (id, id) → (rank, new id)
 * ==================================================================== */

typedef struct smap_ent {
    const char *key; /* NULL = empty slot; not owned */
    uint32_t len;
    int32_t val;
} smap_ent;

typedef struct smap {
    smap_ent *e;
    size_t cap, n;
} smap;

static int32_t smap_get(const smap *m, const char *k, size_t len)
{
    if (!m->cap) return -1;
    size_t mask = m->cap - 1, i = (size_t)XXH3_64bits(k, len) & mask;
    for (;;) {
        const smap_ent *e = &m->e[i];
        if (!e->key) return -1;
        if (e->len == len && memcmp(e->key, k, len) == 0) return e->val;
        i = (i + 1) & mask;
    }
}

static bool smap_put(smap *m, const char *k, size_t len, int32_t val);

static bool smap_grow(smap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    smap_ent *old = m->e;
    size_t old_cap = m->cap;
    m->e = calloc(cap, sizeof *m->e);
    if (!m->e) {
        m->e = old;
        return false;
    }
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key) smap_put(m, old[i].key, old[i].len, old[i].val);
    free(old);
    return true;
}

/* Inserts or overwrites (later entries win, as in a Rust HashMap collect). */
static bool smap_put(smap *m, const char *k, size_t len, int32_t val)
{
    if ((m->n + 1) * 2 > m->cap && !smap_grow(m)) return false;
    size_t mask = m->cap - 1, i = (size_t)XXH3_64bits(k, len) & mask;
    for (;;) {
        smap_ent *e = &m->e[i];
        if (!e->key) {
            e->key = k;
            e->len = (uint32_t)len;
            e->val = val;
            m->n++;
            return true;
        }
        if (e->len == len && memcmp(e->key, k, len) == 0) {
            e->val = val;
            return true;
        }
        i = (i + 1) & mask;
    }
}

static void smap_free(smap *m)
{
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

typedef struct pmap_ent {
    uint64_t key; /* UINT64_MAX = empty */
    uint32_t rank;
    int32_t new_id;
} pmap_ent;

typedef struct pmap {
    pmap_ent *e;
    size_t cap, n;
} pmap;

static inline size_t pmap_hash(uint64_t k, size_t mask)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & mask;
}

static inline const pmap_ent *pmap_get(const pmap *m, int32_t a, int32_t b)
{
    if (!m->cap) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = m->cap - 1, i = pmap_hash(key, mask);
    for (;;) {
        const pmap_ent *e = &m->e[i];
        if (e->key == UINT64_MAX) return NULL;
        if (e->key == key) return e;
        i = (i + 1) & mask;
    }
}

static bool pmap_put(pmap *m, uint64_t key, uint32_t rank, int32_t new_id)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        pmap_ent *e = malloc(cap * sizeof *e);
        if (!e) return false;
        for (size_t i = 0; i < cap; i++) e[i].key = UINT64_MAX;
        pmap old = *m;
        m->e = e;
        m->cap = cap;
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.e[i].key != UINT64_MAX) pmap_put(m, old.e[i].key, old.e[i].rank, old.e[i].new_id);
        free(old.e);
    }
    size_t mask = m->cap - 1, i = pmap_hash(key, mask);
    for (;;) {
        pmap_ent *e = &m->e[i];
        if (e->key == UINT64_MAX) {
            e->key = key;
            m->n++;
        }
        if (e->key == key) {
            e->rank = rank;
            e->new_id = new_id;
            return true;
        }
        i = (i + 1) & mask;
    }
}

/* ======================================================================
 * The tokenizer object
 * ==================================================================== */

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
    smap vocab;
    char **vocab_r; /* id → token (owned strings), NULL where no token */
    uint32_t *vocab_r_len;
    int32_t vocab_r_size;
    char bl_utf8[256][2]; /* ByteLevel: each byte's character, UTF-8 (1 or 2 bytes) */
    uint8_t bl_len[256];
    smap bigrams; /* every pair of adjacent characters inside a vocab token */
    char **extra; /* further tokens that share an id (owned) */
    size_t n_extra;
    pmap merges;
    char *unk_token;
    bool fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256];
    /* added tokens */
    added_tok *added;
    size_t n_added;
    smap added_map;      /* content → id */
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

/* ======================================================================
 * Regex (PCRE2, UTF + UCP: \s \w \d and \p{..} are Unicode-aware as in
 * Oniguruma/Rust regex, which HF uses)
 * ==================================================================== */

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static pcre2_code *re_compile(const char *pat, size_t len, char *why, size_t why_cap)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(code, buf, sizeof buf);
        snprintf(why, why_cap, "%s at offset %zu", (const char *)buf, (size_t)off);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
    return re;
}

/* Per-call matching state (keeps encode thread-safe). */
typedef struct re_state {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *js;
} re_state;

static bool re_state_init(re_state *st)
{
    st->md = pcre2_match_data_create(1, NULL);
    st->mctx = pcre2_match_context_create(NULL);
    st->js = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL);
    if (!st->md || !st->mctx || !st->js) return false;
    pcre2_jit_stack_assign(st->mctx, NULL, st->js);
    return true;
}

static void re_state_free(re_state *st)
{
    pcre2_match_data_free(st->md);
    pcre2_match_context_free(st->mctx);
    pcre2_jit_stack_free(st->js);
}

/* Next non-empty match at or after `from`: 1 found, 0 none, -1 error. */
static int re_next(const pcre2_code *re, re_state *st, const char *s, size_t n, size_t from, size_t *ms,
                   size_t *me)
{
    while (from <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, st->md, st->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            return 1;
        }
        /* empty match: step over one character */
        if (ov[0] >= n) return 0;
        size_t l;
        utf8_get(s + ov[0], &l);
        from = ov[0] + l;
    }
    return 0;
}

/* ======================================================================
 * JSON helpers
 * ==================================================================== */

static qs_status jfail(const qs_tokenizer *t, qs_error *err, qs_status code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static qs_status jfail(const qs_tokenizer *t, qs_error *err, qs_status code, const char *path, const char *fmt, ...)
{
    char msg[QS_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qs_error_set(err, code, "%s: %s: %s", t->name, path, msg);
}

static const cJSON *jget(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static bool jnull(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* Optional bool; missing/null gives def. */
static qs_status jbool(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, bool def, bool *out,
                       qs_error *err)
{
    const cJSON *v = jget(o, key);
    if (jnull(v)) {
        *out = def;
        return QS_OK;
    }
    if (!cJSON_IsBool(v)) return jfail(t, err, QS_ERR_INPUT, path, "'%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return QS_OK;
}

/* Optional string (NULL when missing/null). */
static qs_status jstr(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, const char **out,
                      qs_error *err)
{
    const cJSON *v = jget(o, key);
    *out = NULL;
    if (jnull(v)) return QS_OK;
    if (!cJSON_IsString(v)) return jfail(t, err, QS_ERR_INPUT, path, "'%s' must be a string", key);
    *out = v->valuestring;
    return QS_OK;
}

static qs_status jint(const qs_tokenizer *t, const cJSON *v, const char *path, long lo, long hi, long *out,
                      qs_error *err)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(long)v->valuedouble || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi)
        return jfail(t, err, QS_ERR_INPUT, path, "expected an integer in [%ld, %ld]", lo, hi);
    *out = (long)v->valuedouble;
    return QS_OK;
}

/* {"String": s} or {"Regex": r} → a literal or a compiled regex. */
static qs_status jpattern(const qs_tokenizer *t, const cJSON *o, const char *path, char **lit, size_t *lit_len,
                          pcre2_code **re, qs_error *err)
{
    char p[256];
    snprintf(p, sizeof p, "%s.pattern", path);
    const cJSON *pat = jget(o, "pattern");
    const cJSON *s = jget(pat, "String"), *r = jget(pat, "Regex");
    *lit = NULL;
    *re = NULL;
    if (cJSON_IsString(s)) {
        *lit_len = strlen(s->valuestring);
        if (!*lit_len) return jfail(t, err, QS_ERR_INPUT, p, "empty String pattern");
        *lit = mem_dup(s->valuestring, *lit_len);
        return *lit ? QS_OK : qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", t->name);
    }
    if (cJSON_IsString(r)) {
        char why[300];
        *re = re_compile(r->valuestring, strlen(r->valuestring), why, sizeof why);
        if (!*re) return jfail(t, err, QS_ERR_UNSUPPORTED, p, "regex does not compile with PCRE2: %s", why);
        return QS_OK;
    }
    return jfail(t, err, QS_ERR_INPUT, p, "expected {\"String\": ...} or {\"Regex\": ...}");
}

/* A one-character string (Metaspace replacement, Strip content). */
static qs_status jchar(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, const char *def,
                       char out[8], size_t *out_len, qs_error *err)
{
    const char *s;
    QS_TRY(jstr(t, o, key, path, &s, err));
    if (!s) s = def;
    size_t n = strlen(s), l = 0;
    if (n && n < 8 && utf8_check(s, n) == n) utf8_get(s, &l);
    if (!n || l != n) return jfail(t, err, QS_ERR_INPUT, path, "'%s' must be a single character", key);
    memcpy(out, s, n);
    out[n] = '\0';
    *out_len = n;
    return QS_OK;
}

/* ======================================================================
 * Loading: model
 * ==================================================================== */

static qs_status nomem(const qs_tokenizer *t, qs_error *err)
{
    return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", t->name);
}

static qs_status load_model(qs_tokenizer *t, const cJSON *m, qs_error *err)
{
    if (!cJSON_IsObject(m)) return jfail(t, err, QS_ERR_INPUT, "model", "missing or not an object");
    const char *type;
    QS_TRY(jstr(t, m, "type", "model", &type, err));
    if (!type) {
        /* HF accepts an untagged model; BPE is the one with merges. */
        if (!jget(m, "merges")) return jfail(t, err, QS_ERR_UNSUPPORTED, "model.type", "missing and the model has no merges (only BPE is supported)");
        type = "BPE";
    }
    if (strcmp(type, "BPE") != 0)
        return jfail(t, err, QS_ERR_UNSUPPORTED, "model.type",
                     "'%s' is not supported (qshard implements the BPE model only)", type);
    const cJSON *dropout = jget(m, "dropout");
    if (!jnull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return jfail(t, err, QS_ERR_UNSUPPORTED, "model.dropout", "BPE dropout is random; only null or 0 is supported");
    const char *s;
    QS_TRY(jstr(t, m, "continuing_subword_prefix", "model", &s, err));
    if (s && *s)
        return jfail(t, err, QS_ERR_UNSUPPORTED, "model.continuing_subword_prefix", "'%s' is not supported", s);
    QS_TRY(jstr(t, m, "end_of_word_suffix", "model", &s, err));
    if (s && *s) return jfail(t, err, QS_ERR_UNSUPPORTED, "model.end_of_word_suffix", "'%s' is not supported", s);
    QS_TRY(jbool(t, m, "fuse_unk", "model", false, &t->fuse_unk, err));
    QS_TRY(jbool(t, m, "byte_fallback", "model", false, &t->byte_fallback, err));
    QS_TRY(jbool(t, m, "ignore_merges", "model", false, &t->ignore_merges, err));
    QS_TRY(jstr(t, m, "unk_token", "model", &s, err));
    if (s && !(t->unk_token = strdup(s))) return nomem(t, err);

    const cJSON *vocab = jget(m, "vocab");
    if (!cJSON_IsObject(vocab)) return jfail(t, err, QS_ERR_INPUT, "model.vocab", "missing or not an object of token: id");
    int32_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        long id = 0;
        char p[64];
        snprintf(p, sizeof p, "model.vocab[%.40s]", it->string);
        QS_TRY(jint(t, it, p, 0, INT32_MAX - 1, &id, err));
        if (id > max_id) max_id = (int32_t)id;
    }
    t->vocab_r_size = max_id + 1;
    t->vocab_r = calloc((size_t)t->vocab_r_size + 1, sizeof *t->vocab_r);
    t->vocab_r_len = calloc((size_t)t->vocab_r_size + 1, sizeof *t->vocab_r_len);
    if (!t->vocab_r || !t->vocab_r_len) return nomem(t, err);
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = (int32_t)it->valuedouble;
        size_t len = strlen(it->string);
        char *k = mem_dup(it->string, len);
        if (!k) return nomem(t, err);
        if (t->vocab_r[id]) {
            /* two tokens with one id: both encode to it; decoding keeps the first */
            char **ex = realloc(t->extra, (t->n_extra + 1) * sizeof *ex);
            if (!ex) {
                free(k);
                return nomem(t, err);
            }
            t->extra = ex;
            t->extra[t->n_extra++] = k;
            if (!smap_put(&t->vocab, k, len, id)) return nomem(t, err);
            continue;
        }
        t->vocab_r[id] = k;
        t->vocab_r_len[id] = (uint32_t)len;
        if (!smap_put(&t->vocab, k, len, id)) return nomem(t, err);
    }
    /* Character bigrams inside tokens: where a long word has a pair of
     * characters that no token contains, no merge can ever join them, so BPE
     * can run on the two sides independently (bpe_word uses this). */
    for (int32_t id = 0; id < t->vocab_r_size + (int32_t)t->n_extra; id++) {
        const char *v = id < t->vocab_r_size ? t->vocab_r[id] : t->extra[id - t->vocab_r_size];
        if (!v) continue;
        size_t vn = strlen(v), i = 0, sub, l1 = utf8_seq((const unsigned char *)v, vn, &sub);
        if (!l1) l1 = 1;
        while (vn && i + l1 < vn) {
            size_t l2 = utf8_seq((const unsigned char *)v + i + l1, vn - i - l1, &sub);
            if (!l2) l2 = 1;
            if (!smap_put(&t->bigrams, v + i, l1 + l2, 1)) return nomem(t, err);
            i += l1;
            l1 = l2;
        }
    }
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        t->byte_ids[b] = smap_get(&t->vocab, code, 6);
    }

    const cJSON *merges = jget(m, "merges");
    if (!jnull(merges) && !cJSON_IsArray(merges))
        return jfail(t, err, QS_ERR_INPUT, "model.merges", "must be an array of \"a b\" strings or [\"a\", \"b\"] pairs");
    uint32_t rank = 0;
    sbuf ab = {0}; /* "a\0b\0ab" */
    qs_status st = QS_OK;
    cJSON_ArrayForEach(it, merges) {
        char p[64];
        snprintf(p, sizeof p, "model.merges[%u]", rank);
        const char *a, *b;
        if (cJSON_IsString(it)) {
            const char *sp = strchr(it->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = jfail(t, err, QS_ERR_INPUT, p, "'%s' is not two tokens separated by one space", it->valuestring);
                break;
            }
            a = it->valuestring;
            b = sp + 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            a = it->child->valuestring;
            b = it->child->next->valuestring;
        } else {
            st = jfail(t, err, QS_ERR_INPUT, p, "expected \"a b\" or [\"a\", \"b\"]");
            break;
        }
        size_t alen = cJSON_IsString(it) ? (size_t)(b - 1 - a) : strlen(a), blen = strlen(b);
        ab.n = 0;
        if (!sbuf_add(&ab, a, alen) || !sbuf_add(&ab, "", 1) || !sbuf_add(&ab, b, blen) || !sbuf_add(&ab, "", 1) ||
            !sbuf_add(&ab, a, alen) || !sbuf_add(&ab, b, blen)) {
            st = nomem(t, err);
            break;
        }
        const char *ta = ab.p, *tb = ab.p + alen + 1, *tab = ab.p + alen + blen + 2;
        int32_t ia = smap_get(&t->vocab, ta, alen), ib = smap_get(&t->vocab, tb, blen);
        int32_t inew = smap_get(&t->vocab, tab, alen + blen);
        if (ia < 0 || ib < 0 || inew < 0) {
            st = jfail(t, err, QS_ERR_INPUT, p, "token '%s' is not in model.vocab", ia < 0 ? ta : ib < 0 ? tb : tab);
            break;
        }
        if (!pmap_put(&t->merges, ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib, rank, inew)) {
            st = nomem(t, err);
            break;
        }
        rank++;
    }
    sbuf_free(&ab);
    return st;
}

/* ======================================================================
 * Loading: normalizer, pre-tokenizer, decoder, post-processor
 * ==================================================================== */

static qs_status add_norm(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err)
{
    if (jnull(n)) return QS_OK;
    const char *type;
    char tp[256];
    snprintf(tp, sizeof tp, "%s.type", path);
    QS_TRY(jstr(t, n, "type", path, &type, err));
    if (!type) return jfail(t, err, QS_ERR_INPUT, tp, "missing");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = jget(n, "normalizers"), *it;
        if (!cJSON_IsArray(list)) return jfail(t, err, QS_ERR_INPUT, path, "'normalizers' must be an array");
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char p[256];
            snprintf(p, sizeof p, "%s.normalizers[%d]", path, i++);
            QS_TRY(add_norm(t, it, p, err));
        }
        return QS_OK;
    }
    norm_op op = {0};
    if (strcmp(type, "Prepend") == 0) {
        const char *s;
        QS_TRY(jstr(t, n, "prepend", path, &s, err));
        if (!s) return jfail(t, err, QS_ERR_INPUT, path, "Prepend needs 'prepend'");
        op.kind = NORM_PREPEND;
        op.slen = strlen(s);
        if (!(op.s = mem_dup(s, op.slen))) return nomem(t, err);
    } else if (strcmp(type, "Replace") == 0) {
        op.kind = NORM_REPLACE;
        const char *c;
        QS_TRY(jstr(t, n, "content", path, &c, err));
        if (!c) return jfail(t, err, QS_ERR_INPUT, path, "Replace needs 'content'");
        op.clen = strlen(c);
        if (!(op.content = mem_dup(c, op.clen))) return nomem(t, err);
        qs_status st = jpattern(t, n, path, &op.s, &op.slen, &op.re, err);
        if (st != QS_OK) {
            free(op.content);
            return st;
        }
    } else if (strcmp(type, "Strip") == 0) {
        op.kind = NORM_STRIP;
        QS_TRY(jbool(t, n, "strip_left", path, true, &op.left, err));
        QS_TRY(jbool(t, n, "strip_right", path, true, &op.right, err));
    } else if (strcmp(type, "NFC") == 0) {
        op.kind = NORM_NFC;
    } else {
        return jfail(t, err, QS_ERR_UNSUPPORTED, tp,
                     "normalizer '%s' is not supported (supported: Sequence, Prepend, Replace, Strip, NFC)", type);
    }
    if (!(op.path = strdup(path))) return nomem(t, err);
    norm_op *p = realloc(t->norms, (t->n_norms + 1) * sizeof *p);
    if (!p) {
        free(op.s);
        free(op.content);
        pcre2_code_free(op.re);
        free(op.path);
        return nomem(t, err);
    }
    t->norms = p;
    t->norms[t->n_norms++] = op;
    return QS_OK;
}

static qs_status push_pre(qs_tokenizer *t, pre_op *op, qs_error *err)
{
    pre_op *p = realloc(t->pres, (t->n_pres + 1) * sizeof *p);
    if (!p) {
        pcre2_code_free(op->re);
        free(op->lit);
        return nomem(t, err);
    }
    t->pres = p;
    t->pres[t->n_pres++] = *op;
    return QS_OK;
}

static qs_status parse_scheme(const qs_tokenizer *t, const cJSON *o, const char *path, prepend_scheme *out,
                              qs_error *err)
{
    const char *s;
    QS_TRY(jstr(t, o, "prepend_scheme", path, &s, err));
    if (s) {
        if (strcmp(s, "always") == 0) *out = PREPEND_ALWAYS;
        else if (strcmp(s, "first") == 0) *out = PREPEND_FIRST;
        else if (strcmp(s, "never") == 0) *out = PREPEND_NEVER;
        else return jfail(t, err, QS_ERR_INPUT, path, "prepend_scheme '%s' is not always/first/never", s);
        return QS_OK;
    }
    bool aps; /* legacy form */
    QS_TRY(jbool(t, o, "add_prefix_space", path, true, &aps, err));
    *out = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
    return QS_OK;
}

static qs_status add_pre(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err)
{
    if (jnull(n)) return QS_OK;
    const char *type;
    char tp[256];
    snprintf(tp, sizeof tp, "%s.type", path);
    QS_TRY(jstr(t, n, "type", path, &type, err));
    if (!type) return jfail(t, err, QS_ERR_INPUT, tp, "missing");
    pre_op op = {0};
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = jget(n, "pretokenizers"), *it;
        if (!cJSON_IsArray(list)) return jfail(t, err, QS_ERR_INPUT, path, "'pretokenizers' must be an array");
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char p[256];
            snprintf(p, sizeof p, "%s.pretokenizers[%d]", path, i++);
            QS_TRY(add_pre(t, it, p, err));
        }
        return QS_OK;
    } else if (strcmp(type, "ByteLevel") == 0) {
        op.kind = PRE_BYTELEVEL;
        QS_TRY(jbool(t, n, "add_prefix_space", path, true, &op.add_prefix_space, err));
        QS_TRY(jbool(t, n, "use_regex", path, true, &op.use_regex, err));
    } else if (strcmp(type, "Split") == 0) {
        op.kind = PRE_SPLIT;
        const char *b;
        QS_TRY(jstr(t, n, "behavior", path, &b, err));
        if (!b) return jfail(t, err, QS_ERR_INPUT, path, "Split needs 'behavior'");
        if (strcmp(b, "Removed") == 0) op.behavior = SPLIT_REMOVED;
        else if (strcmp(b, "Isolated") == 0) op.behavior = SPLIT_ISOLATED;
        else if (strcmp(b, "MergedWithPrevious") == 0) op.behavior = SPLIT_MERGED_PREV;
        else if (strcmp(b, "MergedWithNext") == 0) op.behavior = SPLIT_MERGED_NEXT;
        else if (strcmp(b, "Contiguous") == 0) op.behavior = SPLIT_CONTIGUOUS;
        else return jfail(t, err, QS_ERR_INPUT, path, "unknown Split behavior '%s'", b);
        QS_TRY(jbool(t, n, "invert", path, false, &op.invert, err));
        QS_TRY(jpattern(t, n, path, &op.lit, &op.lit_len, &op.re, err));
    } else if (strcmp(type, "Metaspace") == 0) {
        op.kind = PRE_METASPACE;
        QS_TRY(jchar(t, n, "replacement", path, "\xe2\x96\x81", op.rep, &op.rep_len, err));
        QS_TRY(parse_scheme(t, n, path, &op.scheme, err));
        QS_TRY(jbool(t, n, "split", path, true, &op.split, err));
    } else if (strcmp(type, "Digits") == 0) {
        op.kind = PRE_DIGITS;
        QS_TRY(jbool(t, n, "individual_digits", path, false, &op.individual_digits, err));
    } else if (strcmp(type, "Whitespace") == 0) {
        op.kind = PRE_WHITESPACE;
    } else if (strcmp(type, "WhitespaceSplit") == 0) {
        op.kind = PRE_WSSPLIT;
    } else {
        return jfail(t, err, QS_ERR_UNSUPPORTED, tp,
                     "pre-tokenizer '%s' is not supported (supported: Sequence, ByteLevel, Split, Metaspace, Digits, "
                     "Whitespace, WhitespaceSplit)",
                     type);
    }
    return push_pre(t, &op, err);
}

static qs_status add_dec(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err)
{
    const char *type;
    char tp[256];
    snprintf(tp, sizeof tp, "%s.type", path);
    QS_TRY(jstr(t, n, "type", path, &type, err));
    if (!type) return jfail(t, err, QS_ERR_INPUT, tp, "missing");
    dec_op op = {0};
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = jget(n, "decoders"), *it;
        if (!cJSON_IsArray(list)) return jfail(t, err, QS_ERR_INPUT, path, "'decoders' must be an array");
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char p[256];
            snprintf(p, sizeof p, "%s.decoders[%d]", path, i++);
            QS_TRY(add_dec(t, it, p, err));
        }
        return QS_OK;
    } else if (strcmp(type, "ByteLevel") == 0) {
        op.kind = DEC_BYTELEVEL;
    } else if (strcmp(type, "Replace") == 0) {
        op.kind = DEC_REPLACE;
        const char *c;
        QS_TRY(jstr(t, n, "content", path, &c, err));
        if (!c) return jfail(t, err, QS_ERR_INPUT, path, "Replace needs 'content'");
        op.clen = strlen(c);
        if (!(op.content = mem_dup(c, op.clen))) return nomem(t, err);
        qs_status st = jpattern(t, n, path, &op.lit, &op.lit_len, &op.re, err);
        if (st != QS_OK) {
            free(op.content);
            return st;
        }
    } else if (strcmp(type, "ByteFallback") == 0) {
        op.kind = DEC_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        op.kind = DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        op.kind = DEC_STRIP;
        char c[8];
        size_t cl;
        QS_TRY(jchar(t, n, "content", path, " ", c, &cl, err));
        op.strip_char = utf8_get(c, &cl);
        const cJSON *a = jget(n, "start"), *b = jget(n, "stop");
        op.start = op.stop = 0;
        if (!jnull(a)) QS_TRY(jint(t, a, path, 0, 1L << 30, &op.start, err));
        if (!jnull(b)) QS_TRY(jint(t, b, path, 0, 1L << 30, &op.stop, err));
    } else if (strcmp(type, "Metaspace") == 0) {
        op.kind = DEC_METASPACE;
        QS_TRY(jchar(t, n, "replacement", path, "\xe2\x96\x81", op.rep, &op.rep_len, err));
        QS_TRY(parse_scheme(t, n, path, &op.scheme, err));
    } else {
        return jfail(t, err, QS_ERR_UNSUPPORTED, tp,
                     "decoder '%s' is not supported (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, "
                     "Strip, Metaspace)",
                     type);
    }
    dec_op *p = realloc(t->decs, (t->n_decs + 1) * sizeof *p);
    if (!p) {
        free(op.lit);
        free(op.content);
        pcre2_code_free(op.re);
        return nomem(t, err);
    }
    t->decs = p;
    t->decs[t->n_decs++] = op;
    return QS_OK;
}

static qs_status ids_append(const qs_tokenizer *t, int32_t **arr, size_t *n, const int32_t *src, size_t k,
                            bool front, qs_error *err)
{
    int32_t *p = realloc(*arr, (*n + k + 1) * sizeof *p);
    if (!p) return nomem(t, err);
    if (front) {
        memmove(p + k, p, *n * sizeof *p);
        memcpy(p, src, k * sizeof *p);
    } else {
        memcpy(p + *n, src, k * sizeof *p);
    }
    *arr = p;
    *n += k;
    return QS_OK;
}

/* One post-processor: pre/suf get the ids put before/after the sequence. */
static qs_status add_post(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err)
{
    const char *type;
    QS_TRY(jstr(t, n, "type", path, &type, err));
    if (!type) return jfail(t, err, QS_ERR_INPUT, path, "'type' missing");
    int32_t pre[64], suf[64];
    size_t npre = 0, nsuf = 0;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = jget(n, "processors"), *it;
        if (!cJSON_IsArray(list)) return jfail(t, err, QS_ERR_INPUT, path, "'processors' must be an array");
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char p[256];
            snprintf(p, sizeof p, "%s.processors[%d]", path, i++);
            QS_TRY(add_post(t, it, p, err));
        }
        return QS_OK;
    } else if (strcmp(type, "ByteLevel") == 0) {
        return QS_OK; /* offsets only */
    } else if (strcmp(type, "TemplateProcessing") == 0) {
        const cJSON *single = jget(n, "single"), *specials = jget(n, "special_tokens"), *it;
        if (!cJSON_IsArray(single)) return jfail(t, err, QS_ERR_INPUT, path, "'single' must be an array");
        bool seen_seq = false;
        int i = 0;
        cJSON_ArrayForEach(it, single) {
            char p[256];
            snprintf(p, sizeof p, "%s.single[%d]", path, i++);
            const cJSON *sp = jget(it, "SpecialToken"), *sq = jget(it, "Sequence");
            if (sq) {
                seen_seq = true;
                continue;
            }
            const char *name;
            QS_TRY(jstr(t, sp, "id", p, &name, err));
            if (!name) return jfail(t, err, QS_ERR_INPUT, p, "expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
            const cJSON *ids = jget(jget(specials, name), "ids"), *idv;
            if (!cJSON_IsArray(ids))
                return jfail(t, err, QS_ERR_INPUT, p, "special token '%s' is not in %s.special_tokens", name, path);
            cJSON_ArrayForEach(idv, ids) {
                long id = 0;
                QS_TRY(jint(t, idv, p, 0, INT32_MAX - 1, &id, err));
                if ((seen_seq ? nsuf : npre) >= 64) return jfail(t, err, QS_ERR_UNSUPPORTED, p, "too many special tokens");
                if (seen_seq) suf[nsuf++] = (int32_t)id;
                else pre[npre++] = (int32_t)id;
            }
        }
    } else if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0) {
        const cJSON *cls = jget(n, "cls"), *sep = jget(n, "sep");
        long a = 0, b = 0;
        if (!cJSON_IsArray(cls) || cJSON_GetArraySize(cls) != 2 || !cJSON_IsArray(sep) || cJSON_GetArraySize(sep) != 2)
            return jfail(t, err, QS_ERR_INPUT, path, "'cls' and 'sep' must be [token, id]");
        QS_TRY(jint(t, cJSON_GetArrayItem(cls, 1), path, 0, INT32_MAX - 1, &a, err));
        QS_TRY(jint(t, cJSON_GetArrayItem(sep, 1), path, 0, INT32_MAX - 1, &b, err));
        pre[npre++] = (int32_t)a;
        suf[nsuf++] = (int32_t)b;
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, "%s: %s.type: post-processor '%s' is not supported", t->name, path, type);
        free(t->post_unsupported);
        if (!(t->post_unsupported = strdup(msg))) return nomem(t, err);
        return QS_OK;
    }
    /* processors apply in order: this one wraps what the earlier ones made */
    QS_TRY(ids_append(t, &t->post_pre, &t->n_post_pre, pre, npre, true, err));
    QS_TRY(ids_append(t, &t->post_suf, &t->n_post_suf, suf, nsuf, false, err));
    return QS_OK;
}

/* ======================================================================
 * Normalization (used at load for added-token patterns, and by encode)
 * ==================================================================== */

/* Appends s with every occurrence of the literal/regex replaced by content. */
static int replace_all(const char *lit, size_t lit_len, const pcre2_code *re, re_state *st, const char *s, size_t n,
                       const char *content, size_t clen, sbuf *out)
{
    size_t i = 0;
    for (;;) {
        size_t ms, me;
        if (re) {
            int rc = re_next(re, st, s, n, i, &ms, &me);
            if (rc < 0) return -1;
            if (rc == 0) break;
        } else {
            const char *f = lit_len <= n - i ? memmem(s + i, n - i, lit, lit_len) : NULL;
            if (!f) break;
            ms = (size_t)(f - s);
            me = ms + lit_len;
        }
        if (!sbuf_add(out, s + i, ms - i) || !sbuf_add(out, content, clen)) return -2;
        i = me;
    }
    return sbuf_add(out, s + i, n - i) ? 0 : -2;
}

/* Normalizes s[0..n) into out (replacing its contents). */
static qs_status normalize(const qs_tokenizer *t, re_state *st, const char *s, size_t n, bool skip_prepend, sbuf *out,
                           sbuf *tmp, qs_error *err)
{
    out->n = 0;
    if (!sbuf_add(out, s, n)) return nomem(t, err);
    for (size_t k = 0; k < t->n_norms; k++) {
        const norm_op *op = &t->norms[k];
        tmp->n = 0;
        switch (op->kind) {
        case NORM_PREPEND:
            if (!out->n || skip_prepend) continue;
            if (!sbuf_add(tmp, op->s, op->slen) || !sbuf_add(tmp, out->p, out->n)) return nomem(t, err);
            break;
        case NORM_REPLACE: {
            int rc = replace_all(op->s, op->slen, op->re, st, out->p, out->n, op->content, op->clen, tmp);
            if (rc == -1) return qs_error_set(err, QS_ERR_INPUT, "%s: %s: regex match failed", t->name, op->path);
            if (rc == -2) return nomem(t, err);
            break;
        }
        case NORM_STRIP: {
            size_t a = 0, b = out->n, l;
            if (op->left)
                while (a < b && uni_is_space(utf8_get(out->p + a, &l))) a += l;
            if (op->right)
                while (b > a) {
                    size_t j = b - 1;
                    while (j > a && ((unsigned char)out->p[j] & 0xC0) == 0x80) j--;
                    if (!uni_is_space(utf8_get(out->p + j, &l))) break;
                    b = j;
                }
            if (!sbuf_add(tmp, out->p + a, b - a)) return nomem(t, err);
            break;
        }
        case NORM_NFC: {
            for (size_t i = 0, l; i < out->n; i += l) {
                uint32_t c = utf8_get(out->p + i, &l);
                if (!nfc_stable(c))
                    return qs_error_set(err, QS_ERR_UNSUPPORTED,
                                        "%s: %s: NFC normalization is only supported for text it leaves unchanged; "
                                        "the text has U+%04X at byte %zu of a piece",
                                        t->name, op->path, (unsigned)c, i);
            }
            continue;
        }
        }
        sbuf sw = *out;
        *out = *tmp;
        *tmp = sw;
    }
    return QS_OK;
}

/* ======================================================================
 * Loading: added tokens and the whole file
 * ==================================================================== */

static int cmp_pat(const void *a, const void *b)
{
    const match_pat *x = a, *y = b;
    unsigned char cx = (unsigned char)x->pat[0], cy = (unsigned char)y->pat[0];
    if (cx != cy) return cx < cy ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1; /* longest first */
    return x->order - y->order;                             /* then the order HF registered them */
}

static qs_status build_set(const qs_tokenizer *t, match_set *set, bool normalized, qs_error *err)
{
    set->pats = calloc(t->n_added + 1, sizeof *set->pats);
    if (!set->pats) return nomem(t, err);
    /* HF registers special tokens first, then the others */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < t->n_added; i++) {
            const added_tok *a = &t->added[i];
            if (a->special != (pass == 0) || a->normalized != normalized) continue;
            const char *p = normalized ? t->norm_contents[i] : a->content;
            size_t len = strlen(p);
            if (!len) continue;
            set->pats[set->n] = (match_pat){p, len, (int)i, (int)set->n};
            set->n++;
        }
    qsort(set->pats, set->n, sizeof *set->pats, cmp_pat);
    size_t j = 0;
    for (int b = 0; b <= 256; b++) {
        while (j < set->n && (unsigned char)set->pats[j].pat[0] < b) j++;
        set->bucket[b] = b == 256 ? set->n : j;
    }
    return QS_OK;
}

static qs_status load_added(qs_tokenizer *t, const cJSON *list, re_state *st, qs_error *err)
{
    if (jnull(list)) return QS_OK;
    if (!cJSON_IsArray(list)) return jfail(t, err, QS_ERR_INPUT, "added_tokens", "must be an array");
    int count = cJSON_GetArraySize(list);
    t->added = calloc((size_t)count + 1, sizeof *t->added);
    t->norm_contents = calloc((size_t)count + 1, sizeof *t->norm_contents);
    if (!t->added || !t->norm_contents) return nomem(t, err);
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, list) {
        char p[64];
        snprintf(p, sizeof p, "added_tokens[%d]", i++);
        const char *content;
        long id = 0;
        QS_TRY(jstr(t, it, "content", p, &content, err));
        if (!content) return jfail(t, err, QS_ERR_INPUT, p, "'content' missing");
        const cJSON *idv = jget(it, "id");
        QS_TRY(jint(t, idv, p, 0, INT32_MAX - 1, &id, err));
        added_tok a = {0};
        QS_TRY(jbool(t, it, "special", p, false, &a.special, err));
        QS_TRY(jbool(t, it, "normalized", p, true, &a.normalized, err));
        QS_TRY(jbool(t, it, "lstrip", p, false, &a.lstrip, err));
        QS_TRY(jbool(t, it, "rstrip", p, false, &a.rstrip, err));
        QS_TRY(jbool(t, it, "single_word", p, false, &a.single_word, err));
        a.len = strlen(content);
        if (!a.len) continue; /* HF ignores empty added tokens */
        /* HF gives a token that is already in the model vocabulary its model id */
        int32_t mid = smap_get(&t->vocab, content, a.len);
        a.id = mid >= 0 ? mid : (int32_t)id;
        if (!(a.content = mem_dup(content, a.len))) return nomem(t, err);
        t->added[t->n_added++] = a;
    }
    for (size_t k = 0; k < t->n_added; k++) {
        added_tok *a = &t->added[k];
        if (!smap_put(&t->added_map, a->content, a->len, a->id)) return nomem(t, err);
        if (a->normalized) {
            sbuf o = {0}, tmp = {0};
            qs_status s = normalize(t, st, a->content, a->len, false, &o, &tmp, err);
            sbuf_free(&tmp);
            if (s != QS_OK) {
                sbuf_free(&o);
                return qs_error_prefix(err, "added token '%s'", a->content);
            }
            t->norm_contents[k] = o.p ? o.p : strdup("");
            if (!t->norm_contents[k]) return nomem(t, err);
        }
    }
    QS_TRY(build_set(t, &t->raw_set, false, err));
    QS_TRY(build_set(t, &t->norm_set, true, err));
    return QS_OK;
}

static int32_t find_special(const qs_tokenizer *t, const char *const *names)
{
    for (const char *const *n = names; *n; n++)
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].special && strcmp(t->added[i].content, *n) == 0) return t->added[i].id;
    return -1;
}

qs_status qs_tokenizer_parse(const char *json, size_t len, const char *name, qs_tokenizer **out, qs_error *err)
{
    *out = NULL;
    qs_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", name);
    t->name = strdup(name ? name : "tokenizer.json");
    if (!t->name) {
        free(t);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", name);
    }
    qs_status st = QS_OK;
    re_state rs = {0};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        size_t line = 1;
        for (size_t i = 0; i < off && i < len; i++) line += json[i] == '\n';
        st = qs_error_set(err, QS_ERR_INPUT, "%s: malformed JSON near byte %zu (line %zu)", t->name, off, line);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: expected a JSON object (an HF tokenizer.json)", t->name);
        goto done;
    }
    if (!re_state_init(&rs)) {
        st = nomem(t, err);
        goto done;
    }
    char why[300];
    t->gpt2_re = re_compile(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, why, sizeof why);
    t->word_re = re_compile("\\w", PCRE2_ZERO_TERMINATED, why, sizeof why);
    t->digit_re = re_compile("\\p{N}", PCRE2_ZERO_TERMINATED, why, sizeof why);
    t->ws_re = re_compile("\\w+|[^\\w\\s]+", PCRE2_ZERO_TERMINATED, why, sizeof why);
    t->space_re = re_compile("[\\s\\x{85}]", PCRE2_ZERO_TERMINATED, why, sizeof why);
    if (!t->gpt2_re || !t->word_re || !t->digit_re || !t->ws_re || !t->space_re) {
        st = qs_error_set(err, QS_ERR_INTERNAL, "%s: built-in regex: %s", t->name, why);
        goto done;
    }
    uint32_t b2c[256];
    bytelevel_table(b2c);
    for (int b = 0; b < 256; b++) {
        char u[4] = {0};
        t->bl_len[b] = (uint8_t)utf8_put(b2c[b], u);
        t->bl_utf8[b][0] = u[0];
        t->bl_utf8[b][1] = u[1];
    }
    if ((st = load_model(t, jget(root, "model"), err)) != QS_OK) goto done;
    if ((st = add_norm(t, jget(root, "normalizer"), "normalizer", err)) != QS_OK) goto done;
    if ((st = add_pre(t, jget(root, "pre_tokenizer"), "pre_tokenizer", err)) != QS_OK) goto done;
    const cJSON *dec = jget(root, "decoder");
    t->has_decoder = !jnull(dec);
    if (t->has_decoder && (st = add_dec(t, dec, "decoder", err)) != QS_OK) goto done;
    const cJSON *post = jget(root, "post_processor");
    if (!jnull(post) && (st = add_post(t, post, "post_processor", err)) != QS_OK) goto done;
    if ((st = load_added(t, jget(root, "added_tokens"), &rs, err)) != QS_OK) goto done;

    t->size = t->vocab_r_size;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id >= t->size) t->size = t->added[i].id + 1;
    t->added_of_id = malloc(((size_t)t->size + 1) * sizeof *t->added_of_id);
    if (!t->added_of_id) {
        st = nomem(t, err);
        goto done;
    }
    for (int32_t i = 0; i < t->size; i++) t->added_of_id[i] = -1;
    for (size_t i = 0; i < t->n_added; i++) t->added_of_id[t->added[i].id] = (int32_t)i;
    for (size_t i = 0; i < t->n_post_pre + t->n_post_suf; i++) {
        int32_t id = i < t->n_post_pre ? t->post_pre[i] : t->post_suf[i - t->n_post_pre];
        if (id >= t->size) {
            st = jfail(t, err, QS_ERR_INPUT, "post_processor", "special token id %d is outside the vocabulary (%d)",
                       (int)id, (int)t->size);
            goto done;
        }
    }
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", "<BOS>",
                                            "[CLS]", "<|endoftext|>", NULL};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<EOS>", "[SEP]", NULL};
    t->bos = t->n_post_pre ? t->post_pre[0] : find_special(t, bos_names);
    t->eos = t->n_post_suf ? t->post_suf[t->n_post_suf - 1] : find_special(t, eos_names);
done:
    re_state_free(&rs);
    cJSON_Delete(root);
    if (st != QS_OK) {
        qs_tokenizer_free(t);
        return st;
    }
    *out = t;
    return QS_OK;
}

qs_status qs_tokenizer_load(const char *path, qs_tokenizer **out, qs_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return qs_error_set(err, errno == ENOENT ? QS_ERR_INPUT : QS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    sbuf b = {0};
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (!sbuf_add(&b, chunk, r)) {
            fclose(f);
            sbuf_free(&b);
            return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
        }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        sbuf_free(&b);
        return qs_error_set(err, QS_ERR_IO, "%s: read failed", path);
    }
    qs_status st = qs_tokenizer_parse(b.p ? b.p : "", b.n, path, out, err);
    sbuf_free(&b);
    return st;
}

void qs_tokenizer_free(qs_tokenizer *t)
{
    if (!t) return;
    for (int32_t i = 0; i < t->vocab_r_size; i++) free(t->vocab_r[i]);
    free(t->vocab_r);
    free(t->vocab_r_len);
    for (size_t i = 0; i < t->n_extra; i++) free(t->extra[i]);
    free(t->extra);
    smap_free(&t->vocab);
    smap_free(&t->bigrams);
    free(t->merges.e);
    free(t->unk_token);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->norm_contents[i]);
    }
    free(t->added);
    free(t->norm_contents);
    smap_free(&t->added_map);
    free(t->added_of_id);
    free(t->raw_set.pats);
    free(t->norm_set.pats);
    for (size_t i = 0; i < t->n_norms; i++) {
        free(t->norms[i].s);
        free(t->norms[i].content);
        pcre2_code_free(t->norms[i].re);
        free(t->norms[i].path);
    }
    free(t->norms);
    for (size_t i = 0; i < t->n_pres; i++) {
        pcre2_code_free(t->pres[i].re);
        free(t->pres[i].lit);
    }
    free(t->pres);
    for (size_t i = 0; i < t->n_decs; i++) {
        free(t->decs[i].lit);
        free(t->decs[i].content);
        pcre2_code_free(t->decs[i].re);
    }
    free(t->decs);
    pcre2_code_free(t->gpt2_re);
    pcre2_code_free(t->word_re);
    pcre2_code_free(t->digit_re);
    pcre2_code_free(t->ws_re);
    pcre2_code_free(t->space_re);
    free(t->post_pre);
    free(t->post_suf);
    free(t->post_unsupported);
    free(t->name);
    free(t);
}

int32_t qs_tokenizer_vocab_size(const qs_tokenizer *t) { return t->size; }
int32_t qs_tokenizer_bos_id(const qs_tokenizer *t) { return t->bos; }
int32_t qs_tokenizer_eos_id(const qs_tokenizer *t) { return t->eos; }

int32_t qs_tokenizer_token_to_id(const qs_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    int32_t id = smap_get(&t->added_map, token, n);
    return id >= 0 ? id : smap_get(&t->vocab, token, n);
}

const char *qs_tokenizer_id_to_token(const qs_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->size) return NULL;
    if (t->added_of_id[id] >= 0) return t->added[t->added_of_id[id]].content;
    return id < t->vocab_r_size ? t->vocab_r[id] : NULL;
}

bool qs_tokenizer_is_special(const qs_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->size && t->added_of_id[id] >= 0 && t->added[t->added_of_id[id]].special;
}

/* ======================================================================
 * Encode
 * ==================================================================== */

typedef struct piece {
    size_t off, len; /* into enc.arena */
    int32_t id;      /* >= 0: an added token, already an id */
    bool origin;     /* starts at byte 0 of the input */
} piece;

typedef struct pvec {
    piece *p;
    size_t n, cap;
} pvec;

typedef struct span {
    size_t s, e;
    bool m;
} span;

typedef struct sym {
    int32_t c, prev, next;
    uint32_t len;
} sym;

typedef struct hent {
    uint32_t rank, pos;
    int32_t new_id;
} hent;

typedef struct enc {
    const qs_tokenizer *t;
    qs_error *err;
    bool no_prefix;
    re_state rs;
    sbuf arena, nb, tmp;
    pvec cur, nxt;
    span *sp;
    size_t n_sp, cap_sp;
    sym *sy;
    size_t cap_sy;
    hent *heap;
    size_t n_heap, cap_heap;
    /* word cache: piece text → run of ids in cache_ids (words repeat a lot) */
    smap cache;
    qs_token_ids cache_ids;
    uint32_t *cache_run; /* pairs (offset, count) */
    size_t n_run, cap_run;
} enc;

static bool pvec_push(pvec *v, piece p)
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

static void enc_swap(enc *e)
{
    pvec t = e->cur;
    e->cur = e->nxt;
    e->nxt = t;
    e->nxt.n = 0;
}

static bool span_push(enc *e, size_t s, size_t en, bool m)
{
    if (e->n_sp == e->cap_sp) {
        size_t cap = e->cap_sp ? e->cap_sp * 2 : 64;
        span *q = realloc(e->sp, cap * sizeof *q);
        if (!q) return false;
        e->sp = q;
        e->cap_sp = cap;
    }
    e->sp[e->n_sp++] = (span){s, en, m};
    return true;
}

static bool is_word_char(enc *e, const char *s, size_t at)
{
    size_t l;
    uint32_t c = utf8_get(s + at, &l);
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    return pcre2_match(e->t->word_re, (PCRE2_SPTR)(s + at), l, 0, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, e->rs.md,
                       e->rs.mctx) >= 0;
}

/* Splits piece p on the added tokens of `set` (HF AddedVocabulary::find_matches:
 * leftmost-longest, then single_word / lstrip / rstrip). */
static qs_status split_added(enc *e, const match_set *set, piece p)
{
    const qs_tokenizer *t = e->t;
    if (p.id >= 0 || !set->n) return pvec_push(&e->nxt, p) ? QS_OK : nomem(t, e->err);
    const char *s = e->arena.p + p.off;
    size_t n = p.len, start_offset = 0, i = 0;
    while (i < n) {
        int tok = -1;
        size_t ms = 0, ml = 0;
        for (size_t j = i; j < n && tok < 0; j++) {
            unsigned char c = (unsigned char)s[j];
            for (size_t k = set->bucket[c]; k < set->bucket[c + 1]; k++) {
                const match_pat *mp = &set->pats[k];
                if (mp->len <= n - j && memcmp(s + j, mp->pat, mp->len) == 0) {
                    tok = mp->tok;
                    ms = j;
                    ml = mp->len;
                    break;
                }
            }
        }
        if (tok < 0) break;
        i = ms + ml; /* the match is consumed even when single_word discards it */
        const added_tok *a = &t->added[tok];
        size_t start = ms, stop = ms + ml;
        if (a->single_word) {
            bool start_space = start == 0, stop_space = stop == n;
            if (!start_space) {
                size_t j = start - 1;
                while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                start_space = !is_word_char(e, s, j);
            }
            if (!stop_space) stop_space = !is_word_char(e, s, stop);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start, l;
            while (ns > 0) {
                size_t j = ns - 1;
                while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                if (!uni_is_space(utf8_get(s + j, &l))) break;
                ns = j;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            size_t l;
            while (stop < n && uni_is_space(utf8_get(s + stop, &l))) stop += l;
        }
        if (start_offset < start &&
            !pvec_push(&e->nxt, (piece){p.off + start_offset, start - start_offset, -1, p.origin && start_offset == 0}))
            return nomem(t, e->err);
        if (!pvec_push(&e->nxt, (piece){p.off + start, stop - start, a->id, false})) return nomem(t, e->err);
        start_offset = stop;
    }
    if (start_offset < n &&
        !pvec_push(&e->nxt, (piece){p.off + start_offset, n - start_offset, -1, p.origin && start_offset == 0}))
        return nomem(t, e->err);
    return QS_OK;
}

/* Appends bytes to the arena and returns their offset (SIZE_MAX on OOM). */
static size_t arena_add(enc *e, const char *s, size_t n)
{
    size_t off = e->arena.n;
    return sbuf_add(&e->arena, s, n) ? off : SIZE_MAX;
}

/* Fills e->sp with the matches of the pattern in s (regex or literal). */
static qs_status find_matches(enc *e, const pcre2_code *re, const char *lit, size_t lit_len, const char *s, size_t n)
{
    e->n_sp = 0;
    size_t i = 0, ms, me;
    for (;;) {
        if (re) {
            int rc = re_next(re, &e->rs, s, n, i, &ms, &me);
            if (rc < 0) return qs_error_set(e->err, QS_ERR_INPUT, "%s: regex match failed (PCRE2 error %d)", e->t->name, rc);
            if (!rc) break;
        } else {
            const char *f = lit_len <= n - i ? memmem(s + i, n - i, lit, lit_len) : NULL;
            if (!f) break;
            ms = (size_t)(f - s);
            me = ms + lit_len;
        }
        if (!span_push(e, ms, me, true)) return nomem(e->t, e->err);
        i = me;
    }
    return QS_OK;
}

/* HF NormalizedString::split: matches in e->sp → pieces, per behavior. */
static qs_status split_by(enc *e, piece p, split_behavior b, bool invert)
{
    /* matches → spans covering the piece */
    size_t nm = e->n_sp, prev = 0;
    span *m = malloc((2 * nm + 1) * sizeof *m);
    if (!m) return nomem(e->t, e->err);
    size_t k = 0;
    for (size_t i = 0; i < nm; i++) {
        if (prev != e->sp[i].s) m[k++] = (span){prev, e->sp[i].s, false};
        m[k++] = (span){e->sp[i].s, e->sp[i].e, true};
        prev = e->sp[i].e;
    }
    if (prev != p.len) m[k++] = (span){prev, p.len, false};
    if (invert)
        for (size_t i = 0; i < k; i++) m[i].m = !m[i].m;
    /* behavior → output spans (reusing e->sp) */
    e->n_sp = 0;
    bool ok = true, prev_match = false;
    switch (b) {
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < k && ok; i++) ok = span_push(e, m[i].s, m[i].e, false);
        break;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < k && ok; i++)
            if (!m[i].m) ok = span_push(e, m[i].s, m[i].e, false);
        break;
    case SPLIT_MERGED_PREV:
        for (size_t i = 0; i < k && ok; i++) {
            if (m[i].m && !prev_match && e->n_sp) e->sp[e->n_sp - 1].e = m[i].e;
            else ok = span_push(e, m[i].s, m[i].e, false);
            prev_match = m[i].m;
        }
        break;
    case SPLIT_MERGED_NEXT:
        for (size_t i = k; i-- > 0 && ok;) {
            if (m[i].m && !prev_match && e->n_sp) e->sp[e->n_sp - 1].s = m[i].s;
            else ok = span_push(e, m[i].s, m[i].e, false);
            prev_match = m[i].m;
        }
        for (size_t i = 0; i < e->n_sp / 2; i++) {
            span x = e->sp[i];
            e->sp[i] = e->sp[e->n_sp - 1 - i];
            e->sp[e->n_sp - 1 - i] = x;
        }
        break;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < k && ok; i++) {
            if (m[i].m == prev_match && e->n_sp) e->sp[e->n_sp - 1].e = m[i].e;
            else ok = span_push(e, m[i].s, m[i].e, false);
            prev_match = m[i].m;
        }
        break;
    }
    free(m);
    if (!ok) return nomem(e->t, e->err);
    for (size_t i = 0; i < e->n_sp; i++) {
        span s = e->sp[i];
        if (s.e > s.s && !pvec_push(&e->nxt, (piece){p.off + s.s, s.e - s.s, -1, p.origin && s.s == 0}))
            return nomem(e->t, e->err);
    }
    return QS_OK;
}

/* The byte-level mapping of every byte of a piece (appended to the arena). */
static qs_status bytelevel_map(enc *e, piece *p)
{
    const qs_tokenizer *t = e->t;
    if (!sbuf_reserve(&e->arena, 2 * p->len)) return nomem(t, e->err);
    const unsigned char *src = (const unsigned char *)e->arena.p + p->off;
    char *dst = e->arena.p + e->arena.n;
    size_t o = 0;
    for (size_t i = 0; i < p->len; i++) {
        dst[o] = t->bl_utf8[src[i]][0];
        dst[o + 1] = t->bl_utf8[src[i]][1];
        o += t->bl_len[src[i]];
    }
    p->off = e->arena.n;
    p->len = o;
    e->arena.n += o;
    e->arena.p[e->arena.n] = '\0';
    return QS_OK;
}

static qs_status pre_apply(enc *e, const pre_op *op, piece p)
{
    const qs_tokenizer *t = e->t;
    if (p.id >= 0) return pvec_push(&e->nxt, p) ? QS_OK : nomem(t, e->err);
    bool skip_prefix = e->no_prefix && p.origin;
    switch (op->kind) {
    case PRE_BYTELEVEL: {
        if (op->add_prefix_space && !skip_prefix && p.len && e->arena.p[p.off] != ' ') {
            e->nb.n = 0;
            if (!sbuf_add(&e->nb, " ", 1) || !sbuf_add(&e->nb, e->arena.p + p.off, p.len)) return nomem(t, e->err);
            size_t off = arena_add(e, e->nb.p, e->nb.n);
            if (off == SIZE_MAX) return nomem(t, e->err);
            p.off = off;
            p.len = e->nb.n;
        }
        size_t first = e->nxt.n;
        if (op->use_regex) {
            QS_TRY(find_matches(e, t->gpt2_re, NULL, 0, e->arena.p + p.off, p.len));
            QS_TRY(split_by(e, p, SPLIT_ISOLATED, false));
        } else if (!pvec_push(&e->nxt, p)) {
            return nomem(t, e->err);
        }
        for (size_t i = first; i < e->nxt.n; i++) QS_TRY(bytelevel_map(e, &e->nxt.p[i]));
        return QS_OK;
    }
    case PRE_SPLIT:
        QS_TRY(find_matches(e, op->re, op->lit, op->lit_len, e->arena.p + p.off, p.len));
        return split_by(e, p, op->behavior, op->invert);
    case PRE_METASPACE: {
        e->nb.n = 0;
        const char *s = e->arena.p + p.off;
        for (size_t i = 0; i < p.len; i++) {
            bool ok = s[i] == ' ' ? sbuf_add(&e->nb, op->rep, op->rep_len) : sbuf_add(&e->nb, s + i, 1);
            if (!ok) return nomem(t, e->err);
        }
        bool starts = e->nb.n >= op->rep_len && memcmp(e->nb.p, op->rep, op->rep_len) == 0;
        bool prepend = !starts && !skip_prefix &&
                       (op->scheme == PREPEND_ALWAYS || (op->scheme == PREPEND_FIRST && p.origin));
        size_t off = e->arena.n;
        if (prepend && arena_add(e, op->rep, op->rep_len) == SIZE_MAX) return nomem(t, e->err);
        if (arena_add(e, e->nb.p, e->nb.n) == SIZE_MAX) return nomem(t, e->err);
        p.off = off;
        p.len = e->arena.n - off;
        if (!op->split) return pvec_push(&e->nxt, p) ? QS_OK : nomem(t, e->err);
        QS_TRY(find_matches(e, NULL, op->rep, op->rep_len, e->arena.p + p.off, p.len));
        return split_by(e, p, SPLIT_MERGED_NEXT, false);
    }
    case PRE_DIGITS:
        QS_TRY(find_matches(e, t->digit_re, NULL, 0, e->arena.p + p.off, p.len));
        return split_by(e, p, op->individual_digits ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, false);
    case PRE_WHITESPACE:
        QS_TRY(find_matches(e, t->ws_re, NULL, 0, e->arena.p + p.off, p.len));
        return split_by(e, p, SPLIT_REMOVED, true);
    case PRE_WSSPLIT:
        QS_TRY(find_matches(e, t->space_re, NULL, 0, e->arena.p + p.off, p.len));
        return split_by(e, p, SPLIT_REMOVED, false);
    }
    return qs_error_set(e->err, QS_ERR_INTERNAL, "%s: unknown pre-tokenizer", t->name);
}

/* ---- BPE (HF models/bpe: Word::merge_all with a min-heap on (rank, pos)) ---- */

static inline bool hent_less(hent a, hent b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static bool heap_push(enc *e, hent h)
{
    if (e->n_heap == e->cap_heap) {
        size_t cap = e->cap_heap ? e->cap_heap * 2 : 256;
        hent *q = realloc(e->heap, cap * sizeof *q);
        if (!q) return false;
        e->heap = q;
        e->cap_heap = cap;
    }
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!hent_less(h, e->heap[up])) break;
        e->heap[i] = e->heap[up];
        i = up;
    }
    e->heap[i] = h;
    return true;
}

static void heap_sift_down(enc *e, size_t i)
{
    hent x = e->heap[i];
    size_t n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && hent_less(e->heap[c + 1], e->heap[c])) c++;
        if (!hent_less(e->heap[c], x)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    e->heap[i] = x;
}

static hent heap_pop(enc *e)
{
    hent top = e->heap[0];
    e->heap[0] = e->heap[--e->n_heap];
    if (e->n_heap) heap_sift_down(e, 0);
    return top;
}

/* HF Word::merge_all on symbols sy[0..ns), then their ids appended to out. */
static qs_status merge_symbols(enc *e, sym *sy, int32_t ns, qs_token_ids *out)
{
    const qs_tokenizer *t = e->t;
    /* the initial pairs, heapified in O(n) */
    e->n_heap = 0;
    if ((size_t)ns > e->cap_heap) {
        hent *q = realloc(e->heap, (size_t)ns * sizeof *q);
        if (!q) return nomem(t, e->err);
        e->heap = q;
        e->cap_heap = (size_t)ns;
    }
    for (int32_t i = 0; i + 1 < ns; i++) {
        const pmap_ent *m = pmap_get(&t->merges, sy[i].c, sy[i + 1].c);
        if (m) e->heap[e->n_heap++] = (hent){m->rank, (uint32_t)i, m->new_id};
    }
    for (size_t i = e->n_heap / 2; i-- > 0;) heap_sift_down(e, i);
    while (e->n_heap) {
        hent top = heap_pop(e);
        sym *cur = &sy[top.pos];
        if (cur->len == 0 || cur->next == -1) continue;
        int32_t next_pos = cur->next;
        sym right = sy[next_pos];
        const pmap_ent *m = pmap_get(&t->merges, cur->c, right.c);
        if (!m || m->new_id != top.new_id) continue; /* expired entry */
        cur->c = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        sy[next_pos].len = 0;
        if (right.next > -1 && right.next < ns) sy[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            m = pmap_get(&t->merges, sy[cur->prev].c, cur->c);
            if (m && !heap_push(e, (hent){m->rank, (uint32_t)cur->prev, m->new_id})) return nomem(t, e->err);
        }
        if (cur->next >= 0 && cur->next < ns) {
            m = pmap_get(&t->merges, cur->c, sy[cur->next].c);
            if (m && !heap_push(e, (hent){m->rank, top.pos, m->new_id})) return nomem(t, e->err);
        }
    }
    for (int32_t i = 0; i < ns; i++)
        if (sy[i].len && !ids_push(out, sy[i].c)) return nomem(t, e->err);
    return QS_OK;
}

static qs_status bpe_word(enc *e, const char *w, size_t n, qs_token_ids *out)
{
    const qs_tokenizer *t = e->t;
    if (t->ignore_merges) {
        int32_t id = smap_get(&t->vocab, w, n);
        if (id >= 0) return ids_push(out, id) ? QS_OK : nomem(t, e->err);
    }
    if (n > e->cap_sy) {
        sym *q = realloc(e->sy, n * sizeof *q);
        if (!q) return nomem(t, e->err);
        e->sy = q;
        e->cap_sy = n;
    }
    sym *sy = e->sy;
    int32_t ns = 0;
#define ADD_SYM(id_, len_)                                                      \
    do {                                                                        \
        if (ns) sy[ns - 1].next = ns;                                           \
        sy[ns] = (sym){(id_), ns - 1, -1, (uint32_t)(len_)};                    \
        ns++;                                                                   \
    } while (0)
    int32_t unk_id = -1;
    size_t unk_len = 0, prev_i = 0;
    bool prev_vocab = false, cut = n >= 1024; /* cutting only pays off for long words */
    for (size_t i = 0, l; i < n; prev_i = i, i += l) {
        utf8_get(w + i, &l);
        int32_t id = smap_get(&t->vocab, w + i, l);
        if (id >= 0) {
            /* both characters are tokens and no token holds the pair: no merge
             * crosses here, so the left part is final (unk is flushed too) */
            if (cut && prev_vocab && unk_id < 0 && smap_get(&t->bigrams, w + prev_i, i + l - prev_i) < 0) {
                QS_TRY(merge_symbols(e, sy, ns, out));
                ns = 0;
            }
            prev_vocab = true;
            if (unk_id >= 0) {
                ADD_SYM(unk_id, unk_len);
                unk_id = -1;
            }
            ADD_SYM(id, l);
            continue;
        }
        prev_vocab = false;
        if (t->byte_fallback) {
            bool all = true;
            for (size_t k = 0; k < l; k++) all = all && t->byte_ids[(unsigned char)w[i + k]] >= 0;
            if (all) {
                for (size_t k = 0; k < l; k++) ADD_SYM(t->byte_ids[(unsigned char)w[i + k]], 1);
                continue;
            }
        }
        if (t->unk_token) {
            if (unk_id >= 0 && t->fuse_unk) {
                unk_len += l;
            } else {
                if (unk_id >= 0) ADD_SYM(unk_id, unk_len);
                unk_id = smap_get(&t->vocab, t->unk_token, strlen(t->unk_token));
                if (unk_id < 0)
                    return qs_error_set(e->err, QS_ERR_INPUT, "%s: model.unk_token '%s' is not in model.vocab",
                                        t->name, t->unk_token);
                unk_len = l;
            }
        }
    }
    if (unk_id >= 0) ADD_SYM(unk_id, unk_len);
#undef ADD_SYM
    return merge_symbols(e, sy, ns, out);
}



/* Words shorter than this are cached per encode call (HF caches < 256 bytes too). */
#define QS_TOK_CACHE_MAX 256

static qs_status model_piece(enc *e, piece p, qs_token_ids *out)
{
    const qs_tokenizer *t = e->t;
    if (p.id >= 0) return ids_push(out, p.id) ? QS_OK : nomem(t, e->err);
    const char *w = e->arena.p + p.off; /* the arena no longer grows in this stage */
    if (p.len >= QS_TOK_CACHE_MAX) return bpe_word(e, w, p.len, out);
    int32_t hit = smap_get(&e->cache, w, p.len);
    if (hit >= 0) {
        uint32_t off = e->cache_run[2 * hit], cnt = e->cache_run[2 * hit + 1];
        for (uint32_t k = 0; k < cnt; k++)
            if (!ids_push(out, e->cache_ids.ids[off + k])) return nomem(t, e->err);
        return QS_OK;
    }
    size_t before = out->n;
    QS_TRY(bpe_word(e, w, p.len, out));
    if (e->n_run == e->cap_run) {
        size_t cap = e->cap_run ? e->cap_run * 2 : 1024;
        uint32_t *q = realloc(e->cache_run, 2 * cap * sizeof *q);
        if (!q) return nomem(t, e->err);
        e->cache_run = q;
        e->cap_run = cap;
    }
    e->cache_run[2 * e->n_run] = (uint32_t)e->cache_ids.n;
    e->cache_run[2 * e->n_run + 1] = (uint32_t)(out->n - before);
    for (size_t k = before; k < out->n; k++)
        if (!ids_push(&e->cache_ids, out->ids[k])) return nomem(t, e->err);
    if (!smap_put(&e->cache, w, p.len, (int32_t)e->n_run)) return nomem(t, e->err);
    e->n_run++;
    return QS_OK;
}

static void enc_free(enc *e)
{
    re_state_free(&e->rs);
    sbuf_free(&e->arena);
    sbuf_free(&e->nb);
    sbuf_free(&e->tmp);
    free(e->cur.p);
    free(e->nxt.p);
    free(e->sp);
    free(e->sy);
    free(e->heap);
    smap_free(&e->cache);
    qs_token_ids_free(&e->cache_ids);
    free(e->cache_run);
}

static qs_status encode_pieces(enc *e, const char *text, size_t len, qs_token_ids *out)
{
    const qs_tokenizer *t = e->t;
    if (!sbuf_add(&e->arena, text, len) || !pvec_push(&e->cur, (piece){0, len, -1, true})) return nomem(t, e->err);
    /* 1. added tokens that match the raw text */
    for (size_t i = 0; i < e->cur.n; i++) QS_TRY(split_added(e, &t->raw_set, e->cur.p[i]));
    enc_swap(e);
    /* 2. normalize what is between them, then the added tokens that match normalized text */
    for (size_t i = 0; i < e->cur.n; i++) {
        piece p = e->cur.p[i];
        if (p.id < 0 && t->n_norms) {
            QS_TRY(normalize(t, &e->rs, e->arena.p + p.off, p.len, e->no_prefix && p.origin, &e->nb, &e->tmp, e->err));
            size_t off = arena_add(e, e->nb.p, e->nb.n);
            if (off == SIZE_MAX) return nomem(t, e->err);
            p.off = off;
            p.len = e->nb.n;
            if (!p.len) continue;
        }
        QS_TRY(split_added(e, &t->norm_set, p));
    }
    enc_swap(e);
    /* 3. pre-tokenizers, each over all pieces */
    for (size_t k = 0; k < t->n_pres; k++) {
        for (size_t i = 0; i < e->cur.n; i++) QS_TRY(pre_apply(e, &t->pres[k], e->cur.p[i]));
        enc_swap(e);
    }
    /* 4. the model */
    for (size_t i = 0; i < e->cur.n; i++) QS_TRY(model_piece(e, e->cur.p[i], out));
    return QS_OK;
}

qs_status qs_tokenizer_encode(const qs_tokenizer *t, const char *text, size_t len, const qs_encode_options *opts,
                              qs_token_ids *out, qs_error *err)
{
    size_t bad = utf8_check(text, len);
    if (bad != len) return qs_error_set(err, QS_ERR_INPUT, "text: invalid UTF-8 at byte %zu", bad);
    bool special = opts && opts->add_special_tokens;
    if (special && t->post_unsupported)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s (encode without special tokens)", t->post_unsupported);
    enc e = {0};
    e.t = t;
    e.err = err;
    e.no_prefix = opts && opts->no_prefix_space;
    if (!re_state_init(&e.rs)) {
        enc_free(&e);
        return nomem(t, err);
    }
    size_t base = out->n;
    qs_status st = len ? encode_pieces(&e, text, len, out) : QS_OK;
    enc_free(&e);
    if (st != QS_OK) {
        out->n = base;
        return st;
    }
    if (special && t->n_post_pre) {
        for (size_t i = 0; i < t->n_post_pre; i++)
            if (!ids_push(out, 0)) return nomem(t, err);
        memmove(out->ids + base + t->n_post_pre, out->ids + base, (out->n - base - t->n_post_pre) * sizeof *out->ids);
        memcpy(out->ids + base, t->post_pre, t->n_post_pre * sizeof *out->ids);
    }
    if (special)
        for (size_t i = 0; i < t->n_post_suf; i++)
            if (!ids_push(out, t->post_suf[i])) return nomem(t, err);
    return QS_OK;
}

/* ======================================================================
 * Decode (HF decoders' decode_chain over the token strings, then concat)
 * ==================================================================== */

typedef struct svec {
    sbuf *s;
    size_t n, cap;
} svec;

static sbuf *svec_new(svec *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        sbuf *q = realloc(v->s, cap * sizeof *q);
        if (!q) return NULL;
        v->s = q;
        v->cap = cap;
    }
    v->s[v->n] = (sbuf){0};
    if (!sbuf_reserve(&v->s[v->n], 0)) return NULL;
    return &v->s[v->n++];
}

static void svec_free(svec *v)
{
    for (size_t i = 0; i < v->n; i++) sbuf_free(&v->s[i]);
    free(v->s);
    *v = (svec){0};
}

static const char FFFD[] = "\xef\xbf\xbd";

/* Rust String::from_utf8_lossy. */
static bool add_lossy(sbuf *o, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t sub = 1, l = utf8_seq((const unsigned char *)s + i, n - i, &sub);
        if (l) {
            if (!sbuf_add(o, s + i, l)) return false;
            i += l;
        } else {
            if (!sbuf_add(o, FFFD, 3)) return false;
            i += sub;
        }
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool flush_bytes(svec *out, sbuf *bytes)
{
    if (!bytes->n) return true;
    if (utf8_check(bytes->p, bytes->n) == bytes->n) {
        sbuf *d = svec_new(out);
        if (!d || !sbuf_add(d, bytes->p, bytes->n)) return false;
    } else {
        for (size_t k = 0; k < bytes->n; k++) {
            sbuf *d = svec_new(out);
            if (!d || !sbuf_add(d, FFFD, 3)) return false;
        }
    }
    bytes->n = 0;
    return true;
}

static qs_status dec_apply(const qs_tokenizer *t, const dec_op *op, re_state *rs, svec *in, svec *out, qs_error *err)
{
    switch (op->kind) {
    case DEC_BYTELEVEL: {
        uint32_t b2c[256];
        int c2b[324];
        bytelevel_table(b2c);
        for (int i = 0; i < 324; i++) c2b[i] = -1;
        for (int b = 0; b < 256; b++) c2b[b2c[b]] = b;
        sbuf bytes = {0};
        bool ok = true;
        for (size_t i = 0; i < in->n && ok; i++) {
            const sbuf *s = &in->s[i];
            size_t mark = bytes.n;
            bool mapped = true;
            for (size_t j = 0, l; j < s->n && ok; j += l) {
                uint32_t c = utf8_get(s->p + j, &l);
                if (c >= 324 || c2b[c] < 0) {
                    mapped = false;
                    break;
                }
                char b = (char)c2b[c];
                ok = sbuf_add(&bytes, &b, 1);
            }
            if (!mapped) {
                bytes.n = mark;
                ok = sbuf_add(&bytes, s->p, s->n);
            }
        }
        sbuf *d = ok ? svec_new(out) : NULL;
        ok = d && add_lossy(d, bytes.p ? bytes.p : "", bytes.n);
        sbuf_free(&bytes);
        return ok ? QS_OK : nomem(t, err);
    }
    case DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            sbuf *d = svec_new(out);
            if (!d) return nomem(t, err);
            int rc = replace_all(op->lit, op->lit_len, op->re, rs, in->s[i].p, in->s[i].n, op->content, op->clen, d);
            if (rc == -1) return qs_error_set(err, QS_ERR_INPUT, "%s: decoder Replace: regex match failed", t->name);
            if (rc == -2) return nomem(t, err);
        }
        return QS_OK;
    case DEC_BYTEFALLBACK: {
        sbuf bytes = {0};
        bool ok = true;
        for (size_t i = 0; i < in->n && ok; i++) {
            const sbuf *s = &in->s[i];
            int hi, lo;
            if (s->n == 6 && memcmp(s->p, "<0x", 3) == 0 && s->p[5] == '>' && (hi = hexval(s->p[3])) >= 0 &&
                (lo = hexval(s->p[4])) >= 0) {
                char b = (char)(hi * 16 + lo);
                ok = sbuf_add(&bytes, &b, 1);
                continue;
            }
            ok = flush_bytes(out, &bytes);
            sbuf *d = ok ? svec_new(out) : NULL;
            ok = d && sbuf_add(d, s->p, s->n);
        }
        ok = ok && flush_bytes(out, &bytes);
        sbuf_free(&bytes);
        return ok ? QS_OK : nomem(t, err);
    }
    case DEC_FUSE: {
        sbuf *d = svec_new(out);
        if (!d) return nomem(t, err);
        for (size_t i = 0; i < in->n; i++)
            if (!sbuf_add(d, in->s[i].p, in->s[i].n)) return nomem(t, err);
        return QS_OK;
    }
    case DEC_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const sbuf *s = &in->s[i];
            size_t a = 0, b = s->n, l;
            for (long k = 0; k < op->start && a < s->n; k++) {
                if (utf8_get(s->p + a, &l) != op->strip_char) break;
                a += l;
            }
            for (long k = 0; k < op->stop && b > a; k++) {
                size_t j = b - 1;
                while (j > 0 && ((unsigned char)s->p[j] & 0xC0) == 0x80) j--;
                if (utf8_get(s->p + j, &l) != op->strip_char) break;
                b = j;
            }
            sbuf *d = svec_new(out);
            if (!d || !sbuf_add(d, s->p + a, b - a)) return nomem(t, err);
        }
        return QS_OK;
    case DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            const sbuf *s = &in->s[i];
            sbuf *d = svec_new(out);
            if (!d) return nomem(t, err);
            for (size_t j = 0; j < s->n;) {
                if (s->n - j >= op->rep_len && memcmp(s->p + j, op->rep, op->rep_len) == 0) {
                    if (!(i == 0 && op->scheme != PREPEND_NEVER) && !sbuf_add(d, " ", 1)) return nomem(t, err);
                    j += op->rep_len;
                } else {
                    if (!sbuf_add(d, s->p + j, 1)) return nomem(t, err);
                    j++;
                }
            }
        }
        return QS_OK;
    }
    return qs_error_set(err, QS_ERR_INTERNAL, "%s: unknown decoder", t->name);
}

qs_status qs_tokenizer_decode(const qs_tokenizer *t, const int32_t *ids, size_t n, bool skip_special_tokens, char **out,
                              size_t *out_len, qs_error *err)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    svec a = {0}, b = {0};
    re_state rs = {0};
    qs_status st = QS_OK;
    if (!re_state_init(&rs)) {
        st = nomem(t, err);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->size) continue;
        const char *s;
        size_t len;
        int32_t ai = t->added_of_id[id];
        if (ai >= 0) {
            if (skip_special_tokens && t->added[ai].special) continue;
            /* HF (0.2x) decodes a normalized added token as its normalized
             * form (TinyStories: "▁<|start_story|>"); the decoder then turns
             * the "▁" into a space as for any other token */
            s = t->added[ai].normalized ? t->norm_contents[ai] : t->added[ai].content;
            len = strlen(s);
        } else if (id < t->vocab_r_size && t->vocab_r[id]) {
            s = t->vocab_r[id];
            len = t->vocab_r_len[id];
        } else {
            continue;
        }
        sbuf *d = svec_new(&a);
        if (!d || !sbuf_add(d, s, len)) {
            st = nomem(t, err);
            goto done;
        }
    }
    sbuf res = {0};
    if (!t->has_decoder) {
        /* HF without a decoder joins the tokens with spaces */
        for (size_t i = 0; i < a.n; i++)
            if ((i && !sbuf_add(&res, " ", 1)) || !sbuf_add(&res, a.s[i].p, a.s[i].n)) {
                sbuf_free(&res);
                st = nomem(t, err);
                goto done;
            }
    } else {
        for (size_t k = 0; k < t->n_decs; k++) {
            if ((st = dec_apply(t, &t->decs[k], &rs, &a, &b, err)) != QS_OK) goto done;
            svec sw = a;
            a = b;
            b = sw;
            svec_free(&b);
        }
        for (size_t i = 0; i < a.n; i++)
            if (!sbuf_add(&res, a.s[i].p, a.s[i].n)) {
                sbuf_free(&res);
                st = nomem(t, err);
                goto done;
            }
    }
    if (!sbuf_reserve(&res, 0)) {
        st = nomem(t, err);
        goto done;
    }
    res.p[res.n] = '\0';
    *out = res.p;
    if (out_len) *out_len = res.n;
done:
    svec_free(&a);
    svec_free(&b);
    re_state_free(&rs);
    return st;
}
