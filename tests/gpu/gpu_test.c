/* gpu_test.c — the CUDA backend against the CPU backend, one ctest per name
 * (label gpu):
 *
 *   qs_gpu_test NAME [FIXTURE_DIR]
 *
 * Each test runs a CUDA kernel or backend call and the CPU code on the same
 * inputs: the CPU forward ops, RTN, packing and grid (kernels/cpu/, compiled
 * into this binary: they need no BLAS), plain double-precision references for
 * the BLAS and LAPACK calls, and the CPU backend's GPTQ results kept as
 * fixtures (tests/gpu/gpu_cases.h: OpenBLAS is not on the GPU machine). The
 * binary needs the CUDA toolkit and libc only (bench/gpu_check.sh builds it
 * on a bare GPU machine). Without a CUDA device every test exits 77 and says
 * why. Each prints the largest difference it saw.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/cpu/rtn.h"
#include "kernels/cuda/quant_cuda.h"
#include "kernels/device.h"
#include "kernels/gptq_pack.h"
#include "kernels/hessian.h"
#include "kernels/ops_table.h"
#include "kernels/quant_opts.h"
#include "kernels/tensor.h"
#include "tests/gpu/gpu_cases.h"

/* ---- harness --------------------------------------------------------------------- */

static qs_backend_i g_cuda;
static const qs_backend_i *be = &g_cuda;
static qs_error E;
static const char *g_fixtures = "tests/gpu/fixtures";

#define FAIL(...)                                                     \
    do {                                                              \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
        fprintf(stderr, __VA_ARGS__);                                 \
        fputc('\n', stderr);                                          \
        return 1;                                                     \
    } while (0)
#define CHECK(cond, ...)           \
    do {                           \
        if (!(cond)) FAIL(__VA_ARGS__); \
    } while (0)
/* A call that fills E on failure. */
#define TRY(call)                                                                         \
    do {                                                                                  \
        qs_error_clear(&E);                                                               \
        qs_status s_ = (call);                                                            \
        if (s_ != QS_OK) FAIL("%s: %s: %s", #call, qs_status_name(s_), E.msg);            \
    } while (0)

static uint64_t g_rng = 0x853C49E6748FEA9Bull;
static float frand(void) /* uniform in [-1, 1) */
{
    g_rng ^= g_rng >> 12, g_rng ^= g_rng << 25, g_rng ^= g_rng >> 27;
    return (float)((g_rng * 0x2545F4914F6CDD1Dull) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}
static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = scale * frand();
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "FAIL: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* Device copies of host arrays, and back; a failure ends the test run. */
static void *up(const void *host, size_t bytes)
{
    void *d = be->alloc(be->ctx, bytes ? bytes : 1);
    qs_error_clear(&E);
    if (!d || (host && be->copy(be->ctx, d, host, bytes, &E) != QS_OK)) {
        fprintf(stderr, "FAIL: cannot put %zu bytes on the device: %s\n", bytes, E.msg);
        exit(1);
    }
    return d;
}
static void down(void *host, const void *d, size_t bytes)
{
    qs_error_clear(&E);
    if (be->sync(be->ctx, &E) != QS_OK || be->copy(be->ctx, host, d, bytes, &E) != QS_OK) {
        fprintf(stderr, "FAIL: cannot read %zu bytes from the device: %s\n", bytes, E.msg);
        exit(1);
    }
}
static void dfree(void *d) { be->free(be->ctx, d); }

/* max over i of |got − ref| / max(|ref|, 1e-6 · max|ref|): relative, with a
 * floor so that elements near 0 do not dominate. NaN where ref has none: inf. */
static double max_rel(const float *got, const float *ref, size_t n)
{
    double mx = 0.0, worst = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)ref[i]));
    double floor_ = 1e-6 * mx + 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) != isnan(ref[i])) return INFINITY;
        if (isnan(ref[i])) continue;
        double d = fabs((double)got[i] - (double)ref[i]) / fmax(fabs((double)ref[i]), floor_);
        worst = fmax(worst, d);
    }
    return worst;
}

static size_t count_diff(const void *a, const void *b, size_t n, size_t elem)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += memcmp((const char *)a + i * elem, (const char *)b + i * elem, elem) != 0;
    return k;
}

/* ================================================================ device == */

static int test_device(void)
{
    char why[512];
    int n = qs_cuda_device_count(why, sizeof why);
    CHECK(n >= 1, "no device after the probe said there was one");
    qs_device_info info;
    TRY(qs_cuda_device_info(0, &info, &E));
    printf("cuda:0 %s, compute capability %d.%d, %d SMs, %.1f GiB free of %.1f GiB\n", info.name, info.cc_major,
           info.cc_minor, info.sm_count, (double)info.free_bytes / 1073741824.0,
           (double)info.total_bytes / 1073741824.0);
    CHECK(info.total_bytes > 0 && info.free_bytes <= info.total_bytes, "cudaMemGetInfo: %llu free of %llu",
          (unsigned long long)info.free_bytes, (unsigned long long)info.total_bytes);
    qs_error_clear(&E);
    CHECK(qs_cuda_device_info(n, &info, &E) == QS_ERR_INPUT, "device %d should not exist", n);
    /* memory: a round trip, zeroing, an impossible allocation */
    size_t bytes = 3 << 20;
    unsigned char *h = xmalloc(bytes), *back = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++) h[i] = (unsigned char)(i * 131 + 7);
    void *d = up(h, bytes);
    down(back, d, bytes);
    CHECK(memcmp(h, back, bytes) == 0, "host → device → host changed the bytes");
    TRY(be->zero(be->ctx, (char *)d + 4096, 8192, &E));
    down(back, d, bytes);
    for (size_t i = 0; i < bytes; i++)
        CHECK(back[i] == (i >= 4096 && i < 12288 ? 0 : h[i]), "byte %zu after zeroing 4096..12287", i);
    dfree(d);
    CHECK(be->alloc(be->ctx, (size_t)1 << 52) == NULL, "a 4 PiB allocation succeeded");
    /* a failing CUDA call names the file, the line and the call; it is not sticky */
    d = up(NULL, 64);
    qs_error_clear(&E);
    qs_status st = be->copy(be->ctx, d, NULL, 16, &E); /* a NULL source: cudaErrorInvalidValue */
    printf("expected failure: %s\n", E.msg);
    dfree(d);
    CHECK(st != QS_OK && strstr(E.msg, "kernels/cuda/backend_cuda.cu:") && strstr(E.msg, "cudaMemcpyAsync") &&
              strstr(E.msg, "cuda:0"),
          "the message does not name the device, the file:line and the call: '%s'", E.msg);
    TRY(be->sync(be->ctx, &E));
    free(h);
    free(back);
    return 0;
}

/* ============================================================ sgemm/syrk == */

static int gemm_case(const qs_backend_i *b, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double tol,
                     double *worst_out)
{
    const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
    const int64_t ra = ta ? k : m, rb = tb ? n : k;
    float *a = xmalloc(sizeof(float) * (size_t)(ra * lda)), *bb = xmalloc(sizeof(float) * (size_t)(rb * ldb));
    float *c = xmalloc(sizeof(float) * (size_t)(m * ldc)), *got = xmalloc(sizeof(float) * (size_t)(m * ldc));
    fill(a, (size_t)(ra * lda), 1.0f);
    fill(bb, (size_t)(rb * ldb), 1.0f);
    fill(c, (size_t)(m * ldc), 1.0f);
    const float alpha = 0.75f, beta = -0.5f;
    float *da = up(a, sizeof(float) * (size_t)(ra * lda)), *db = up(bb, sizeof(float) * (size_t)(rb * ldb));
    float *dc = up(c, sizeof(float) * (size_t)(m * ldc));
    b->sgemm(b->ctx, ta, tb, m, n, k, alpha, da, lda, db, ldb, beta, dc, ldc);
    TRY(b->sync(b->ctx, &E));
    down(got, dc, sizeof(float) * (size_t)(m * ldc));
    double worst = 0.0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < ldc; j++) {
            const double g = got[i * ldc + j];
            if (j >= n) {
                CHECK(g == c[i * ldc + j], "sgemm wrote C[%lld,%lld] beyond n", (long long)i, (long long)j);
                continue;
            }
            double s = 0.0, sa = 0.0;
            for (int64_t p = 0; p < k; p++) {
                double x = ta ? a[p * lda + i] : a[i * lda + p], y = tb ? bb[j * ldb + p] : bb[p * ldb + j];
                s += x * y;
                sa += fabs(x * y);
            }
            const double ref = alpha * s + beta * (double)c[i * ldc + j];
            const double bound = fabs(alpha) * sa + fabs(beta * (double)c[i * ldc + j]);
            worst = fmax(worst, fabs(g - ref) / bound);
        }
    dfree(da);
    dfree(db);
    dfree(dc);
    free(a);
    free(bb);
    free(c);
    free(got);
    *worst_out = worst;
    CHECK(worst <= tol, "sgemm ta=%d tb=%d [%lld,%lld,%lld]: error %.3e of Σ|a·b|, expected <= %.1e", ta, tb,
          (long long)m, (long long)n, (long long)k, worst, tol);
    return 0;
}

static int test_sgemm(void)
{
    double w;
    for (int t = 0; t < 4; t++) {
        if (gemm_case(be, t & 1, t >> 1, 37, 29, 53, 1e-6, &w)) return 1;
        printf("sgemm ta=%d tb=%d [37,29,53]: worst error %.2e of Σ|a·b|\n", t & 1, t >> 1, w);
        if (gemm_case(be, t & 1, t >> 1, 300, 260, 700, 1e-6, &w)) return 1;
        printf("sgemm ta=%d tb=%d [300,260,700]: worst error %.2e of Σ|a·b|\n", t & 1, t >> 1, w);
    }
    /* TF32 (opt-in): ~10 mantissa bits in the products */
    qs_backend_i tf;
    qs_cuda_opts o = {.tf32 = true};
    TRY(qs_backend_cuda_init(&tf, 0, &o, &E));
    int r = gemm_case(&tf, false, false, 300, 260, 700, 2e-3, &w);
    printf("sgemm with TF32 [300,260,700]: worst error %.2e of Σ|a·b| (f32: <= 1e-6)\n", w);
    qs_backend_cuda_free(&tf);
    return r;
}

static int test_syrk(void)
{
    const int64_t n = 67, k = 131, lda = n + 5, ldc = n + 2;
    float *a = xmalloc(sizeof(float) * (size_t)(k * lda)), *c = xmalloc(sizeof(float) * (size_t)(n * ldc));
    float *got = xmalloc(sizeof(float) * (size_t)(n * ldc));
    double *ad = xmalloc(sizeof(double) * (size_t)(k * lda)), *cd = xmalloc(sizeof(double) * (size_t)(n * ldc));
    double *gotd = xmalloc(sizeof(double) * (size_t)(n * ldc));
    fill(a, (size_t)(k * lda), 1.0f);
    fill(c, (size_t)(n * ldc), 1.0f);
    for (int64_t i = 0; i < k * lda; i++) ad[i] = (double)a[i] + 1e-9 * (double)frand();
    for (int64_t i = 0; i < n * ldc; i++) cd[i] = (double)c[i];
    float *da = up(a, sizeof(float) * (size_t)(k * lda)), *dc = up(c, sizeof(float) * (size_t)(n * ldc));
    double *dad = up(ad, sizeof(double) * (size_t)(k * lda)), *dcd = up(cd, sizeof(double) * (size_t)(n * ldc));
    be->ssyrk_t(be->ctx, n, k, 0.5f, da, lda, 0.25f, dc, ldc);
    be->dsyrk_t(be->ctx, n, k, 0.5, dad, lda, 0.25, dcd, ldc);
    TRY(be->sync(be->ctx, &E));
    down(got, dc, sizeof(float) * (size_t)(n * ldc));
    down(gotd, dcd, sizeof(double) * (size_t)(n * ldc));
    double w32 = 0.0, w64 = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < ldc; j++) {
            if (j < i || j >= n) { /* the lower triangle and the padding stay as they were */
                CHECK(got[i * ldc + j] == c[i * ldc + j] && gotd[i * ldc + j] == cd[i * ldc + j],
                      "syrk wrote C[%lld,%lld] outside the upper triangle", (long long)i, (long long)j);
                continue;
            }
            double s = 0.0, sa = 0.0, s64 = 0.0;
            for (int64_t p = 0; p < k; p++) {
                s += (double)a[p * lda + i] * a[p * lda + j];
                sa += fabs((double)a[p * lda + i] * a[p * lda + j]);
                s64 += ad[p * lda + i] * ad[p * lda + j];
            }
            double bound = 0.5 * sa + 0.25 * fabs(c[i * ldc + j]);
            w32 = fmax(w32, fabs(got[i * ldc + j] - (0.5 * s + 0.25 * c[i * ldc + j])) / bound);
            w64 = fmax(w64, fabs(gotd[i * ldc + j] - (0.5 * s64 + 0.25 * cd[i * ldc + j])) / bound);
        }
    printf("ssyrk [%lld,%lld]: worst error %.2e of Σ|a·a|; dsyrk: %.2e\n", (long long)n, (long long)k, w32, w64);
    CHECK(w32 <= 1e-6 && w64 <= 1e-14, "syrk errors %.3e (f32), %.3e (f64)", w32, w64);
    dfree(da), dfree(dc), dfree(dad), dfree(dcd);
    free(a), free(c), free(got), free(ad), free(cd), free(gotd);
    return 0;
}

/* ======================================================== potrf/potri == */

/* One precision: A = BᵀB/n + I (well conditioned), factor and inverse in
 * either triangle, checked against the original in double. */
static int chol_case(bool f64, bool upper)
{
    const int64_t n = 70, lda = n + 2;
    double *a = xmalloc(sizeof(double) * (size_t)(n * lda)), *bm = xmalloc(sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n * n; i++) bm[i] = frand();
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < lda; j++) {
            double s = 0.0;
            if (j < n)
                for (int64_t p = 0; p < n; p++) s += bm[p * n + i] * bm[p * n + j];
            a[i * lda + j] = j < n ? s / (double)n + (i == j ? 1.0 : 0.0) : 99.0;
        }
    const size_t es = f64 ? sizeof(double) : sizeof(float), bytes = es * (size_t)(n * lda);
    void *hbuf = xmalloc(bytes), *orig = xmalloc(bytes);
    for (int64_t i = 0; i < n * lda; i++) {
        if (f64) ((double *)hbuf)[i] = a[i];
        else ((float *)hbuf)[i] = (float)a[i];
    }
    memcpy(orig, hbuf, bytes);
#define AT(buf, i, j) (f64 ? ((double *)(buf))[(i) * lda + (j)] : (double)((float *)(buf))[(i) * lda + (j)])
    void *d = up(hbuf, bytes);
    qs_status st = f64 ? be->dpotrf(be->ctx, upper, n, d, lda) : be->spotrf(be->ctx, upper, n, d, lda);
    CHECK(st == QS_OK, "%spotrf (%s) failed: %s", f64 ? "d" : "s", upper ? "upper" : "lower", qs_status_name(st));
    down(hbuf, d, bytes);
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            bool mine = upper ? j >= i : j <= i;
            if (!mine) {
                CHECK(AT(hbuf, i, j) == AT(orig, i, j), "potrf touched the other triangle at [%lld,%lld]",
                      (long long)i, (long long)j);
                continue;
            }
            /* (FᵀF or F Fᵀ)[i, j] with F the factor in its triangle */
            double s = 0.0;
            for (int64_t p = 0; p < n; p++) {
                double x = upper ? (p <= i ? AT(hbuf, p, i) : 0.0) : (p <= i ? AT(hbuf, i, p) : 0.0);
                double y = upper ? (p <= j ? AT(hbuf, p, j) : 0.0) : (p <= j ? AT(hbuf, j, p) : 0.0);
                s += x * y;
            }
            worst = fmax(worst, fabs(s - a[i * lda + j]));
        }
    const double ftol = f64 ? 1e-12 : 1e-5;
    printf("%spotrf %s [%lld]: max |reconstructed - A| %.2e\n", f64 ? "d" : "s", upper ? "upper" : "lower",
           (long long)n, worst);
    CHECK(worst <= ftol, "potrf: reconstruction error %.3e > %.1e", worst, ftol);
    st = f64 ? be->dpotri(be->ctx, upper, n, d, lda) : be->spotri(be->ctx, upper, n, d, lda);
    CHECK(st == QS_OK, "potri failed: %s", qs_status_name(st));
    down(hbuf, d, bytes);
    double wi = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t p = 0; p < n; p++) {
                int64_t r = p, c = j; /* the inverse's element [p, j] from its stored triangle */
                if (upper ? c < r : c > r) r = j, c = p;
                s += a[i * lda + p] * AT(hbuf, r, c);
            }
            wi = fmax(wi, fabs(s - (i == j ? 1.0 : 0.0)));
        }
    printf("%spotri %s [%lld]: max |A·inv - I| %.2e\n", f64 ? "d" : "s", upper ? "upper" : "lower", (long long)n, wi);
    CHECK(wi <= (f64 ? 1e-12 : 1e-5), "potri: A·inv differs from I by %.3e", wi);
#undef AT
    dfree(d);
    free(a), free(bm), free(hbuf), free(orig);
    return 0;
}

static int test_potrf(void)
{
    for (int t = 0; t < 4; t++)
        if (chol_case(t & 1, t >> 1)) return 1;
    /* not positive definite: QS_ERR_NUMERIC, and the backend stays usable */
    float m[4] = {-1.0f, 0.0f, 0.0f, -1.0f};
    float *d = up(m, sizeof m);
    CHECK(be->spotrf(be->ctx, true, 2, d, 2) == QS_ERR_NUMERIC, "spotrf of -I did not say QS_ERR_NUMERIC");
    TRY(be->sync(be->ctx, &E));
    dfree(d);
    return 0;
}

/* =============================================================== Hessian == */

static int hessian_case(bool f64)
{
    const int64_t n = 96, m = 700, ld = n + 7;
    float *x = xmalloc(sizeof(float) * (size_t)(m * ld));
    fill(x, (size_t)(m * ld), 1.0f);
    for (int64_t r = 0; r < m; r++) x[r * ld + 5] *= 20.0f; /* an outlier channel */
    float *dx = up(x, sizeof(float) * (size_t)(m * ld));
    /* two partial Hessians on the device (chunks of 300 and 150 rows; 250 rows), merged */
    qs_hessian h1, h2;
    TRY(qs_hessian_init_on(&h1, be, n, f64, &E));
    TRY(qs_hessian_init_on(&h2, be, n, !f64, &E));
    TRY(qs_hessian_add(&h1, be, dx, 300, ld, &E));
    TRY(qs_hessian_add(&h1, be, dx + 300 * ld, 150, ld, &E));
    TRY(qs_hessian_add(&h2, be, dx + 450 * ld, 250, ld, &E));
    qs_hessian_reset(&h2); /* reset, then again: the count starts over */
    TRY(qs_hessian_add(&h2, be, dx + 450 * ld, 250, ld, &E));
    TRY(qs_hessian_merge(&h1, &h2, &E));
    CHECK(h1.count == m, "merged count %lld, expected %lld", (long long)h1.count, (long long)m);
    float *dh = up(NULL, sizeof(float) * (size_t)(n * n)), *got = xmalloc(sizeof(float) * (size_t)(n * n));
    qs_hessian_get_f32(&h1, dh);
    down(got, dh, sizeof(float) * (size_t)(n * n));
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0, sa = 0.0;
            for (int64_t r = 0; r < m; r++) {
                s += (double)x[r * ld + i] * x[r * ld + j];
                sa += fabs((double)x[r * ld + i] * x[r * ld + j]);
            }
            CHECK(got[i * n + j] == got[j * n + i], "H is not symmetric at [%lld,%lld]", (long long)i, (long long)j);
            worst = fmax(worst, fabs(got[i * n + j] - 2.0 * s / (double)m) / (2.0 * sa / (double)m));
        }
    printf("hessian %s [%lld] from %lld rows in 3 chunks + merge: worst error %.2e of Σ|x·x|\n", f64 ? "f64" : "f32",
           (long long)n, (long long)m, worst);
    CHECK(worst <= (f64 ? 5e-7 : 2e-6), "Hessian error %.3e", worst);
    qs_hessian_free(&h1);
    qs_hessian_free(&h2);
    dfree(dx), dfree(dh);
    free(x), free(got);
    return 0;
}

static int test_hessian(void) { return hessian_case(false) || hessian_case(true); }

/* ================================================================= GPTQ == */

static int test_gptq(void)
{
    int bad = 0;
    for (int k = 0; k < qs_gptq_ncases; k++) {
        const qs_gptq_case *c = &qs_gptq_cases[k];
        qs_gptq_fixture f;
        char why[4200];
        if (qs_fixture_read(g_fixtures, c, &f, why, sizeof why) != 0) FAIL("%s", why);
        qs_quant_opts o;
        qs_case_opts(c, &o);
        const size_t nw = (size_t)(c->rows * c->cols), nh = (size_t)(c->cols * c->cols);
        float *w = xmalloc(sizeof(float) * nw), *h = xmalloc(sizeof(float) * nh), *hw = xmalloc(sizeof(float) * nh);
        qs_case_inputs(c, w, h);
        memcpy(hw, h, sizeof(float) * nh);
        qs_quant_result r, r2;
        TRY(qs_quant_result_init(&r, c->rows, c->cols, &o, &E));
        TRY(qs_quant_result_init(&r2, c->rows, c->cols, &o, &E));
        TRY(be->gptq(be->ctx, w, c->rows, c->cols, hw, &o, &r, &E));
        bad |= qs_case_compare(c, &f, &r, w, h, "gpu", stdout);
        /* H (and W) already on the device: the same bits as from the host, and as
         * the run before (the GPU result is deterministic) */
        float *dw = up(w, sizeof(float) * nw), *dh = up(h, sizeof(float) * nh);
        TRY(be->gptq(be->ctx, dw, c->rows, c->cols, dh, &o, &r2, &E));
        CHECK(count_diff(r.codes, r2.codes, nw, 1) == 0 && count_diff(r.q, r2.q, nw, 4) == 0 &&
                  count_diff(r.scales, r2.scales, (size_t)(r.groups * c->rows), 4) == 0,
              "%s: a second run (W and H on the device) gave other results", c->name);
        printf("    %s: %lld dead columns, damp %.3e, %.1f ms (factor %.1f, sweep %.1f, GEMMs %.1f)\n", c->name,
               (long long)r.dead_columns, r.damp_abs, 1e3 * r.seconds, 1e3 * r.seconds_factor, 1e3 * r.seconds_sweep,
               1e3 * r.seconds_update);
        CHECK(r.dead_columns == c->dead, "%s: %lld dead columns, the case has %d", c->name, (long long)r.dead_columns,
              c->dead);
        dfree(dw), dfree(dh);
        qs_quant_result_free(&r);
        qs_quant_result_free(&r2);
        qs_fixture_free(&f);
        free(w), free(h), free(hw);
    }
    CHECK(!bad, "GPTQ on the GPU differs from the CPU backend's fixtures beyond rounding ties (above)");
    return 0;
}

/* ==================================================== RTN, dequant, pack == */

static int test_rtn_pack(void)
{
    const int64_t rows = 64, cols = 256; /* rows: a multiple of 32, for qzeros */
    float *w = xmalloc(sizeof(float) * (size_t)(rows * cols));
    fill(w, (size_t)(rows * cols), 0.1f);
    w[7] = 0.0f, w[cols + 3] = 3.0f;
    for (int64_t c = 0; c < cols; c++) w[5 * cols + c] = fabsf(w[5 * cols + c]); /* a row with no negative value */
    for (int64_t c = 0; c < cols; c++) w[6 * cols + c] = 0.0f;                  /* an all-zero row */
    static const int bits[] = {2, 3, 4, 8};
    for (int b = 0; b < 4; b++)
        for (int v = 0; v < 3; v++) {
            qs_quant_opts o;
            qs_quant_opts_default(&o);
            o.method = QS_QUANT_METHOD_RTN;
            o.bits = bits[b];
            o.group_size = v == 0 ? -1 : 32;
            o.sym = v != 1;
            o.mse = v == 2;
            qs_quant_result cpu, gpu;
            TRY(qs_quant_result_init(&cpu, rows, cols, &o, &E));
            TRY(qs_quant_result_init(&gpu, rows, cols, &o, &E));
            TRY(qs_quant_rtn(w, rows, cols, &o, &cpu, &E));
            TRY(be->rtn(be->ctx, w, rows, cols, &o, &gpu, &E));
            const size_t n = (size_t)(rows * cols), ng = (size_t)(cpu.groups * rows);
            size_t dc = count_diff(cpu.codes, gpu.codes, n, 1), dq = count_diff(cpu.q, gpu.q, n, 4);
            size_t ds = count_diff(cpu.scales, gpu.scales, ng, 4), dz = count_diff(cpu.zeros, gpu.zeros, ng, 4);
            size_t dg = count_diff(cpu.g_idx, gpu.g_idx, (size_t)cols, 4);
            printf("rtn %d-bit group %d %s%s: differing codes %zu, Q %zu, scales %zu, zeros %zu, g_idx %zu\n", bits[b],
                   o.group_size, o.sym ? "sym" : "asym", o.mse ? " mse" : "", dc, dq, ds, dz, dg);
            /* mse scores candidates with powf: the device's may round an ulp apart */
            if (!o.mse) CHECK(dc + dq + ds + dz + dg == 0, "RTN on the GPU differs from the CPU's");
            else CHECK(dg == 0 && dc <= n / 100, "RTN with mse: %zu codes differ", dc);

            /* dequantize on the device = the CPU's dequantization, exactly */
            uint8_t *dcodes = up(gpu.codes, n);
            float *dsc = up(gpu.scales, 4 * ng), *dq_ = up(NULL, 4 * n), *qh = xmalloc(4 * n), *qc = xmalloc(4 * n);
            int32_t *dz_ = up(gpu.zeros, 4 * ng), *dgi = up(gpu.g_idx, 4 * (size_t)cols);
            TRY(qs_cuda_dequantize(be, dcodes, dsc, dz_, dgi, rows, cols, dq_, &E));
            down(qh, dq_, 4 * n);
            qs_quant_dequantize(&gpu, qc);
            CHECK(count_diff(qh, qc, n, 4) == 0 && count_diff(qh, gpu.q, n, 4) == 0,
                  "dequantize on the GPU differs from the CPU's");

            /* pack qweight [in·bits/32, out] from codes [out, in], and back */
            const int64_t qwn = cols * bits[b] / 32 * rows;
            int32_t *qw_cpu = xmalloc(4 * (size_t)qwn), *qw_gpu = xmalloc(4 * (size_t)qwn);
            int32_t *dqw = up(NULL, 4 * (size_t)qwn);
            qs_gptq_pack_qweight(gpu.codes, rows, cols, bits[b], qw_cpu);
            TRY(qs_cuda_pack_qweight(be, dcodes, rows, cols, bits[b], dqw, &E));
            down(qw_gpu, dqw, 4 * (size_t)qwn);
            CHECK(count_diff(qw_cpu, qw_gpu, (size_t)qwn, 4) == 0, "%d-bit qweight differs from the CPU's", bits[b]);
            uint8_t *dcodes2 = up(NULL, n), *codes2 = xmalloc(n);
            TRY(qs_cuda_unpack_qweight(be, dqw, rows, cols, bits[b], dcodes2, &E));
            down(codes2, dcodes2, n);
            CHECK(memcmp(codes2, gpu.codes, n) == 0, "unpack(pack(codes)) != codes at %d bits", bits[b]);

            /* qzeros [groups, out·bits/32]: v2 always; v1 (stores zero − 1) when every zero >= 1 */
            for (int v1 = 0; v1 < 2; v1++) {
                bool storable = true;
                for (size_t i = 0; i < ng; i++) storable &= !v1 || gpu.zeros[i] >= 1;
                const size_t qzn = (size_t)(cpu.groups * rows * bits[b] / 32);
                int32_t *qz_cpu = xmalloc(4 * qzn), *qz_gpu = xmalloc(4 * qzn), *dqz = up(NULL, 4 * qzn);
                qs_error ecpu;
                qs_error_clear(&ecpu);
                qs_status scpu = qs_gptq_pack_qzeros(gpu.zeros, cpu.groups, rows, bits[b], v1, qz_cpu, &ecpu);
                qs_error_clear(&E);
                qs_status sgpu = qs_cuda_pack_qzeros(be, dz_, cpu.groups, rows, bits[b], v1, dqz, &E);
                CHECK(scpu == sgpu, "pack qzeros: CPU %s, GPU %s (%s)", qs_status_name(scpu), qs_status_name(sgpu),
                      E.msg);
                if (!storable) {
                    CHECK(strcmp(ecpu.msg, E.msg) == 0, "unstorable zero: CPU says '%s', GPU '%s'", ecpu.msg, E.msg);
                } else {
                    down(qz_gpu, dqz, 4 * qzn);
                    CHECK(count_diff(qz_cpu, qz_gpu, qzn, 4) == 0, "qzeros (v%d) differ from the CPU's", v1 ? 1 : 2);
                    int32_t *dzb = up(NULL, 4 * ng), *zb = xmalloc(4 * ng);
                    TRY(qs_cuda_unpack_qzeros(be, dqz, cpu.groups, rows, bits[b], v1, dzb, &E));
                    down(zb, dzb, 4 * ng);
                    CHECK(memcmp(zb, gpu.zeros, 4 * ng) == 0, "unpack(pack(zeros)) != zeros");
                    dfree(dzb);
                    free(zb);
                }
                dfree(dqz);
                free(qz_cpu), free(qz_gpu);
            }
            dfree(dcodes), dfree(dsc), dfree(dq_), dfree(dz_), dfree(dgi), dfree(dqw), dfree(dcodes2);
            free(qh), free(qc), free(qw_cpu), free(qw_gpu), free(codes2);
            qs_quant_result_free(&cpu);
            qs_quant_result_free(&gpu);
        }
    free(w);
    return 0;
}

/* ========================================================= forward ops == */

#define OP_TOL 1e-4 /* the bound for the forward; the ops meet it by orders of magnitude */

static int test_ops_norm(void)
{
    static const int64_t shapes[][2] = {{37, 1000}, {4, 14336}, {3, 7}};
    for (int s = 0; s < 3; s++) {
        const int64_t rows = shapes[s][0], n = shapes[s][1];
        const size_t sz = (size_t)(rows * n);
        float *x = xmalloc(4 * sz), *w = xmalloc(4 * (size_t)n), *b = xmalloc(4 * (size_t)n);
        float *ref = xmalloc(4 * sz), *got = xmalloc(4 * sz);
        fill(x, sz, 3.0f);
        for (size_t i = 0; i < sz; i++) x[i] += 5.0f; /* an offset: LayerNorm's centring matters */
        fill(w, (size_t)n, 1.0f);
        fill(b, (size_t)n, 1.0f);
        float *dx = up(x, 4 * sz), *dw = up(w, 4 * (size_t)n), *db = up(b, 4 * (size_t)n), *dy = up(NULL, 4 * sz);
        for (int kind = 0; kind < 4; kind++) { /* rms, ln+bias, ln, rms in place */
            const char *name[] = {"rmsnorm", "layernorm+bias", "layernorm", "rmsnorm in place"};
            float *dst = kind == 3 ? dx : dy;
            if (kind == 3) TRY(be->copy(be->ctx, dx, x, 4 * sz, &E));
            if (kind == 0 || kind == 3) {
                qs_cpu_rmsnorm(x, w, ref, rows, n, 1e-5f);
                TRY(be->ops->rmsnorm(be->ctx, dx, dw, dst, rows, n, 1e-5f, &E));
            } else {
                qs_cpu_layernorm(x, w, kind == 1 ? b : NULL, ref, rows, n, 1e-5f);
                TRY(be->ops->layernorm(be->ctx, dx, dw, kind == 1 ? db : NULL, dst, rows, n, 1e-5f, &E));
            }
            down(got, dst, 4 * sz);
            double e = max_rel(got, ref, sz);
            size_t exact = sz - count_diff(got, ref, sz, 4);
            printf("%-16s [%lld,%lld]: worst relative difference %.2e, %.1f%% bit-identical\n", name[kind],
                   (long long)rows, (long long)n, e, 100.0 * (double)exact / (double)sz);
            CHECK(e <= OP_TOL, "%s differs from the CPU by %.3e", name[kind], e);
        }
        dfree(dx), dfree(dw), dfree(db), dfree(dy);
        free(x), free(w), free(b), free(ref), free(got);
    }
    return 0;
}

static int test_ops_rope(void)
{
    const int64_t batch = 2, seq = 37;
    const int heads = 5, hd = 64;
    const int64_t tok = heads * hd + 16, hs = hd; /* strided: a padded token row */
    const size_t sz = (size_t)(batch * seq * tok);
    for (int scaling = 0; scaling < 3; scaling++) {
        double inv[32];
        float cs[37 * 32], sn[37 * 32];
        qs_cpu_rope_inv_freq(hd, 500000.0, scaling, 8.0, 1.0, 4.0, 8192.0, inv);
        qs_cpu_rope_tables(inv, hd, 5, seq, cs, sn);
        float *x = xmalloc(4 * sz), *ref = xmalloc(4 * sz), *got = xmalloc(4 * sz);
        fill(x, sz, 2.0f);
        memcpy(ref, x, 4 * sz);
        qs_cpu_rope(ref, batch, seq, heads, hd, tok, hs, cs, sn);
        float *dx = up(x, 4 * sz), *dcs = up(cs, sizeof cs), *dsn = up(sn, sizeof sn);
        TRY(be->ops->rope(be->ctx, dx, batch, seq, heads, hd, tok, hs, dcs, dsn, &E));
        down(got, dx, 4 * sz);
        double e = max_rel(got, ref, sz);
        size_t diff = count_diff(got, ref, sz, 4);
        printf("rope (scaling %d) [%lld,%lld,%d,%d]: worst relative difference %.2e, %zu elements not bit-identical\n",
               scaling, (long long)batch, (long long)seq, heads, hd, e, diff);
        CHECK(e <= OP_TOL, "rope differs by %.3e", e);
        for (int64_t r = 0; r < batch * seq; r++)
            for (int64_t c = heads * hd; c < tok; c++)
                CHECK(got[r * tok + c] == x[r * tok + c], "rope wrote the padding of token %lld", (long long)r);
        dfree(dx), dfree(dcs), dfree(dsn);
        free(x), free(ref), free(got);
    }
    return 0;
}

typedef struct attn_case {
    int64_t batch, seq_q, seq_k;
    int heads, kv, hd;
    bool causal, alibi, fused; /* fused: q, k, v interleaved in one [tok, 3·heads·hd] buffer (BLOOM's layout) */
} attn_case;

static int test_ops_attention(void)
{
    static const attn_case cases[] = {
        {1, 77, 77, 8, 2, 64, true, true, false},  {2, 130, 130, 4, 4, 128, true, false, true},
        {1, 20, 90, 6, 3, 80, false, false, false}, {1, 90, 20, 4, 2, 32, true, false, false},
        {1, 33, 33, 2, 1, 256, true, true, false},  {2, 64, 64, 3, 3, 48, false, true, true},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const attn_case *c = &cases[t];
        qs_attn_args a;
        memset(&a, 0, sizeof a);
        a.batch = c->batch, a.seq_q = c->seq_q, a.seq_k = c->seq_k;
        a.n_heads = c->heads, a.n_kv_heads = c->kv, a.head_dim = c->hd;
        a.scale = 1.0f / sqrtf((float)c->hd);
        a.causal = c->causal;
        const int64_t qd = (int64_t)c->heads * c->hd, kd = (int64_t)c->kv * c->hd;
        size_t nq, nk, nv, no = (size_t)(c->batch * c->seq_q * qd);
        float *qb, *kb, *vb, *alibi = NULL;
        if (c->fused) { /* one buffer: token t holds [q | k | v] (seq_q == seq_k, kv == heads) */
            const int64_t tok = qd + 2 * kd;
            nq = nk = nv = (size_t)(c->batch * c->seq_q * tok);
            qb = xmalloc(4 * nq);
            fill(qb, nq, 1.0f);
            kb = vb = qb;
            a.q = qb, a.k = qb + qd, a.v = qb + qd + kd;
            a.q_tok = a.k_tok = a.v_tok = tok;
        } else {
            nq = (size_t)(c->batch * c->seq_q * qd), nk = nv = (size_t)(c->batch * c->seq_k * kd);
            qb = xmalloc(4 * nq), kb = xmalloc(4 * nk), vb = xmalloc(4 * nv);
            fill(qb, nq, 1.0f), fill(kb, nk, 1.0f), fill(vb, nv, 1.0f);
            a.q = qb, a.k = kb, a.v = vb;
            a.q_tok = qd, a.k_tok = kd, a.v_tok = kd;
        }
        a.q_head = a.k_head = a.v_head = c->hd;
        float *ref = xmalloc(4 * no), *got = xmalloc(4 * no);
        a.out = ref, a.o_tok = qd, a.o_head = c->hd;
        if (c->alibi) {
            alibi = xmalloc(4 * (size_t)c->heads);
            for (int h = 0; h < c->heads; h++) alibi[h] = 0.05f * (float)(h + 1);
            a.alibi = alibi;
        }
        TRY(qs_cpu_attention(&a, &E));
        /* the same views on the device */
        qs_attn_args d = a;
        float *dq = up(qb, 4 * nq), *dk = c->fused ? dq : up(kb, 4 * nk), *dv = c->fused ? dq : up(vb, 4 * nv);
        float *dout = up(NULL, 4 * no), *dal = alibi ? up(alibi, 4 * (size_t)c->heads) : NULL;
        d.q = dq + (a.q - qb), d.k = dk + (a.k - kb), d.v = dv + (a.v - vb), d.out = dout, d.alibi = dal;
        TRY(be->ops->attention(be->ctx, &d, &E));
        down(got, dout, 4 * no);
        double e = max_rel(got, ref, no);
        printf("attention b%lld q%lld k%lld heads %d/%d d%d%s%s%s: worst relative difference %.2e\n",
               (long long)c->batch, (long long)c->seq_q, (long long)c->seq_k, c->heads, c->kv, c->hd,
               c->causal ? " causal" : "", c->alibi ? " alibi" : "", c->fused ? " fused-qkv" : "", e);
        CHECK(e <= OP_TOL, "attention differs from the CPU by %.3e", e);
        dfree(dq), dfree(dout);
        if (!c->fused) dfree(dk), dfree(dv);
        if (dal) dfree(dal);
        free(qb), free(ref), free(got), free(alibi);
        if (!c->fused) free(kb), free(vb);
    }
    /* a head_dim the kernel does not take is refused, not miscomputed */
    qs_attn_args big;
    memset(&big, 0, sizeof big);
    big.batch = 1, big.seq_q = big.seq_k = 4, big.n_heads = big.n_kv_heads = 1, big.head_dim = 320;
    qs_error_clear(&E);
    CHECK(be->ops->attention(be->ctx, &big, &E) == QS_ERR_UNSUPPORTED, "head_dim 320 was not refused");
    return 0;
}

static int test_ops_elementwise(void)
{
    const int64_t rows = 33, n = 1537;
    const size_t sz = (size_t)(rows * n);
    float *x = xmalloc(4 * sz), *y = xmalloc(4 * sz), *bias = xmalloc(4 * (size_t)n);
    float *ref = xmalloc(4 * sz), *got = xmalloc(4 * sz);
    fill(x, sz, 8.0f), fill(y, sz, 8.0f), fill(bias, (size_t)n, 1.0f);
    float *dx = up(x, 4 * sz), *dy = up(NULL, 4 * sz), *db = up(bias, 4 * (size_t)n);
    const char *names[] = {"add_bias", "add", "scale", "silu_mul", "relu", "gelu_tanh"};
    for (int k = 0; k < 6; k++) {
        memcpy(ref, y, 4 * sz);
        TRY(be->copy(be->ctx, dy, y, 4 * sz, &E));
        switch (k) {
        case 0: qs_cpu_add_bias(ref, bias, rows, n); TRY(be->ops->add_bias(be->ctx, dy, db, rows, n, &E)); break;
        case 1: qs_cpu_add(ref, x, (int64_t)sz); TRY(be->ops->add(be->ctx, dy, dx, (int64_t)sz, &E)); break;
        case 2: qs_cpu_scale(ref, 0.3f, (int64_t)sz); TRY(be->ops->scale(be->ctx, dy, 0.3f, (int64_t)sz, &E)); break;
        case 3: qs_cpu_silu_mul(ref, x, (int64_t)sz); TRY(be->ops->silu_mul(be->ctx, dy, dx, (int64_t)sz, &E)); break;
        case 4: qs_cpu_relu(ref, (int64_t)sz); TRY(be->ops->relu(be->ctx, dy, (int64_t)sz, &E)); break;
        case 5: qs_cpu_gelu_tanh(ref, (int64_t)sz); TRY(be->ops->gelu_tanh(be->ctx, dy, (int64_t)sz, &E)); break;
        }
        down(got, dy, 4 * sz);
        double e = max_rel(got, ref, sz);
        size_t diff = count_diff(got, ref, sz, 4);
        printf("%-10s [%lld]: worst relative difference %.2e, %zu elements not bit-identical\n", names[k],
               (long long)sz, e, diff);
        /* no transcendental function: the same bits; expf/tanhf: within an ulp or two */
        CHECK(k >= 3 && k != 4 ? e <= 1e-6 : diff == 0, "%s differs from the CPU (%.3e, %zu elements)", names[k], e,
              diff);
    }
    /* embedding gather, and a bad id reported as the CPU reports it */
    const int64_t vocab = 300, hidden = 64, ntok = 50;
    float *table = xmalloc(4 * (size_t)(vocab * hidden)), *eref = xmalloc(4 * (size_t)(ntok * hidden));
    float *egot = xmalloc(4 * (size_t)(ntok * hidden));
    int32_t ids[50];
    fill(table, (size_t)(vocab * hidden), 1.0f);
    for (int i = 0; i < ntok; i++) ids[i] = (i * 37) % (int)vocab;
    float *dt = up(table, 4 * (size_t)(vocab * hidden)), *de = up(NULL, 4 * (size_t)(ntok * hidden));
    int32_t *did = up(ids, sizeof ids);
    TRY(qs_cpu_embed(table, vocab, hidden, ids, ntok, eref, &E));
    TRY(be->ops->embed(be->ctx, dt, vocab, hidden, did, ntok, de, &E));
    down(egot, de, 4 * (size_t)(ntok * hidden));
    CHECK(memcmp(egot, eref, 4 * (size_t)(ntok * hidden)) == 0, "embedding rows differ");
    ids[17] = (int32_t)vocab, ids[30] = -2;
    TRY(be->copy(be->ctx, did, ids, sizeof ids, &E));
    qs_error ecpu;
    qs_error_clear(&ecpu);
    qs_status scpu = qs_cpu_embed(table, vocab, hidden, ids, ntok, eref, &ecpu);
    qs_error_clear(&E);
    qs_status sgpu = be->ops->embed(be->ctx, dt, vocab, hidden, did, ntok, de, &E);
    CHECK(scpu == QS_ERR_INPUT && sgpu == QS_ERR_INPUT && !strcmp(ecpu.msg, E.msg),
          "a bad id: CPU '%s', GPU '%s'", ecpu.msg, E.msg);
    printf("embed [%lld,%lld]: identical rows; a bad id: \"%s\"\n", (long long)ntok, (long long)hidden, E.msg);
    dfree(dx), dfree(dy), dfree(db), dfree(dt), dfree(de), dfree(did);
    free(x), free(y), free(bias), free(ref), free(got), free(table), free(eref), free(egot);
    return 0;
}

static int test_ops_nll_kl(void)
{
    const int64_t rows = 9, vocab = 32000;
    const size_t sz = (size_t)(rows * vocab);
    float *lg = xmalloc(4 * sz), *rf = xmalloc(4 * sz);
    fill(lg, sz, 6.0f);
    for (size_t i = 0; i < sz; i++) rf[i] = lg[i] + 0.3f * frand();
    for (int64_t i = 0; i < vocab; i += 3) lg[2 * vocab + i] = -INFINITY; /* masked logits */
    for (int64_t i = 0; i < vocab; i++) lg[4 * vocab + i] = rf[4 * vocab + i] = 1.5f; /* ties everywhere */
    rf[7 * vocab + 11] = 40.0f, lg[7 * vocab + 11] = 40.0f; /* a dominant logit */
    int32_t tg[9];
    for (int i = 0; i < 9; i++) tg[i] = (i * 7919) % (int)vocab;
    tg[2] = 1; /* not a masked one */
    double nref[9], ngot[9], kref[9], kgot[9];
    uint8_t sref[9], sgot[9];
    qs_cpu_nll_rows(lg, rows, vocab, tg, nref);
    qs_cpu_kl_rows(rf, lg, rows, vocab, kref, sref);
    float *dl = up(lg, 4 * sz), *dr = up(rf, 4 * sz);
    int32_t *dt = up(tg, sizeof tg);
    double *dn = up(NULL, sizeof ngot), *dk = up(NULL, sizeof kgot);
    uint8_t *ds = up(NULL, sizeof sgot);
    TRY(be->ops->nll_rows(be->ctx, dl, rows, vocab, dt, dn, &E));
    TRY(be->ops->kl_rows(be->ctx, dr, dl, rows, vocab, dk, ds, &E));
    down(ngot, dn, sizeof ngot);
    down(kgot, dk, sizeof kgot);
    down(sgot, ds, sizeof sgot);
    double en = 0.0, ek = 0.0;
    for (int r = 0; r < rows; r++) {
        en = fmax(en, fabs(ngot[r] - nref[r]) / fmax(fabs(nref[r]), 1e-12));
        ek = fmax(ek, fabs(kgot[r] - kref[r]) / fmax(fabs(kref[r]), 1e-9));
        CHECK(sgot[r] == sref[r], "row %d: top-1 agreement %d, the CPU's %d", r, sgot[r], sref[r]);
    }
    printf("nll [%lld,%lld]: worst relative difference %.2e; kl: %.2e; top-1 equal on all rows\n", (long long)rows,
           (long long)vocab, en, ek);
    CHECK(en <= 1e-6 && ek <= 1e-6, "NLL/KL differ from the CPU's (%.3e, %.3e)", en, ek);
    /* widening for the f64 Hessian: exact */
    double *wd = up(NULL, 8 * (size_t)(3 * 100)), wgot[300];
    TRY(be->ops->widen_f64(be->ctx, dl + 5, 3, 100, vocab, wd, &E));
    down(wgot, wd, sizeof wgot);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 100; c++)
            CHECK(wgot[r * 100 + c] == (double)lg[r * vocab + 5 + c], "widen_f64 [%d,%d]", r, c);
    dfree(dl), dfree(dr), dfree(dt), dfree(dn), dfree(dk), dfree(ds), dfree(wd);
    free(lg), free(rf);
    return 0;
}

/* ================================================================ nccl == */

#ifndef QS_CUDA_EMU /* the emulator has no NCCL */
#include "kernels/nccl.h"

/* A one-rank NCCL communicator — all that one GPU allows (NCCL refuses two
 * ranks on one device): the id, the non-blocking init, an all-reduce of f32
 * and f64 device buffers (the sum over one rank is the input, bit for bit),
 * a clean finalize; then a two-rank communicator whose second rank never
 * comes: the init times out after 3 s and is aborted, with one line. */
static int test_nccl(void)
{
    qs_nccl_id id;
    qs_error_clear(&E);
    if (qs_nccl_get_id(&id, &E) == QS_ERR_UNSUPPORTED) {
        printf("SKIP gpu_nccl: %s\n", E.msg);
        return 77;
    }
    qs_nccl *c = NULL;
    TRY(qs_nccl_init(&c, &id, 0, 1, 0, 60.0, &E));
    enum { N = 4099 };
    float *hf = malloc(sizeof(float) * N), *rf = malloc(sizeof(float) * N);
    double *hd = malloc(sizeof(double) * N), *rd = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++) hf[i] = frand(), hd[i] = (double)frand() / 3.0;
    float *df = be->alloc(be->ctx, sizeof(float) * N);
    double *dd = be->alloc(be->ctx, sizeof(double) * N);
    CHECK(df && dd, "device buffers");
    TRY(be->copy(be->ctx, df, hf, sizeof(float) * N, &E));
    TRY(be->copy(be->ctx, dd, hd, sizeof(double) * N, &E));
    TRY(qs_nccl_allreduce_sum(c, df, N, false, 60.0, &E));
    TRY(qs_nccl_allreduce_sum(c, dd, N, true, 60.0, &E));
    TRY(be->copy(be->ctx, rf, df, sizeof(float) * N, &E));
    TRY(be->copy(be->ctx, rd, dd, sizeof(double) * N, &E));
    CHECK(!memcmp(hf, rf, sizeof(float) * N) && !memcmp(hd, rd, sizeof(double) * N),
          "a one-rank all-reduce changed its input");
    be->free(be->ctx, df), be->free(be->ctx, dd);
    free(hf), free(rf), free(hd), free(rd);
    qs_nccl_free(c);

    /* rank 0 of 2 alone: a timeout and an abort, not a hang */
    TRY(qs_nccl_get_id(&id, &E));
    c = NULL;
    qs_error_clear(&E);
    qs_status s = qs_nccl_init(&c, &id, 0, 2, 0, 3.0, &E);
    CHECK(s == QS_ERR_IO && c == NULL, "init of 2 ranks with one present: %s (%s)", qs_status_name(s), E.msg);
    CHECK(strstr(E.msg, "did not complete in 3 s") && strstr(E.msg, "aborted"), "the timeout's message: %s", E.msg);
    printf("gpu_nccl: one-rank all-reduce exact; a missing rank: %s\n", E.msg);
    return 0;
}
#endif

/* ================================================================= main == */

static const struct {
    const char *name;
    int (*fn)(void);
} tests[] = {
    {"device", test_device},         {"sgemm", test_sgemm},           {"syrk", test_syrk},
    {"potrf", test_potrf},           {"hessian", test_hessian},       {"gptq", test_gptq},
    {"rtn_pack", test_rtn_pack},     {"ops_norm", test_ops_norm},     {"ops_rope", test_ops_rope},
    {"ops_attention", test_ops_attention}, {"ops_elementwise", test_ops_elementwise},
    {"ops_nll_kl", test_ops_nll_kl},
#ifndef QS_CUDA_EMU
    {"nccl", test_nccl},
#endif
};

int main(int argc, char **argv)
{
    const int nt = (int)(sizeof tests / sizeof tests[0]);
    if (argc < 2) {
        fprintf(stderr, "usage: qs_gpu_test NAME [FIXTURE_DIR]; names:");
        for (int i = 0; i < nt; i++) fprintf(stderr, " %s", tests[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    if (argc > 2) g_fixtures = argv[2];
    int t = -1;
    for (int i = 0; i < nt; i++)
        if (!strcmp(argv[1], tests[i].name)) t = i;
    if (t < 0) {
        fprintf(stderr, "qs_gpu_test: no test '%s'\n", argv[1]);
        return 2;
    }
    char why[512];
    if (qs_cuda_device_count(why, sizeof why) == 0) {
        printf("SKIP gpu_%s: no CUDA device (%s)\n", argv[1], why);
        return 77;
    }
    if (qs_backend_cuda_init(&g_cuda, 0, NULL, &E) != QS_OK) {
        fprintf(stderr, "FAIL: cannot start the CUDA backend: %s\n", E.msg);
        return 1;
    }
    int rc = tests[t].fn();
    if (rc == 77) {
        qs_backend_cuda_free(&g_cuda);
        return 77;
    }
    if (rc == 0) {
        qs_error_clear(&E);
        if (be->sync(be->ctx, &E) != QS_OK) {
            fprintf(stderr, "FAIL: the backend reported at the end: %s\n", E.msg);
            rc = 1;
        }
    }
    qs_backend_cuda_free(&g_cuda);
    printf("%s gpu_%s\n", rc ? "FAIL" : "PASS", argv[1]);
    return rc;
}
