/* option_parse.c — strict parsing of option values. */
#include "pipeline/option_parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

qs_status qs_parse_long(const char *opt, const char *val, long lo, long hi, long *out, qs_error *err)
{
    char *end = NULL;
    errno = 0;
    long v = val ? strtol(val, &end, 10) : 0;
    if (!val || !*val || *end || errno)
        return qs_error_set(err, QS_ERR_INPUT, "%s: expected an integer, got '%s'", opt, val ? val : "");
    if (v < lo || v > hi)
        return qs_error_set(err, QS_ERR_INPUT, "%s: %ld is outside [%ld, %ld]", opt, v, lo, hi);
    *out = v;
    return QS_OK;
}

qs_status qs_parse_double(const char *opt, const char *val, double *out, qs_error *err)
{
    char *end = NULL;
    errno = 0;
    double v = val ? strtod(val, &end) : 0;
    if (!val || !*val || *end || errno || !isfinite(v))
        return qs_error_set(err, QS_ERR_INPUT, "%s: expected a number, got '%s'", opt, val ? val : "");
    *out = v;
    return QS_OK;
}

qs_status qs_parse_bytes(const char *opt, const char *val, uint64_t *out, qs_error *err)
{
    char *end = NULL;
    errno = 0;
    double v = val ? strtod(val, &end) : 0;
    if (!val || end == val || errno || !(v >= 0))
        return qs_error_set(err, QS_ERR_INPUT, "%s: expected a size like 80GiB, got '%s'", opt, val ? val : "");
    double mul = 1;
    while (*end == ' ') end++;
    if (*end) {
        char u = (char)toupper((unsigned char)*end);
        const char *rest = end + 1;
        if (u == 'K') mul = 1024.0;
        else if (u == 'M') mul = 1024.0 * 1024;
        else if (u == 'G') mul = 1024.0 * 1024 * 1024;
        else if (u == 'T') mul = 1024.0 * 1024 * 1024 * 1024;
        else if (u == 'B') rest = end + 1, mul = 1;
        else return qs_error_set(err, QS_ERR_INPUT, "%s: unknown size unit in '%s'", opt, val);
        if (u != 'B') {
            if (strcasecmp(rest, "iB") == 0 || strcasecmp(rest, "B") == 0 || *rest == '\0') {
                /* KiB/KB/K are all binary: memory sizes are always powers of two here */
            } else {
                return qs_error_set(err, QS_ERR_INPUT, "%s: unknown size unit in '%s'", opt, val);
            }
        } else if (*rest) {
            return qs_error_set(err, QS_ERR_INPUT, "%s: unknown size unit in '%s'", opt, val);
        }
    }
    /* a size beyond 2^60 bytes (1 EiB) is a typo or "inf": refused, never cast */
    double bytes = v * mul;
    if (!isfinite(bytes) || bytes > 1152921504606846976.0)
        return qs_error_set(err, QS_ERR_INPUT, "%s: '%s' is not a size up to 1 EiB", opt, val);
    *out = (uint64_t)bytes;
    return QS_OK;
}
