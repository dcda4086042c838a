/* utf8.h — UTF-8 for the tokenizer: validating (with the "maximal subpart"
 * rule of Rust's from_utf8_lossy, which HF follows), decoding and encoding
 * one code point, and Unicode White_Space. Inputs are byte ranges, not
 * NUL-terminated strings; nothing here allocates. */
#ifndef QS_TOK_UTF8_H
#define QS_TOK_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid; on
 * invalid input *sub gets the length of the maximal subpart to replace with
 * one U+FFFD (the Unicode "substitution of maximal subparts" practice, which
 * Rust's from_utf8_lossy follows). */
size_t qs_utf8_seq(const unsigned char *s, size_t n, size_t *sub);

/* Byte offset of the first invalid UTF-8 sequence, or n when all is valid. */
size_t qs_utf8_check(const char *s, size_t n);

/* Decodes one code point from valid UTF-8; *len gets its byte length.
 * Inline: the BPE loop runs it once per character. */
static inline uint32_t qs_utf8_get(const char *s, size_t *len)
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

/* Writes cp as UTF-8 to o (room for 4 bytes); returns the byte length. */
size_t qs_utf8_put(uint32_t cp, char *o);

/* Unicode White_Space (Rust's char::is_whitespace). */
bool qs_utf8_is_space(uint32_t c);

#endif
