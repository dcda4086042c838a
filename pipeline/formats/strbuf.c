/* strbuf.c — growable strings. */
#include "pipeline/formats/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool qs_strbuf_reserve(qs_strbuf *b, size_t n)
{
    if (b->oom) return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return false;
        }
        b->p = p;
        b->cap = cap;
    }
    return true;
}

void qs_strbuf_put(qs_strbuf *b, const char *s, size_t n)
{
    if (!qs_strbuf_reserve(b, n)) return;
    if (n) memcpy(b->p + b->len, s, n); /* s may be NULL when n is 0 */
    b->len += n;
    b->p[b->len] = '\0';
}

void qs_strbuf_truncate(qs_strbuf *b, size_t len)
{
    if (len > b->len) return;
    b->len = len;
    if (b->p) b->p[len] = '\0';
}

void qs_strbuf_str(qs_strbuf *b, const char *s) { qs_strbuf_put(b, s, strlen(s)); }

void qs_strbuf_fmt(qs_strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->oom) return;
    char *tmp = malloc((size_t)n + 1);
    if (!tmp) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(tmp, (size_t)n + 1, fmt, ap);
    va_end(ap);
    qs_strbuf_put(b, tmp, (size_t)n);
    free(tmp);
}

void qs_strbuf_free(qs_strbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}
