/* npy.h — NumPy .npy files (format 1.0/2.0/3.0), C order, little-endian.
 *
 * Dtypes: float32 (<f4), float16 (<f2), float64 (<f8, read only), int32 (<i4),
 * int64 (<i8). Used by `qshard layer` and for token sets.
 */
#ifndef QS_NPY_H
#define QS_NPY_H

#include "kernels/tensor.h"

/* Reads a whole .npy into an owned tensor (dtype as stored). Errors name the
 * file and what was expected (fortran order, big-endian, truncated data, ...). */
qs_status qs_npy_read(const char *path, qs_tensor *out, qs_error *err);

/* Reads and converts to f32 (from f32/f16/f64). */
qs_status qs_npy_read_f32(const char *path, qs_tensor *out, qs_error *err);

/* Reads integer token ids (int32 or int64 on disk) into an I32 tensor;
 * values outside int32 are an error. */
qs_status qs_npy_read_i32(const char *path, qs_tensor *out, qs_error *err);

/* Writes a tensor (F32, F16, I32, I64) durably: temp file, fsync, rename. */
qs_status qs_npy_write(const char *path, const qs_tensor *t, qs_error *err);

/* ---- parsing from memory (used by the readers and the fuzzer) ---------- */

typedef struct qs_npy_header {
    qs_dtype dtype;
    int ndim;
    int64_t shape[QS_MAX_DIMS];
    uint64_t data_offset; /* where the array data starts in the file */
    uint64_t nbytes;      /* numel × dtype size */
} qs_npy_header;

/* Parses the magic, version and header dict from buf (len bytes: the start of
 * a file, at least up to the data). Rejects what the readers cannot load:
 * Fortran order, big-endian or unsupported dtypes, malformed dicts. */
qs_status qs_npy_parse_header(const void *buf, size_t len, const char *origin, qs_npy_header *out, qs_error *err);

#endif
