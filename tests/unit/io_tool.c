/* io_tool.c — test-only helper that exposes the safetensors and npy readers
 * and writers to the Python interop tests (tests/py/test_io_*.py), which
 * compare them with the PyPI `safetensors` library and NumPy.
 *
 *   io_tool st-dump FILE                 JSON: metadata, every tensor's dtype, shape,
 *                                        offset, and values (f32 for float dtypes via
 *                                        qs_st_read_f32, raw hex otherwise)
 *   io_tool st-copy IN OUT [CHUNK]       read IN, write OUT with our writer: tensors
 *                                        declared in reverse name order, data in
 *                                        CHUNK-byte pieces (default: whole tensors)
 *   io_tool npy-copy IN OUT              qs_npy_read + qs_npy_write
 *   io_tool npy-dump IN raw|f32|i32      JSON: dtype, shape, values
 * Errors: the message on stderr, exit code as the CLI maps it (bad input → 2).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/formats/npy.h"
#include "pipeline/formats/safetensors.h"

static int fail(const qs_error *err)
{
    fprintf(stderr, "io_tool: error: %s\n", err->msg);
    int c = qs_status_exit_code(err->code);
    return c ? c : 1;
}

static cJSON *shape_json(int ndim, const int64_t *shape)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)shape[i]));
    return a;
}

static char *hex_of(const unsigned char *p, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    char *s = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = hx[p[i] >> 4];
        s[2 * i + 1] = hx[p[i] & 15];
    }
    s[2 * n] = '\0';
    return s;
}

static void print_json(cJSON *root)
{
    char *txt = cJSON_PrintUnformatted(root);
    puts(txt);
    free(txt);
    cJSON_Delete(root);
}

static int st_dump(const char *path)
{
    qs_error err = {0};
    qs_st_file *f;
    if (qs_st_open(path, &f, &err) != QS_OK) return fail(&err);
    cJSON *root = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(root, "metadata");
    for (size_t i = 0; i < qs_st_metadata_count(f); i++) {
        const char *k = qs_st_metadata_key(f, i);
        cJSON_AddStringToObject(md, k, qs_st_metadata(f, k));
    }
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    for (size_t i = 0; i < qs_st_count(f); i++) {
        const qs_st_info *t = qs_st_at(f, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "dtype", qs_dtype_name(t->dtype));
        cJSON_AddItemToObject(o, "shape", shape_json(t->ndim, t->shape));
        cJSON_AddNumberToObject(o, "offset", (double)t->offset);
        cJSON_AddNumberToObject(o, "nbytes", (double)t->nbytes);
        char *hx = hex_of(qs_st_data(f, t), t->nbytes);
        cJSON_AddStringToObject(o, "hex", hx);
        free(hx);
        if (t->dtype == QS_DTYPE_F32 || t->dtype == QS_DTYPE_F16 || t->dtype == QS_DTYPE_BF16 ||
            t->dtype == QS_DTYPE_F64) {
            size_t n = t->nbytes / qs_dtype_size(t->dtype);
            float *v = malloc((n ? n : 1) * sizeof *v);
            if (qs_st_read_f32(f, t, v, false, &err) != QS_OK) {
                free(v);
                cJSON_Delete(root);
                qs_st_close(f);
                return fail(&err);
            }
            cJSON *a = cJSON_AddArrayToObject(o, "f32");
            for (size_t k = 0; k < n; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[k]));
            free(v);
        }
        cJSON_AddItemToArray(ts, o);
    }
    cJSON_AddNumberToObject(root, "bytes_read", (double)qs_st_bytes_read());
    qs_st_close(f);
    print_json(root);
    return 0;
}

static int st_copy(const char *in, const char *out, uint64_t chunk)
{
    qs_error err = {0};
    qs_st_file *f;
    qs_st_writer *w = NULL;
    if (qs_st_open(in, &f, &err) != QS_OK) return fail(&err);
    if (qs_st_writer_open(out, &w, &err) != QS_OK) goto bad;
    for (size_t i = 0; i < qs_st_metadata_count(f); i++) {
        const char *k = qs_st_metadata_key(f, i);
        if (qs_st_writer_metadata(w, k, qs_st_metadata(f, k), &err) != QS_OK) goto bad;
    }
    for (size_t i = qs_st_count(f); i-- > 0;) {
        const qs_st_info *t = qs_st_at(f, i);
        if (qs_st_writer_declare(w, t->name, t->dtype, t->ndim, t->shape, &err) != QS_OK) goto bad;
    }
    if (qs_st_writer_begin(w, &err) != QS_OK) goto bad;
    for (size_t i = 0; i < qs_st_count(f); i++) {
        const char *name = qs_st_writer_order(w, i);
        const qs_st_info *t = qs_st_find(f, name);
        const unsigned char *p = qs_st_data(f, t);
        uint64_t step = chunk ? chunk : (t->nbytes ? t->nbytes : 1);
        for (uint64_t o = 0; o < t->nbytes; o += step) {
            uint64_t m = t->nbytes - o < step ? t->nbytes - o : step;
            if (qs_st_writer_tensor(w, name, p + o, m, &err) != QS_OK) goto bad;
        }
    }
    if (qs_st_writer_finish(w, &err) != QS_OK) goto bad;
    qs_st_close(f);
    return 0;
bad:
    qs_st_writer_abort(w);
    qs_st_close(f);
    return fail(&err);
}

static int npy_copy(const char *in, const char *out)
{
    qs_error err = {0};
    qs_tensor t;
    if (qs_npy_read(in, &t, &err) != QS_OK) return fail(&err);
    qs_status s = qs_npy_write(out, &t, &err);
    qs_tensor_free(&t);
    return s == QS_OK ? 0 : fail(&err);
}

static int npy_dump(const char *in, const char *mode)
{
    qs_error err = {0};
    qs_tensor t;
    qs_status s = strcmp(mode, "f32") == 0   ? qs_npy_read_f32(in, &t, &err)
                  : strcmp(mode, "i32") == 0 ? qs_npy_read_i32(in, &t, &err)
                                             : qs_npy_read(in, &t, &err);
    if (s != QS_OK) return fail(&err);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "dtype", qs_dtype_name(t.dtype));
    cJSON_AddItemToObject(root, "shape", shape_json(t.ndim, t.shape));
    size_t n = (size_t)qs_tensor_numel(&t);
    cJSON *a = cJSON_AddArrayToObject(root, "values");
    for (size_t i = 0; i < n; i++) {
        double v = 0;
        switch (t.dtype) {
        case QS_DTYPE_F32: v = ((const float *)t.data)[i]; break;
        case QS_DTYPE_F64: v = ((const double *)t.data)[i]; break;
        case QS_DTYPE_I32: v = ((const int32_t *)t.data)[i]; break;
        case QS_DTYPE_I64: v = (double)((const int64_t *)t.data)[i]; break;
        case QS_DTYPE_F16: v = ((const uint16_t *)t.data)[i]; break; /* raw bits */
        default: break;
        }
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v));
    }
    qs_tensor_free(&t);
    print_json(root);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "st-dump") == 0) return st_dump(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "st-copy") == 0)
        return st_copy(argv[2], argv[3], argc >= 5 ? strtoull(argv[4], NULL, 10) : 0);
    if (argc >= 4 && strcmp(argv[1], "npy-copy") == 0) return npy_copy(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "npy-dump") == 0) return npy_dump(argv[2], argv[3]);
    fprintf(stderr, "usage: io_tool st-dump F | st-copy IN OUT [CHUNK] | npy-copy IN OUT | npy-dump IN raw|f32|i32\n");
    return 2;
}
