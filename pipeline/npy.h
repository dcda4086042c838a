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

#endif
