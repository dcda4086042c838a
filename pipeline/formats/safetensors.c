/* safetensors.c — the safetensors reader (validate, mmap, convert) and the
 * streaming writer whose output is byte-identical to the Python library.
 *
 * Layout written by the Python `safetensors` library (checked empirically
 * against safetensors 0.8 with tests/py/test_io_safetensors.py):
 *   - data region order: dtype rank descending (I64, F64, F32, I32, BF16, F16,
 *     I16, I8, U8, BOOL), ties by name in byte order; no padding between tensors;
 *   - JSON header: no whitespace, "__metadata__" first, then the tensors in data
 *     order, each {"dtype":..,"shape":[..],"data_offsets":[b,e]};
 *   - strings escaped as serde_json does (\" \\ \b \f \n \r \t, other control
 *     bytes as \u00xx, everything else raw UTF-8);
 *   - header padded with spaces to a multiple of 8 bytes.
 * The Python library orders "__metadata__" keys by hash (differently per run);
 * we write them sorted so that our output is deterministic.
 */
#define _GNU_SOURCE /* qsort_r */
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/strbuf.h"
#include "pipeline/formats/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Integers in JSON are read through doubles (cJSON): allow only exact ones. */
#define ST_MAX_JSON_INT 9007199254740992.0 /* 2^53 */

static _Atomic uint64_t st_bytes_read;

uint64_t qs_st_bytes_read(void) { return atomic_load(&st_bytes_read); }

static char *st_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

const char *qs_st_show_name(const char *name, char *buf, size_t cap)
{
    if (cap == 0) return "";
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)name;
    for (; *p && n + 1 < cap; p++) buf[n++] = (*p < 0x20 || *p == 0x7f) ? '?' : (char)*p;
    if (*p && cap >= 8) {
        n = cap - 4;
        /* do not leave half a UTF-8 character before the ellipsis */
        while (n > 0 && ((unsigned char)buf[n] & 0xc0) == 0x80) n--;
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* ---- header parsing ------------------------------------------------------- */

void qs_st_header_free(qs_st_header *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->count; i++) free(h->tensors[i].name);
    free(h->tensors);
    for (size_t i = 0; i < h->n_meta; i++) {
        free(h->meta_keys[i]);
        free(h->meta_values[i]);
    }
    free(h->meta_keys);
    free(h->meta_values);
    memset(h, 0, sizeof *h);
}

/* A JSON number that is a non-negative integer below 2^53. */
static bool json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d >= ST_MAX_JSON_INT || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

/* Short description of a JSON value for error messages. */
static const char *json_kind(const cJSON *v)
{
    if (!v) return "missing";
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble < 0) return "negative";
        if (v->valuedouble != floor(v->valuedouble)) return "not an integer";
        if (v->valuedouble >= ST_MAX_JSON_INT) return "too large";
        return "a number";
    }
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "invalid";
}

static int cmp_info_name(const void *a, const void *b)
{
    return strcmp(((const qs_st_info *)a)->name, ((const qs_st_info *)b)->name);
}

static int cmp_info_offset(const void *a, const void *b)
{
    const qs_st_info *x = *(const qs_st_info *const *)a, *y = *(const qs_st_info *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static qs_status parse_metadata(const cJSON *md, const char *origin, qs_st_header *h, qs_error *err)
{
    if (!cJSON_IsObject(md))
        return qs_error_set(err, QS_ERR_INPUT, "%s: \"__metadata__\" is %s, expected an object of strings", origin,
                            json_kind(md));
    size_t n = (size_t)cJSON_GetArraySize(md);
    h->meta_keys = calloc(n ? n : 1, sizeof(char *));
    h->meta_values = calloc(n ? n : 1, sizeof(char *));
    if (!h->meta_keys || !h->meta_values) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, md)
    {
        char kb[QS_ST_SHOW_MAX];
        if (!cJSON_IsString(kv))
            return qs_error_set(err, QS_ERR_INPUT, "%s: \"__metadata__\" value of '%s' is %s, expected a string",
                                origin, qs_st_show_name(kv->string, kb, sizeof kb), json_kind(kv));
        size_t i = h->n_meta;
        h->meta_keys[i] = st_strdup(kv->string);
        h->meta_values[i] = st_strdup(kv->valuestring);
        h->n_meta++;
        if (!h->meta_keys[i] || !h->meta_values[i]) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
    }
    return QS_OK;
}

/* One tensor entry: dtype, shape, data_offsets; checks size and bounds. */
static qs_status parse_entry(const cJSON *e, const char *origin, uint64_t data_start, uint64_t data_size,
                             qs_st_info *t, qs_error *err)
{
    char nb[QS_ST_SHOW_MAX], db[40];
    const char *name = qs_st_show_name(e->string, nb, sizeof nb);
    if (!cJSON_IsObject(e))
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': entry is %s, expected an object", origin, name,
                            json_kind(e));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': \"dtype\" is %s, expected a string like \"F32\"",
                            origin, name, json_kind(dt));
    if (!qs_dtype_parse(dt->valuestring, &t->dtype))
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: tensor '%s': unknown dtype \"%s\" (expected F32, F16, BF16, F64, I8, U8, I16, "
                            "I32, I64 or BOOL)",
                            origin, name, qs_st_show_name(dt->valuestring, db, sizeof db));
    if (!cJSON_IsArray(shape))
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': \"shape\" is %s, expected an array of integers",
                            origin, name, json_kind(shape));
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > QS_MAX_DIMS)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': shape has %d dimensions, at most %d are supported",
                            origin, name, ndim, QS_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        const cJSON *d = cJSON_GetArrayItem(shape, i);
        uint64_t v;
        if (!json_uint(d, &v))
            return qs_error_set(err, QS_ERR_INPUT,
                                "%s: tensor '%s': shape[%d] is %s, expected a non-negative integer", origin, name, i,
                                json_kind(d));
        t->shape[i] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel)) overflow = true;
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': \"data_offsets\" is %s, expected [begin, end]",
                            origin, name, cJSON_IsArray(offs) ? "an array of the wrong length" : json_kind(offs));
    uint64_t b, en;
    const cJSON *ob = cJSON_GetArrayItem(offs, 0), *oe = cJSON_GetArrayItem(offs, 1);
    if (!json_uint(ob, &b) || !json_uint(oe, &en))
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: tensor '%s': \"data_offsets\" must be two non-negative integers, got %s and %s",
                            origin, name, json_kind(ob), json_kind(oe));
    if (en < b)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': data_offsets [%llu,%llu] end before they begin",
                            origin, name, (unsigned long long)b, (unsigned long long)en);
    uint64_t need;
    char sh[160];
    qs_shape_str(ndim, t->shape, sh, sizeof sh);
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)qs_dtype_size(t->dtype), &need))
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': shape %s × %s overflows 64 bits", origin, name, sh,
                            qs_dtype_name(t->dtype));
    if (need != en - b)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': shape %s × %s needs %llu bytes, data_offsets span %llu",
                            origin, name, sh, qs_dtype_name(t->dtype), (unsigned long long)need,
                            (unsigned long long)(en - b));
    if (en > data_size)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: tensor '%s': data_offsets [%llu,%llu] run past the end of the data region (%llu bytes; "
                            "truncated file?)",
                            origin, name, (unsigned long long)b, (unsigned long long)en,
                            (unsigned long long)data_size);
    t->offset = data_start + b;
    t->nbytes = need;
    return QS_OK;
}

static qs_status parse_object(const cJSON *root, const char *origin, uint64_t data_start, uint64_t data_size,
                              qs_st_header *h, qs_error *err)
{
    size_t n = (size_t)cJSON_GetArraySize(root);
    h->tensors = calloc(n ? n : 1, sizeof *h->tensors);
    if (!h->tensors) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory for %zu tensors", origin, n);
    bool seen_meta = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta) return qs_error_set(err, QS_ERR_INPUT, "%s: \"__metadata__\" appears twice", origin);
            seen_meta = true;
            QS_TRY(parse_metadata(e, origin, h, err));
            continue;
        }
        qs_st_info *t = &h->tensors[h->count];
        t->name = st_strdup(e->string);
        if (!t->name) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
        h->count++;
        QS_TRY(parse_entry(e, origin, data_start, data_size, t, err));
    }
    if (h->count > 1) {
        qsort(h->tensors, h->count, sizeof *h->tensors, cmp_info_name);
        for (size_t i = 1; i < h->count; i++)
            if (strcmp(h->tensors[i - 1].name, h->tensors[i].name) == 0) {
                char nb[QS_ST_SHOW_MAX];
                return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' appears twice in the header", origin,
                                    qs_st_show_name(h->tensors[i].name, nb, sizeof nb));
            }
        /* Overlaps: sort views by begin; each range must end before the next begins. */
        const qs_st_info **by_off = malloc(h->count * sizeof *by_off);
        if (!by_off) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
        for (size_t i = 0; i < h->count; i++) by_off[i] = &h->tensors[i];
        qsort(by_off, h->count, sizeof *by_off, cmp_info_offset);
        const qs_st_info *last = NULL; /* the range reaching furthest so far */
        for (size_t i = 0; i < h->count; i++) {
            const qs_st_info *t = by_off[i];
            if (last && t->nbytes && last->offset + last->nbytes > t->offset) {
                char n1[QS_ST_SHOW_MAX], n2[QS_ST_SHOW_MAX];
                qs_status s = qs_error_set(
                    err, QS_ERR_INPUT, "%s: tensors '%s' [%llu,%llu] and '%s' [%llu,%llu] overlap in the data region",
                    origin, qs_st_show_name(last->name, n1, sizeof n1), (unsigned long long)(last->offset - data_start),
                    (unsigned long long)(last->offset - data_start + last->nbytes), qs_st_show_name(t->name, n2, sizeof n2),
                    (unsigned long long)(t->offset - data_start),
                    (unsigned long long)(t->offset - data_start + t->nbytes));
                free(by_off);
                return s;
            }
            if (t->nbytes && (!last || t->offset + t->nbytes > last->offset + last->nbytes)) last = t;
        }
        free(by_off);
    }
    return QS_OK;
}

qs_status qs_st_parse_header(const void *json, size_t len, uint64_t data_start, uint64_t data_size,
                             const char *origin, qs_st_header *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    out->data_start = data_start;
    /* A NUL-terminated copy: cJSON never reads past it whatever the bytes are. */
    char *text = malloc(len + 1);
    if (!text) return qs_error_set(err, QS_ERR_NOMEM, "%s: cannot allocate %zu bytes for the header", origin, len);
    memcpy(text, json, len);
    text[len] = '\0';
    if (memchr(text, '\0', len)) {
        free(text);
        return qs_error_set(err, QS_ERR_INPUT, "%s: header contains a NUL byte (not a safetensors file?)", origin);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    qs_status s = QS_OK;
    if (!root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        s = qs_error_set(err, QS_ERR_INPUT, "%s: header is not valid JSON (error at byte %zu of %zu)", origin, at,
                         len);
    } else if (!cJSON_IsObject(root)) {
        s = qs_error_set(err, QS_ERR_INPUT, "%s: header is %s, expected a JSON object", origin, json_kind(root));
    } else {
        for (const char *p = end; p < text + len; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
                s = qs_error_set(err, QS_ERR_INPUT, "%s: header has junk after the JSON object at byte %zu", origin,
                                 (size_t)(p - text));
                break;
            }
        }
        if (s == QS_OK) s = parse_object(root, origin, data_start, data_size, out, err);
    }
    cJSON_Delete(root);
    free(text);
    if (s != QS_OK) qs_st_header_free(out);
    return s;
}

qs_status qs_st_parse(const void *buf, size_t size, const char *origin, qs_st_header *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    if (size < 8)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: file is %zu bytes, too short for the 8-byte header length (truncated?)", origin, size);
    const unsigned char *p = buf;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];
    if (n > QS_ST_MAX_HEADER)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: header length %llu exceeds the limit of %u bytes (not a safetensors file?)", origin,
                            (unsigned long long)n, QS_ST_MAX_HEADER);
    if (n > size - 8)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: header length %llu runs past the end of the file (%zu bytes follow the length; "
                            "truncated?)",
                            origin, (unsigned long long)n, size - 8);
    return qs_st_parse_header(p + 8, (size_t)n, 8 + n, size - 8 - n, origin, out, err);
}

/* ---- reader --------------------------------------------------------------- */

struct qs_st_file {
    char *path;
    void *map;
    size_t size;
    qs_st_header h;
};

qs_status qs_st_open(const char *path, qs_st_file **out, qs_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qs_error_set(err, errno == ENOENT ? QS_ERR_INPUT : QS_ERR_IO, "%s: cannot open: %s", path,
                            strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        qs_status s = qs_error_set(err, QS_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return s;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return qs_error_set(err, QS_ERR_INPUT, "%s: not a regular file", path);
    }
    qs_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = st_strdup(path))) {
        free(f);
        close(fd);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            qs_status s = qs_error_set(err, QS_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, f->size, strerror(errno));
            close(fd);
            qs_st_close(f);
            return s;
        }
    }
    close(fd); /* the mapping keeps the file */
    qs_status s = qs_st_parse(f->map ? f->map : "", f->size, path, &f->h, err);
    if (s != QS_OK) {
        qs_st_close(f);
        return s;
    }
    *out = f;
    return QS_OK;
}

void qs_st_close(qs_st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->size);
    qs_st_header_free(&f->h);
    free(f->path);
    free(f);
}

const char *qs_st_path(const qs_st_file *f) { return f->path; }
size_t qs_st_count(const qs_st_file *f) { return f->h.count; }
uint64_t qs_st_file_size(const qs_st_file *f) { return f->size; }

const qs_st_info *qs_st_at(const qs_st_file *f, size_t i) { return i < f->h.count ? &f->h.tensors[i] : NULL; }

const qs_st_info *qs_st_find(const qs_st_file *f, const char *name)
{
    size_t lo = 0, hi = f->h.count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->h.tensors[mid].name, name);
        if (c == 0) return &f->h.tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *qs_st_metadata(const qs_st_file *f, const char *key)
{
    for (size_t i = 0; i < f->h.n_meta; i++)
        if (strcmp(f->h.meta_keys[i], key) == 0) return f->h.meta_values[i];
    return NULL;
}

size_t qs_st_metadata_count(const qs_st_file *f) { return f->h.n_meta; }
const char *qs_st_metadata_key(const qs_st_file *f, size_t i) { return i < f->h.n_meta ? f->h.meta_keys[i] : NULL; }

const void *qs_st_data(const qs_st_file *f, const qs_st_info *t)
{
    return (const unsigned char *)(f->map ? f->map : "") + t->offset;
}

qs_status qs_st_read_f32(const qs_st_file *f, const qs_st_info *t, float *dst, bool check_finite, qs_error *err)
{
    size_t esz = qs_dtype_size(t->dtype);
    char nb[QS_ST_SHOW_MAX];
    if (t->dtype != QS_DTYPE_F32 && t->dtype != QS_DTYPE_F16 && t->dtype != QS_DTYPE_BF16 && t->dtype != QS_DTYPE_F64)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': dtype %s cannot be read as F32 (expected F32, F16, "
                            "BF16 or F64)", f->path, qs_st_show_name(t->name, nb, sizeof nb), qs_dtype_name(t->dtype));
    size_t n = (size_t)(t->nbytes / esz);
    const unsigned char *src = qs_st_data(f, t);
    if ((uintptr_t)src % esz == 0) {
        QS_TRY(qs_convert_to_f32(src, t->dtype, n, dst, err));
    } else {
        /* Files from other writers may put a tensor at an unaligned offset:
         * convert through an aligned bounce buffer. */
        enum { CHUNK = 4096 };
        double bounce[CHUNK];
        size_t per = sizeof bounce / esz;
        for (size_t i = 0; i < n; i += per) {
            size_t m = n - i < per ? n - i : per;
            memcpy(bounce, src + i * esz, m * esz);
            QS_TRY(qs_convert_to_f32(bounce, t->dtype, m, dst + i, err));
        }
    }
    atomic_fetch_add(&st_bytes_read, t->nbytes);
    /* The data now lives in dst: give the mapped pages back so a rank that
     * streams block after block holds one block, not every block it has read
     * (the kernel keeps them in the page cache; only whole pages inside this
     * tensor are dropped). */
    if (f->map) {
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t a = ((uintptr_t)src + page - 1) & ~(page - 1), b = ((uintptr_t)src + t->nbytes) & ~(page - 1);
        if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
    }
    if (check_finite) {
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(dst[i]))
                return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': element %zu (flat index) is %s, expected finite "
                                    "values", f->path, qs_st_show_name(t->name, nb, sizeof nb), i,
                                    isnan(dst[i]) ? "NaN" : "Inf");
        }
    }
    return QS_OK;
}

/* ---- writer --------------------------------------------------------------- */

typedef struct st_decl {
    char *name;
    qs_dtype dtype;
    int ndim;
    int64_t shape[QS_MAX_DIMS];
    uint64_t nbytes, begin, written;
} st_decl;

struct qs_st_writer {
    char *path, *tmp;
    FILE *fp;
    st_decl *decl;
    size_t n, cap;
    size_t *order; /* data order: indices into decl */
    char **meta_k, **meta_v;
    size_t n_meta, cap_meta;
    size_t cur; /* position in order of the tensor being written */
    bool begun;
};

/* Rank of a dtype in the Python library's data order (higher first): its
 * Rust Dtype enum order, compared descending. */
static int dtype_rank(qs_dtype dt)
{
    switch (dt) {
    case QS_DTYPE_BOOL: return 0;
    case QS_DTYPE_U8: return 1;
    case QS_DTYPE_I8: return 2;
    case QS_DTYPE_I16: return 5;
    case QS_DTYPE_F16: return 7;
    case QS_DTYPE_BF16: return 8;
    case QS_DTYPE_I32: return 9;
    case QS_DTYPE_F32: return 11;
    case QS_DTYPE_F64: return 12;
    case QS_DTYPE_I64: return 13;
    default: return -1;
    }
}

static int cmp_data_order(const void *a, const void *b, void *ctx)
{
    const st_decl *base = ctx;
    const st_decl *x = &base[*(const size_t *)a], *y = &base[*(const size_t *)b];
    int rx = dtype_rank(x->dtype), ry = dtype_rank(y->dtype);
    if (rx != ry) return rx > ry ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

qs_status qs_st_writer_open(const char *path, qs_st_writer **out, qs_error *err)
{
    *out = NULL;
    qs_st_writer *w = calloc(1, sizeof *w);
    if (!w) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
    size_t len = strlen(path) + 32;
    w->path = st_strdup(path);
    w->tmp = malloc(len);
    if (!w->path || !w->tmp) {
        qs_st_writer_abort(w);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(w->tmp, len, "%s.tmp.%ld", path, (long)getpid());
    w->fp = fopen(w->tmp, "wb");
    if (!w->fp) {
        qs_status s = qs_error_set(err, QS_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
        free(w->tmp);
        w->tmp = NULL; /* nothing to remove */
        qs_st_writer_abort(w);
        return s;
    }
    setvbuf(w->fp, NULL, _IOFBF, 1 << 20);
    *out = w;
    return QS_OK;
}

qs_status qs_st_writer_metadata(qs_st_writer *w, const char *key, const char *value, qs_error *err)
{
    if (w->begun)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: metadata '%s' set after the header was written", w->path, key);
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_k[i], key) == 0) {
            char *v = st_strdup(value);
            if (!v) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", w->path);
            free(w->meta_v[i]);
            w->meta_v[i] = v;
            return QS_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        size_t cap = w->cap_meta ? 2 * w->cap_meta : 8;
        char **k = realloc(w->meta_k, cap * sizeof *k);
        if (!k) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", w->path);
        w->meta_k = k;
        char **v = realloc(w->meta_v, cap * sizeof *v);
        if (!v) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", w->path);
        w->meta_v = v;
        w->cap_meta = cap;
    }
    char *k = st_strdup(key), *v = st_strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", w->path);
    }
    w->meta_k[w->n_meta] = k;
    w->meta_v[w->n_meta] = v;
    w->n_meta++;
    return QS_OK;
}

qs_status qs_st_writer_declare(qs_st_writer *w, const char *name, qs_dtype dt, int ndim, const int64_t *shape,
                               qs_error *err)
{
    if (w->begun)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s' declared after the header was written", w->path,
                            name);
    if (dtype_rank(dt) < 0)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s': invalid dtype %d", w->path, name, (int)dt);
    if (ndim < 0 || ndim > QS_MAX_DIMS)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s': %d dimensions (at most %d)", w->path, name, ndim,
                            QS_MAX_DIMS);
    if (strcmp(name, "__metadata__") == 0 || !*name)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: '%s' is not a valid tensor name", w->path, name);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->decl[i].name, name) == 0)
            return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s' declared twice", w->path, name);
    uint64_t bytes = qs_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(bytes, (uint64_t)shape[i], &bytes))
            return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s': invalid shape", w->path, name);
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        st_decl *d = realloc(w->decl, cap * sizeof *d);
        if (!d) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", w->path);
        w->decl = d;
        w->cap = cap;
    }
    st_decl *d = &w->decl[w->n];
    memset(d, 0, sizeof *d);
    d->name = st_strdup(name);
    if (!d->name) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", w->path);
    d->dtype = dt;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++) d->shape[i] = shape[i];
    d->nbytes = bytes;
    w->n++;
    return QS_OK;
}

static void sb_printf(qs_strbuf *b, const char *fmt, unsigned long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    qs_strbuf_put(b, tmp, (size_t)n);
}

/* A JSON string escaped exactly as serde_json writes it. */
static void sb_json_string(qs_strbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    qs_strbuf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[7];
        switch (*p) {
        case '"': qs_strbuf_put(b, "\\\"", 2); break;
        case '\\': qs_strbuf_put(b, "\\\\", 2); break;
        case '\b': qs_strbuf_put(b, "\\b", 2); break;
        case '\f': qs_strbuf_put(b, "\\f", 2); break;
        case '\n': qs_strbuf_put(b, "\\n", 2); break;
        case '\r': qs_strbuf_put(b, "\\r", 2); break;
        case '\t': qs_strbuf_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[*p >> 4];
                esc[5] = hex[*p & 15];
                qs_strbuf_put(b, esc, 6);
            } else {
                qs_strbuf_put(b, (const char *)p, 1);
            }
        }
    }
    qs_strbuf_put(b, "\"", 1);
}

qs_status qs_st_writer_begin(qs_st_writer *w, qs_error *err)
{
    if (w->begun) return qs_error_set(err, QS_ERR_INTERNAL, "%s: header written twice", w->path);
    w->order = malloc((w->n ? w->n : 1) * sizeof *w->order);
    if (!w->order) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", w->path);
    for (size_t i = 0; i < w->n; i++) w->order[i] = i;
    qsort_r(w->order, w->n, sizeof *w->order, cmp_data_order, w->decl);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        st_decl *d = &w->decl[w->order[i]];
        d->begin = off;
        off += d->nbytes;
    }

    qs_strbuf b = {0};
    qs_strbuf_str(&b, "{");
    bool first = true;
    if (w->n_meta) {
        /* Sorted keys: deterministic output (the Python library's order is a hash order). */
        char **keys = malloc(w->n_meta * sizeof *keys);
        if (!keys) {
            free(b.p);
            return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", w->path);
        }
        for (size_t i = 0; i < w->n_meta; i++) keys[i] = w->meta_k[i];
        qsort(keys, w->n_meta, sizeof *keys, cmp_str_ptr);
        qs_strbuf_str(&b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            const char *v = NULL;
            for (size_t j = 0; j < w->n_meta; j++)
                if (w->meta_k[j] == keys[i]) v = w->meta_v[j];
            if (i) qs_strbuf_str(&b, ",");
            sb_json_string(&b, keys[i]);
            qs_strbuf_str(&b, ":");
            sb_json_string(&b, v);
        }
        qs_strbuf_str(&b, "}");
        free(keys);
        first = false;
    }
    for (size_t i = 0; i < w->n; i++) {
        const st_decl *d = &w->decl[w->order[i]];
        if (!first) qs_strbuf_str(&b, ",");
        first = false;
        sb_json_string(&b, d->name);
        qs_strbuf_str(&b, ":{\"dtype\":\"");
        qs_strbuf_str(&b, qs_dtype_name(d->dtype));
        qs_strbuf_str(&b, "\",\"shape\":[");
        for (int k = 0; k < d->ndim; k++) sb_printf(&b, k ? ",%llu" : "%llu", (unsigned long long)d->shape[k]);
        sb_printf(&b, "],\"data_offsets\":[%llu", (unsigned long long)d->begin);
        sb_printf(&b, ",%llu]}", (unsigned long long)(d->begin + d->nbytes));
    }
    qs_strbuf_str(&b, "}");
    while (!b.oom && b.len % 8) qs_strbuf_str(&b, " ");
    if (b.oom) {
        free(b.p);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory for the header", w->path);
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)b.len >> (8 * i));
    bool ok = fwrite(len8, 1, 8, w->fp) == 8 && fwrite(b.p, 1, b.len, w->fp) == b.len;
    free(b.p);
    if (!ok) return qs_error_set(err, QS_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    w->begun = true;
    w->cur = 0;
    return QS_OK;
}

const char *qs_st_writer_order(const qs_st_writer *w, size_t i)
{
    return w->begun && i < w->n ? w->decl[w->order[i]].name : NULL;
}

qs_status qs_st_writer_tensor(qs_st_writer *w, const char *name, const void *bytes, uint64_t nbytes, qs_error *err)
{
    if (!w->begun)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s' written before qs_st_writer_begin", w->path, name);
    /* Move past finished tensors (zero-sized ones need no call) up to `name`. */
    while (w->cur < w->n) {
        const st_decl *d = &w->decl[w->order[w->cur]];
        if (strcmp(d->name, name) == 0 || d->written < d->nbytes) break;
        w->cur++;
    }
    if (w->cur == w->n)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s' written after all declared data", w->path, name);
    st_decl *d = &w->decl[w->order[w->cur]];
    if (strcmp(d->name, name) != 0)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s' written out of order: '%s' comes next (%llu of %llu "
                            "bytes written)", w->path, name, d->name, (unsigned long long)d->written,
                            (unsigned long long)d->nbytes);
    if (nbytes > d->nbytes - d->written)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s': %llu more bytes would exceed its %llu bytes",
                            w->path, name, (unsigned long long)nbytes, (unsigned long long)d->nbytes);
    if (nbytes && fwrite(bytes, 1, nbytes, w->fp) != nbytes)
        return qs_error_set(err, QS_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    d->written += nbytes;
    return QS_OK;
}

qs_status qs_st_writer_finish(qs_st_writer *w, qs_error *err)
{
    if (!w->begun) QS_TRY(qs_st_writer_begin(w, err));
    for (size_t i = 0; i < w->n; i++) {
        const st_decl *d = &w->decl[w->order[i]];
        if (d->written != d->nbytes)
            return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor '%s': %llu of %llu bytes written", w->path, d->name,
                                (unsigned long long)d->written, (unsigned long long)d->nbytes);
    }
    if (fflush(w->fp) != 0 || fsync(fileno(w->fp)) != 0)
        return qs_error_set(err, QS_ERR_IO, "%s: cannot flush: %s", w->tmp, strerror(errno));
    int rc = fclose(w->fp);
    w->fp = NULL;
    if (rc != 0) return qs_error_set(err, QS_ERR_IO, "%s: cannot close: %s", w->tmp, strerror(errno));
    if (rename(w->tmp, w->path) != 0)
        return qs_error_set(err, QS_ERR_IO, "%s: cannot rename to %s: %s", w->tmp, w->path, strerror(errno));
    free(w->tmp);
    w->tmp = NULL; /* renamed: nothing left to remove */
    qs_status s = qs_fsync_dir_of(w->path, err);
    if (s != QS_OK) return s;
    qs_st_writer_abort(w); /* frees */
    return QS_OK;
}

void qs_st_writer_abort(qs_st_writer *w)
{
    if (!w) return;
    if (w->fp) fclose(w->fp);
    if (w->tmp) unlink(w->tmp);
    for (size_t i = 0; i < w->n; i++) free(w->decl[i].name);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta_k[i]);
        free(w->meta_v[i]);
    }
    free(w->meta_k);
    free(w->meta_v);
    free(w->decl);
    free(w->order);
    free(w->path);
    free(w->tmp);
    free(w);
}
