/* tensor.c — dtypes, owned arrays, dtype conversion. */
#include "kernels/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"

static const struct {
    const char *name;
    size_t size;
} dtype_table[QS_DTYPE_COUNT] = {
    [QS_DTYPE_F32] = {"F32", 4},  [QS_DTYPE_F16] = {"F16", 2}, [QS_DTYPE_BF16] = {"BF16", 2},
    [QS_DTYPE_F64] = {"F64", 8},  [QS_DTYPE_I8] = {"I8", 1},   [QS_DTYPE_U8] = {"U8", 1},
    [QS_DTYPE_I16] = {"I16", 2},  [QS_DTYPE_I32] = {"I32", 4}, [QS_DTYPE_I64] = {"I64", 8},
    [QS_DTYPE_BOOL] = {"BOOL", 1},
};

size_t qs_dtype_size(qs_dtype dt) { return (unsigned)dt < QS_DTYPE_COUNT ? dtype_table[dt].size : 0; }

const char *qs_dtype_name(qs_dtype dt) { return (unsigned)dt < QS_DTYPE_COUNT ? dtype_table[dt].name : "?"; }

bool qs_dtype_parse(const char *name, qs_dtype *out)
{
    for (int i = 0; i < QS_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (qs_dtype)i;
            return true;
        }
    }
    return false;
}

int64_t qs_shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

int64_t qs_tensor_numel(const qs_tensor *t) { return qs_shape_numel(t->ndim, t->shape); }

size_t qs_tensor_nbytes(const qs_tensor *t) { return (size_t)qs_tensor_numel(t) * qs_dtype_size(t->dtype); }

void *qs_malloc(size_t bytes)
{
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&p, 64, rounded) != 0) return NULL;
    return p;
}

void *qs_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) return NULL;
    void *p = qs_malloc(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

void qs_free(void *p) { free(p); }

qs_status qs_tensor_init(qs_tensor *t, qs_dtype dt, int ndim, const int64_t *shape, qs_error *err)
{
    memset(t, 0, sizeof *t);
    if (ndim < 0 || ndim > QS_MAX_DIMS)
        return qs_error_set(err, QS_ERR_INTERNAL, "tensor rank %d exceeds %d", ndim, QS_MAX_DIMS);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return qs_error_set(err, QS_ERR_INTERNAL, "negative dimension %lld", (long long)shape[i]);
        t->shape[i] = shape[i];
    }
    size_t bytes = qs_tensor_nbytes(t);
    t->data = qs_calloc(1, bytes ? bytes : 1);
    if (!t->data) return qs_error_set(err, QS_ERR_NOMEM, "cannot allocate %zu bytes for a tensor", bytes);
    return QS_OK;
}

void qs_tensor_free(qs_tensor *t)
{
    if (!t) return;
    if (!t->borrowed) qs_free(t->data);
    memset(t, 0, sizeof *t);
}

const char *qs_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    size_t off = 0;
    if (cap == 0) return buf;
    buf[0] = '\0';
    off += (size_t)snprintf(buf + off, cap - off, "[");
    for (int i = 0; i < ndim && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (off < cap) snprintf(buf + off, cap - off, "]");
    return buf;
}

qs_status qs_convert_to_f32(const void *src, qs_dtype dt, size_t n, float *dst, qs_error *err)
{
    switch (dt) {
    case QS_DTYPE_F32: memmove(dst, src, n * 4); return QS_OK;
    case QS_DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = qs_f16_to_f32(s[i]);
        return QS_OK;
    }
    case QS_DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = qs_bf16_to_f32(s[i]);
        return QS_OK;
    }
    case QS_DTYPE_F64: {
        const double *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)s[i];
        return QS_OK;
    }
    default:
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "cannot convert %s to F32", qs_dtype_name(dt));
    }
}

qs_status qs_convert_from_f32(const float *src, size_t n, qs_dtype dt, void *dst, qs_error *err)
{
    switch (dt) {
    case QS_DTYPE_F32: memmove(dst, src, n * 4); return QS_OK;
    case QS_DTYPE_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = qs_f32_to_f16(src[i]);
        return QS_OK;
    }
    case QS_DTYPE_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = qs_f32_to_bf16(src[i]);
        return QS_OK;
    }
    default:
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "cannot convert F32 to %s", qs_dtype_name(dt));
    }
}
