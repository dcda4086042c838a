/* checkpoint.c — block result files (HDF5) and the journal. */
#define _GNU_SOURCE
#include "pipeline/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/h5util.h"

void qs_checkpoint_block_path(const char *work_dir, int layer, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/blocks/block_%05d.h5", work_dir, layer);
}

void qs_block_record_free(qs_block_record *r)
{
    if (!r) return;
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) qs_quant_result_free(&r->res[i]);
    qs_omni_record_free(&r->omni);
    memset(r, 0, sizeof *r);
}

static int64_t numel(const qs_omni_tensor *t) { return t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0]; }

/* Tensors of an OmniQuant record in name order (files list them by name). */
static void hash_tensors(XXH64_state_t *s, const qs_omni_tensor *t, int n)
{
    bool done[QS_OMNI_MAX_TENSORS] = {false};
    for (int k = 0; k < n; k++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!done[i] && (best < 0 || strcmp(t[i].name, t[best].name) < 0)) best = i;
        done[best] = true;
        int64_t dims[3] = {t[best].ndim, t[best].shape[0], t[best].ndim == 2 ? t[best].shape[1] : 0};
        XXH64_update(s, t[best].name, strlen(t[best].name) + 1);
        XXH64_update(s, dims, sizeof dims);
        XXH64_update(s, t[best].data, sizeof(float) * (size_t)numel(&t[best]));
    }
}

/* The checksum covers exactly what the exports are made from (and for
 * OmniQuant what was learned). */
static uint64_t block_hash(int n, const qs_quant_result *res, const qs_omni_record *omni)
{
    XXH64_state_t *s = XXH64_createState();
    XXH64_reset(s, 0x71736861726400ull); /* "qshard" */
    for (int i = 0; i < n; i++) {
        const qs_quant_result *r = &res[i];
        int64_t dims[4] = {r->rows, r->cols, r->groups, r->bits};
        XXH64_update(s, dims, sizeof dims);
        XXH64_update(s, r->codes, (size_t)(r->rows * r->cols));
        XXH64_update(s, r->scales, sizeof(float) * (size_t)(r->groups * r->rows));
        XXH64_update(s, r->zeros, sizeof(int32_t) * (size_t)(r->groups * r->rows));
        XXH64_update(s, r->g_idx, sizeof(int32_t) * (size_t)r->cols);
    }
    if (omni) {
        hash_tensors(s, omni->fp, omni->n_fp);
        hash_tensors(s, omni->params, omni->n_params);
        XXH64_update(s, omni->loss, sizeof(double) * (size_t)omni->epochs);
    }
    uint64_t h = XXH64_digest(s);
    XXH64_freeState(s);
    return h;
}

/* ---- small HDF5 helpers (errors as values, HDF5's own printing off) ------------ */

static bool h5_read_attr(hid_t loc, const char *name, hid_t type, void *v)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return false;
    herr_t rc = H5Aread(a, type, v);
    H5Aclose(a);
    return rc >= 0;
}

static bool h5_read_attr_str(hid_t loc, const char *name, char *buf, size_t cap)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return false;
    hid_t ft = H5Aget_type(a);
    size_t n = H5Tget_size(ft);
    bool ok = false;
    if (n > 0 && n <= cap) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, n);
        ok = H5Aread(a, t, buf) >= 0;
        buf[n - 1] = '\0';
        H5Tclose(t);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return ok;
}

static bool h5_read_dataset(hid_t loc, const char *name, hid_t type, size_t expect_elems, void *buf)
{
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return false;
    hid_t sp = H5Dget_space(ds);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    bool ok = n == (hssize_t)expect_elems && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0;
    H5Sclose(sp);
    H5Dclose(ds);
    return ok;
}

/* Rank and dimensions of a dataset (at most 2); 0 when absent or of another rank. */
static int h5_dataset_dims(hid_t loc, const char *name, int64_t dims[2])
{
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return 0;
    hid_t sp = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t d[2] = {0, 0};
    if (nd == 1 || nd == 2) H5Sget_simple_extent_dims(sp, d, NULL);
    else nd = 0;
    dims[0] = d[0] > (hsize_t)INT64_MAX ? -1 : (int64_t)d[0];
    dims[1] = d[1] > (hsize_t)INT64_MAX ? -1 : (int64_t)d[1];
    H5Sclose(sp);
    H5Dclose(ds);
    return nd;
}

/* ---- the OmniQuant group ----------------------------------------------------------- */

static bool write_tensors(hid_t g, const qs_omni_tensor *t, int n)
{
    for (int i = 0; i < n; i++) {
        hsize_t d[2] = {(hsize_t)t[i].shape[0], (hsize_t)(t[i].ndim == 2 ? t[i].shape[1] : 0)};
        if (!qs_h5_dataset(g, t[i].name, H5T_NATIVE_FLOAT, t[i].ndim, d, t[i].data, 0)) return false;
    }
    return true;
}

static bool write_omni(hid_t f, const qs_omni_record *m)
{
    hid_t g = H5Gcreate2(f, "omniquant", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return false;
    hsize_t ne[1] = {(hsize_t)m->epochs};
    bool ok = qs_h5_attr(g, "epochs", H5T_NATIVE_INT, &m->epochs) && qs_h5_attr(g, "steps", H5T_NATIVE_INT64, &m->steps) &&
              qs_h5_attr(g, "seconds_forward", H5T_NATIVE_DOUBLE, &m->seconds_forward) &&
              qs_h5_attr(g, "seconds_backward", H5T_NATIVE_DOUBLE, &m->seconds_backward) &&
              qs_h5_attr(g, "seconds_optimizer", H5T_NATIVE_DOUBLE, &m->seconds_optimizer) &&
              qs_h5_dataset(g, "loss", H5T_NATIVE_DOUBLE, 1, ne, m->loss, 0);
    hid_t p = ok ? H5Gcreate2(g, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    ok = p >= 0 && write_tensors(p, m->params, m->n_params);
    if (p >= 0) H5Gclose(p);
    hid_t fp = ok ? H5Gcreate2(g, "fp", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    ok = fp >= 0 && write_tensors(fp, m->fp, m->n_fp);
    if (fp >= 0) H5Gclose(fp);
    H5Gclose(g);
    return ok;
}

/* Every dataset of group `name` in g (1-D or 2-D f32), in name order; none
 * larger than max_numel elements (checked before anything is allocated). */
static bool read_tensors(hid_t g, const char *name, qs_omni_record *m, bool fp, int64_t max_numel)
{
    hid_t sub = H5Gopen2(g, name, H5P_DEFAULT);
    if (sub < 0) return false;
    H5G_info_t info;
    bool ok = H5Gget_info(sub, &info) >= 0 && info.nlinks <= QS_OMNI_MAX_TENSORS;
    for (hsize_t i = 0; ok && i < info.nlinks; i++) {
        char dname[QS_NAME_MAX + 16];
        ssize_t len = H5Lget_name_by_idx(sub, ".", H5_INDEX_NAME, H5_ITER_INC, i, dname, sizeof dname, H5P_DEFAULT);
        hid_t ds = len > 0 && (size_t)len < sizeof dname ? H5Dopen2(sub, dname, H5P_DEFAULT) : -1;
        if (ds < 0) {
            ok = false;
            break;
        }
        hid_t sp = H5Dget_space(ds);
        int nd = H5Sget_simple_extent_ndims(sp);
        hsize_t d[2] = {0, 0};
        int64_t shape[2] = {0, 0};
        if (nd == 1 || nd == 2) H5Sget_simple_extent_dims(sp, d, NULL);
        /* the dims are the file's word: bounded before they are multiplied or allocated */
        bool sane = (nd == 1 || nd == 2) && d[0] >= 1 && d[0] <= (hsize_t)max_numel &&
                    (nd == 1 || (d[1] >= 1 && d[1] <= (hsize_t)max_numel / d[0]));
        shape[0] = sane ? (int64_t)d[0] : 0, shape[1] = sane ? (int64_t)d[1] : 0;
        int64_t n = nd == 2 ? shape[0] * shape[1] : shape[0];
        float *buf = sane ? malloc(sizeof(float) * (size_t)n) : NULL;
        ok = buf && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0 &&
             qs_omni_record_add(m, fp, dname, nd, shape, buf, NULL) == QS_OK;
        free(buf);
        H5Sclose(sp);
        H5Dclose(ds);
    }
    H5Gclose(sub);
    return ok;
}

static bool read_omni(hid_t f, qs_omni_record *m, int64_t max_numel)
{
    memset(m, 0, sizeof *m);
    hid_t g = H5Gopen2(f, "omniquant", H5P_DEFAULT);
    if (g < 0) return false;
    bool ok = h5_read_attr(g, "epochs", H5T_NATIVE_INT, &m->epochs) && m->epochs > 0 && m->epochs < (1 << 24) &&
              h5_read_attr(g, "steps", H5T_NATIVE_INT64, &m->steps);
    h5_read_attr(g, "seconds_forward", H5T_NATIVE_DOUBLE, &m->seconds_forward);
    h5_read_attr(g, "seconds_backward", H5T_NATIVE_DOUBLE, &m->seconds_backward);
    h5_read_attr(g, "seconds_optimizer", H5T_NATIVE_DOUBLE, &m->seconds_optimizer);
    int64_t ld[2] = {0, 0};
    ok = ok && h5_dataset_dims(g, "loss", ld) == 1 && ld[0] == m->epochs; /* before the allocation */
    if (ok) {
        m->loss = calloc((size_t)m->epochs, sizeof(double));
        ok = m->loss && h5_read_dataset(g, "loss", H5T_NATIVE_DOUBLE, (size_t)m->epochs, m->loss);
    }
    ok = ok && read_tensors(g, "params", m, false, max_numel) && read_tensors(g, "fp", m, true, max_numel);
    H5Gclose(g);
    return ok;
}

/* ---- write ------------------------------------------------------------------------ */

qs_status qs_checkpoint_write_block(const char *work_dir, const qs_block_outcome *o, const char *fingerprint,
                                    uint64_t *xxh, qs_error *err)
{
    char dir[4200], path[4200], tmp[4300];
    snprintf(dir, sizeof dir, "%s/blocks", work_dir);
    QS_TRY(qs_mkdir_p(dir, err));
    qs_checkpoint_block_path(work_dir, o->layer, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int n = o->blk->n_linears;
    uint64_t h = block_hash(n, o->res, o->omni);

    H5E_auto2_t efn;
    void *edata;
    H5Eget_auto2(H5E_DEFAULT, &efn, &edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    qs_status st = QS_OK;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) st = QS_ERR_IO;
    int fmt = 1, layer = o->layer;
    char hex[32];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    if (st == QS_OK) st = qs_h5_attr(f, "format_version", H5T_NATIVE_INT, &fmt) ? QS_OK : QS_ERR_IO;
    if (st == QS_OK) st = qs_h5_attr(f, "layer", H5T_NATIVE_INT, &layer) ? QS_OK : QS_ERR_IO;
    if (st == QS_OK) st = qs_h5_attr(f, "n_linears", H5T_NATIVE_INT, &n) ? QS_OK : QS_ERR_IO;
    if (st == QS_OK) st = qs_h5_attr(f, "seconds", H5T_NATIVE_DOUBLE, &o->seconds) ? QS_OK : QS_ERR_IO;
    if (st == QS_OK) st = qs_h5_attr_str(f, "fingerprint", fingerprint) ? QS_OK : QS_ERR_IO;
    if (st == QS_OK) st = qs_h5_attr_str(f, "xxh64", hex) ? QS_OK : QS_ERR_IO;
    for (int i = 0; i < n && st == QS_OK; i++) {
        const qs_quant_result *r = &o->res[i];
        const qs_linear_stats *s = &o->stats[i];
        char gname[32];
        snprintf(gname, sizeof gname, "linear%d", i);
        hid_t g = H5Gcreate2(f, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) {
            st = QS_ERR_IO;
            break;
        }
        hsize_t d2[2] = {(hsize_t)r->rows, (hsize_t)r->cols}, ds[2] = {(hsize_t)r->groups, (hsize_t)r->rows},
                d1[1] = {(hsize_t)r->cols};
        st = qs_h5_attr_str(g, "name", o->blk->lin[i].weight) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_attr(g, "bits", H5T_NATIVE_INT, &r->bits) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_attr(g, "h_trace", H5T_NATIVE_DOUBLE, &s->h_trace) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_attr(g, "loss", H5T_NATIVE_DOUBLE, &s->loss) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_attr(g, "loss_rtn", H5T_NATIVE_DOUBLE, &s->loss_rtn) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_attr(g, "seconds", H5T_NATIVE_DOUBLE, &s->seconds) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_attr(g, "samples", H5T_NATIVE_INT64, &s->samples) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_dataset(g, "codes", H5T_NATIVE_UINT8, 2, d2, r->codes, 0) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_dataset(g, "scales", H5T_NATIVE_FLOAT, 2, ds, r->scales, 0) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_dataset(g, "zeros", H5T_NATIVE_INT32, 2, ds, r->zeros, 0) ? QS_OK : QS_ERR_IO;
        if (st == QS_OK) st = qs_h5_dataset(g, "g_idx", H5T_NATIVE_INT32, 1, d1, r->g_idx, 0) ? QS_OK : QS_ERR_IO;
        H5Gclose(g);
    }
    if (st == QS_OK && o->omni && !write_omni(f, o->omni)) st = QS_ERR_IO;
    if (f >= 0 && H5Fclose(f) < 0) st = QS_ERR_IO;
    H5Eset_auto2(H5E_DEFAULT, efn, edata);
    if (st != QS_OK) {
        unlink(tmp);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot write the block checkpoint", tmp);
    }
    /* HDF5 closed the file; make it durable before it takes the final name. */
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        if (fd >= 0) close(fd);
        unlink(tmp);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot fsync: %s", tmp, strerror(errno));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
    }
    if (xxh) *xxh = h;
    return qs_fsync_dir_of(path, err);
}

/* ---- read --------------------------------------------------------------------------- */

qs_status qs_checkpoint_read_block(const char *work_dir, int layer, const char *fingerprint, const qs_block_expect *expect,
                                   qs_block_record *r, qs_error *err)
{
    memset(r, 0, sizeof *r);
    char path[4200];
    qs_checkpoint_block_path(work_dir, layer, path, sizeof path);
    if (!qs_path_exists(path)) return qs_error_set(err, QS_ERR_INPUT, "%s: no checkpoint", path);
    H5E_auto2_t efn;
    void *edata;
    H5Eget_auto2(H5E_DEFAULT, &efn, &edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    qs_status st = QS_OK;
    char why[256] = "";
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    char fp[256] = "", hex[40] = "";
    int fmt = 0, n = 0, lay = -1;
    if (f < 0) snprintf(why, sizeof why, "not a readable HDF5 file (truncated?)");
    else if (!h5_read_attr(f, "format_version", H5T_NATIVE_INT, &fmt) || fmt != 1 ||
             !h5_read_attr(f, "layer", H5T_NATIVE_INT, &lay) || !h5_read_attr(f, "n_linears", H5T_NATIVE_INT, &n) ||
             !h5_read_attr_str(f, "fingerprint", fp, sizeof fp) || !h5_read_attr_str(f, "xxh64", hex, sizeof hex) ||
             !h5_read_attr(f, "seconds", H5T_NATIVE_DOUBLE, &r->seconds))
        snprintf(why, sizeof why, "attributes missing or unreadable");
    else if (lay != layer || n < 1 || n > QS_MAX_BLOCK_LINEARS)
        snprintf(why, sizeof why, "holds block %d with %d linears", lay, n);
    else if (strcmp(fp, fingerprint) != 0)
        snprintf(why, sizeof why, "made by another run (fingerprint %.64s, this run %.64s)", fp, fingerprint);
    r->layer = layer;
    r->n_linears = n;
    qs_error bad; /* a field out of range (checkpoint_check.h) */
    qs_error_clear(&bad);
    for (int i = 0; i < n && !why[0] && !bad.msg[0]; i++) {
        char gname[32];
        snprintf(gname, sizeof gname, "linear%d", i);
        hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
        qs_quant_result *q = &r->res[i];
        qs_linear_stats *s = &r->stats[i];
        qs_linear_dims d;
        memset(&d, 0, sizeof d);
        int64_t gd[2] = {0, 0};
        bool readable = g >= 0 && h5_read_attr(g, "bits", H5T_NATIVE_INT, &d.bits) &&
                        h5_read_attr_str(g, "name", r->names[i], QS_NAME_MAX) &&
                        (d.codes_ndim = h5_dataset_dims(g, "codes", d.codes)) &&
                        (d.scales_ndim = h5_dataset_dims(g, "scales", d.scales)) &&
                        (d.zeros_ndim = h5_dataset_dims(g, "zeros", d.zeros)) &&
                        (d.g_idx_ndim = h5_dataset_dims(g, "g_idx", gd));
        d.g_idx = gd[0];
        if (!readable) {
            snprintf(why, sizeof why, "linear %d unreadable", i);
        } else if (qs_checkpoint_check_dims(path, i, r->names[i], &d, expect, &bad) == QS_OK) {
            /* shapes are sane and what the model expects: now allocate and read */
            qs_quant_opts qo;
            qs_quant_opts_default(&qo);
            qo.bits = d.bits;
            qo.group_size = d.scales[0] == 1 ? -1 : (int)(d.codes[1] / d.scales[0]);
            qs_error e2;
            if (qs_quant_result_init(q, d.codes[0], d.codes[1], &qo, &e2) != QS_OK || q->groups != d.scales[0])
                snprintf(why, sizeof why, "linear %d: cannot hold [%lld, %lld] in memory", i, (long long)d.codes[0],
                         (long long)d.codes[1]);
            else if (!h5_read_dataset(g, "codes", H5T_NATIVE_UINT8, (size_t)(q->rows * q->cols), q->codes) ||
                     !h5_read_dataset(g, "scales", H5T_NATIVE_FLOAT, (size_t)(q->groups * q->rows), q->scales) ||
                     !h5_read_dataset(g, "zeros", H5T_NATIVE_INT32, (size_t)(q->groups * q->rows), q->zeros) ||
                     !h5_read_dataset(g, "g_idx", H5T_NATIVE_INT32, (size_t)q->cols, q->g_idx))
                snprintf(why, sizeof why, "linear %d data unreadable", i);
            h5_read_attr(g, "h_trace", H5T_NATIVE_DOUBLE, &s->h_trace);
            h5_read_attr(g, "loss", H5T_NATIVE_DOUBLE, &s->loss);
            h5_read_attr(g, "loss_rtn", H5T_NATIVE_DOUBLE, &s->loss_rtn);
            h5_read_attr(g, "seconds", H5T_NATIVE_DOUBLE, &s->seconds);
            h5_read_attr(g, "samples", H5T_NATIVE_INT64, &s->samples);
        }
        if (g >= 0) H5Gclose(g);
    }
    if (!why[0] && H5Lexists(f, "omniquant", H5P_DEFAULT) > 0) {
        r->has_omni = true;
        /* no tensor of the record is larger than the block's largest linear */
        int64_t max_numel = 0;
        for (int i = 0; expect && i < expect->n_linears; i++)
            if (expect->lin[i].out * expect->lin[i].in > max_numel) max_numel = expect->lin[i].out * expect->lin[i].in;
        if (!expect) max_numel = 1ll << 32;
        if (!read_omni(f, &r->omni, max_numel)) snprintf(why, sizeof why, "the omniquant group is unreadable");
    }
    if (f >= 0) H5Fclose(f);
    H5Eset_auto2(H5E_DEFAULT, efn, edata);
    if (!why[0] && !bad.msg[0]) {
        r->xxh64 = block_hash(n, r->res, r->has_omni ? &r->omni : NULL);
        char got[40];
        snprintf(got, sizeof got, "%016llx", (unsigned long long)r->xxh64);
        if (strcmp(got, hex) != 0) snprintf(why, sizeof why, "checksum mismatch (stored %s, data %s)", hex, got);
    }
    /* a valid checksum proves the file is the one written, not that it is sane */
    if (!why[0] && !bad.msg[0]) qs_block_results_check(path, n, r->names, r->res, r->stats, r->has_omni ? &r->omni : NULL, expect,
                                                              &bad);
    if (why[0] || bad.msg[0]) {
        qs_block_record_free(r);
        if (bad.msg[0] && !why[0]) return qs_error_set(err, QS_ERR_INPUT, "%s", bad.msg);
        return qs_error_set(err, QS_ERR_INPUT, "%s: %s", path, why);
    }
    for (int i = 0; i < n; i++) qs_quant_dequantize(&r->res[i], r->res[i].q);
    return st;
}

qs_status qs_journal_append(const char *work_dir, const char *fmt, ...)
{
    char path[4200], line[2048];
    snprintf(path, sizeof path, "%s/journal.log", work_dir);
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t off = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, sizeof line - off - 1, fmt, ap);
    va_end(ap);
    size_t n = strlen(line);
    /* one event per line whatever a path or a message holds: control bytes
     * (a newline in --out, say) become '?' */
    for (size_t i = off; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) line[i] = '?';
    line[n++] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd < 0) return QS_ERR_IO;
    bool ok = write(fd, line, n) == (ssize_t)n && fsync(fd) == 0;
    close(fd);
    return ok ? QS_OK : QS_ERR_IO;
}
