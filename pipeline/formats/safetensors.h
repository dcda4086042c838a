/* safetensors.h — reading and writing the safetensors format.
 *
 * Format: u64 little-endian N, N bytes of JSON header, then the data region.
 * Header: {"__metadata__": {str: str}?, NAME: {"dtype", "shape", "data_offsets": [b, e]}}
 * with offsets relative to the data region.
 *
 * Reader: validates everything before any tensor is used (header length bound,
 * JSON, dtype, shape × dtype size == end − begin, ranges inside the file, no
 * overlaps) and mmaps the file, so reading one tensor touches only its pages.
 * Writer: streaming — tensors are declared first, then their bytes are
 * appended in declaration order, so a multi-GB file needs little memory.
 * Output is byte-identical to the Python `safetensors` library for the same
 * tensors and metadata.
 */
#ifndef QS_SAFETENSORS_H
#define QS_SAFETENSORS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/tensor.h"

/* Upper bound on the JSON header: a 405B-class shard holds a few thousand tensors. */
#define QS_ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct qs_st_info {
    char *name;
    qs_dtype dtype;
    int ndim;
    int64_t shape[QS_MAX_DIMS];
    uint64_t offset; /* absolute byte offset in the file */
    uint64_t nbytes;
} qs_st_info;

typedef struct qs_st_file qs_st_file;

qs_status qs_st_open(const char *path, qs_st_file **out, qs_error *err);
void qs_st_close(qs_st_file *f);

const char *qs_st_path(const qs_st_file *f);
size_t qs_st_count(const qs_st_file *f);
const qs_st_info *qs_st_at(const qs_st_file *f, size_t i); /* sorted by name */
const qs_st_info *qs_st_find(const qs_st_file *f, const char *name);
/* A "__metadata__" value, or NULL. */
const char *qs_st_metadata(const qs_st_file *f, const char *key);
/* Pointer to the tensor's bytes inside the mapping (valid until close). */
const void *qs_st_data(const qs_st_file *f, const qs_st_info *t);

/* Copies one tensor converted to f32 into dst (numel floats). With
 * check_finite, a NaN/Inf is an error naming file, tensor and element index. */
qs_status qs_st_read_f32(const qs_st_file *f, const qs_st_info *t, float *dst, bool check_finite, qs_error *err);

/* Bytes of tensor data this process has read through qs_st_read_f32 (all files);
 * the pipeline reports it per rank to show that a rank reads only its blocks. */
uint64_t qs_st_bytes_read(void);

/* ---- writer ---------------------------------------------------------------- */

typedef struct qs_st_writer qs_st_writer;

qs_status qs_st_writer_open(const char *path, qs_st_writer **out, qs_error *err);
qs_status qs_st_writer_metadata(qs_st_writer *w, const char *key, const char *value, qs_error *err);
/* Declares a tensor. The data region is laid out as the Python library does. */
qs_status qs_st_writer_declare(qs_st_writer *w, const char *name, qs_dtype dt, int ndim, const int64_t *shape,
                               qs_error *err);
/* Writes the header; after it, tensor data is written with qs_st_writer_tensor()
 * in the order given by qs_st_writer_order(). */
qs_status qs_st_writer_begin(qs_st_writer *w, qs_error *err);
/* The name of the i-th tensor in data order (valid after begin). */
const char *qs_st_writer_order(const qs_st_writer *w, size_t i);
/* Appends bytes of the named tensor (which must be the next in data order);
 * may be called several times per tensor with consecutive chunks. */
qs_status qs_st_writer_tensor(qs_st_writer *w, const char *name, const void *bytes, uint64_t nbytes, qs_error *err);
/* Checks every declared byte was written; temp file → fsync → rename → fsync dir.
 * On success the writer is freed; on failure call qs_st_writer_abort. */
qs_status qs_st_writer_finish(qs_st_writer *w, qs_error *err);
/* Removes the temp file and frees (safe after a failure or with NULL). */
void qs_st_writer_abort(qs_st_writer *w);

/* ---- parsing from memory ---------------------------------------------------
 * qs_st_open maps the file and calls qs_st_parse; the fuzzer calls both
 * directly. A parsed header owns its strings; free it with qs_st_header_free. */

typedef struct qs_st_header {
    qs_st_info *tensors;   /* sorted by name; offsets absolute (data_start + begin) */
    size_t count;
    char **meta_keys;      /* "__metadata__" entries in file order */
    char **meta_values;
    size_t n_meta;
    uint64_t data_start;   /* 8 + header length */
} qs_st_header;

/* Validates a whole file held in memory: the u64 length, its bounds, then the header. */
qs_status qs_st_parse(const void *buf, size_t size, const char *origin, qs_st_header *out, qs_error *err);
/* Validates the JSON header alone (len bytes, need not be NUL-terminated) for a
 * data region of data_size bytes starting at file offset data_start. */
qs_status qs_st_parse_header(const void *json, size_t len, uint64_t data_start, uint64_t data_size,
                             const char *origin, qs_st_header *out, qs_error *err);
void qs_st_header_free(qs_st_header *h);

/* "__metadata__" entries of an open file, in file order. */
size_t qs_st_metadata_count(const qs_st_file *f);
const char *qs_st_metadata_key(const qs_st_file *f, size_t i);
uint64_t qs_st_file_size(const qs_st_file *f);

/* A name from a file made safe for a one-line error message: control bytes
 * become '?', and names longer than cap − 4 bytes are cut with "...". */
#define QS_ST_SHOW_MAX 128
const char *qs_st_show_name(const char *name, char *buf, size_t cap);

#endif
