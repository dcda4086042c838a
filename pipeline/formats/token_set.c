/* token_set.c — token sets as .npy (via pipeline/npy) or HDF5 `input_ids`.
 *
 * HDF5 uses the library qshard links (the parallel build); a plain process
 * opens files with the default (serial) access property list.
 */
#include "pipeline/formats/token_set.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "pipeline/formats/npy.h"

static const char *ext_of(const char *path)
{
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    return dot && (!slash || dot > slash) ? dot : "";
}

qs_status qs_token_set_format_of(const char *path, qs_token_set_format *out, qs_error *err)
{
    const char *e = ext_of(path);
    if (strcasecmp(e, ".npy") == 0) *out = QS_TOKEN_SET_NPY;
    else if (strcasecmp(e, ".h5") == 0 || strcasecmp(e, ".hdf5") == 0 || strcasecmp(e, ".he5") == 0)
        *out = QS_TOKEN_SET_HDF5;
    else
        return qs_error_set(err, QS_ERR_INPUT, "%s: unknown token set format '%s' (expected .npy, .h5 or .hdf5)",
                            path, e);
    return QS_OK;
}

/* Silences HDF5's own error stack printing while we turn failures into values. */
typedef struct h5_quiet {
    H5E_auto2_t fn;
    void *data;
} h5_quiet;

static void h5_quiet_begin(h5_quiet *q)
{
    H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_quiet_end(const h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->fn, q->data); }

static qs_status fsync_path(const char *path, bool dir, qs_error *err)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return qs_error_set(err, QS_ERR_IO, "%s: open for fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) return qs_error_set(err, QS_ERR_IO, "%s: fsync: %s", path, strerror(e));
    return QS_OK;
}

static qs_status check_shape(const char *path, const qs_tensor *t, qs_error *err)
{
    if (t->ndim != 2)
        return qs_error_set(err, QS_ERR_INPUT, "%s: token set has %d dimensions, expected 2 [rows, seq_len]", path,
                            t->ndim);
    if (t->shape[0] < 1 || t->shape[1] < 1)
        return qs_error_set(err, QS_ERR_INPUT, "%s: token set shape [%lld,%lld] is empty", path,
                            (long long)t->shape[0], (long long)t->shape[1]);
    return QS_OK;
}

static qs_status write_h5(const char *path, const qs_tensor *ids, qs_error *err)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return qs_error_set(err, QS_ERR_INPUT, "%s: path too long", path);
    h5_quiet q;
    h5_quiet_begin(&q);
    qs_status st = QS_OK;
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t space = -1, dset = -1;
    hid_t type = ids->dtype == QS_DTYPE_I64 ? H5T_STD_I64LE : H5T_STD_I32LE;
    hid_t mem = ids->dtype == QS_DTYPE_I64 ? H5T_NATIVE_INT64 : H5T_NATIVE_INT32;
    if (file < 0) {
        st = qs_error_set(err, QS_ERR_IO, "%s: cannot create HDF5 file", tmp);
        goto done;
    }
    hsize_t dims[2] = {(hsize_t)ids->shape[0], (hsize_t)ids->shape[1]};
    space = H5Screate_simple(2, dims, NULL);
    dset = space < 0 ? -1 : H5Dcreate2(file, "input_ids", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (dset < 0 || H5Dwrite(dset, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids->data) < 0) {
        st = qs_error_set(err, QS_ERR_IO, "%s: cannot write dataset 'input_ids'", tmp);
        goto done;
    }
done:
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    if (file >= 0 && H5Fclose(file) < 0 && st == QS_OK) st = qs_error_set(err, QS_ERR_IO, "%s: close failed", tmp);
    h5_quiet_end(&q);
    if (st == QS_OK) st = fsync_path(tmp, false, err);
    if (st == QS_OK && rename(tmp, path) != 0)
        st = qs_error_set(err, QS_ERR_IO, "%s: rename to %s: %s", tmp, path, strerror(errno));
    if (st != QS_OK) {
        unlink(tmp);
        return st;
    }
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", path);
    return fsync_path(dirname(dirbuf), true, err);
}

qs_status qs_token_set_write(const char *path, const qs_tensor *ids, qs_error *err)
{
    qs_token_set_format f;
    QS_TRY(qs_token_set_format_of(path, &f, err));
    QS_TRY(check_shape(path, ids, err));
    if (ids->dtype != QS_DTYPE_I32 && ids->dtype != QS_DTYPE_I64)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: token ids must be I32 or I64, got %s", path,
                            qs_dtype_name(ids->dtype));
    return f == QS_TOKEN_SET_NPY ? qs_npy_write(path, ids, err) : write_h5(path, ids, err);
}

static qs_status read_h5(const char *path, qs_tensor *out, qs_error *err)
{
    h5_quiet q;
    h5_quiet_begin(&q);
    qs_status st = QS_OK;
    int64_t *buf = NULL;
    hid_t space = -1, dset = -1, type = -1;
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        st = qs_error_set(err, access(path, R_OK) == 0 ? QS_ERR_INPUT : QS_ERR_IO, "%s: cannot open as HDF5%s", path,
                          access(path, R_OK) == 0 ? " (not an HDF5 file?)" : "");
        goto done;
    }
    if (H5Lexists(file, "input_ids", H5P_DEFAULT) <= 0 || (dset = H5Dopen2(file, "input_ids", H5P_DEFAULT)) < 0) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: no dataset 'input_ids' (a token set is input_ids [rows, seq_len])",
                          path);
        goto done;
    }
    type = H5Dget_type(dset);
    if (type < 0 || H5Tget_class(type) != H5T_INTEGER) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: dataset 'input_ids' is not an integer array", path);
        goto done;
    }
    space = H5Dget_space(dset);
    int nd = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    hsize_t dims[2] = {0, 0};
    if (nd != 2) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: dataset 'input_ids' has %d dimensions, expected 2 [rows, seq_len]",
                          path, nd);
        goto done;
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    int64_t shape[2] = {(int64_t)dims[0], (int64_t)dims[1]};
    if (shape[0] < 1 || shape[1] < 1) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: dataset 'input_ids' shape [%lld,%lld] is empty", path,
                          (long long)shape[0], (long long)shape[1]);
        goto done;
    }
    size_t n = (size_t)(shape[0] * shape[1]);
    buf = malloc(n * sizeof *buf);
    if (!buf) {
        st = qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory for %zu ids", path, n);
        goto done;
    }
    /* read as int64 so that out-of-range values are seen, not clamped by HDF5 */
    if (H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        st = qs_error_set(err, QS_ERR_IO, "%s: reading dataset 'input_ids' failed", path);
        goto done;
    }
    if ((st = qs_tensor_init(out, QS_DTYPE_I32, 2, shape, err)) != QS_OK) goto done;
    int32_t *dst = out->data;
    for (size_t i = 0; i < n; i++) {
        if (buf[i] < INT32_MIN || buf[i] > INT32_MAX) {
            st = qs_error_set(err, QS_ERR_INPUT, "%s: input_ids[%zu,%zu] = %lld is outside int32", path,
                              i / (size_t)shape[1], i % (size_t)shape[1], (long long)buf[i]);
            qs_tensor_free(out);
            goto done;
        }
        dst[i] = (int32_t)buf[i];
    }
done:
    free(buf);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (dset >= 0) H5Dclose(dset);
    if (file >= 0) H5Fclose(file);
    h5_quiet_end(&q);
    return st;
}

qs_status qs_token_set_read(const char *path, qs_tensor *out, qs_error *err)
{
    qs_token_set_format f;
    QS_TRY(qs_token_set_format_of(path, &f, err));
    QS_TRY(f == QS_TOKEN_SET_NPY ? qs_npy_read_i32(path, out, err) : read_h5(path, out, err));
    qs_status st = check_shape(path, out, err);
    if (st == QS_OK) {
        const int32_t *v = out->data;
        int64_t n = qs_tensor_numel(out);
        for (int64_t i = 0; i < n; i++)
            if (v[i] < 0) {
                st = qs_error_set(err, QS_ERR_INPUT, "%s: token id [%lld,%lld] is %d, expected >= 0", path,
                                  (long long)(i / out->shape[1]), (long long)(i % out->shape[1]), (int)v[i]);
                break;
            }
    }
    if (st != QS_OK) qs_tensor_free(out);
    return st;
}

qs_status qs_token_set_check_vocab(const char *path, const qs_tensor *ids, int64_t vocab_size, qs_error *err)
{
    QS_TRY(check_shape(path, ids, err));
    int64_t n = qs_tensor_numel(ids);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = ids->dtype == QS_DTYPE_I64 ? ((const int64_t *)ids->data)[i] : ((const int32_t *)ids->data)[i];
        if (v < 0 || v >= vocab_size)
            return qs_error_set(err, QS_ERR_INPUT, "%s: token id [%lld,%lld] is %lld, outside the vocabulary [0, %lld)",
                                path, (long long)(i / ids->shape[1]), (long long)(i % ids->shape[1]), (long long)v,
                                (long long)vocab_size);
    }
    return QS_OK;
}
