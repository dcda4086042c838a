/* export_hdf5.c — the HDF5 archive of a run (see export_hdf5.h). */
#define _GNU_SOURCE
#include "pipeline/export_hdf5.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/fsutil.h"

struct qs_hdf5_export {
    char path[4096];
    char tmp[4160];
    hid_t file, blocks;
    H5E_auto2_t efn;
    void *edata;
};

static herr_t attr(hid_t loc, const char *name, hid_t type, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static herr_t attr_str(hid_t loc, const char *name, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    herr_t rc = attr(loc, name, t, v);
    H5Tclose(t);
    return rc;
}

static herr_t dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, const void *data)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    /* chunked + deflate: codes are small integers and compress well */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[2] = {dims[0] < 256 ? dims[0] : 256, rank > 1 ? (dims[1] < 4096 ? dims[1] : 4096) : 0};
    if (dims[0] > 0 && (rank == 1 || dims[1] > 0)) {
        H5Pset_chunk(dcpl, rank, chunk);
        H5Pset_deflate(dcpl, 1);
    }
    hid_t ds = sp < 0 ? -1 : H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

qs_status qs_hdf5_export_open(qs_hdf5_export **out, const char *path, const char *fingerprint_id,
                              const char *run_json, qs_error *err)
{
    qs_hdf5_export *x = calloc(1, sizeof *x);
    if (!x) return qs_error_set(err, QS_ERR_NOMEM, "%s", path);
    snprintf(x->path, sizeof x->path, "%s", path);
    snprintf(x->tmp, sizeof x->tmp, "%s.tmp.%d", path, (int)getpid());
    H5Eget_auto2(H5E_DEFAULT, &x->efn, &x->edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    x->file = H5Fcreate(x->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = x->file >= 0 && attr_str(x->file, "qshard_version", "0.1.0") >= 0 &&
              attr_str(x->file, "fingerprint", fingerprint_id) >= 0 && attr_str(x->file, "run", run_json) >= 0;
    if (ok) x->blocks = H5Gcreate2(x->file, "blocks", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (!ok || x->blocks < 0) {
        qs_hdf5_export_abort(x);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot create the HDF5 archive", path);
    }
    *out = x;
    return QS_OK;
}

qs_status qs_hdf5_export_block(qs_hdf5_export *x, const qs_block_record *r, qs_error *err)
{
    char name[64];
    snprintf(name, sizeof name, "block_%05d", r->layer);
    hid_t g = H5Gcreate2(x->blocks, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = g >= 0 && attr(g, "layer", H5T_NATIVE_INT, &r->layer) >= 0 &&
              attr(g, "seconds", H5T_NATIVE_DOUBLE, &r->seconds) >= 0;
    for (int i = 0; i < r->n_linears && ok; i++) {
        const qs_quant_result *q = &r->res[i];
        const qs_linear_stats *s = &r->stats[i];
        hid_t l = H5Gcreate2(g, r->names[i], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        hsize_t d2[2] = {(hsize_t)q->rows, (hsize_t)q->cols}, ds[2] = {(hsize_t)q->groups, (hsize_t)q->rows},
                d1[1] = {(hsize_t)q->cols};
        ok = l >= 0 && attr(l, "bits", H5T_NATIVE_INT, &q->bits) >= 0 &&
             attr(l, "h_trace", H5T_NATIVE_DOUBLE, &s->h_trace) >= 0 &&
             attr(l, "loss", H5T_NATIVE_DOUBLE, &s->loss) >= 0 &&
             attr(l, "loss_rtn", H5T_NATIVE_DOUBLE, &s->loss_rtn) >= 0 &&
             attr(l, "seconds", H5T_NATIVE_DOUBLE, &s->seconds) >= 0 &&
             attr(l, "samples", H5T_NATIVE_INT64, &s->samples) >= 0 &&
             dataset(l, "codes", H5T_NATIVE_UINT8, 2, d2, q->codes) >= 0 &&
             dataset(l, "scales", H5T_NATIVE_FLOAT, 2, ds, q->scales) >= 0 &&
             dataset(l, "zeros", H5T_NATIVE_INT32, 2, ds, q->zeros) >= 0 &&
             dataset(l, "g_idx", H5T_NATIVE_INT32, 1, d1, q->g_idx) >= 0;
        if (l >= 0) H5Gclose(l);
    }
    if (g >= 0) H5Gclose(g);
    return ok ? QS_OK : qs_error_set(err, QS_ERR_IO, "%s: cannot write block %d", x->tmp, r->layer);
}

qs_status qs_hdf5_export_finish(qs_hdf5_export *x, qs_error *err)
{
    H5Gclose(x->blocks);
    herr_t rc = H5Fclose(x->file);
    H5Eset_auto2(H5E_DEFAULT, x->efn, x->edata);
    qs_status st = QS_OK;
    int fd = rc < 0 ? -1 : open(x->tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) st = qs_error_set(err, QS_ERR_IO, "%s: cannot close/fsync: %s", x->tmp, strerror(errno));
    if (fd >= 0) close(fd);
    if (st == QS_OK && rename(x->tmp, x->path) != 0)
        st = qs_error_set(err, QS_ERR_IO, "%s: cannot rename into place: %s", x->path, strerror(errno));
    if (st == QS_OK) st = qs_fsync_dir_of(x->path, err);
    if (st != QS_OK) unlink(x->tmp);
    free(x);
    return st;
}

void qs_hdf5_export_abort(qs_hdf5_export *x)
{
    if (!x) return;
    if (x->blocks > 0) H5Gclose(x->blocks);
    if (x->file > 0) H5Fclose(x->file);
    H5Eset_auto2(H5E_DEFAULT, x->efn, x->edata);
    unlink(x->tmp);
    free(x);
}
