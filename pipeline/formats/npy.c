/* npy.c — NumPy .npy reader and writer (format 1.0, 2.0 and 3.0 headers).
 *
 * A .npy file is "\x93NUMPY", major, minor, a header length (u16 for 1.0,
 * u32 for 2.0/3.0), then a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 * padded with spaces and a newline so the data starts at a multiple of 64.
 * The writer reproduces numpy.save byte for byte (including the spare spaces
 * numpy leaves so that the first axis can grow in place).
 */
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/npy.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64
/* numpy leaves room for the growth axis to reach this many digits. */
#define NPY_GROWTH_AXIS_MAX_DIGITS 21
/* No sane header is anywhere near this; it bounds what a bad length makes us allocate. */
#define NPY_MAX_HEADER (16u * 1024u * 1024u)

/* ---- header dict parsing -------------------------------------------------- */

typedef struct dict_parser {
    const char *p, *end;
    const char *origin;
    qs_error *err;
} dict_parser;

static void skip_ws(dict_parser *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r')) d->p++;
}

static qs_status syntax(dict_parser *d, const char *expected)
{
    if (d->p >= d->end)
        return qs_error_set(d->err, QS_ERR_INPUT, "%s: npy header is malformed: it ends early, expected %s", d->origin,
                            expected);
    return qs_error_set(d->err, QS_ERR_INPUT, "%s: npy header is malformed: expected %s, found '%c'", d->origin,
                        expected, *d->p >= 0x20 && *d->p < 0x7f ? *d->p : '?');
}

static bool eat(dict_parser *d, char c)
{
    skip_ws(d);
    if (d->p < d->end && *d->p == c) {
        d->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes (all keys and descrs numpy writes). */
static qs_status parse_str(dict_parser *d, char *out, size_t cap)
{
    skip_ws(d);
    if (d->p >= d->end || (*d->p != '\'' && *d->p != '"')) return syntax(d, "a quoted string");
    char q = *d->p++;
    size_t n = 0;
    while (d->p < d->end && *d->p != q) {
        unsigned char c = (unsigned char)*d->p;
        if (c == '\\' || c < 0x20 || c >= 0x7f || n + 1 >= cap) return syntax(d, "a short ASCII string without escapes");
        out[n++] = *d->p++;
    }
    if (d->p >= d->end) return syntax(d, "a closing quote");
    d->p++;
    out[n] = '\0';
    return QS_OK;
}

static bool eat_word(dict_parser *d, const char *w)
{
    skip_ws(d);
    size_t n = strlen(w);
    if ((size_t)(d->end - d->p) >= n && memcmp(d->p, w, n) == 0) {
        d->p += n;
        return true;
    }
    return false;
}

/* (3, 4) or (5,) or (); Python 2 files may write 3L. */
static qs_status parse_shape(dict_parser *d, qs_npy_header *h)
{
    if (!eat(d, '(')) return syntax(d, "'(' starting the shape tuple");
    h->ndim = 0;
    for (;;) {
        if (eat(d, ')')) return QS_OK;
        skip_ws(d);
        if (d->p >= d->end || *d->p < '0' || *d->p > '9') return syntax(d, "a non-negative integer in the shape");
        int64_t v = 0;
        while (d->p < d->end && *d->p >= '0' && *d->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return qs_error_set(d->err, QS_ERR_INPUT, "%s: npy shape has a dimension too large", d->origin);
            v = v * 10 + (*d->p++ - '0');
        }
        if (d->p < d->end && (*d->p == 'L' || *d->p == 'l')) d->p++;
        if (h->ndim == QS_MAX_DIMS)
            return qs_error_set(d->err, QS_ERR_UNSUPPORTED, "%s: npy shape has more than %d dimensions", d->origin,
                                QS_MAX_DIMS);
        h->shape[h->ndim++] = v;
        if (eat(d, ',')) continue;
        if (eat(d, ')')) return QS_OK;
        return syntax(d, "',' or ')' in the shape");
    }
}

static qs_status parse_descr(const char *descr, const char *origin, qs_npy_header *h, qs_error *err)
{
    static const struct {
        const char *code;
        qs_dtype dt;
    } known[] = {{"f4", QS_DTYPE_F32}, {"f2", QS_DTYPE_F16}, {"f8", QS_DTYPE_F64}, {"i4", QS_DTYPE_I32},
                 {"i8", QS_DTYPE_I64}};
    char order = descr[0];
    const char *code = descr + 1;
    if (order == '>')
        return qs_error_set(err, QS_ERR_UNSUPPORTED,
                            "%s: dtype '%s' is big-endian; save it little-endian (arr.astype('<%s'))", origin, descr,
                            code);
    if (order == '<' || order == '=' || order == '|') {
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
            if (strcmp(code, known[i].code) == 0) {
                h->dtype = known[i].dt;
                return QS_OK;
            }
        }
    }
    return qs_error_set(err, QS_ERR_UNSUPPORTED,
                        "%s: unsupported dtype '%s' (expected <f4, <f2, <f8, <i4 or <i8)", origin, descr);
}

static qs_status parse_dict(dict_parser *d, qs_npy_header *h)
{
    bool have_descr = false, have_order = false, have_shape = false, fortran = false;
    char descr[32] = "";
    if (!eat(d, '{')) return syntax(d, "'{' starting the header dict");
    for (;;) {
        if (eat(d, '}')) break;
        char key[32];
        QS_TRY(parse_str(d, key, sizeof key));
        if (!eat(d, ':')) return syntax(d, "':' after a key");
        if (strcmp(key, "descr") == 0 && !have_descr) {
            skip_ws(d);
            if (d->p < d->end && *d->p == '[')
                return qs_error_set(d->err, QS_ERR_UNSUPPORTED,
                                    "%s: structured dtype (record array) is not supported; expected <f4, <f2, <f8, <i4 "
                                    "or <i8", d->origin);
            QS_TRY(parse_str(d, descr, sizeof descr));
            have_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            if (eat_word(d, "True")) fortran = true;
            else if (eat_word(d, "False")) fortran = false;
            else return syntax(d, "True or False for fortran_order");
            have_order = true;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            QS_TRY(parse_shape(d, h));
            have_shape = true;
        } else {
            return qs_error_set(d->err, QS_ERR_INPUT, "%s: npy header has an unexpected or repeated key '%s'",
                                d->origin, key);
        }
        if (eat(d, ',')) continue;
        if (eat(d, '}')) break;
        return syntax(d, "',' or '}' in the header dict");
    }
    skip_ws(d);
    if (d->p != d->end) return syntax(d, "the end of the header after '}'");
    if (!have_descr || !have_order || !have_shape)
        return qs_error_set(d->err, QS_ERR_INPUT, "%s: npy header lacks '%s'", d->origin,
                            !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    QS_TRY(parse_descr(descr, d->origin, h, d->err));
    if (fortran)
        return qs_error_set(d->err, QS_ERR_UNSUPPORTED,
                            "%s: array is in Fortran order; save it in C order (np.ascontiguousarray)", d->origin);
    return QS_OK;
}

/* Checks the magic and version; *data_offset = bytes before the data, *dict_at = where the dict starts. */
static qs_status npy_prefix(const unsigned char *b, size_t len, const char *origin, uint64_t *data_offset,
                            size_t *dict_at, qs_error *err)
{
    if (len < 10 || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return qs_error_set(err, QS_ERR_INPUT, "%s: not a .npy file (no \\x93NUMPY magic)", origin);
    int major = b[6];
    uint64_t hlen;
    if (major == 1) {
        hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8;
        *dict_at = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) return qs_error_set(err, QS_ERR_INPUT, "%s: .npy header is truncated", origin);
        hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8 | (uint64_t)b[10] << 16 | (uint64_t)b[11] << 24;
        *dict_at = 12;
    } else {
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: .npy format version %d.%d is not supported (expected 1, 2 or 3)",
                            origin, major, b[7]);
    }
    if (hlen > NPY_MAX_HEADER)
        return qs_error_set(err, QS_ERR_INPUT, "%s: .npy header length %llu exceeds %u bytes", origin,
                            (unsigned long long)hlen, NPY_MAX_HEADER);
    *data_offset = *dict_at + hlen;
    return QS_OK;
}

qs_status qs_npy_parse_header(const void *buf, size_t len, const char *origin, qs_npy_header *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    const unsigned char *b = buf;
    size_t dict_at;
    uint64_t data_offset;
    QS_TRY(npy_prefix(b, len, origin, &data_offset, &dict_at, err));
    if (data_offset > len)
        return qs_error_set(err, QS_ERR_INPUT, "%s: .npy header (%llu bytes) is truncated at %zu bytes", origin,
                            (unsigned long long)data_offset, len);
    dict_parser d = {(const char *)b + dict_at, (const char *)b + data_offset, origin, err};
    QS_TRY(parse_dict(&d, out));
    uint64_t bytes = qs_dtype_size(out->dtype);
    for (int i = 0; i < out->ndim; i++)
        if (__builtin_mul_overflow(bytes, (uint64_t)out->shape[i], &bytes))
            return qs_error_set(err, QS_ERR_INPUT, "%s: npy shape overflows 64 bits", origin);
    out->data_offset = data_offset;
    out->nbytes = bytes;
    return QS_OK;
}

/* ---- reading -------------------------------------------------------------- */

qs_status qs_npy_read(const char *path, qs_tensor *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return qs_error_set(err, errno == ENOENT ? QS_ERR_INPUT : QS_ERR_IO, "%s: cannot open: %s", path,
                            strerror(errno));
    qs_status s = QS_OK;
    unsigned char *hdr = NULL;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        s = qs_error_set(err, QS_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    unsigned char pre[12];
    size_t got = fread(pre, 1, sizeof pre, fp);
    uint64_t data_offset;
    size_t dict_at;
    if ((s = npy_prefix(pre, got, path, &data_offset, &dict_at, err)) != QS_OK) goto done;
    if (data_offset > (uint64_t)st.st_size) {
        s = qs_error_set(err, QS_ERR_INPUT, "%s: .npy header (%llu bytes) is longer than the file (%lld bytes)", path,
                         (unsigned long long)data_offset, (long long)st.st_size);
        goto done;
    }
    hdr = malloc(data_offset);
    if (!hdr) {
        s = qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if (fseek(fp, 0, SEEK_SET) != 0 || fread(hdr, 1, data_offset, fp) != data_offset) {
        s = qs_error_set(err, QS_ERR_IO, "%s: cannot read the header: %s", path, strerror(errno));
        goto done;
    }
    qs_npy_header h;
    if ((s = qs_npy_parse_header(hdr, data_offset, path, &h, err)) != QS_OK) goto done;
    uint64_t have = (uint64_t)st.st_size - data_offset;
    if (have != h.nbytes) {
        char sh[160];
        s = qs_error_set(err, QS_ERR_INPUT, "%s: shape %s × %s needs %llu bytes of data, the file has %llu%s", path,
                         qs_shape_str(h.ndim, h.shape, sh, sizeof sh), qs_dtype_name(h.dtype),
                         (unsigned long long)h.nbytes, (unsigned long long)have,
                         have < h.nbytes ? " (truncated)" : " (trailing bytes)");
        goto done;
    }
    if ((s = qs_tensor_init(out, h.dtype, h.ndim, h.shape, err)) != QS_OK) goto done;
    if (h.nbytes && fread(out->data, 1, h.nbytes, fp) != h.nbytes) {
        s = qs_error_set(err, QS_ERR_IO, "%s: cannot read %llu bytes of data: %s", path,
                         (unsigned long long)h.nbytes, ferror(fp) ? strerror(errno) : "unexpected end of file");
        qs_tensor_free(out);
    }
done:
    free(hdr);
    fclose(fp);
    return s;
}

qs_status qs_npy_read_f32(const char *path, qs_tensor *out, qs_error *err)
{
    qs_tensor raw;
    QS_TRY(qs_npy_read(path, &raw, err));
    if (raw.dtype == QS_DTYPE_F32) {
        *out = raw;
        return QS_OK;
    }
    qs_status s;
    if (raw.dtype != QS_DTYPE_F16 && raw.dtype != QS_DTYPE_F64) {
        s = qs_error_set(err, QS_ERR_INPUT, "%s: dtype %s, expected a float array (<f4, <f2 or <f8)", path,
                         qs_dtype_name(raw.dtype));
    } else if ((s = qs_tensor_init(out, QS_DTYPE_F32, raw.ndim, raw.shape, err)) == QS_OK) {
        s = qs_convert_to_f32(raw.data, raw.dtype, (size_t)qs_tensor_numel(&raw), out->data, err);
        if (s != QS_OK) qs_tensor_free(out);
    }
    qs_tensor_free(&raw);
    return s;
}

qs_status qs_npy_read_i32(const char *path, qs_tensor *out, qs_error *err)
{
    qs_tensor raw;
    QS_TRY(qs_npy_read(path, &raw, err));
    if (raw.dtype == QS_DTYPE_I32) {
        *out = raw;
        return QS_OK;
    }
    qs_status s;
    if (raw.dtype != QS_DTYPE_I64) {
        s = qs_error_set(err, QS_ERR_INPUT, "%s: dtype %s, expected integer token ids (<i4 or <i8)", path,
                         qs_dtype_name(raw.dtype));
    } else if ((s = qs_tensor_init(out, QS_DTYPE_I32, raw.ndim, raw.shape, err)) == QS_OK) {
        const int64_t *src = raw.data;
        int32_t *dst = out->data;
        size_t n = (size_t)qs_tensor_numel(&raw);
        for (size_t i = 0; i < n; i++) {
            if (src[i] < INT32_MIN || src[i] > INT32_MAX) {
                s = qs_error_set(err, QS_ERR_INPUT, "%s: element %zu (flat index) is %lld, outside int32", path, i,
                                 (long long)src[i]);
                qs_tensor_free(out);
                break;
            }
            dst[i] = (int32_t)src[i];
        }
    }
    qs_tensor_free(&raw);
    return s;
}

/* ---- writing -------------------------------------------------------------- */

static const char *npy_descr(qs_dtype dt)
{
    switch (dt) {
    case QS_DTYPE_F32: return "<f4";
    case QS_DTYPE_F16: return "<f2";
    case QS_DTYPE_F64: return "<f8";
    case QS_DTYPE_I32: return "<i4";
    case QS_DTYPE_I64: return "<i8";
    default: return NULL;
    }
}

qs_status qs_npy_write(const char *path, const qs_tensor *t, qs_error *err)
{
    const char *descr = npy_descr(t->dtype);
    if (!descr)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: cannot write dtype %s to .npy (F32, F16, F64, I32, I64)",
                            path, qs_dtype_name(t->dtype));
    if (t->ndim < 0 || t->ndim > QS_MAX_DIMS)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: tensor rank %d", path, t->ndim);
    /* The dict exactly as numpy's repr writes it. */
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < t->ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", t->ndim == 1 ? "," : "");
    size_t dlen = (size_t)n;
    if (t->ndim > 0) {
        char first[32];
        size_t digits = (size_t)snprintf(first, sizeof first, "%lld", (long long)t->shape[0]);
        size_t room = digits < NPY_GROWTH_AXIS_MAX_DIGITS ? NPY_GROWTH_AXIS_MAX_DIGITS - digits : 0;
        memset(dict + dlen, ' ', room);
        dlen += room;
    }
    /* Version 1.0 (u16 length) unless the header does not fit, as numpy does. */
    int major = 1;
    size_t lenfield = 2;
    size_t hlen = dlen + 1;
    size_t pad = NPY_ALIGN - (NPY_MAGIC_LEN + 2 + lenfield + hlen) % NPY_ALIGN;
    if (hlen + pad > 65535) {
        major = 2;
        lenfield = 4;
        pad = NPY_ALIGN - (NPY_MAGIC_LEN + 2 + lenfield + hlen) % NPY_ALIGN;
    }
    size_t total_hdr = dlen + pad + 1;
    unsigned char pre[12];
    memcpy(pre, NPY_MAGIC, NPY_MAGIC_LEN);
    pre[6] = (unsigned char)major;
    pre[7] = 0;
    for (size_t i = 0; i < lenfield; i++) pre[8 + i] = (unsigned char)(total_hdr >> (8 * i));
    memset(dict + dlen, ' ', pad);
    dict[dlen + pad] = '\n';

    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        qs_status s = qs_error_set(err, QS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return s;
    }
    size_t nbytes = qs_tensor_nbytes(t);
    bool ok = fwrite(pre, 1, 8 + lenfield, fp) == 8 + lenfield && fwrite(dict, 1, total_hdr, fp) == total_hdr &&
              (nbytes == 0 || fwrite(t->data, 1, nbytes, fp) == nbytes) && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int saved = errno;
    if (fclose(fp) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        if (ok) saved = errno;
        unlink(tmp);
        qs_status s = qs_error_set(err, QS_ERR_IO, "%s: cannot write: %s", path, strerror(saved));
        free(tmp);
        return s;
    }
    free(tmp);
    return qs_fsync_dir_of(path, err);
}
