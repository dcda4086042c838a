/* utf8.c — UTF-8 validation and encoding, and Unicode White_Space, for the
 * tokenizer (utf8.h says what each function does; decoding one code point is
 * inline there). */
#include "pipeline/formats/tokenizer/utf8.h"

size_t qs_utf8_seq(const unsigned char *s, size_t n, size_t *sub)
{
    unsigned char b = s[0];
    if (b < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b == 0xE0) need = 3, lo = 0xA0;
    else if (b == 0xED) need = 3, hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF) need = 3;
    else if (b == 0xF0) need = 4, lo = 0x90;
    else if (b == 0xF4) need = 4, hi = 0x8F;
    else if (b >= 0xF1 && b <= 0xF3) need = 4;
    else {
        if (sub) *sub = 1;
        return 0;
    }
    for (size_t k = 1; k < need; k++) {
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (k >= n || s[k] < lo_k || s[k] > hi_k) {
            if (sub) *sub = k;
            return 0;
        }
    }
    return need;
}

size_t qs_utf8_check(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t l = qs_utf8_seq((const unsigned char *)s + i, n - i, NULL);
        if (!l) return i;
        i += l;
    }
    return n;
}

size_t qs_utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool qs_utf8_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}
