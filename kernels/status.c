/* status.c — error values and their exit codes. */
#include "kernels/status.h"

#include <stdio.h>
#include <string.h>

qs_status qs_error_set(qs_error *err, qs_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

qs_status qs_error_prefix(qs_error *err, const char *fmt, ...)
{
    if (!err) return QS_ERR_INTERNAL;
    char prefix[QS_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Build "prefix: old" by hand: truncation at the buffer end is intended. */
    char old[QS_ERROR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    size_t p = strlen(prefix);
    if (p > sizeof err->msg - 3) p = sizeof err->msg - 3;
    memcpy(err->msg, prefix, p);
    err->msg[p] = ':';
    err->msg[p + 1] = ' ';
    size_t room = sizeof err->msg - (p + 2) - 1, o = strlen(old);
    if (o > room) o = room;
    memcpy(err->msg + p + 2, old, o);
    err->msg[p + 2 + o] = '\0';
    return err->code;
}

void qs_error_clear(qs_error *err)
{
    if (!err) return;
    err->code = QS_OK;
    err->msg[0] = '\0';
}

int qs_status_exit_code(qs_status s)
{
    switch (s) {
    case QS_OK: return 0;
    case QS_ERR_INPUT:
    case QS_ERR_UNSUPPORTED: return 2;
    case QS_ERR_INTERRUPTED: return 3;
    default: return 1;
    }
}

const char *qs_status_name(qs_status s)
{
    switch (s) {
    case QS_OK: return "ok";
    case QS_ERR_INPUT: return "bad input";
    case QS_ERR_IO: return "I/O error";
    case QS_ERR_NOMEM: return "out of memory";
    case QS_ERR_UNSUPPORTED: return "unsupported";
    case QS_ERR_NUMERIC: return "numerical failure";
    case QS_ERR_INTERRUPTED: return "interrupted";
    case QS_ERR_INTERNAL: return "internal error";
    }
    return "unknown";
}
