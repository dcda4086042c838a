/* test_bf16.c — the bf16 compute path's kernels against plain references
 * written here: the bf16 GEMM (oneDNN where the CPU has bf16 instructions,
 * and the f32 emulation every CPU can run) against a double-precision product
 * of the bf16-rounded operands; the Hessian from bf16 activations against
 * 2/n Σ x xᵀ in double; the bulk f32 → bf16 rounding against the scalar
 * reference of kernels/half.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/gemm_bf16.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/half.h"
#include "kernels/hessian.h"
#include "kernels/tensor.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

typedef qs_status (*gemm_fn)(bool, bool, int64_t, int64_t, int64_t, float, const uint16_t *, int64_t,
                             const uint16_t *, int64_t, float, float *, int64_t, qs_error *);

/* C = alpha·op(A)op(B) + beta·C against sums in double over the bf16 values:
 * each product is exact, so only the f32 summation differs (a few ulps of
 * Σ|a·b|). */
static void check_gemm(gemm_fn fn, const char *name, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                       float beta)
{
    int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
    int64_t ar = ta ? k : m, br = tb ? n : k;
    uint16_t *a = malloc(sizeof(uint16_t) * (size_t)(ar * lda)), *b = malloc(sizeof(uint16_t) * (size_t)(br * ldb));
    float *c = malloc(sizeof(float) * (size_t)(m * ldc)), *c0 = malloc(sizeof(float) * (size_t)(m * ldc));
    for (int64_t i = 0; i < ar * lda; i++) a[i] = qs_f32_to_bf16((float)urand());
    for (int64_t i = 0; i < br * ldb; i++) b[i] = qs_f32_to_bf16((float)(3.0 * urand()));
    for (int64_t i = 0; i < m * ldc; i++) c[i] = c0[i] = (float)urand();
    qs_error err;
    if (fn(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &err) != QS_OK) fail_msg("%s: %s", name, err.msg);
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int64_t p = 0; p < k; p++) {
                double x = qs_bf16_to_f32(ta ? a[p * lda + i] : a[i * lda + p]);
                double y = qs_bf16_to_f32(tb ? b[j * ldb + p] : b[p * ldb + j]);
                s += x * y;
                mag += fabs(x * y);
            }
            double want = alpha * s + (beta == 0.0f ? 0.0 : beta * c0[i * ldc + j]);
            double tol = 1e-6 * (fabs(alpha) * mag + fabs(beta * c0[i * ldc + j])) + 1e-30;
            if (fabs(c[i * ldc + j] - want) > tol)
                fail_msg("%s ta=%d tb=%d %lldx%lldx%lld alpha %g beta %g: C[%lld,%lld] = %.9g, expected %.9g", name, ta,
                         tb, (long long)m, (long long)n, (long long)k, alpha, beta, (long long)i, (long long)j,
                         c[i * ldc + j], want);
        }
        /* the padding between rows is not touched */
        for (int64_t j = n; j < ldc; j++) assert_true(c[i * ldc + j] == c0[i * ldc + j]);
    }
    free(a), free(b), free(c), free(c0);
}

static void test_gemm_bf16(void **state)
{
    (void)state;
    const int64_t shapes[][3] = {{1, 1, 1}, {37, 53, 129}, {64, 96, 256}, {5, 300, 17}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 0.25f}, {2.0f, 1.0f}};
    gemm_fn fns[2] = {qs_cpu_gemm_bf16, qs_cpu_gemm_bf16_emulated};
    const char *names[2] = {"qs_cpu_gemm_bf16", "emulated"};
    for (int f = 0; f < 2; f++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int t = 0; t < 4; t++)
                for (size_t x = 0; x < sizeof ab / sizeof *ab; x++)
                    check_gemm(fns[f], names[f], t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], ab[x][0],
                               ab[x][1]);
    /* the backend table reaches the same kernel and says what it is */
    const qs_backend_i *be = qs_backend_cpu();
    assert_non_null(be->gemm_bf16);
    const char *kern = be->bf16_kernel(be->ctx);
    assert_non_null(kern);
    if (be->bf16_native(be->ctx) && !getenv("QS_BF16_GEMM")) assert_non_null(strstr(kern, "onednn"));
    else assert_non_null(strstr(kern, "emulated"));
}

/* The same call twice gives the same bits (exports depend on it). */
static void test_gemm_bf16_repeatable(void **state)
{
    (void)state;
    const int64_t m = 200, n = 300, k = 160;
    uint16_t *a = malloc(sizeof(uint16_t) * (size_t)(m * k)), *b = malloc(sizeof(uint16_t) * (size_t)(n * k));
    float *c1 = malloc(sizeof(float) * (size_t)(m * n)), *c2 = malloc(sizeof(float) * (size_t)(m * n));
    for (int64_t i = 0; i < m * k; i++) a[i] = qs_f32_to_bf16((float)urand());
    for (int64_t i = 0; i < n * k; i++) b[i] = qs_f32_to_bf16((float)urand());
    qs_error err;
    for (int r = 0; r < 3; r++) {
        assert_int_equal(qs_cpu_gemm_bf16(false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, r ? c2 : c1, n, &err), QS_OK);
        if (r) assert_memory_equal(c1, c2, sizeof(float) * (size_t)(m * n));
    }
    free(a), free(b), free(c1), free(c2);
}

/* H from bf16 rows in three chunks = 2/N Σ x xᵀ over the bf16 values (upper
 * triangle; n = 300 spans two column panels), in f32 and f64 accumulation. */
static void test_hessian_bf16(void **state)
{
    (void)state;
    const int64_t n = 300, ld = 307, chunks[3] = {50, 70, 1}, N = 121;
    uint16_t *x = malloc(sizeof(uint16_t) * (size_t)(N * ld));
    for (int64_t i = 0; i < N * ld; i++) x[i] = qs_f32_to_bf16((float)(urand() * (i % 7 == 0 ? 20.0 : 1.0)));
    double *ref = calloc((size_t)(n * n), sizeof(double));
    for (int64_t r = 0; r < N; r++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i; j < n; j++)
                ref[i * n + j] += 2.0 / N * qs_bf16_to_f32(x[r * ld + i]) * qs_bf16_to_f32(x[r * ld + j]);
    for (int f64 = 0; f64 < 2; f64++) {
        qs_hessian h;
        qs_error err;
        assert_int_equal(qs_hessian_init(&h, n, f64, &err), QS_OK);
        int64_t r0 = 0;
        for (int c = 0; c < 3; c++) {
            assert_int_equal(qs_hessian_add_bf16(&h, qs_backend_cpu(), x + r0 * ld, chunks[c], ld, &err), QS_OK);
            r0 += chunks[c];
        }
        assert_int_equal(h.count, N);
        float *full = malloc(sizeof(float) * (size_t)(n * n));
        qs_hessian_get_f32(&h, full);
        double worst = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i; j < n; j++) {
                double scale = sqrt(ref[i * n + i] * ref[j * n + j]);
                worst = fmax(worst, fabs(full[i * n + j] - ref[i * n + j]) / scale);
                assert_true(full[j * n + i] == full[i * n + j]);
            }
        if (worst > 1e-5) fail_msg("bf16 Hessian (%s): worst relative error %g", f64 ? "f64" : "f32", worst);
        /* a wrong leading dimension is refused with a message */
        assert_int_equal(qs_hessian_add_bf16(&h, qs_backend_cpu(), x, 2, n - 1, &err), QS_ERR_INPUT);
        free(full);
        qs_hessian_free(&h);
    }
    /* mixed: an f32 chunk (the same values widened), bf16 chunks, and a merge
     * of a Hessian that holds a raw bf16 sum */
    float *w = malloc(sizeof(float) * (size_t)(50 * n));
    for (int64_t r = 0; r < 50; r++)
        for (int64_t c = 0; c < n; c++) w[r * n + c] = qs_bf16_to_f32(x[r * ld + c]);
    qs_hessian a, b;
    qs_error err;
    assert_int_equal(qs_hessian_init(&a, n, false, &err), QS_OK);
    assert_int_equal(qs_hessian_init(&b, n, false, &err), QS_OK);
    assert_int_equal(qs_hessian_add(&a, qs_backend_cpu(), w, 50, n, &err), QS_OK);
    assert_int_equal(qs_hessian_add_bf16(&a, qs_backend_cpu(), x + 50 * ld, 60, ld, &err), QS_OK);
    assert_int_equal(qs_hessian_add_bf16(&b, qs_backend_cpu(), x + 110 * ld, 11, ld, &err), QS_OK);
    assert_int_equal(qs_hessian_merge(&a, &b, &err), QS_OK);
    assert_int_equal(a.count, N);
    float *full = malloc(sizeof(float) * (size_t)(n * n));
    qs_hessian_get_f32(&a, full);
    double worst = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++)
            worst = fmax(worst, fabs(full[i * n + j] - ref[i * n + j]) / sqrt(ref[i * n + i] * ref[j * n + j]));
    if (worst > 1e-5) fail_msg("mixed f32/bf16 Hessian with a merge: worst relative error %g", worst);
    qs_hessian_free(&a);
    qs_hessian_free(&b);
    free(full), free(w);
    free(x), free(ref);
}

/* The bulk rounding is the scalar reference, element for element (ties to
 * even, NaN stays NaN, infinities stay), on both sides of the parallel cutoff. */
static void test_to_bf16(void **state)
{
    (void)state;
    const int64_t ns[2] = {1000, 3 << 20};
    for (int t = 0; t < 2; t++) {
        int64_t n = ns[t];
        float *x = malloc(sizeof(float) * (size_t)n);
        uint16_t *y = malloc(sizeof(uint16_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)(rng >> 32);
            urand();
            if (i % 5 == 0) u = (u & 0xffff0000u) | 0x8000u; /* exactly halfway */
            x[i] = qs_bits_f32(u);
        }
        x[0] = NAN, x[1] = INFINITY, x[2] = -INFINITY, x[3] = -0.0f;
        qs_cpu_to_bf16(x, y, n);
        for (int64_t i = 0; i < n; i++)
            if (y[i] != qs_f32_to_bf16(x[i])) fail_msg("element %lld: %04x, expected %04x", (long long)i, y[i], qs_f32_to_bf16(x[i]));
        assert_true(isnan(qs_bf16_to_f32(y[0])));
        free(x), free(y);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_bf16),
        cmocka_unit_test(test_gemm_bf16_repeatable),
        cmocka_unit_test(test_hessian_bf16),
        cmocka_unit_test(test_to_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
