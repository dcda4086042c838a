/* tok_pretokenize.c — the pre-tokenizers (HF pre_tokenizers::*): reading
 * them from tokenizer.json (Sequence, ByteLevel, Split, Metaspace, Digits,
 * Whitespace, WhitespaceSplit), the built-in regexes they use, GPT-2's
 * byte-to-character table, and running one of them on a piece: find the
 * pattern's matches, split per the behavior as HF's NormalizedString::split
 * does, and for ByteLevel map every byte to its character. */
#define _GNU_SOURCE /* memmem */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <stdio.h>

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct span {
    size_t s, e;
    bool m;
};

void qs_tok_bytelevel_table(uint32_t b2c[256])
{
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        b2c[b] = keep ? b : 256 + n++;
    }
}

qs_status qs_tok_compile_builtins(qs_tokenizer *t, qs_error *err)
{
    char why[300];
    t->gpt2_re = qs_tok_re_compile(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, why, sizeof why);
    t->word_re = qs_tok_re_compile("\\w", PCRE2_ZERO_TERMINATED, why, sizeof why);
    t->digit_re = qs_tok_re_compile("\\p{N}", PCRE2_ZERO_TERMINATED, why, sizeof why);
    t->ws_re = qs_tok_re_compile("\\w+|[^\\w\\s]+", PCRE2_ZERO_TERMINATED, why, sizeof why);
    t->space_re = qs_tok_re_compile("[\\s\\x{85}]", PCRE2_ZERO_TERMINATED, why, sizeof why);
    if (!t->gpt2_re || !t->word_re || !t->digit_re || !t->ws_re || !t->space_re)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: built-in regex: %s", t->name, why);
    uint32_t b2c[256];
    qs_tok_bytelevel_table(b2c);
    for (int b = 0; b < 256; b++) {
        char u[4] = {0};
        t->bl_len[b] = (uint8_t)qs_utf8_put(b2c[b], u);
        t->bl_utf8[b][0] = u[0];
        t->bl_utf8[b][1] = u[1];
    }
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

qs_status qs_tok_load_pretokenizer(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err)
{
    if (qs_tok_jnull(n)) return QS_OK;
    const char *type;
    char tp[256];
    snprintf(tp, sizeof tp, "%s.type", path);
    QS_TRY(qs_tok_jstr(t, n, "type", path, &type, err));
    if (!type) return qs_tok_jfail(t, err, QS_ERR_INPUT, tp, "missing");
    pre_op op = {0};
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = qs_tok_jget(n, "pretokenizers"), *it;
        if (!cJSON_IsArray(list)) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'pretokenizers' must be an array");
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char p[256];
            snprintf(p, sizeof p, "%s.pretokenizers[%d]", path, i++);
            QS_TRY(qs_tok_load_pretokenizer(t, it, p, err));
        }
        return QS_OK;
    } else if (strcmp(type, "ByteLevel") == 0) {
        op.kind = PRE_BYTELEVEL;
        QS_TRY(qs_tok_jbool(t, n, "add_prefix_space", path, true, &op.add_prefix_space, err));
        QS_TRY(qs_tok_jbool(t, n, "use_regex", path, true, &op.use_regex, err));
    } else if (strcmp(type, "Split") == 0) {
        op.kind = PRE_SPLIT;
        const char *b;
        QS_TRY(qs_tok_jstr(t, n, "behavior", path, &b, err));
        if (!b) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "Split needs 'behavior'");
        if (strcmp(b, "Removed") == 0) op.behavior = SPLIT_REMOVED;
        else if (strcmp(b, "Isolated") == 0) op.behavior = SPLIT_ISOLATED;
        else if (strcmp(b, "MergedWithPrevious") == 0) op.behavior = SPLIT_MERGED_PREV;
        else if (strcmp(b, "MergedWithNext") == 0) op.behavior = SPLIT_MERGED_NEXT;
        else if (strcmp(b, "Contiguous") == 0) op.behavior = SPLIT_CONTIGUOUS;
        else return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "unknown Split behavior '%s'", b);
        QS_TRY(qs_tok_jbool(t, n, "invert", path, false, &op.invert, err));
        QS_TRY(qs_tok_jpattern(t, n, path, &op.lit, &op.lit_len, &op.re, err));
    } else if (strcmp(type, "Metaspace") == 0) {
        op.kind = PRE_METASPACE;
        QS_TRY(qs_tok_jchar(t, n, "replacement", path, "\xe2\x96\x81", op.rep, &op.rep_len, err));
        QS_TRY(qs_tok_jprepend_scheme(t, n, path, &op.scheme, err));
        QS_TRY(qs_tok_jbool(t, n, "split", path, true, &op.split, err));
    } else if (strcmp(type, "Digits") == 0) {
        op.kind = PRE_DIGITS;
        QS_TRY(qs_tok_jbool(t, n, "individual_digits", path, false, &op.individual_digits, err));
    } else if (strcmp(type, "Whitespace") == 0) {
        op.kind = PRE_WHITESPACE;
    } else if (strcmp(type, "WhitespaceSplit") == 0) {
        op.kind = PRE_WSSPLIT;
    } else {
        return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, tp,
                            "pre-tokenizer '%s' is not supported (supported: Sequence, ByteLevel, Split, Metaspace, "
                            "Digits, Whitespace, WhitespaceSplit)",
                            type);
    }
    return push_pre(t, &op, err);
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

/* Fills e->sp with the matches of the pattern in s (regex or literal). */
static qs_status find_matches(enc *e, const pcre2_code *re, const char *lit, size_t lit_len, const char *s, size_t n)
{
    e->n_sp = 0;
    size_t i = 0, ms, me;
    for (;;) {
        if (re) {
            int rc = qs_tok_re_next(re, &e->rs, s, n, i, &ms, &me);
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
    if (!qs_strbuf_reserve(&e->arena, 2 * p->len)) return nomem(t, e->err);
    const unsigned char *src = (const unsigned char *)e->arena.p + p->off;
    char *dst = e->arena.p + e->arena.len;
    size_t o = 0;
    for (size_t i = 0; i < p->len; i++) {
        dst[o] = t->bl_utf8[src[i]][0];
        dst[o + 1] = t->bl_utf8[src[i]][1];
        o += t->bl_len[src[i]];
    }
    p->off = e->arena.len;
    p->len = o;
    e->arena.len += o;
    e->arena.p[e->arena.len] = '\0';
    return QS_OK;
}

qs_status qs_tok_pretokenize(enc *e, const pre_op *op, piece p)
{
    const qs_tokenizer *t = e->t;
    if (p.id >= 0) return pvec_push(&e->nxt, p) ? QS_OK : nomem(t, e->err);
    bool skip_prefix = e->no_prefix && p.origin;
    switch (op->kind) {
    case PRE_BYTELEVEL: {
        if (op->add_prefix_space && !skip_prefix && p.len && e->arena.p[p.off] != ' ') {
            qs_strbuf_truncate(&e->nb, 0);
            qs_strbuf_put(&e->nb, " ", 1);
            qs_strbuf_put(&e->nb, e->arena.p + p.off, p.len);
            if (e->nb.oom) return nomem(t, e->err);
            size_t off = arena_add(e, e->nb.p, e->nb.len);
            if (off == SIZE_MAX) return nomem(t, e->err);
            p.off = off;
            p.len = e->nb.len;
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
        qs_strbuf_truncate(&e->nb, 0);
        const char *s = e->arena.p + p.off;
        for (size_t i = 0; i < p.len; i++) {
            if (s[i] == ' ') qs_strbuf_put(&e->nb, op->rep, op->rep_len);
            else qs_strbuf_put(&e->nb, s + i, 1);
        }
        if (e->nb.oom) return nomem(t, e->err);
        bool starts = e->nb.len >= op->rep_len && memcmp(e->nb.p, op->rep, op->rep_len) == 0;
        bool prepend = !starts && !skip_prefix &&
                       (op->scheme == PREPEND_ALWAYS || (op->scheme == PREPEND_FIRST && p.origin));
        size_t off = e->arena.len;
        if (prepend && arena_add(e, op->rep, op->rep_len) == SIZE_MAX) return nomem(t, e->err);
        if (arena_add(e, e->nb.p, e->nb.len) == SIZE_MAX) return nomem(t, e->err);
        p.off = off;
        p.len = e->arena.len - off;
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
