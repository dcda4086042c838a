/* hessian.c — streamed GPTQ Hessian statistics through the backend's syrk.
 * Host memory by default; a device backend's memory with qs_hessian_init_on. */
#include "kernels/hessian.h"

#include <string.h>

#include "kernels/half.h"
#include "kernels/ops.h"
#include "kernels/ops_table.h"
#include "kernels/tensor.h"

/* f64 accumulation widens X in pieces of this many rows (bounded staging). */
#define QS_HESSIAN_F64_PIECE 1024

static bool on_device(const qs_hessian *h) { return h->mem != NULL; }

static void *buf_alloc(const qs_hessian *h, size_t bytes)
{
    return on_device(h) ? h->mem->alloc(h->mem->ctx, bytes) : qs_malloc(bytes);
}

static void buf_free(const qs_hessian *h, void *p)
{
    if (!p) return;
    if (on_device(h)) h->mem->free(h->mem->ctx, p);
    else qs_free(p);
}

qs_status qs_hessian_init(qs_hessian *h, int64_t n, bool f64, qs_error *err)
{
    return qs_hessian_init_on(h, NULL, n, f64, err);
}

qs_status qs_hessian_init_on(qs_hessian *h, const qs_backend_i *be, int64_t n, bool f64, qs_error *err)
{
    memset(h, 0, sizeof *h);
    if (n <= 0) return qs_error_set(err, QS_ERR_INPUT, "hessian: %lld features, expected > 0", (long long)n);
    h->n = n;
    h->f64 = f64;
    h->mem = be && be->device ? be : NULL;
    size_t nn = (size_t)n * (size_t)n, bytes = nn * (f64 ? sizeof(double) : sizeof(float));
    void *p;
    if (on_device(h)) {
        if (!h->mem->ops)
            return qs_error_set(err, QS_ERR_INTERNAL, "hessian: backend '%s' has no ops table", h->mem->name);
        p = h->mem->alloc(h->mem->ctx, bytes);
        if (p && h->mem->zero(h->mem->ctx, p, bytes, err) != QS_OK) {
            h->mem->free(h->mem->ctx, p);
            return err ? err->code : QS_ERR_INTERNAL;
        }
    } else {
        p = qs_calloc(nn, f64 ? sizeof(double) : sizeof(float));
    }
    if (f64) h->h64 = p;
    else h->h32 = p;
    if (!p)
        return qs_error_set(err, QS_ERR_NOMEM, "hessian: cannot allocate [%lld,%lld] %s%s%s", (long long)n,
                            (long long)n, f64 ? "f64" : "f32", on_device(h) ? " on " : "",
                            on_device(h) ? h->mem->name : "");
    return QS_OK;
}

void qs_hessian_free(qs_hessian *h)
{
    buf_free(h, h->h32);
    buf_free(h, h->h64);
    buf_free(h, h->xbuf);
    memset(h, 0, sizeof *h);
}

/* A raw sum (bf16 chunks) becomes the running mean the other paths keep. */
static void to_mean(qs_hessian *h)
{
    if (!h->raw) return;
    int64_t n = h->n;
    float s = h->count > 0 ? (float)(2.0 / (double)h->count) : 0.0f;
#pragma omp parallel for schedule(static) if (n * n >= (1 << 20))
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) h->h32[i * n + j] *= s;
    h->raw = false;
}

void qs_hessian_reset(qs_hessian *h)
{
    h->raw = false;
    size_t nn = (size_t)h->n * (size_t)h->n;
    if (on_device(h)) {
        /* a failure here (a broken device) shows at the next add or sync */
        if (h->h32) h->mem->zero(h->mem->ctx, h->h32, nn * sizeof(float), NULL);
        if (h->h64) h->mem->zero(h->mem->ctx, h->h64, nn * sizeof(double), NULL);
    } else {
        if (h->h32) memset(h->h32, 0, nn * sizeof(float));
        if (h->h64) memset(h->h64, 0, nn * sizeof(double));
    }
    h->count = 0;
}

qs_status qs_hessian_add(qs_hessian *h, const qs_backend_i *be, const float *x, int64_t m, int64_t ldx,
                         qs_error *err)
{
    if (m < 0 || ldx < h->n)
        return qs_error_set(err, QS_ERR_INPUT, "hessian: chunk of %lld rows with leading dimension %lld, expected >= %lld",
                            (long long)m, (long long)ldx, (long long)h->n);
    if (on_device(h) && be != h->mem)
        return qs_error_set(err, QS_ERR_INTERNAL, "hessian: a '%s' Hessian updated through backend '%s'", h->mem->name,
                            be->name);
    if (m == 0) return QS_OK;
    int64_t n = h->n;
    to_mean(h);
    if (!h->f64) {
        /* H ← n/(n+m) H + 2/(n+m) XᵀX in one syrk: beta scales, alpha adds. */
        double tot = (double)(h->count + m);
        be->ssyrk_t(be->ctx, n, m, (float)(2.0 / tot), x, ldx, (float)((double)h->count / tot), h->h32, n);
        h->count += m;
        return QS_OK;
    }
    if (!h->xbuf) {
        h->xbuf_rows = QS_HESSIAN_F64_PIECE;
        h->xbuf = buf_alloc(h, (size_t)h->xbuf_rows * (size_t)n * sizeof(double));
        if (!h->xbuf)
            return qs_error_set(err, QS_ERR_NOMEM, "hessian: cannot allocate the f64 staging buffer [%lld,%lld]",
                                (long long)h->xbuf_rows, (long long)n);
    }
    for (int64_t r0 = 0; r0 < m; r0 += h->xbuf_rows) {
        int64_t k = m - r0 < h->xbuf_rows ? m - r0 : h->xbuf_rows;
        if (on_device(h)) {
            QS_TRY(be->ops->widen_f64(be->ctx, x + r0 * ldx, k, n, ldx, h->xbuf, err));
        } else {
            for (int64_t r = 0; r < k; r++)
                for (int64_t c = 0; c < n; c++) h->xbuf[r * n + c] = (double)x[(r0 + r) * ldx + c];
        }
        double tot = (double)(h->count + k);
        be->dsyrk_t(be->ctx, n, k, 2.0 / tot, h->xbuf, n, (double)h->count / tot, h->h64, n);
        h->count += k;
    }
    return QS_OK;
}

/* Column panels of the upper triangle for the bf16 path: panel [j0, j0+P)
 * needs rows [0, j0+P) only, so about half of XᵀX is computed (a GEMM has no
 * syrk's triangle). */
#define QS_HESSIAN_BF16_PANEL 256

qs_status qs_hessian_add_bf16(qs_hessian *h, const qs_backend_i *be, const uint16_t *x, int64_t m, int64_t ldx,
                              qs_error *err)
{
    if (m < 0 || ldx < h->n)
        return qs_error_set(err, QS_ERR_INPUT, "hessian: chunk of %lld rows with leading dimension %lld, expected >= %lld",
                            (long long)m, (long long)ldx, (long long)h->n);
    if (on_device(h) || !be->gemm_bf16)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "hessian: bf16 samples need a host Hessian and a backend with a "
                                                     "bf16 GEMM ('%s')", be->name);
    if (m == 0) return QS_OK;
    int64_t n = h->n;
    if (h->f64) {
        /* widen (exactly) to f32 in pieces and take the f64 path */
        int64_t piece = QS_HESSIAN_F64_PIECE;
        float *w = qs_malloc(sizeof(float) * (size_t)(piece * n));
        if (!w) return qs_error_set(err, QS_ERR_NOMEM, "hessian: bf16 staging [%lld,%lld]", (long long)piece, (long long)n);
        qs_status st = QS_OK;
        for (int64_t r0 = 0; r0 < m && st == QS_OK; r0 += piece) {
            int64_t k = m - r0 < piece ? m - r0 : piece;
            for (int64_t r = 0; r < k; r++)
                for (int64_t c = 0; c < n; c++) w[r * n + c] = qs_bf16_to_f32(x[(r0 + r) * ldx + c]);
            st = qs_hessian_add(h, be, w, k, n, err);
        }
        qs_free(w);
        return st;
    }
    /* a raw sum S = Σ x xᵀ: each chunk is one accumulating GEMM per panel
     * (no scaling pass over H per chunk); readers take 2/n · S */
    if (h->count > 0 && !h->raw) {
        /* after f32 chunks: back to a sum */
        float s = (float)((double)h->count / 2.0);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i; j < n; j++) h->h32[i * n + j] *= s;
    }
    h->raw = true;
    for (int64_t j0 = 0; j0 < n; j0 += QS_HESSIAN_BF16_PANEL) {
        int64_t j1 = j0 + QS_HESSIAN_BF16_PANEL < n ? j0 + QS_HESSIAN_BF16_PANEL : n;
        /* S[0:j1, j0:j1] += X[:, 0:j1]ᵀ X[:, j0:j1] */
        QS_TRY(be->gemm_bf16(be->ctx, true, false, j1, j1 - j0, m, 1.0f, x, ldx, x + j0, ldx, 1.0f, h->h32 + j0, n,
                             err));
    }
    h->count += m;
    return QS_OK;
}

/* Running-mean merge of the upper triangle: h = (n1 h + n2 o) / (n1 + n2). */
static qs_status merge_any(qs_hessian *h, const float *o32, const double *o64, int64_t oc, double oscale,
                           qs_error *err)
{
    if (oc < 0) return qs_error_set(err, QS_ERR_INPUT, "hessian merge: negative sample count %lld", (long long)oc);
    if (oc == 0) return QS_OK;
    to_mean(h);
    int64_t n = h->n;
    double tot = (double)(h->count + oc);
    double a = (double)h->count / tot, b = (double)oc / tot;
    if (on_device(h)) {
        QS_TRY(h->mem->ops->hessian_merge(h->mem->ctx, h->h32, h->h64, o32, o64, n, a, b, err));
        h->count += oc;
        return QS_OK;
    }
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = i; j < n; j++) {
            size_t k = (size_t)i * (size_t)n + (size_t)j;
            double o = o64 ? o64[k] : oscale * (double)o32[k];
            if (h->f64) h->h64[k] = qs_op_mean_merge(h->h64[k], o, a, b);
            else h->h32[k] = (float)qs_op_mean_merge((double)h->h32[k], o, a, b);
        }
    }
    h->count += oc;
    return QS_OK;
}

qs_status qs_hessian_merge(qs_hessian *h, const qs_hessian *other, qs_error *err)
{
    if (other->n != h->n)
        return qs_error_set(err, QS_ERR_INPUT, "hessian merge: [%lld,%lld] with [%lld,%lld], expected equal sizes",
                            (long long)h->n, (long long)h->n, (long long)other->n, (long long)other->n);
    if (other->mem != h->mem)
        return qs_error_set(err, QS_ERR_INPUT, "hessian merge: a %s Hessian with a %s one, expected the same memory",
                            h->mem ? h->mem->name : "host", other->mem ? other->mem->name : "host");
    /* a raw sum reads as its mean */
    double os = other->raw && other->count > 0 ? 2.0 / (double)other->count : 1.0;
    return merge_any(h, other->h32, other->h64, other->count, os, err);
}

qs_status qs_hessian_merge_f32(qs_hessian *h, const float *other, int64_t other_count, qs_error *err)
{
    return merge_any(h, other, NULL, other_count, 1.0, err);
}

qs_status qs_hessian_merge_f64(qs_hessian *h, const double *other, int64_t other_count, qs_error *err)
{
    return merge_any(h, NULL, other, other_count, 1.0, err);
}

void qs_hessian_get_f32(const qs_hessian *h, float *out)
{
    int64_t n = h->n;
    if (on_device(h)) {
        /* a failure here shows at the backend's next sync (device Hessians are never raw sums) */
        h->mem->ops->hessian_full(h->mem->ctx, h->h32, h->h64, n, out, NULL);
        return;
    }
    const float raw_scale = h->count > 0 ? (float)(2.0 / (double)h->count) : 0.0f;
    /* 64×64 tiles of the upper triangle: the mirrored writes stay in cache. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t ib = 0; ib < n; ib += 64)
        for (int64_t jb = ib; jb < n; jb += 64)
            for (int64_t i = ib; i < ib + 64 && i < n; i++)
                for (int64_t j = (jb > i ? jb : i); j < jb + 64 && j < n; j++) {
                    size_t k = (size_t)i * (size_t)n + (size_t)j;
                    float v = h->f64 ? (float)h->h64[k] : h->raw ? h->h32[k] * raw_scale : h->h32[k];
                    out[k] = v;
                    out[(size_t)j * (size_t)n + (size_t)i] = v;
                }
}
