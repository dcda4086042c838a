/* tok_decode.c — decoding (HF decoders::*): reading the decoder from
 * tokenizer.json (Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip,
 * Metaspace) and qs_tokenizer_decode: ids become token strings, the
 * decoders' decode_chain runs over them, and the result is their
 * concatenation (with no decoder, the tokens joined with spaces, as HF
 * does). */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <stdio.h>

qs_status qs_tok_load_decoder(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err)
{
    const char *type;
    char tp[256];
    snprintf(tp, sizeof tp, "%s.type", path);
    QS_TRY(qs_tok_jstr(t, n, "type", path, &type, err));
    if (!type) return qs_tok_jfail(t, err, QS_ERR_INPUT, tp, "missing");
    dec_op op = {0};
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = qs_tok_jget(n, "decoders"), *it;
        if (!cJSON_IsArray(list)) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'decoders' must be an array");
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char p[256];
            snprintf(p, sizeof p, "%s.decoders[%d]", path, i++);
            QS_TRY(qs_tok_load_decoder(t, it, p, err));
        }
        return QS_OK;
    } else if (strcmp(type, "ByteLevel") == 0) {
        op.kind = DEC_BYTELEVEL;
    } else if (strcmp(type, "Replace") == 0) {
        op.kind = DEC_REPLACE;
        const char *c;
        QS_TRY(qs_tok_jstr(t, n, "content", path, &c, err));
        if (!c) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "Replace needs 'content'");
        op.clen = strlen(c);
        if (!(op.content = mem_dup(c, op.clen))) return nomem(t, err);
        qs_status st = qs_tok_jpattern(t, n, path, &op.lit, &op.lit_len, &op.re, err);
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
        QS_TRY(qs_tok_jchar(t, n, "content", path, " ", c, &cl, err));
        op.strip_char = qs_utf8_get(c, &cl);
        const cJSON *a = qs_tok_jget(n, "start"), *b = qs_tok_jget(n, "stop");
        op.start = op.stop = 0;
        if (!qs_tok_jnull(a)) QS_TRY(qs_tok_jint(t, a, path, 0, 1L << 30, &op.start, err));
        if (!qs_tok_jnull(b)) QS_TRY(qs_tok_jint(t, b, path, 0, 1L << 30, &op.stop, err));
    } else if (strcmp(type, "Metaspace") == 0) {
        op.kind = DEC_METASPACE;
        QS_TRY(qs_tok_jchar(t, n, "replacement", path, "\xe2\x96\x81", op.rep, &op.rep_len, err));
        QS_TRY(qs_tok_jprepend_scheme(t, n, path, &op.scheme, err));
    } else {
        return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, tp,
                            "decoder '%s' is not supported (supported: Sequence, ByteLevel, Replace, ByteFallback, "
                            "Fuse, Strip, Metaspace)",
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

/* ---- decode (HF decoders' decode_chain over the token strings, then concat) ---- */

typedef struct svec {
    qs_strbuf *s;
    size_t n, cap;
} svec;

/* A new empty string at the end of v (its p is not NULL); NULL when out of memory. */
static qs_strbuf *svec_new(svec *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        qs_strbuf *q = realloc(v->s, cap * sizeof *q);
        if (!q) return NULL;
        v->s = q;
        v->cap = cap;
    }
    v->s[v->n] = (qs_strbuf){0};
    if (!qs_strbuf_reserve(&v->s[v->n], 0)) return NULL;
    return &v->s[v->n++];
}

/* A new string holding s[0..n) at the end of v; NULL when out of memory. */
static qs_strbuf *svec_push(svec *v, const char *s, size_t n)
{
    qs_strbuf *d = svec_new(v);
    if (!d) return NULL;
    qs_strbuf_put(d, s, n);
    return d->oom ? NULL : d;
}

static void svec_free(svec *v)
{
    for (size_t i = 0; i < v->n; i++) qs_strbuf_free(&v->s[i]);
    free(v->s);
    *v = (svec){0};
}

static const char FFFD[] = "\xef\xbf\xbd";

/* Rust String::from_utf8_lossy. */
static bool add_lossy(qs_strbuf *o, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t sub = 1, l = qs_utf8_seq((const unsigned char *)s + i, n - i, &sub);
        if (l) {
            qs_strbuf_put(o, s + i, l);
            i += l;
        } else {
            qs_strbuf_put(o, FFFD, 3);
            i += sub;
        }
        if (o->oom) return false;
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

static bool flush_bytes(svec *out, qs_strbuf *bytes)
{
    if (!bytes->len) return true;
    if (qs_utf8_check(bytes->p, bytes->len) == bytes->len) {
        if (!svec_push(out, bytes->p, bytes->len)) return false;
    } else {
        for (size_t k = 0; k < bytes->len; k++)
            if (!svec_push(out, FFFD, 3)) return false;
    }
    qs_strbuf_truncate(bytes, 0);
    return true;
}

static qs_status dec_apply(const qs_tokenizer *t, const dec_op *op, re_state *rs, svec *in, svec *out, qs_error *err)
{
    switch (op->kind) {
    case DEC_BYTELEVEL: {
        uint32_t b2c[256];
        int c2b[324];
        qs_tok_bytelevel_table(b2c);
        for (int i = 0; i < 324; i++) c2b[i] = -1;
        for (int b = 0; b < 256; b++) c2b[b2c[b]] = b;
        qs_strbuf bytes = {0};
        bool ok = true;
        for (size_t i = 0; i < in->n && ok; i++) {
            const qs_strbuf *s = &in->s[i];
            size_t mark = bytes.len;
            bool mapped = true;
            for (size_t j = 0, l; j < s->len && ok; j += l) {
                uint32_t c = qs_utf8_get(s->p + j, &l);
                if (c >= 324 || c2b[c] < 0) {
                    mapped = false;
                    break;
                }
                char b = (char)c2b[c];
                qs_strbuf_put(&bytes, &b, 1);
                ok = !bytes.oom;
            }
            if (!mapped) {
                qs_strbuf_truncate(&bytes, mark);
                qs_strbuf_put(&bytes, s->p, s->len);
                ok = !bytes.oom;
            }
        }
        qs_strbuf *d = ok ? svec_new(out) : NULL;
        ok = d && add_lossy(d, bytes.p ? bytes.p : "", bytes.len);
        qs_strbuf_free(&bytes);
        return ok ? QS_OK : nomem(t, err);
    }
    case DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            qs_strbuf *d = svec_new(out);
            if (!d) return nomem(t, err);
            int rc = qs_tok_replace_all(op->lit, op->lit_len, op->re, rs, in->s[i].p, in->s[i].len, op->content,
                                        op->clen, d);
            if (rc == -1) return qs_error_set(err, QS_ERR_INPUT, "%s: decoder Replace: regex match failed", t->name);
            if (rc == -2) return nomem(t, err);
        }
        return QS_OK;
    case DEC_BYTEFALLBACK: {
        qs_strbuf bytes = {0};
        bool ok = true;
        for (size_t i = 0; i < in->n && ok; i++) {
            const qs_strbuf *s = &in->s[i];
            int hi, lo;
            if (s->len == 6 && memcmp(s->p, "<0x", 3) == 0 && s->p[5] == '>' && (hi = hexval(s->p[3])) >= 0 &&
                (lo = hexval(s->p[4])) >= 0) {
                char b = (char)(hi * 16 + lo);
                qs_strbuf_put(&bytes, &b, 1);
                ok = !bytes.oom;
                continue;
            }
            ok = flush_bytes(out, &bytes) && svec_push(out, s->p, s->len);
        }
        ok = ok && flush_bytes(out, &bytes);
        qs_strbuf_free(&bytes);
        return ok ? QS_OK : nomem(t, err);
    }
    case DEC_FUSE: {
        qs_strbuf *d = svec_new(out);
        if (!d) return nomem(t, err);
        for (size_t i = 0; i < in->n; i++) qs_strbuf_put(d, in->s[i].p, in->s[i].len);
        return d->oom ? nomem(t, err) : QS_OK;
    }
    case DEC_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            const qs_strbuf *s = &in->s[i];
            size_t a = 0, b = s->len, l;
            for (long k = 0; k < op->start && a < s->len; k++) {
                if (qs_utf8_get(s->p + a, &l) != op->strip_char) break;
                a += l;
            }
            for (long k = 0; k < op->stop && b > a; k++) {
                size_t j = b - 1;
                while (j > 0 && ((unsigned char)s->p[j] & 0xC0) == 0x80) j--;
                if (qs_utf8_get(s->p + j, &l) != op->strip_char) break;
                b = j;
            }
            if (!svec_push(out, s->p + a, b - a)) return nomem(t, err);
        }
        return QS_OK;
    case DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            const qs_strbuf *s = &in->s[i];
            qs_strbuf *d = svec_new(out);
            if (!d) return nomem(t, err);
            for (size_t j = 0; j < s->len;) {
                if (s->len - j >= op->rep_len && memcmp(s->p + j, op->rep, op->rep_len) == 0) {
                    if (!(i == 0 && op->scheme != PREPEND_NEVER)) qs_strbuf_put(d, " ", 1);
                    j += op->rep_len;
                } else {
                    qs_strbuf_put(d, s->p + j, 1);
                    j++;
                }
            }
            if (d->oom) return nomem(t, err);
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
    if (!qs_tok_re_state_init(&rs)) {
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
        if (!svec_push(&a, s, len)) {
            st = nomem(t, err);
            goto done;
        }
    }
    qs_strbuf res = {0};
    if (!t->has_decoder) {
        /* HF without a decoder joins the tokens with spaces */
        for (size_t i = 0; i < a.n; i++) {
            if (i) qs_strbuf_put(&res, " ", 1);
            qs_strbuf_put(&res, a.s[i].p, a.s[i].len);
        }
    } else {
        for (size_t k = 0; k < t->n_decs; k++) {
            if ((st = dec_apply(t, &t->decs[k], &rs, &a, &b, err)) != QS_OK) goto done;
            svec sw = a;
            a = b;
            b = sw;
            svec_free(&b);
        }
        for (size_t i = 0; i < a.n; i++) qs_strbuf_put(&res, a.s[i].p, a.s[i].len);
    }
    if (!qs_strbuf_reserve(&res, 0)) { /* also when an append above ran out of memory */
        qs_strbuf_free(&res);
        st = nomem(t, err);
        goto done;
    }
    res.p[res.len] = '\0';
    *out = res.p;
    if (out_len) *out_len = res.len;
done:
    svec_free(&a);
    svec_free(&b);
    qs_tok_re_state_free(&rs);
    return st;
}
