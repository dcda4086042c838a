/* status.h — errors are values.
 *
 * Library code never exits or aborts. Every fallible function returns a
 * qs_status and fills a qs_error whose message names the file, the tensor and
 * what was expected, e.g.
 *   "model.safetensors: tensor 'lm_head.weight': shape [10,4] × F32 needs 160 bytes, data_offsets span 96"
 * The CLI prints that one line and maps the status to an exit code
 * (QS_ERR_INPUT → 2, QS_ERR_INTERRUPTED → 3, others → 1).
 */
#ifndef QS_STATUS_H
#define QS_STATUS_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) calls these C functions */
#endif

typedef enum qs_status {
    QS_OK = 0,
    QS_ERR_INPUT,       /* bad input: malformed file, wrong shape, NaN, bad option */
    QS_ERR_IO,          /* the OS said no: open/read/write/fsync failed */
    QS_ERR_NOMEM,       /* allocation failed */
    QS_ERR_UNSUPPORTED, /* valid input we do not handle (yet) */
    QS_ERR_NUMERIC,     /* numerical failure: Cholesky not positive definite, ... */
    QS_ERR_INTERRUPTED, /* stopped by a signal at a safe point; resumable */
    QS_ERR_INTERNAL     /* a bug: an invariant did not hold */
} qs_status;

#define QS_ERROR_MSG_MAX 1024

typedef struct qs_error {
    qs_status code;
    char msg[QS_ERROR_MSG_MAX];
} qs_error;

/* Sets err (if non-NULL) and returns code, so callers can write
 *   return qs_error_set(err, QS_ERR_INPUT, "%s: ...", path);            */
qs_status qs_error_set(qs_error *err, qs_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (adds context on the way up). */
qs_status qs_error_prefix(qs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void qs_error_clear(qs_error *err);

/* Process exit code for a status: 0 ok, 2 bad input, 3 interrupted, 1 otherwise. */
int qs_status_exit_code(qs_status s);

const char *qs_status_name(qs_status s);

/* Propagate a failing status. */
#define QS_TRY(expr)                         \
    do {                                     \
        qs_status qs_try_s_ = (expr);        \
        if (qs_try_s_ != QS_OK) return qs_try_s_; \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
