/* tok_added.c — added tokens (HF AddedVocabulary): reading "added_tokens"
 * from tokenizer.json, the two match sets (tokens matched in the raw text,
 * and tokens matched in normalized text against their normalized form), the
 * leftmost-longest split of a piece on them with single_word, lstrip and
 * rstrip, and finding a special token by name (for BOS and EOS). */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <stdio.h>

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

qs_status qs_tok_load_added_tokens(qs_tokenizer *t, const cJSON *list, re_state *st, qs_error *err)
{
    if (qs_tok_jnull(list)) return QS_OK;
    if (!cJSON_IsArray(list)) return qs_tok_jfail(t, err, QS_ERR_INPUT, "added_tokens", "must be an array");
    int count = cJSON_GetArraySize(list);
    t->added = calloc((size_t)count + 1, sizeof *t->added);
    t->norm_contents = calloc((size_t)count + 1, sizeof *t->norm_contents);
    if (!t->added || !t->norm_contents) return nomem(t, err);
    const cJSON *it;
    int i = 0;
    long id_max = qs_tok_id_limit((size_t)t->vocab_r_size + t->n_extra + (size_t)count);
    cJSON_ArrayForEach(it, list) {
        char p[64];
        snprintf(p, sizeof p, "added_tokens[%d]", i++);
        const char *content;
        long id = 0;
        QS_TRY(qs_tok_jstr(t, it, "content", p, &content, err));
        if (!content) return qs_tok_jfail(t, err, QS_ERR_INPUT, p, "'content' missing");
        const cJSON *idv = qs_tok_jget(it, "id");
        QS_TRY(qs_tok_jint(t, idv, p, 0, INT32_MAX - 1, &id, err));
        if (id > id_max)
            return qs_tok_jfail(t, err, QS_ERR_INPUT, p,
                                "id %ld is above %ld: ids are bounded by the tokens the file defines "
                                "(2 x their number + 1024)",
                                id, id_max);
        added_tok a = {0};
        QS_TRY(qs_tok_jbool(t, it, "special", p, false, &a.special, err));
        QS_TRY(qs_tok_jbool(t, it, "normalized", p, true, &a.normalized, err));
        QS_TRY(qs_tok_jbool(t, it, "lstrip", p, false, &a.lstrip, err));
        QS_TRY(qs_tok_jbool(t, it, "rstrip", p, false, &a.rstrip, err));
        QS_TRY(qs_tok_jbool(t, it, "single_word", p, false, &a.single_word, err));
        a.len = strlen(content);
        if (!a.len) continue; /* HF ignores empty added tokens */
        /* HF gives a token that is already in the model vocabulary its model id */
        int32_t mid = qs_strmap_get(&t->vocab, content, a.len);
        a.id = mid >= 0 ? mid : (int32_t)id;
        if (!(a.content = mem_dup(content, a.len))) return nomem(t, err);
        t->added[t->n_added++] = a;
    }
    for (size_t k = 0; k < t->n_added; k++) {
        added_tok *a = &t->added[k];
        if (!qs_strmap_put(&t->added_map, a->content, a->len, a->id)) return nomem(t, err);
        if (a->normalized) {
            qs_strbuf o = {0}, tmp = {0};
            qs_status s = qs_tok_normalize(t, st, a->content, a->len, false, &o, &tmp, err);
            qs_strbuf_free(&tmp);
            if (s != QS_OK) {
                qs_strbuf_free(&o);
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

int32_t qs_tok_find_special(const qs_tokenizer *t, const char *const *names)
{
    for (const char *const *n = names; *n; n++)
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].special && strcmp(t->added[i].content, *n) == 0) return t->added[i].id;
    return -1;
}

static bool is_word_char(enc *e, const char *s, size_t at)
{
    size_t l;
    uint32_t c = qs_utf8_get(s + at, &l);
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    return pcre2_match(e->t->word_re, (PCRE2_SPTR)(s + at), l, 0, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, e->rs.md,
                       e->rs.mctx) >= 0;
}

/* Splits piece p on the added tokens of `set` (HF AddedVocabulary::find_matches:
 * leftmost-longest, then single_word / lstrip / rstrip). */
qs_status qs_tok_split_added(enc *e, const match_set *set, piece p)
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
                if (!qs_utf8_is_space(qs_utf8_get(s + j, &l))) break;
                ns = j;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            size_t l;
            while (stop < n && qs_utf8_is_space(qs_utf8_get(s + stop, &l))) stop += l;
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
