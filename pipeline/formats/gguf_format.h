/* gguf_format.h — the GGUF v3 container, low level: metadata key/values,
 * tensor infos, the aligned layout, and the ggml block encodings qshard writes.
 *
 * File layout (all little-endian):
 *   "GGUF" u32 version=3, u64 n_tensors, u64 n_kv
 *   n_kv × { string key, u32 value_type, value }
 *   n_tensors × { string name, u32 n_dims, u64 ne[n_dims] (fastest first),
 *                 u32 ggml_type, u64 offset (relative to the data start) }
 *   zero padding to the alignment, then the tensor data, each tensor at an
 *   aligned offset.  A string is u64 length + bytes (no NUL); an array is
 *   u32 element type, u64 count, elements.
 *
 * A qs_gguf_layout collects the key/values and tensors, then fixes every
 * offset: the header bytes and each tensor's absolute file offset are known
 * before any tensor data exists, so several processes can pwrite() their own
 * tensors into one pre-sized file and one of them writes the header last.
 *
 * Block encodings (ggml's, 32 weights per block, fp16 = IEEE half):
 *   Q4_0: fp16 d, 16 bytes; byte j holds q[j] (low nibble) and q[j+16] (high);
 *         x = d·(q − 8), q in [0, 15]
 *   Q4_1: fp16 d, fp16 m, 16 bytes as Q4_0; x = d·q + m
 *   Q8_0: fp16 d, 32 × int8 q; x = d·q
 */
#ifndef QS_GGUF_FORMAT_H
#define QS_GGUF_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/status.h"

#define QS_GGUF_VERSION 3u
#define QS_GGUF_ALIGNMENT 32u
#define QS_GGUF_QK 32 /* weights per Q4_0/Q4_1/Q8_0 block */

/* ggml tensor types qshard writes (values are ggml's). */
typedef enum qs_gguf_type {
    QS_GGUF_TYPE_F32 = 0,
    QS_GGUF_TYPE_F16 = 1,
    QS_GGUF_TYPE_Q4_0 = 2,
    QS_GGUF_TYPE_Q4_1 = 3,
    QS_GGUF_TYPE_Q8_0 = 8,
} qs_gguf_type;

/* Metadata value types (values are GGUF's). */
typedef enum qs_gguf_vtype {
    QS_GGUF_V_UINT8 = 0,
    QS_GGUF_V_INT8 = 1,
    QS_GGUF_V_UINT16 = 2,
    QS_GGUF_V_INT16 = 3,
    QS_GGUF_V_UINT32 = 4,
    QS_GGUF_V_INT32 = 5,
    QS_GGUF_V_FLOAT32 = 6,
    QS_GGUF_V_BOOL = 7,
    QS_GGUF_V_STRING = 8,
    QS_GGUF_V_ARRAY = 9,
    QS_GGUF_V_UINT64 = 10,
    QS_GGUF_V_INT64 = 11,
    QS_GGUF_V_FLOAT64 = 12,
} qs_gguf_vtype;

/* llama.cpp's general.file_type values (LlamaFileType) for what qshard writes. */
typedef enum qs_gguf_file_type {
    QS_GGUF_FTYPE_ALL_F32 = 0,
    QS_GGUF_FTYPE_MOSTLY_F16 = 1,
    QS_GGUF_FTYPE_MOSTLY_Q4_0 = 2,
    QS_GGUF_FTYPE_MOSTLY_Q4_1 = 3,
    QS_GGUF_FTYPE_MOSTLY_Q8_0 = 7,
} qs_gguf_file_type;

/* "F32", "F16", "Q4_0", "Q4_1", "Q8_0" ("?" for others). */
const char *qs_gguf_type_name(qs_gguf_type t);
/* Weights per block (1 for F32/F16, 32 for the quantized types). */
int64_t qs_gguf_type_block_elems(qs_gguf_type t);
/* Bytes per block: 4, 2, 18, 20, 34. */
size_t qs_gguf_type_block_bytes(qs_gguf_type t);
/* Bytes of one row of ne0 weights; QS_ERR_INPUT when ne0 is not a whole number
 * of blocks (name is used in the message). */
qs_status qs_gguf_row_bytes(qs_gguf_type t, int64_t ne0, const char *name, uint64_t *bytes, qs_error *err);

/* ---- the layout ------------------------------------------------------------ */

typedef struct qs_gguf_tensor_info {
    char *name;
    int n_dims;
    uint64_t ne[4];      /* fastest first: a [out, in] matrix is ne = {in, out} */
    qs_gguf_type type;
    uint64_t rel_offset; /* from the data start (a multiple of the alignment) */
    uint64_t offset;     /* absolute file offset (valid after qs_gguf_layout_finish) */
    uint64_t nbytes;
} qs_gguf_tensor_info;

typedef struct qs_gguf_layout {
    uint32_t alignment;
    /* serialized key/values, in the order they were added */
    uint8_t *kv;
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    qs_gguf_tensor_info *tensors;
    size_t n_tensors, tensors_cap;
    uint64_t data_bytes;  /* sum of aligned tensor sizes */
    uint64_t data_start;  /* header size rounded up to the alignment (after finish) */
    bool finished;
    bool oom;             /* an allocation failed while adding; reported by finish */
} qs_gguf_layout;

void qs_gguf_layout_init(qs_gguf_layout *l, uint32_t alignment);
void qs_gguf_layout_free(qs_gguf_layout *l);

/* Key/values. Keys and strings are UTF-8; a string value may hold any bytes
 * (add_string_n). Allocation failures are remembered and reported by finish. */
void qs_gguf_add_u32(qs_gguf_layout *l, const char *key, uint32_t v);
void qs_gguf_add_i32(qs_gguf_layout *l, const char *key, int32_t v);
void qs_gguf_add_f32(qs_gguf_layout *l, const char *key, float v);
void qs_gguf_add_bool(qs_gguf_layout *l, const char *key, bool v);
void qs_gguf_add_string(qs_gguf_layout *l, const char *key, const char *v);
void qs_gguf_add_string_n(qs_gguf_layout *l, const char *key, const char *v, size_t len);
/* Arrays. strs[i] has lens[i] bytes (lens NULL: NUL-terminated strings). */
void qs_gguf_add_array_string(qs_gguf_layout *l, const char *key, const char *const *strs, const size_t *lens,
                              size_t n);
void qs_gguf_add_array_f32(qs_gguf_layout *l, const char *key, const float *v, size_t n);
void qs_gguf_add_array_i32(qs_gguf_layout *l, const char *key, const int32_t *v, size_t n);

/* Adds a tensor of n_dims (1..4) dims ne (fastest first); returns its index
 * in *index (may be NULL). ne[0] must be a whole number of blocks. Tensors are
 * laid out in the order they are added. */
qs_status qs_gguf_add_tensor(qs_gguf_layout *l, const char *name, int n_dims, const uint64_t *ne, qs_gguf_type type,
                             size_t *index, qs_error *err);

/* Fixes the header size and every absolute offset; no more adds after it. */
qs_status qs_gguf_layout_finish(qs_gguf_layout *l, qs_error *err);
/* Total file size (data start + data), after finish. */
uint64_t qs_gguf_layout_file_size(const qs_gguf_layout *l);
/* The header bytes, zero-padded to the data start (data_start bytes, malloc'd). */
qs_status qs_gguf_layout_header(const qs_gguf_layout *l, uint8_t **out, size_t *len, qs_error *err);

/* ---- block encoders ---------------------------------------------------------
 * Each writes one ggml block. d and m are fp16 bit patterns. */

/* q[32] in [0, 15]; x = d·(q − 8). */
void qs_gguf_block_q4_0(uint16_t d, const uint8_t *q, uint8_t out[18]);
/* q[32] in [0, 15]; x = d·q + m. */
void qs_gguf_block_q4_1(uint16_t d, uint16_t m, const uint8_t *q, uint8_t out[20]);
/* q[32]; x = d·q. */
void qs_gguf_block_q8_0(uint16_t d, const int8_t *q, uint8_t out[34]);

#endif
