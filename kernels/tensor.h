/* tensor.h — dtypes and a plain owned n-d array.
 *
 * A qs_tensor owns its data (malloc'd, 64-byte aligned) unless `borrowed` is
 * set, in which case data points into someone else's memory (an mmap'd file).
 * Row-major, shapes as in safetensors/NumPy: a Linear weight is [out, in].
 */
#ifndef QS_TENSOR_H
#define QS_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) calls these C functions */
#endif

typedef enum qs_dtype {
    QS_DTYPE_F32 = 0,
    QS_DTYPE_F16,
    QS_DTYPE_BF16,
    QS_DTYPE_F64,
    QS_DTYPE_I8,
    QS_DTYPE_U8,
    QS_DTYPE_I16,
    QS_DTYPE_I32,
    QS_DTYPE_I64,
    QS_DTYPE_BOOL,
    QS_DTYPE_COUNT
} qs_dtype;

#define QS_MAX_DIMS 8

typedef struct qs_tensor {
    qs_dtype dtype;
    int ndim;
    int64_t shape[QS_MAX_DIMS];
    void *data;
    bool borrowed;
} qs_tensor;

size_t qs_dtype_size(qs_dtype dt);
/* safetensors names: "F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL". */
const char *qs_dtype_name(qs_dtype dt);
/* Parses a safetensors dtype name; returns false for unknown names. */
bool qs_dtype_parse(const char *name, qs_dtype *out);

int64_t qs_shape_numel(int ndim, const int64_t *shape);
int64_t qs_tensor_numel(const qs_tensor *t);
size_t qs_tensor_nbytes(const qs_tensor *t);

/* Allocates zeroed storage. */
qs_status qs_tensor_init(qs_tensor *t, qs_dtype dt, int ndim, const int64_t *shape, qs_error *err);
void qs_tensor_free(qs_tensor *t);

/* Formats a shape as "[2,3,4]" into buf. */
const char *qs_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

/* Converts n elements of F32/F16/BF16/F64 to f32. */
qs_status qs_convert_to_f32(const void *src, qs_dtype dt, size_t n, float *dst, qs_error *err);
/* Converts n f32 to F32/F16/BF16. */
qs_status qs_convert_from_f32(const float *src, size_t n, qs_dtype dt, void *dst, qs_error *err);

/* Aligned allocation helpers (64 bytes: cache line and AVX-512). */
void *qs_malloc(size_t bytes);
void *qs_calloc(size_t n, size_t size);
void qs_free(void *p);

#ifdef __cplusplus
}
#endif

#endif
