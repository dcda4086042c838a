/* token_set.h — calibration / eval token sets.
 *
 * A token set is a 2-D int array [rows, seq_len] of token ids, stored as a
 * NumPy .npy file (int32 or int64) or as the dataset `input_ids` of an HDF5
 * file (.h5/.hdf5; any integer type on read, int32 on write). Eval scores
 * positions 1..L-1 of each row; calibration feeds the rows as they are.
 */
#ifndef QS_TOKEN_SET_H
#define QS_TOKEN_SET_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/tensor.h"

typedef enum qs_token_set_format {
    QS_TOKEN_SET_NPY = 0,
    QS_TOKEN_SET_HDF5
} qs_token_set_format;

/* By extension: .npy → NPY; .h5/.hdf5/.he5 → HDF5; anything else is an input error. */
qs_status qs_token_set_format_of(const char *path, qs_token_set_format *out, qs_error *err);

/* Writes an I32 (or I64) [rows, seq_len] tensor durably (temp file, fsync,
 * rename, fsync of the directory). HDF5 gets dataset `input_ids`. */
qs_status qs_token_set_write(const char *path, const qs_tensor *ids, qs_error *err);

/* Reads a token set into an owned I32 [rows, seq_len] tensor. Errors name the
 * file: not 2-D, empty, ids negative or beyond int32, no `input_ids`. */
qs_status qs_token_set_read(const char *path, qs_tensor *out, qs_error *err);

/* Checks that every id is in [0, vocab_size); the error names row and column. */
qs_status qs_token_set_check_vocab(const char *path, const qs_tensor *ids, int64_t vocab_size, qs_error *err);

#endif
