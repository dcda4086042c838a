/* backend.h — the numerical backend interface (CPU now, CUDA slots in).
 *
 * A backend is a table of function pointers with a context pointer. All
 * matrices are row-major with an explicit leading dimension; f32 except the
 * bf16 operands of gemm_bf16 (raw bfloat16 bit patterns as uint16_t). The CPU
 * backend (kernels/cpu/backend_cpu.c) calls OpenBLAS/LAPACKE; the CUDA backend
 * (kernels/cuda/) will call cuBLAS/cuSOLVER on device buffers. Algorithms
 * (GPTQ, Hessian accumulation, block forward) are written once against this
 * table, so both backends run the same algorithm.
 */
#ifndef QS_BACKEND_H
#define QS_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/status.h"

/* The dtype a forward's GEMMs (and the Hessians from their inputs) compute
 * in. F32 is the reference path; BF16 rounds both GEMM operands to bfloat16
 * and accumulates in f32 (docs/forward.md). */
typedef enum qs_compute_dtype { QS_COMPUTE_F32 = 0, QS_COMPUTE_BF16 } qs_compute_dtype;

static inline const char *qs_compute_dtype_name(qs_compute_dtype dt) { return dt == QS_COMPUTE_BF16 ? "bf16" : "f32"; }

typedef struct qs_backend_i {
    const char *name;
    void *ctx;

    /* C[m,n] = alpha * op(A) op(B) + beta * C. op(A) is [m,k], op(B) is [k,n]. */
    void (*sgemm)(void *ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

    /* C[n,n] (upper triangle, row-major) = alpha * Aᵀ A + beta * C, A is [k,n].
     * The Hessian accumulation H += Xᵀ X for X = [samples, features]. */
    void (*ssyrk_t)(void *ctx, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, float beta,
                    float *c, int64_t ldc);

    /* In-place Cholesky of a symmetric positive-definite [n,n] matrix:
     * upper = true gives U with A = Uᵀ U in the upper triangle (lower left untouched).
     * Returns QS_ERR_NUMERIC when A is not positive definite. */
    qs_status (*spotrf)(void *ctx, bool upper, int64_t n, float *a, int64_t lda);
    /* In-place inverse from a Cholesky factor (potri): result in the same triangle. */
    qs_status (*spotri)(void *ctx, bool upper, int64_t n, float *a, int64_t lda);

    /* Double-precision variants for f64 Hessian accumulation and factorization. */
    void (*dsyrk_t)(void *ctx, int64_t n, int64_t k, double alpha, const double *a, int64_t lda, double beta,
                    double *c, int64_t ldc);
    qs_status (*dpotrf)(void *ctx, bool upper, int64_t n, double *a, int64_t lda);
    qs_status (*dpotri)(void *ctx, bool upper, int64_t n, double *a, int64_t lda);

    /* C[m,n] = alpha * op(A) op(B) + beta * C with A and B bfloat16: every
     * product is exact in f32 and the sums are f32. Always present: where the
     * device has no bf16 dot-product/matrix instructions it is emulated (the
     * operands widened to f32, then sgemm), same math, f32 speed. */
    qs_status (*gemm_bf16)(void *ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta, float *c,
                           int64_t ldc, qs_error *err);
    /* True when gemm_bf16 runs on bf16 instructions (CPU: AVX512_BF16 or AMX-BF16). */
    bool (*bf16_native)(void *ctx);
    /* What gemm_bf16 runs on, for reports ("onednn avx512_core_bf16", "emulated: f32 sgemm"). */
    const char *(*bf16_kernel)(void *ctx);

    /* Number of threads the backend's BLAS uses (CPU), for reports. */
    int (*threads)(void *ctx);
} qs_backend_i;

/* The process-wide CPU backend (OpenBLAS + LAPACKE + OpenMP). */
const qs_backend_i *qs_backend_cpu(void);

#endif
