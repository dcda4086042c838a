/* option_parse.h — strict parsing of option values ("--bits 4", "80GiB"),
 * shared by the command line (pipeline/cli/) and job files (run_options):
 * the whole string must be a value in range, or the error names the option. */
#ifndef QS_OPTION_PARSE_H
#define QS_OPTION_PARSE_H

#include <stdint.h>

#include "kernels/status.h"

/* Strict number parsing for option values ("--bits" "4"). */
qs_status qs_parse_long(const char *opt, const char *val, long lo, long hi, long *out, qs_error *err);
qs_status qs_parse_double(const char *opt, const char *val, double *out, qs_error *err);
/* "80GiB", "512MiB", "1.5e9", "64G" (G = GiB) → bytes; at most 2^60 (1 EiB), never inf/nan. */
qs_status qs_parse_bytes(const char *opt, const char *val, uint64_t *out, qs_error *err);

#endif
