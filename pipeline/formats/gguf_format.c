/* gguf_format.c — the GGUF v3 container: key/values, tensor infos, layout,
 * and ggml's Q4_0/Q4_1/Q8_0 block encodings (see gguf_format.h). */
#define _GNU_SOURCE
#include "pipeline/formats/gguf_format.h"

#include <stdlib.h>
#include <string.h>

/* ---- types ------------------------------------------------------------------ */

const char *qs_gguf_type_name(qs_gguf_type t)
{
    switch (t) {
    case QS_GGUF_TYPE_F32: return "F32";
    case QS_GGUF_TYPE_F16: return "F16";
    case QS_GGUF_TYPE_Q4_0: return "Q4_0";
    case QS_GGUF_TYPE_Q4_1: return "Q4_1";
    case QS_GGUF_TYPE_Q8_0: return "Q8_0";
    }
    return "?";
}

int64_t qs_gguf_type_block_elems(qs_gguf_type t)
{
    return (t == QS_GGUF_TYPE_F32 || t == QS_GGUF_TYPE_F16) ? 1 : QS_GGUF_QK;
}

size_t qs_gguf_type_block_bytes(qs_gguf_type t)
{
    switch (t) {
    case QS_GGUF_TYPE_F32: return 4;
    case QS_GGUF_TYPE_F16: return 2;
    case QS_GGUF_TYPE_Q4_0: return 2 + QS_GGUF_QK / 2;
    case QS_GGUF_TYPE_Q4_1: return 4 + QS_GGUF_QK / 2;
    case QS_GGUF_TYPE_Q8_0: return 2 + QS_GGUF_QK;
    }
    return 0;
}

qs_status qs_gguf_row_bytes(qs_gguf_type t, int64_t ne0, const char *name, uint64_t *bytes, qs_error *err)
{
    int64_t be = qs_gguf_type_block_elems(t);
    if (ne0 <= 0 || ne0 % be)
        return qs_error_set(err, QS_ERR_INPUT, "gguf tensor '%s': a row of %lld weights is not a whole number of %s blocks of %lld",
                            name ? name : "?", (long long)ne0, qs_gguf_type_name(t), (long long)be);
    *bytes = (uint64_t)(ne0 / be) * qs_gguf_type_block_bytes(t);
    return QS_OK;
}

/* ---- little-endian serialization into the key/value buffer -------------------- */

static void kv_put(qs_gguf_layout *l, const void *p, size_t n)
{
    if (l->oom) return;
    if (l->kv_len + n > l->kv_cap) {
        size_t nc = l->kv_cap ? l->kv_cap : 4096;
        while (nc < l->kv_len + n) nc *= 2;
        uint8_t *nb = realloc(l->kv, nc);
        if (!nb) {
            l->oom = true;
            return;
        }
        l->kv = nb;
        l->kv_cap = nc;
    }
    memcpy(l->kv + l->kv_len, p, n);
    l->kv_len += n;
}

/* Explicit byte order, so the file is little-endian on any host. */
static void put_le(uint8_t *dst, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) dst[i] = (uint8_t)(v >> (8 * i));
}

static void kv_u32(qs_gguf_layout *l, uint32_t v)
{
    uint8_t b[4];
    put_le(b, v, 4);
    kv_put(l, b, 4);
}

static void kv_u64(qs_gguf_layout *l, uint64_t v)
{
    uint8_t b[8];
    put_le(b, v, 8);
    kv_put(l, b, 8);
}

static void kv_str(qs_gguf_layout *l, const char *s, size_t n)
{
    kv_u64(l, n);
    kv_put(l, s, n);
}

static void kv_key(qs_gguf_layout *l, const char *key, qs_gguf_vtype t)
{
    kv_str(l, key, strlen(key));
    kv_u32(l, (uint32_t)t);
    l->n_kv++;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

void qs_gguf_add_u32(qs_gguf_layout *l, const char *key, uint32_t v)
{
    kv_key(l, key, QS_GGUF_V_UINT32);
    kv_u32(l, v);
}

void qs_gguf_add_i32(qs_gguf_layout *l, const char *key, int32_t v)
{
    kv_key(l, key, QS_GGUF_V_INT32);
    kv_u32(l, (uint32_t)v);
}

void qs_gguf_add_f32(qs_gguf_layout *l, const char *key, float v)
{
    kv_key(l, key, QS_GGUF_V_FLOAT32);
    kv_u32(l, f32_bits(v));
}

void qs_gguf_add_bool(qs_gguf_layout *l, const char *key, bool v)
{
    kv_key(l, key, QS_GGUF_V_BOOL);
    uint8_t b = v ? 1 : 0;
    kv_put(l, &b, 1);
}

void qs_gguf_add_string_n(qs_gguf_layout *l, const char *key, const char *v, size_t len)
{
    kv_key(l, key, QS_GGUF_V_STRING);
    kv_str(l, v, len);
}

void qs_gguf_add_string(qs_gguf_layout *l, const char *key, const char *v)
{
    qs_gguf_add_string_n(l, key, v, strlen(v));
}

void qs_gguf_add_array_string(qs_gguf_layout *l, const char *key, const char *const *strs, const size_t *lens,
                              size_t n)
{
    kv_key(l, key, QS_GGUF_V_ARRAY);
    kv_u32(l, QS_GGUF_V_STRING);
    kv_u64(l, n);
    for (size_t i = 0; i < n; i++) kv_str(l, strs[i], lens ? lens[i] : strlen(strs[i]));
}

void qs_gguf_add_array_f32(qs_gguf_layout *l, const char *key, const float *v, size_t n)
{
    kv_key(l, key, QS_GGUF_V_ARRAY);
    kv_u32(l, QS_GGUF_V_FLOAT32);
    kv_u64(l, n);
    for (size_t i = 0; i < n; i++) kv_u32(l, f32_bits(v[i]));
}

void qs_gguf_add_array_i32(qs_gguf_layout *l, const char *key, const int32_t *v, size_t n)
{
    kv_key(l, key, QS_GGUF_V_ARRAY);
    kv_u32(l, QS_GGUF_V_INT32);
    kv_u64(l, n);
    for (size_t i = 0; i < n; i++) kv_u32(l, (uint32_t)v[i]);
}

/* ---- layout ------------------------------------------------------------------ */

void qs_gguf_layout_init(qs_gguf_layout *l, uint32_t alignment)
{
    memset(l, 0, sizeof *l);
    l->alignment = alignment ? alignment : QS_GGUF_ALIGNMENT;
}

void qs_gguf_layout_free(qs_gguf_layout *l)
{
    if (!l) return;
    free(l->kv);
    for (size_t i = 0; i < l->n_tensors; i++) free(l->tensors[i].name);
    free(l->tensors);
    memset(l, 0, sizeof *l);
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

qs_status qs_gguf_add_tensor(qs_gguf_layout *l, const char *name, int n_dims, const uint64_t *ne, qs_gguf_type type,
                             size_t *index, qs_error *err)
{
    if (l->finished) return qs_error_set(err, QS_ERR_INTERNAL, "gguf tensor '%s' added after the layout was fixed", name);
    if (n_dims < 1 || n_dims > 4)
        return qs_error_set(err, QS_ERR_INPUT, "gguf tensor '%s': %d dims (1 to 4 expected)", name, n_dims);
    uint64_t row;
    QS_TRY(qs_gguf_row_bytes(type, (int64_t)ne[0], name, &row, err));
    uint64_t rows = 1;
    for (int d = 1; d < n_dims; d++) {
        if (ne[d] == 0) return qs_error_set(err, QS_ERR_INPUT, "gguf tensor '%s': dim %d is 0", name, d);
        rows *= ne[d];
    }
    if (l->n_tensors == l->tensors_cap) {
        size_t nc = l->tensors_cap ? 2 * l->tensors_cap : 64;
        qs_gguf_tensor_info *nt = realloc(l->tensors, nc * sizeof *nt);
        if (!nt) return qs_error_set(err, QS_ERR_NOMEM, "gguf tensor '%s'", name);
        l->tensors = nt;
        l->tensors_cap = nc;
    }
    qs_gguf_tensor_info *t = &l->tensors[l->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return qs_error_set(err, QS_ERR_NOMEM, "gguf tensor '%s'", name);
    t->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    t->type = type;
    t->nbytes = row * rows;
    t->rel_offset = l->data_bytes;
    l->data_bytes += align_up(t->nbytes, l->alignment);
    if (index) *index = l->n_tensors;
    l->n_tensors++;
    return QS_OK;
}

static uint64_t header_size(const qs_gguf_layout *l)
{
    uint64_t n = 4 + 4 + 8 + 8 + l->kv_len;
    for (size_t i = 0; i < l->n_tensors; i++)
        n += 8 + strlen(l->tensors[i].name) + 4 + 8 * (uint64_t)l->tensors[i].n_dims + 4 + 8;
    return n;
}

qs_status qs_gguf_layout_finish(qs_gguf_layout *l, qs_error *err)
{
    if (l->oom) return qs_error_set(err, QS_ERR_NOMEM, "gguf metadata");
    l->data_start = align_up(header_size(l), l->alignment);
    for (size_t i = 0; i < l->n_tensors; i++) l->tensors[i].offset = l->data_start + l->tensors[i].rel_offset;
    l->finished = true;
    return QS_OK;
}

uint64_t qs_gguf_layout_file_size(const qs_gguf_layout *l) { return l->data_start + l->data_bytes; }

qs_status qs_gguf_layout_header(const qs_gguf_layout *l, uint8_t **out, size_t *len, qs_error *err)
{
    if (!l->finished) return qs_error_set(err, QS_ERR_INTERNAL, "gguf header asked before the layout was fixed");
    uint8_t *b = calloc(1, (size_t)l->data_start);
    if (!b) return qs_error_set(err, QS_ERR_NOMEM, "gguf header (%llu bytes)", (unsigned long long)l->data_start);
    uint8_t *p = b;
    memcpy(p, "GGUF", 4), p += 4;
    put_le(p, QS_GGUF_VERSION, 4), p += 4;
    put_le(p, l->n_tensors, 8), p += 8;
    put_le(p, l->n_kv, 8), p += 8;
    memcpy(p, l->kv, l->kv_len), p += l->kv_len;
    for (size_t i = 0; i < l->n_tensors; i++) {
        const qs_gguf_tensor_info *t = &l->tensors[i];
        size_t nl = strlen(t->name);
        put_le(p, nl, 8), p += 8;
        memcpy(p, t->name, nl), p += nl;
        put_le(p, (uint64_t)t->n_dims, 4), p += 4;
        for (int d = 0; d < t->n_dims; d++) put_le(p, t->ne[d], 8), p += 8;
        put_le(p, (uint64_t)t->type, 4), p += 4;
        put_le(p, t->rel_offset, 8), p += 8;
    }
    size_t wrote = (size_t)(p - b);
    if (wrote != header_size(l)) {
        free(b);
        return qs_error_set(err, QS_ERR_INTERNAL, "gguf header: wrote %zu bytes, planned %llu", wrote,
                            (unsigned long long)header_size(l));
    }
    *out = b;
    *len = (size_t)l->data_start;
    return QS_OK;
}

/* ---- block encoders ------------------------------------------------------------ */

static void pack_nibbles(const uint8_t *q, uint8_t *dst)
{
    for (int j = 0; j < QS_GGUF_QK / 2; j++)
        dst[j] = (uint8_t)((q[j] & 0x0f) | ((q[j + QS_GGUF_QK / 2] & 0x0f) << 4));
}

void qs_gguf_block_q4_0(uint16_t d, const uint8_t *q, uint8_t out[18])
{
    put_le(out, d, 2);
    pack_nibbles(q, out + 2);
}

void qs_gguf_block_q4_1(uint16_t d, uint16_t m, const uint8_t *q, uint8_t out[20])
{
    put_le(out, d, 2);
    put_le(out + 2, m, 2);
    pack_nibbles(q, out + 4);
}

void qs_gguf_block_q8_0(uint16_t d, const int8_t *q, uint8_t out[34])
{
    put_le(out, d, 2);
    memcpy(out + 2, q, QS_GGUF_QK);
}
