/* tok_normalize.c — the normalizers (HF normalizers::*): reading them from
 * tokenizer.json (Sequence, Prepend, Replace with a String or a Regex, Strip,
 * and NFC for text it leaves unchanged) into t->norms, and running them on a
 * piece of text. Encode runs them on the text between added tokens; loading
 * runs them on the added tokens marked normalized. */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <stdio.h>

/* Code points that NFC provably leaves unchanged (NFC_Quick_Check=Yes, no
 * composition with a neighbour): everything below U+0300, general
 * punctuation U+2010–U+2027 and U+2030–U+205E, CJK ideographs, emoji. The
 * test suite checks these ranges against Python's unicodedata. */
static bool nfc_stable(uint32_t c)
{
    return c < 0x300 || (c >= 0x2010 && c <= 0x2027) || (c >= 0x2030 && c <= 0x205E) ||
           (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x1F300 && c <= 0x1FAFF);
}

qs_status qs_tok_load_normalizer(qs_tokenizer *t, const cJSON *n, const char *path, qs_error *err)
{
    if (qs_tok_jnull(n)) return QS_OK;
    const char *type;
    char tp[256];
    snprintf(tp, sizeof tp, "%s.type", path);
    QS_TRY(qs_tok_jstr(t, n, "type", path, &type, err));
    if (!type) return qs_tok_jfail(t, err, QS_ERR_INPUT, tp, "missing");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = qs_tok_jget(n, "normalizers"), *it;
        if (!cJSON_IsArray(list)) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'normalizers' must be an array");
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char p[256];
            snprintf(p, sizeof p, "%s.normalizers[%d]", path, i++);
            QS_TRY(qs_tok_load_normalizer(t, it, p, err));
        }
        return QS_OK;
    }
    norm_op op = {0};
    if (strcmp(type, "Prepend") == 0) {
        const char *s;
        QS_TRY(qs_tok_jstr(t, n, "prepend", path, &s, err));
        if (!s) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "Prepend needs 'prepend'");
        op.kind = NORM_PREPEND;
        op.slen = strlen(s);
        if (!(op.s = mem_dup(s, op.slen))) return nomem(t, err);
    } else if (strcmp(type, "Replace") == 0) {
        op.kind = NORM_REPLACE;
        const char *c;
        QS_TRY(qs_tok_jstr(t, n, "content", path, &c, err));
        if (!c) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "Replace needs 'content'");
        op.clen = strlen(c);
        if (!(op.content = mem_dup(c, op.clen))) return nomem(t, err);
        qs_status st = qs_tok_jpattern(t, n, path, &op.s, &op.slen, &op.re, err);
        if (st != QS_OK) {
            free(op.content);
            return st;
        }
    } else if (strcmp(type, "Strip") == 0) {
        op.kind = NORM_STRIP;
        QS_TRY(qs_tok_jbool(t, n, "strip_left", path, true, &op.left, err));
        QS_TRY(qs_tok_jbool(t, n, "strip_right", path, true, &op.right, err));
    } else if (strcmp(type, "NFC") == 0) {
        op.kind = NORM_NFC;
    } else {
        return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, tp,
                            "normalizer '%s' is not supported (supported: Sequence, Prepend, Replace, Strip, NFC)",
                            type);
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

qs_status qs_tok_normalize(const qs_tokenizer *t, re_state *st, const char *s, size_t n, bool skip_prepend,
                           qs_strbuf *out, qs_strbuf *tmp, qs_error *err)
{
    qs_strbuf_truncate(out, 0);
    qs_strbuf_put(out, s, n);
    if (out->oom) return nomem(t, err);
    for (size_t k = 0; k < t->n_norms; k++) {
        const norm_op *op = &t->norms[k];
        qs_strbuf_truncate(tmp, 0);
        switch (op->kind) {
        case NORM_PREPEND:
            if (!out->len || skip_prepend) continue;
            qs_strbuf_put(tmp, op->s, op->slen);
            qs_strbuf_put(tmp, out->p, out->len);
            if (tmp->oom) return nomem(t, err);
            break;
        case NORM_REPLACE: {
            int rc = qs_tok_replace_all(op->s, op->slen, op->re, st, out->p, out->len, op->content, op->clen, tmp);
            if (rc == -1) return qs_error_set(err, QS_ERR_INPUT, "%s: %s: regex match failed", t->name, op->path);
            if (rc == -2) return nomem(t, err);
            break;
        }
        case NORM_STRIP: {
            size_t a = 0, b = out->len, l;
            if (op->left)
                while (a < b && qs_utf8_is_space(qs_utf8_get(out->p + a, &l))) a += l;
            if (op->right)
                while (b > a) {
                    size_t j = b - 1;
                    while (j > a && ((unsigned char)out->p[j] & 0xC0) == 0x80) j--;
                    if (!qs_utf8_is_space(qs_utf8_get(out->p + j, &l))) break;
                    b = j;
                }
            qs_strbuf_put(tmp, out->p + a, b - a);
            if (tmp->oom) return nomem(t, err);
            break;
        }
        case NORM_NFC: {
            for (size_t i = 0, l; i < out->len; i += l) {
                uint32_t c = qs_utf8_get(out->p + i, &l);
                if (!nfc_stable(c))
                    return qs_error_set(err, QS_ERR_UNSUPPORTED,
                                        "%s: %s: NFC normalization is only supported for text it leaves unchanged; "
                                        "the text has U+%04X at byte %zu of a piece",
                                        t->name, op->path, (unsigned)c, i);
            }
            continue;
        }
        }
        qs_strbuf sw = *out;
        *out = *tmp;
        *tmp = sw;
    }
    return QS_OK;
}
