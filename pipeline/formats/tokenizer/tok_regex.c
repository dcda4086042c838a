/* tok_regex.c — the tokenizer's regular expressions on PCRE2, compiled with
 * UTF and UCP so that \s \w \d and \p{..} are Unicode-aware as in Oniguruma
 * and Rust regex, which HF uses: compiling (JIT when available), the
 * per-call match state that keeps encode thread-safe, "the next non-empty
 * match", and replace-all with a literal or a regex (the Replace normalizer
 * and the Replace decoder). */
#define _GNU_SOURCE /* memmem */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <stdio.h>

pcre2_code *qs_tok_re_compile(const char *pat, size_t len, char *why, size_t why_cap)
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

bool qs_tok_re_state_init(re_state *st)
{
    st->md = pcre2_match_data_create(1, NULL);
    st->mctx = pcre2_match_context_create(NULL);
    st->js = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL);
    if (!st->md || !st->mctx || !st->js) return false;
    pcre2_jit_stack_assign(st->mctx, NULL, st->js);
    return true;
}

void qs_tok_re_state_free(re_state *st)
{
    pcre2_match_data_free(st->md);
    pcre2_match_context_free(st->mctx);
    pcre2_jit_stack_free(st->js);
}

/* Next non-empty match at or after `from`: 1 found, 0 none, -1 error. */
int qs_tok_re_next(const pcre2_code *re, re_state *st, const char *s, size_t n, size_t from, size_t *ms,
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
        qs_utf8_get(s + ov[0], &l);
        from = ov[0] + l;
    }
    return 0;
}

int qs_tok_replace_all(const char *lit, size_t lit_len, const pcre2_code *re, re_state *st, const char *s, size_t n,
                       const char *content, size_t clen, qs_strbuf *out)
{
    size_t i = 0;
    for (;;) {
        size_t ms, me;
        if (re) {
            int rc = qs_tok_re_next(re, st, s, n, i, &ms, &me);
            if (rc < 0) return -1;
            if (rc == 0) break;
        } else {
            const char *f = lit_len <= n - i ? memmem(s + i, n - i, lit, lit_len) : NULL;
            if (!f) break;
            ms = (size_t)(f - s);
            me = ms + lit_len;
        }
        qs_strbuf_put(out, s + i, ms - i);
        qs_strbuf_put(out, content, clen);
        if (out->oom) return -2;
        i = me;
    }
    qs_strbuf_put(out, s + i, n - i);
    return out->oom ? -2 : 0;
}
