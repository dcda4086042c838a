/* export_hdf5.c — the HDF5 archive of a run (see export_hdf5.h). */
#define _GNU_SOURCE
#include "pipeline/export/export_hdf5.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/h5util.h"

struct qs_hdf5_export {
    char path[4096];
    char tmp[4160];
    hid_t file, blocks;
    H5E_auto2_t efn;
    void *edata;
};

qs_status qs_hdf5_export_open(qs_hdf5_export **out, const char *path, const char *fingerprint_id,
                              const char *run_json, qs_error *err)
{
    qs_hdf5_export *x = calloc(1, sizeof *x);
    if (!x) return qs_error_set(err, QS_ERR_NOMEM, "%s", path);
    snprintf(x->path, sizeof x->path, "%s", path);
    snprintf(x->tmp, sizeof x->tmp, "%s.tmp.%d", path, (int)getpid());
    H5Eget_auto2(H5E_DEFAULT, &x->efn, &x->edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    x->file = qs_h5_file_create(x->tmp);
    bool ok = x->file >= 0 && qs_h5_attr_str(x->file, "qshard_version", "0.1.0") &&
              qs_h5_attr_str(x->file, "fingerprint", fingerprint_id) && qs_h5_attr_str(x->file, "run", run_json);
    if (ok) x->blocks = qs_h5_group(x->file, "blocks");
    if (!ok || x->blocks < 0) {
        qs_hdf5_export_abort(x);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot create the HDF5 archive", path);
    }
    *out = x;
    return QS_OK;
}

static bool write_tensors(hid_t g, const char *name, const qs_omni_tensor *t, int n)
{
    hid_t sub = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = sub >= 0;
    for (int i = 0; i < n && ok; i++) {
        hsize_t d[2] = {(hsize_t)t[i].shape[0], (hsize_t)(t[i].ndim == 2 ? t[i].shape[1] : 0)};
        ok = qs_h5_dataset(sub, t[i].name, H5T_NATIVE_FLOAT, t[i].ndim, d, t[i].data, 0);
    }
    if (sub >= 0) H5Gclose(sub);
    return ok;
}

/* blocks/block_NNNNN/omniquant: the per-epoch loss, what was learned
 * (params/: LWC's γ, β per linear, LET's scales and shifts) and the folded
 * FP tensors the exports hold (fp/, under the model's names). */
static bool write_omni(hid_t g, const qs_omni_record *m)
{
    hid_t o = H5Gcreate2(g, "omniquant", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (o < 0) return false;
    hsize_t ne[1] = {(hsize_t)m->epochs};
    /* no training times: identical runs give identical archives (the times are in the report) */
    bool ok = qs_h5_attr(o, "epochs", H5T_NATIVE_INT, &m->epochs) && qs_h5_attr(o, "steps", H5T_NATIVE_INT64, &m->steps) &&
              qs_h5_dataset(o, "loss", H5T_NATIVE_DOUBLE, 1, ne, m->loss, 0) &&
              write_tensors(o, "params", m->params, m->n_params) && write_tensors(o, "fp", m->fp, m->n_fp);
    H5Gclose(o);
    return ok;
}

qs_status qs_hdf5_export_block(qs_hdf5_export *x, const qs_block_record *r, qs_error *err)
{
    char name[64];
    snprintf(name, sizeof name, "block_%05d", r->layer);
    hid_t g = qs_h5_group(x->blocks, name);
    bool ok = g >= 0 && qs_h5_attr(g, "layer", H5T_NATIVE_INT, &r->layer);
    for (int i = 0; i < r->n_linears && ok; i++) {
        const qs_quant_result *q = &r->res[i];
        const qs_linear_stats *s = &r->stats[i];
        hid_t l = qs_h5_group(g, r->names[i]);
        hsize_t d2[2] = {(hsize_t)q->rows, (hsize_t)q->cols}, ds[2] = {(hsize_t)q->groups, (hsize_t)q->rows},
                d1[1] = {(hsize_t)q->cols};
        ok = l >= 0 && qs_h5_attr(l, "bits", H5T_NATIVE_INT, &q->bits) &&
             qs_h5_attr(l, "h_trace", H5T_NATIVE_DOUBLE, &s->h_trace) &&
             qs_h5_attr(l, "loss", H5T_NATIVE_DOUBLE, &s->loss) &&
             qs_h5_attr(l, "loss_rtn", H5T_NATIVE_DOUBLE, &s->loss_rtn) &&
             qs_h5_attr(l, "samples", H5T_NATIVE_INT64, &s->samples) &&
             qs_h5_dataset(l, "codes", H5T_NATIVE_UINT8, 2, d2, q->codes, 1) &&
             qs_h5_dataset(l, "scales", H5T_NATIVE_FLOAT, 2, ds, q->scales, 1) &&
             qs_h5_dataset(l, "zeros", H5T_NATIVE_INT32, 2, ds, q->zeros, 1) &&
             qs_h5_dataset(l, "g_idx", H5T_NATIVE_INT32, 1, d1, q->g_idx, 1);
        if (l >= 0) H5Gclose(l);
    }
    if (ok && r->has_omni) ok = write_omni(g, &r->omni);
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
