/* strbuf.h — a growable string for text we build piece by piece (JSON
 * headers, batch scripts, the tokenizer's text). Allocation failure is
 * sticky: `oom` is set, later appends do nothing, and the caller checks once
 * at the end. */
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
/* Makes room for n more bytes and the NUL, so that the caller may write them
 * at p + len itself (then add to len and put the NUL); p is not NULL after
 * it. False when out of memory, now or before (oom). */
bool qs_strbuf_reserve(qs_strbuf *b, size_t n);
/* Cuts b to its first len bytes (len <= b->len), keeping the memory for
 * reuse; qs_strbuf_truncate(b, 0) empties it. `oom` stays as it was. */
void qs_strbuf_truncate(qs_strbuf *b, size_t len);
void qs_strbuf_free(qs_strbuf *b);

#endif
