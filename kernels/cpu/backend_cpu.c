/* backend_cpu.c — the CPU backend: OpenBLAS for BLAS, LAPACKE for
 * factorizations, oneDNN for bf16 GEMMs (gemm_bf16.c), host memory, the CPU
 * forward ops (kernels/cpu/ops_table.c). GPTQ and RTN stay NULL in the table:
 * the dispatch runs kernels/cpu/gptq.c and rtn.c for it. */
#include <cblas.h>
#include <lapacke.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/gemm_bf16.h"
#include "kernels/ops_table.h"
#include "kernels/tensor.h"

static void cpu_sgemm(void *ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                      int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    (void)ctx;
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

static void cpu_ssyrk_t(void *ctx, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, float beta,
                        float *c, int64_t ldc)
{
    (void)ctx;
    if (n == 0) return;
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)k, alpha, a, (int)lda, beta, c, (int)ldc);
}

static void cpu_dsyrk_t(void *ctx, int64_t n, int64_t k, double alpha, const double *a, int64_t lda, double beta,
                        double *c, int64_t ldc)
{
    (void)ctx;
    if (n == 0) return;
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)k, alpha, a, (int)lda, beta, c, (int)ldc);
}

static qs_status lapack_status(lapack_int info) { return info == 0 ? QS_OK : QS_ERR_NUMERIC; }

/* OpenBLAS's factorizations round differently with different thread counts;
 * results must not depend on how many cores a rank was given, so they run on
 * one BLAS thread (gemm and syrk do not have this problem). */
#define ONE_THREAD(call)                          \
    do {                                          \
        int t_ = openblas_get_num_threads();      \
        openblas_set_num_threads(1);              \
        info = (call);                            \
        openblas_set_num_threads(t_);             \
    } while (0)

static qs_status cpu_spotrf(void *ctx, bool upper, int64_t n, float *a, int64_t lda)
{
    (void)ctx;
    lapack_int info;
    ONE_THREAD(LAPACKE_spotrf(LAPACK_ROW_MAJOR, upper ? 'U' : 'L', (lapack_int)n, a, (lapack_int)lda));
    return lapack_status(info);
}

static qs_status cpu_spotri(void *ctx, bool upper, int64_t n, float *a, int64_t lda)
{
    (void)ctx;
    lapack_int info;
    ONE_THREAD(LAPACKE_spotri(LAPACK_ROW_MAJOR, upper ? 'U' : 'L', (lapack_int)n, a, (lapack_int)lda));
    return lapack_status(info);
}

static qs_status cpu_dpotrf(void *ctx, bool upper, int64_t n, double *a, int64_t lda)
{
    (void)ctx;
    lapack_int info;
    ONE_THREAD(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, upper ? 'U' : 'L', (lapack_int)n, a, (lapack_int)lda));
    return lapack_status(info);
}

static qs_status cpu_dpotri(void *ctx, bool upper, int64_t n, double *a, int64_t lda)
{
    (void)ctx;
    lapack_int info;
    ONE_THREAD(LAPACKE_dpotri(LAPACK_ROW_MAJOR, upper ? 'U' : 'L', (lapack_int)n, a, (lapack_int)lda));
    return lapack_status(info);
}

static qs_status cpu_gemm_bf16(void *ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                               const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta, float *c,
                               int64_t ldc, qs_error *err)
{
    (void)ctx;
    return qs_cpu_gemm_bf16(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, err);
}

static bool cpu_bf16_native(void *ctx)
{
    (void)ctx;
    return qs_cpu_bf16_native();
}

static const char *cpu_bf16_kernel(void *ctx)
{
    (void)ctx;
    return qs_cpu_bf16_kernel();
}

static int cpu_threads(void *ctx)
{
    (void)ctx;
    return openblas_get_num_threads();
}

/* ---- host memory ------------------------------------------------------------ */

static void *cpu_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    return qs_malloc(bytes ? bytes : 1);
}

static void cpu_free(void *ctx, void *p)
{
    (void)ctx;
    qs_free(p);
}

static qs_status cpu_copy(void *ctx, void *dst, const void *src, size_t bytes, qs_error *err)
{
    (void)ctx;
    (void)err;
    if (bytes) memmove(dst, src, bytes);
    return QS_OK;
}

static qs_status cpu_zero(void *ctx, void *p, size_t bytes, qs_error *err)
{
    (void)ctx;
    (void)err;
    if (bytes) memset(p, 0, bytes);
    return QS_OK;
}

static qs_status cpu_sync(void *ctx, qs_error *err)
{
    (void)ctx;
    (void)err;
    return QS_OK;
}

static const qs_backend_i cpu_backend = {
    .name = "cpu",
    .ctx = NULL,
    .device = false,
    .sgemm = cpu_sgemm,
    .ssyrk_t = cpu_ssyrk_t,
    .spotrf = cpu_spotrf,
    .spotri = cpu_spotri,
    .dsyrk_t = cpu_dsyrk_t,
    .dpotrf = cpu_dpotrf,
    .dpotri = cpu_dpotri,
    .gemm_bf16 = cpu_gemm_bf16,
    .bf16_native = cpu_bf16_native,
    .bf16_kernel = cpu_bf16_kernel,
    .threads = cpu_threads,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .gptq = NULL,
    .rtn = NULL,
    .ops = &qs_ops_cpu_table,
};

const qs_backend_i *qs_backend_cpu(void) { return &cpu_backend; }
