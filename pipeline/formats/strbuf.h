/* strbuf.h — a growable string for text we build piece by piece (JSON
 * headers, batch scripts). Allocation failure is sticky: `oom` is set, later
 * appends do nothing, and the caller checks once at the end. */
#ifndef QS_STRBUF_H
#define QS_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct qs_strbuf {
    char *p;      /* NUL-terminated; NULL until the first append */
    size_t len, cap;
    bool oom;
} qs_strbuf;

void qs_strbuf_put(qs_strbuf *b, const char *s, size_t n);
void qs_strbuf_str(qs_strbuf *b, const char *s);
void qs_strbuf_fmt(qs_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qs_strbuf_free(qs_strbuf *b);

#endif
