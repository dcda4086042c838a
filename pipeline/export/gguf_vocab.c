/* gguf_vocab.c — the vocabulary of the GGUF export: tokenizer.json (with
 * tokenizer_config.json and config.json beside the model) turned into the
 * tokenizer.ggml.* metadata keys, following llama.cpp's convert_hf_to_gguf.py
 * (docs/gguf.md, "Vocabulary"): tokens in id order, token types, merge-rank
 * scores (llama) or merges (gpt2), the pre-tokenizer name, special ids and
 * add_*_token flags, the chat template; for a sentencepiece-style vocabulary
 * without a token for every byte, the "<0xXX>" byte tokens llama.cpp needs,
 * appended after the model's rows (the exporter pads the embedding to match).
 *
 * It is separate from export_gguf.c because it shares nothing with the tensor
 * plan and the parallel writes but the layout it adds its keys to: it is the
 * exporter's only JSON reading and all of its knowledge of llama.cpp's token
 * conventions (about three quarters the size of export_gguf.c). The interface
 * is gguf_vocab.h, private to pipeline/export/. */
#include "pipeline/export/gguf_vocab.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/strbuf.h"

/* ==== tokenizer.json → the vocabulary ============================================= */

#define SP_SPACE "\xE2\x96\x81" /* U+2581 "▁", sentencepiece's space */

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };
enum { SP_BOS = 0, SP_EOS, SP_UNK, SP_SEP, SP_PAD, SP_CLS, SP_MASK, SP_COUNT };
static const char *const sp_typ[SP_COUNT] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};

typedef struct qs_gguf_vocab {
    const char *model;        /* "llama", "gpt2", "no_vocab" */
    const char *pre;          /* tokenizer.ggml.pre */
    int64_t n;                /* tokens written: the model's rows + n_pad */
    int64_t n_pad;            /* byte tokens appended after the model's rows */
    int64_t unk_id;           /* HF's unknown token (model.unk_token), -1 if none */
    char **tok;               /* n tokens (owned copies) */
    float *score;             /* llama only */
    int32_t *type;
    char **merges;            /* gpt2 only */
    size_t n_merges;
    int64_t special[SP_COUNT]; /* -1 when unset */
    int add[SP_COUNT];        /* -1 unset, 0, 1 (bos, eos, sep) */
    int add_space_prefix;     /* -1 unset */
    char *chat_template;
    char warning[1024];       /* what llama.cpp will tokenize differently from HF; "" if nothing */
} vocab;

static void vocab_free(vocab *v)
{
    if (v->tok)
        for (int64_t i = 0; i < v->n; i++) free(v->tok[i]);
    for (size_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tok), free(v->score), free(v->type), free(v->merges), free(v->chat_template);
    memset(v, 0, sizeof *v);
}

static bool is_byte_token(const char *s)
{
    static const char hex[] = "0123456789abcdefABCDEF";
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && strchr(hex, s[3]) && strchr(hex, s[4]);
}

typedef struct vocab_entry {
    const char *s;
    int64_t id;
} vocab_entry;

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const vocab_entry *)a)->s, ((const vocab_entry *)b)->s);
}

/* llama.cpp's converter treats these added tokens as control tokens too. */
static bool looks_special(const char *t)
{
    size_t n = strlen(t);
    if (!strcmp(t, "<pad>") || !strcmp(t, "<mask>")) return true;
    return n >= 4 && !strncmp(t, "<|", 2) && !strcmp(t + n - 2, "|>");
}

/* True when a pre-tokenizer / decoder tree has a node of `type`. */
static bool has_type(const cJSON *node, const char *type)
{
    if (!cJSON_IsObject(node)) return false;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(node, "type");
    if (cJSON_IsString(t) && !strcmp(t->valuestring, type)) return true;
    static const char *const lists[] = {"pretokenizers", "decoders", "processors", "normalizers"};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(node, lists[i]);
        const cJSON *c;
        cJSON_ArrayForEach(c, arr) if (has_type(c, type)) return true;
    }
    return false;
}

/* ==== what llama.cpp can and cannot do like HF ====================================
 *
 * llama.cpp's SPM tokenizer (tokenizer.ggml.model "llama") merges over the
 * whole text like HF's BPE without a pre-tokenizer, but a character it has no
 * token for is written as its bytes, each looked up as "<0xXX>" and then as the
 * one-byte string — with unordered_map::at, which throws and aborts the
 * process when neither exists (llama-vocab.cpp, byte_to_token). HF maps such a
 * character to <unk> when any of its byte tokens is missing. GGUF has no key
 * for "unknown → <unk>", so the missing byte tokens are appended to the
 * vocabulary (type BYTE), and the exporter gives them embedding rows copied
 * from <unk>'s: llama.cpp then writes the character as its UTF-8 bytes, each
 * of which feeds the model what HF's <unk> feeds it, and gives HF's ids
 * wherever the vocabulary has the pieces.
 *
 * Their score: llama.cpp's SPM makes a bigram of two adjacent symbols only when
 * their joined text is a token, and merges the highest score first; the byte
 * fallback looks tokens up by text and ignores scores. So a byte token's score
 * matters only when the text itself spells "<0xXX>" from pieces the vocabulary
 * has; it is set below every other score, and the warning names a vocabulary
 * where that spelling is possible. */

/* The bytes llama.cpp's SPM byte fallback finds no token for: neither
 * "<0xXX>" (upper-case hex, as both HF and llama.cpp spell it) nor, for ASCII,
 * the character itself. Fills missing[] and returns how many. */
static int missing_bytes(const cJSON *vmap, uint8_t missing[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        char name[8], one[2] = {(char)b, 0};
        snprintf(name, sizeof name, "<0x%02X>", b);
        if (cJSON_GetObjectItemCaseSensitive(vmap, name)) continue;
        if (b > 0 && b < 0x80 && cJSON_GetObjectItemCaseSensitive(vmap, one)) continue;
        missing[n++] = (uint8_t)b;
    }
    return n;
}

static bool str_is(const cJSON *node, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(node, key);
    return cJSON_IsString(v) && !strcmp(v->valuestring, want);
}

/* The nodes of a normalizer / pre-tokenizer tree (Sequence flattened). */
static void each_node(const cJSON *node, const char *list, void (*fn)(const cJSON *, void *), void *ctx)
{
    if (!cJSON_IsObject(node)) return;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(node, list);
    if (str_is(node, "type", "Sequence") && cJSON_IsArray(arr)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, arr) each_node(c, list, fn, ctx);
        return;
    }
    fn(node, ctx);
}

typedef struct style_scan {
    bool prefix;               /* a "▁" goes before the text (Prepend / Metaspace) */
    bool multi_digit;          /* a token joins a digit with something else */
    qs_strbuf *why;            /* what llama.cpp does not do */
} style_scan;

static void why_add(qs_strbuf *why, const char *what)
{
    if (why->len) qs_strbuf_str(why, "; ");
    qs_strbuf_str(why, what);
}

/* Sentencepiece-style normalizers llama.cpp applies itself: Prepend("▁") (its
 * add_space_prefix) and Replace(" " → "▁") (its whitespace escaping). */
static void spm_normalizer(const cJSON *n, void *p)
{
    style_scan *s = p;
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
    if (str_is(n, "type", "Prepend") && str_is(n, "prepend", SP_SPACE)) s->prefix = true;
    else if (str_is(n, "type", "Replace") && str_is(pat, "String", " ") && str_is(n, "content", SP_SPACE)) return;
    else {
        char what[96];
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(n, "type");
        snprintf(what, sizeof what, "normalizer %s is not applied by llama.cpp",
                 cJSON_IsString(t) ? t->valuestring : "(untyped)");
        why_add(s->why, what);
    }
}

/* Pre-tokenizers llama.cpp's SPM tokenizer matches: Metaspace("▁") (split or
 * not: no token holds a "▁" after its start) and Digits(individual) while no
 * token joins a digit with anything. */
static void spm_pre(const cJSON *n, void *p)
{
    style_scan *s = p;
    if (str_is(n, "type", "Metaspace") && str_is(n, "replacement", SP_SPACE)) {
        if (!str_is(n, "prepend_scheme", "never")) s->prefix = true;
        return;
    }
    if (str_is(n, "type", "Digits") && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(n, "individual_digits")) &&
        !s->multi_digit)
        return;
    char what[96];
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(n, "type");
    snprintf(what, sizeof what, "pre-tokenizer %s is not applied by llama.cpp",
             cJSON_IsString(t) ? t->valuestring : "(untyped)");
    why_add(s->why, what);
}

static void bytelevel_prefix(const cJSON *n, void *p)
{
    if (str_is(n, "type", "ByteLevel") && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(n, "add_prefix_space")))
        *(bool *)p = true;
}

/* True when a token joins a digit with anything else: then llama.cpp's SPM
 * merges can make pieces that HF's Digits(individual) pre-tokenizer rules out. */
static bool digit_joined(const cJSON *vmap)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, vmap)
    {
        if (is_byte_token(e->string) || strlen(e->string) < 2) continue;
        if (strpbrk(e->string, "0123456789")) return true;
    }
    return false;
}

/* llama.cpp identifies a byte-level pre-tokenizer by name. We recognise the
 * two common ones from their structure; anything else is "default". */
static const char *gpt2_pre(const cJSON *pre)
{
    static const char llama3_regex[] =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (!cJSON_IsString(t)) return "default";
    if (!strcmp(t->valuestring, "ByteLevel")) {
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pre, "use_regex");
        return (!re || cJSON_IsTrue(re)) ? "gpt-2" : "default";
    }
    if (!strcmp(t->valuestring, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
        if (cJSON_GetArraySize(list) != 2) return "default";
        const cJSON *split = cJSON_GetArrayItem(list, 0), *bl = cJSON_GetArrayItem(list, 1);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(split, "type");
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex");
        const cJSON *bt = cJSON_GetObjectItemCaseSensitive(bl, "type");
        if (cJSON_IsString(st) && !strcmp(st->valuestring, "Split") && cJSON_IsString(pat) &&
            !strcmp(pat->valuestring, llama3_regex) && cJSON_IsString(bt) && !strcmp(bt->valuestring, "ByteLevel"))
            return "llama-bpe";
    }
    return "default";
}

/* "a b" or ["a", "b"] → "a b"; spaces inside a pair's parts (the list form
 * allows them) are written as U+0120, as llama.cpp's converter does. */
static char *merge_string(const cJSON *mg)
{
    if (cJSON_IsString(mg)) return strdup(mg->valuestring);
    if (!cJSON_IsArray(mg) || cJSON_GetArraySize(mg) != 2) return NULL;
    const cJSON *a = cJSON_GetArrayItem(mg, 0), *b = cJSON_GetArrayItem(mg, 1);
    if (!cJSON_IsString(a) || !cJSON_IsString(b)) return NULL;
    size_t na = strlen(a->valuestring), nb = strlen(b->valuestring);
    char *s = malloc(2 * (na + nb) + 2), *p = s;
    if (!s) return NULL;
    for (int part = 0; part < 2; part++) {
        const char *src = part ? b->valuestring : a->valuestring;
        if (part) *p++ = ' ';
        for (; *src; src++) {
            if (*src == ' ') *p++ = (char)0xC4, *p++ = (char)0xA0;
            else *p++ = *src;
        }
    }
    *p = '\0';
    return s;
}

/* The content of a tokenizer_config "<typ>_token" entry (a string or {content}). */
static const char *config_token(const cJSON *tc, const char *typ)
{
    char key[32];
    snprintf(key, sizeof key, "%s_token", typ);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(tc, key);
    if (cJSON_IsString(e)) return e->valuestring;
    if (cJSON_IsObject(e)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static int64_t added_token_id(const cJSON *added, const char *content)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        /* (a number outside [0, 2^53) is no id: never cast it) */
        if (cJSON_IsString(c) && cJSON_IsNumber(id) && !strcmp(c->valuestring, content))
            return id->valuedouble >= 0 && id->valuedouble < 9007199254740992.0 ? (int64_t)id->valuedouble : -1;
    }
    return -1;
}

static cJSON *load_json(const char *path, qs_status *st, qs_error *err)
{
    char *text = NULL;
    size_t len = 0;
    *st = qs_read_file(path, &text, &len, err);
    if (*st != QS_OK) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *st = qs_error_set(err, QS_ERR_INPUT, "%s: not a JSON object", path);
        return NULL;
    }
    return j;
}

/* Special token ids and add_*_token flags, as llama.cpp's SpecialVocab finds
 * them: the post-processor's template, then tokenizer_config.json (<typ>_token
 * looked up among the added tokens, add_<typ>_token), then config.json
 * (<typ>_token_id); the first id found for a type wins. */
static void special_tokens(vocab *v, const cJSON *tj, const cJSON *tc, const cJSON *cfg, bool *special)
{
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    const char *bos = tc ? config_token(tc, "bos") : NULL, *eos = tc ? config_token(tc, "eos") : NULL;
    const char *cls = tc ? config_token(tc, "cls") : NULL;
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(tj, "post_processor");
    const cJSON *procs = cJSON_GetObjectItemCaseSensitive(pp, "processors");
    const cJSON *one = pp;
    int count = procs ? cJSON_GetArraySize(procs) : (cJSON_IsObject(pp) ? 1 : 0);
    for (int i = 0; i < count; i++) {
        one = procs ? cJSON_GetArrayItem(procs, i) : pp;
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(one, "type");
        if (!cJSON_IsString(ty)) continue;
        if (!strcmp(ty->valuestring, "RobertaProcessing")) {
            v->add[SP_BOS] = v->add[SP_EOS] = v->add[SP_SEP] = 1;
            continue;
        }
        if (strcmp(ty->valuestring, "TemplateProcessing")) continue;
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(one, "single");
        int ns = cJSON_GetArraySize(single);
        if (ns <= 1) continue;
        const cJSON *first = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
        const cJSON *last = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, ns - 1), "SpecialToken"), "id");
        if (cJSON_IsString(first)) {
            if (!tc) bos = first->valuestring;
            v->add[SP_BOS] = (bos && !strcmp(first->valuestring, bos)) || (cls && !strcmp(first->valuestring, cls));
        }
        if (cJSON_IsString(last)) {
            if (!tc) eos = last->valuestring;
            v->add[SP_EOS] = eos && !strcmp(last->valuestring, eos);
        }
    }
    if (tc) {
        for (int s = 0; s < SP_COUNT; s++) {
            char key[32];
            snprintf(key, sizeof key, "add_%s_token", sp_typ[s]);
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(tc, key);
            if (cJSON_IsBool(b) && (s == SP_BOS || s == SP_EOS || s == SP_SEP)) v->add[s] = cJSON_IsTrue(b);
            const char *content = config_token(tc, sp_typ[s]);
            int64_t id = content ? added_token_id(added, content) : -1;
            if (id >= 0 && id < v->n && v->special[s] < 0) v->special[s] = id;
            /* transformers' all_special_ids: the tokenizer_config's tokens */
            if (id >= 0 && id < v->n && special) special[id] = true;
        }
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(tc, "chat_template");
        if (cJSON_IsString(ct)) v->chat_template = strdup(ct->valuestring);
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(tc, "add_prefix_space");
        if (cJSON_IsBool(aps)) v->add_space_prefix = cJSON_IsTrue(aps);
    }
    if (cfg) {
        for (int s = 0; s < SP_COUNT; s++) {
            char key[32];
            snprintf(key, sizeof key, "%s_token_id", sp_typ[s]);
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(cfg, key);
            if (cJSON_IsNumber(id) && id->valuedouble >= 0 && id->valuedouble < (double)v->n && v->special[s] < 0)
                v->special[s] = (int64_t)id->valuedouble;
        }
    }
}

/* True when the text "<0xXX>" could be merged into that byte token by
 * llama.cpp's SPM: some split of it into two parts that are each a single
 * character or a vocabulary piece (a necessary condition for the bigram). */
static bool spelled_by_pieces(const char *name, const vocab_entry *sorted, size_t n_sorted)
{
    size_t len = strlen(name);
    for (size_t i = 1; i < len; i++) {
        char left[8];
        memcpy(left, name, i);
        left[i] = '\0';
        vocab_entry kl = {left, 0}, kr = {name + i, 0};
        bool l_ok = i == 1 || bsearch(&kl, sorted, n_sorted, sizeof *sorted, cmp_entry);
        bool r_ok = len - i == 1 || bsearch(&kr, sorted, n_sorted, sizeof *sorted, cmp_entry);
        if (l_ok && r_ok) return true;
    }
    return false;
}

/* Appends the byte tokens llama.cpp's SPM byte fallback needs (see "what
 * llama.cpp can and cannot do like HF") after the model's v->n rows, scored
 * below every merge, and says so in the warning. HF's <unk> (model.unk_token)
 * is the row the exporter copies for them. */
static qs_status append_byte_tokens(vocab *v, const cJSON *model, const cJSON *added, const uint8_t *missing,
                                    int n_missing, int n_merges, const vocab_entry *sorted, size_t n_sorted,
                                    qs_strbuf *why, const char *tok_path, qs_error *err)
{
    int64_t first = v->n;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(model, "vocab"),
                                                           unk->valuestring);
        v->unk_id = !cJSON_IsNumber(id)                                               ? added_token_id(added, unk->valuestring)
                    : id->valuedouble >= 0 && id->valuedouble < 9007199254740992.0 ? (int64_t)id->valuedouble
                                                                                    : -1;
        if (v->unk_id >= first) v->unk_id = -1;
    }
    v->n = first + n_missing;
    v->n_pad = n_missing;
    int spelled = 0;
    char spelled_name[8] = "";
    for (int k = 0; k < n_missing; k++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", missing[k]);
        if (!(v->tok[first + k] = strdup(name))) return qs_error_set(err, QS_ERR_NOMEM, "%s: byte tokens", tok_path);
        v->type[first + k] = TT_BYTE;
        v->score[first + k] = -(float)n_merges - 1.0f; /* below every piece */
        if (spelled_by_pieces(name, sorted, n_sorted) && !spelled++)
            snprintf(spelled_name, sizeof spelled_name, "%s", name);
    }
    char what[512], rows[96];
    if (v->unk_id >= 0)
        snprintf(rows, sizeof rows, "copies of <unk>'s (id %lld)", (long long)v->unk_id);
    else
        snprintf(rows, sizeof rows, "zeros (no model.unk_token: HF drops such characters)");
    snprintf(what, sizeof what,
             "byte_fallback without a <0xXX> token for every byte: %d byte tokens appended as ids %lld-%lld "
             "(llama.vocab_size %lld), their embedding and output rows %s, so llama.cpp writes a character "
             "outside the vocabulary as its UTF-8 bytes where HF gives <unk>",
             n_missing, (long long)first, (long long)(v->n - 1), (long long)v->n, rows);
    why_add(why, what);
    if (spelled) {
        snprintf(what, sizeof what, "text spelling %s (and %d more) can merge into that byte token", spelled_name,
                 spelled - 1);
        why_add(why, what);
    }
    return QS_OK;
}

/* Reads tokenizer.json (+ tokenizer_config.json, config.json beside the model)
 * into the GGUF vocabulary of n_vocab tokens (the embedding's rows), plus the
 * byte tokens appended for llama.cpp (qs_gguf_vocab_padding). */
static qs_status vocab_load(vocab *v, const char *tok_path, const char *model_dir, int64_t n_vocab, qs_error *err)
{
    memset(v, 0, sizeof *v);
    for (int s = 0; s < SP_COUNT; s++) v->special[s] = -1, v->add[s] = -1;
    v->add_space_prefix = -1;
    if (!qs_path_exists(tok_path)) {
        v->model = "no_vocab";
        return QS_OK;
    }
    qs_status st = QS_OK;
    qs_strbuf why = {0}; /* what llama.cpp will do differently, "; "-separated */
    cJSON *tj = load_json(tok_path, &st, err), *tc = NULL, *cfg = NULL;
    if (!tj) return st;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    if (qs_path_exists(path) && !(tc = load_json(path, &st, err))) goto done;
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    if (qs_path_exists(path) && !(cfg = load_json(path, &st, err))) goto done;

    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vmap = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    if (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE")) {
        st = qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: model.type %s: the GGUF export handles BPE tokenizers only",
                          tok_path, cJSON_IsString(mtype) ? mtype->valuestring : "(missing)");
        goto done;
    }
    if (!cJSON_IsObject(vmap)) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: model.vocab is not an object", tok_path);
        goto done;
    }
    bool byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer");
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(tj, "decoder");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(tj, "normalizer");
    bool prefix = false;  /* sentencepiece style: HF puts a "▁" before the text */
    uint8_t missing[256]; /* bytes without a token llama.cpp's byte fallback finds */
    int n_missing = 0;
    if (byte_fallback) {
        style_scan sc = {false, digit_joined(vmap), &why};
        each_node(norm, "normalizers", spm_normalizer, &sc);
        each_node(pre, "pretokenizers", spm_pre, &sc);
        prefix = sc.prefix;
        v->model = "llama";
        v->pre = "default";
        n_missing = missing_bytes(vmap, missing);
    } else if (has_type(pre, "ByteLevel") || has_type(dec, "ByteLevel")) {
        v->model = "gpt2";
        v->pre = gpt2_pre(pre);
        if (!strcmp(v->pre, "default"))
            why_add(&why, "pre-tokenizer not one llama.cpp names (GPT-2 or Llama-3 regex): llama.cpp splits words "
                          "with its default regex");
        if (cJSON_IsObject(norm)) why_add(&why, "the normalizer is not applied by llama.cpp");
        bool aps = false;
        each_node(pre, "pretokenizers", bytelevel_prefix, &aps);
        if (aps) why_add(&why, "ByteLevel add_prefix_space: llama.cpp adds no space before the text");
    } else {
        st = qs_error_set(err, QS_ERR_UNSUPPORTED,
                          "%s: a BPE tokenizer without byte_fallback and without ByteLevel has no llama.cpp vocabulary type",
                          tok_path);
        goto done;
    }

    v->n = n_vocab; /* + n_missing once the byte tokens are appended */
    v->unk_id = -1;
    v->tok = calloc((size_t)(n_vocab + n_missing), sizeof *v->tok);
    v->score = calloc((size_t)(n_vocab + n_missing), sizeof *v->score);
    v->type = calloc((size_t)(n_vocab + n_missing), sizeof *v->type);
    bool *is_added = calloc((size_t)n_vocab, 1), *in_base = calloc((size_t)n_vocab, 1), *special = calloc((size_t)n_vocab, 1);
    if (!v->tok || !v->score || !v->type || !is_added || !in_base || !special) {
        free(is_added), free(in_base), free(special);
        st = qs_error_set(err, QS_ERR_NOMEM, "%s: vocabulary of %lld", tok_path, (long long)n_vocab);
        goto done;
    }
    /* base vocabulary, then added tokens (which may reuse or extend ids) */
    const cJSON *e;
    cJSON_ArrayForEach(e, vmap)
    {
        double id = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (id < 0 || id != floor(id)) {
            st = qs_error_set(err, QS_ERR_INPUT, "%s: model.vocab[\"%s\"] is not a token id", tok_path, e->string);
            break;
        }
        if (id >= (double)n_vocab) {
            st = qs_error_set(err, QS_ERR_INPUT, "%s: token \"%s\" has id %.0f but the model's vocab_size is %lld", tok_path,
                              e->string, id, (long long)n_vocab);
            break;
        }
        int64_t i = (int64_t)id;
        free(v->tok[i]);
        v->tok[i] = strdup(e->string);
        in_base[i] = true;
    }
    cJSON_ArrayForEach(e, added)
    {
        if (st != QS_OK) break;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id"), *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(c) || id->valuedouble < 0) {
            st = qs_error_set(err, QS_ERR_INPUT, "%s: added_tokens entry without a valid id and content", tok_path);
            break;
        }
        if (id->valuedouble >= (double)n_vocab) {
            st = qs_error_set(err, QS_ERR_INPUT, "%s: added token \"%s\" has id %.0f but the model's vocab_size is %lld",
                              tok_path, c->valuestring, id->valuedouble, (long long)n_vocab);
            break;
        }
        int64_t i = (int64_t)id->valuedouble;
        if (!v->tok[i]) v->tok[i] = strdup(c->valuestring);
        is_added[i] = true;
        special[i] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
    }
    if (st == QS_OK) {
        v->n = n_vocab;
        /* llama (LlamaHfVocab): CONTROL for transformers' special ids; gpt2: only
         * added tokens that are special or look special (<|...|>, <pad>, <mask>) */
        special_tokens(v, tj, tc, cfg, byte_fallback ? special : NULL);
        /* what HF `tokenizers` does comes from tokenizer.json, whatever
         * tokenizer_config.json's add_prefix_space says */
        if (byte_fallback) v->add_space_prefix = prefix;
        const cJSON *a;
        cJSON_ArrayForEach(a, added)
        {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "single_word")) && cJSON_IsString(c)) {
                char what[160];
                snprintf(what, sizeof what, "added token \"%.64s\" is single_word, which GGUF cannot express",
                         c->valuestring);
                why_add(&why, what);
            }
        }
        for (int64_t i = 0; i < n_vocab && !byte_fallback; i++)
            if (is_added[i] && !special[i]) special[i] = looks_special(v->tok[i]);
    }

    /* merges: gpt2 writes them; llama turns their ranks into scores. cJSON
     * arrays and objects are lists, so walk them once and look pieces up in a
     * sorted copy of the vocabulary (Llama-3 has 280k merges, 128k tokens). */
    int n_merges = cJSON_GetArraySize(merges);
    float *rank_score = NULL;
    vocab_entry *sorted = NULL;
    size_t n_sorted = 0;
    if (st == QS_OK && !strcmp(v->model, "gpt2") && n_merges > 0) {
        v->merges = calloc((size_t)n_merges, sizeof *v->merges);
        if (!v->merges) st = qs_error_set(err, QS_ERR_NOMEM, "%s: merges", tok_path);
        int k = 0;
        cJSON_ArrayForEach(e, merges)
        {
            if (st != QS_OK) break;
            v->merges[k] = merge_string(e);
            if (!v->merges[k]) st = qs_error_set(err, QS_ERR_INPUT, "%s: model.merges[%d] is not a merge", tok_path, k);
            v->n_merges = (size_t)++k;
        }
    }
    if (st == QS_OK && !strcmp(v->model, "llama")) {
        /* llama.cpp's SPM tokenizer merges the adjacent pair whose joined piece
         * has the highest score, so a piece's score is minus the rank of the
         * merge that makes it: that reproduces the BPE merge order. Pieces no
         * merge makes score below every merge. */
        rank_score = malloc((size_t)n_vocab * sizeof *rank_score);
        sorted = malloc(((size_t)cJSON_GetArraySize(vmap) + 1) * sizeof *sorted);
        if (!rank_score || !sorted) st = qs_error_set(err, QS_ERR_NOMEM, "%s: scores", tok_path);
        for (int64_t i = 0; st == QS_OK && i < n_vocab; i++) rank_score[i] = 1.0f; /* not scored yet */
        cJSON_ArrayForEach(e, vmap)
        {
            if (st != QS_OK) break;
            sorted[n_sorted].s = e->string;
            sorted[n_sorted++].id = (int64_t)e->valuedouble;
        }
        if (st == QS_OK) qsort(sorted, n_sorted, sizeof *sorted, cmp_entry);
        int k = 0;
        cJSON_ArrayForEach(e, merges)
        {
            if (st != QS_OK) break;
            const char *a = NULL, *b = NULL;
            char *ms = NULL;
            if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                cJSON_IsString(e->child->next)) {
                a = e->child->valuestring, b = e->child->next->valuestring;
            } else if (cJSON_IsString(e) && (ms = strdup(e->valuestring)) && strchr(ms, ' ')) {
                char *sp = strchr(ms, ' ');
                *sp = '\0';
                a = ms, b = sp + 1;
            }
            if (!a) {
                free(ms);
                st = qs_error_set(err, QS_ERR_INPUT, "%s: model.merges[%d] is not a merge", tok_path, k);
                break;
            }
            size_t na = strlen(a), nb = strlen(b);
            char *joined = malloc(na + nb + 1);
            if (!joined) {
                free(ms);
                st = qs_error_set(err, QS_ERR_NOMEM, "%s: merges", tok_path);
                break;
            }
            memcpy(joined, a, na);
            memcpy(joined + na, b, nb + 1);
            vocab_entry key = {joined, 0};
            const vocab_entry *hit = bsearch(&key, sorted, n_sorted, sizeof *sorted, cmp_entry);
            if (hit && hit->id >= 0 && hit->id < n_vocab && rank_score[hit->id] > 0)
                rank_score[hit->id] = -(float)k; /* the first (lowest-rank) merge making it */
            free(joined);
            free(ms);
            k++;
        }
        for (int64_t i = 0; st == QS_OK && i < n_vocab; i++)
            if (rank_score[i] > 0) rank_score[i] = -(float)n_merges;
    }
    for (int64_t i = 0; st == QS_OK && i < n_vocab; i++) {
        if (!v->tok[i]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%lld]", (long long)i);
            v->tok[i] = strdup(pad);
            v->type[i] = TT_UNUSED;
            v->score[i] = -1000.0f;
        } else if (!strcmp(v->model, "llama")) {
            v->type[i] = is_byte_token(v->tok[i]) ? TT_BYTE
                         : special[i]             ? TT_CONTROL
                         : (is_added[i] && !in_base[i]) ? TT_USER_DEFINED
                                                        : TT_NORMAL;
            v->score[i] = rank_score[i];
        } else {
            v->type[i] = special[i] ? TT_CONTROL : is_added[i] ? TT_USER_DEFINED : TT_NORMAL;
        }
        if (!v->tok[i]) st = qs_error_set(err, QS_ERR_NOMEM, "%s: tokens", tok_path);
    }
    if (st == QS_OK && n_missing > 0)
        st = append_byte_tokens(v, model, added, missing, n_missing, n_merges, sorted, n_sorted, &why, tok_path, err);
    free(sorted);
    free(rank_score);
    free(is_added), free(in_base), free(special);
done:
    if (why.len) snprintf(v->warning, sizeof v->warning, "%s", why.p);
    qs_strbuf_free(&why);
    cJSON_Delete(tj);
    cJSON_Delete(tc);
    cJSON_Delete(cfg);
    if (st != QS_OK) vocab_free(v);
    return st;
}

/* ==== the interface (gguf_vocab.h) ================================================= */

void qs_gguf_vocab_add_metadata(qs_gguf_layout *l, const qs_gguf_vocab *v)
{
    qs_gguf_add_string(l, "tokenizer.ggml.model", v->model);
    if (!strcmp(v->model, "no_vocab")) return;
    qs_gguf_add_string(l, "tokenizer.ggml.pre", v->pre);
    qs_gguf_add_array_string(l, "tokenizer.ggml.tokens", (const char *const *)v->tok, NULL, (size_t)v->n);
    if (!strcmp(v->model, "llama")) qs_gguf_add_array_f32(l, "tokenizer.ggml.scores", v->score, (size_t)v->n);
    qs_gguf_add_array_i32(l, "tokenizer.ggml.token_type", v->type, (size_t)v->n);
    if (v->n_merges)
        qs_gguf_add_array_string(l, "tokenizer.ggml.merges", (const char *const *)v->merges, NULL, v->n_merges);
    /* llama.cpp's key names (sic: "seperator"); cls has no key */
    static const char *const id_keys[SP_COUNT] = {"tokenizer.ggml.bos_token_id",     "tokenizer.ggml.eos_token_id",
                                                  "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id",
                                                  "tokenizer.ggml.padding_token_id", NULL,
                                                  "tokenizer.ggml.mask_token_id"};
    for (int s = 0; s < SP_COUNT; s++)
        if (id_keys[s] && v->special[s] >= 0) qs_gguf_add_u32(l, id_keys[s], (uint32_t)v->special[s]);
    if (v->add[SP_BOS] >= 0) qs_gguf_add_bool(l, "tokenizer.ggml.add_bos_token", v->add[SP_BOS]);
    if (v->add[SP_EOS] >= 0) qs_gguf_add_bool(l, "tokenizer.ggml.add_eos_token", v->add[SP_EOS]);
    if (v->add[SP_SEP] >= 0) qs_gguf_add_bool(l, "tokenizer.ggml.add_sep_token", v->add[SP_SEP]);
    if (v->add_space_prefix >= 0) qs_gguf_add_bool(l, "tokenizer.ggml.add_space_prefix", v->add_space_prefix);
    if (v->chat_template) qs_gguf_add_string(l, "tokenizer.chat_template", v->chat_template);
}

qs_status qs_gguf_vocab_load(qs_gguf_vocab **out, const char *tok_path, const char *model_dir, int64_t n_vocab,
                             qs_error *err)
{
    *out = NULL;
    vocab *v = malloc(sizeof *v);
    if (!v) return qs_error_set(err, QS_ERR_NOMEM, "%s: vocabulary", tok_path);
    qs_status st = vocab_load(v, tok_path, model_dir, n_vocab, err);
    if (st != QS_OK) {
        free(v);
        return st;
    }
    *out = v;
    return QS_OK;
}

const char *qs_gguf_vocab_warning(const qs_gguf_vocab *v) { return v->warning[0] ? v->warning : NULL; }

int64_t qs_gguf_vocab_padding(const qs_gguf_vocab *v, int64_t *unk_id)
{
    *unk_id = v->n_pad ? v->unk_id : -1;
    return v->n_pad;
}

void qs_gguf_vocab_free(qs_gguf_vocab *v)
{
    if (!v) return;
    vocab_free(v);
    free(v);
}
