/* backend.h — the numerical backend interface: CPU and CUDA.
 *
 * A backend is a table of function pointers with a context pointer. All
 * matrices are row-major f32/f64 with an explicit leading dimension (the
 * operands of gemm_bf16: raw bfloat16 bit patterns as uint16_t). The CPU
 * backend (kernels/cpu/backend_cpu.c) calls OpenBLAS/LAPACKE on host memory,
 * and oneDNN for bf16 GEMMs (kernels/cpu/gemm_bf16.c); the CUDA backend
 * (kernels/cuda/backend_cuda.cu) calls cuBLAS/cuSOLVER on device memory, on
 * one stream per backend. Algorithms (GPTQ, Hessian
 * accumulation, block forward) are written once against this table, so both
 * backends run the same algorithm.
 *
 * Memory: every pointer a BLAS, factorization or ops call takes is backend
 * memory — host memory for the CPU backend, device memory for CUDA
 * (`device` is true). alloc/free/copy/zero move data in and out; copy takes
 * host or backend pointers on either side.
 *
 * Errors: the BLAS calls return nothing (they cannot fail on the CPU). A
 * device backend records the first failure of such a call and returns it
 * from the next sync(), which also waits for queued work; the calls that
 * return a qs_status report their own failures (and a failure that an
 * earlier asynchronous launch left behind).
 */
#ifndef QS_BACKEND_H
#define QS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/quant_opts.h"
#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) implements and calls these */
#endif

/* The dtype a forward's GEMMs (and the Hessians from their inputs) compute
 * in. F32 is the reference path; BF16 rounds both GEMM operands to bfloat16
 * and accumulates in f32 (docs/forward.md). */
typedef enum qs_compute_dtype { QS_COMPUTE_F32 = 0, QS_COMPUTE_BF16 } qs_compute_dtype;

static inline const char *qs_compute_dtype_name(qs_compute_dtype dt) { return dt == QS_COMPUTE_BF16 ? "bf16" : "f32"; }

struct qs_ops_i; /* kernels/ops_table.h: the forward ops on backend memory */

typedef struct qs_backend_i {
    const char *name;
    void *ctx;
    bool device; /* true: the pointers below are device memory (CUDA) */

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
     * product is exact in f32 and the sums are f32. On the CPU always present:
     * where it has no bf16 dot-product/matrix instructions it is emulated (the
     * operands widened to f32, then sgemm), same math, f32 speed. NULL where a
     * backend has none (CUDA so far): bf16 compute is then refused. */
    qs_status (*gemm_bf16)(void *ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta, float *c,
                           int64_t ldc, qs_error *err);
    /* True when gemm_bf16 runs on bf16 instructions (CPU: AVX512_BF16 or AMX-BF16); NULL with gemm_bf16. */
    bool (*bf16_native)(void *ctx);
    /* What gemm_bf16 runs on, for reports ("onednn avx512_bf16", "emulated: f32 sgemm ..."). */
    const char *(*bf16_kernel)(void *ctx);

    /* Number of threads the backend's BLAS uses (CPU), for reports; 1 on a GPU. */
    int (*threads)(void *ctx);

    /* ---- memory ------------------------------------------------------------ */

    /* Backend memory of `bytes` (64-byte aligned or better); NULL when out of memory. */
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p);
    /* Copies `bytes` between any two of host and backend memory. */
    qs_status (*copy)(void *ctx, void *dst, const void *src, size_t bytes, qs_error *err);
    qs_status (*zero)(void *ctx, void *p, size_t bytes, qs_error *err);
    /* Waits for queued work; returns the first failure of a void call since
     * the last sync (and clears it). */
    qs_status (*sync)(void *ctx, qs_error *err);

    /* ---- algorithms a backend runs itself (NULL: the CPU implementation) --- */

    /* GPTQ of one linear (contract of kernels/cpu/gptq.h): w and h may be host
     * or backend memory; h's upper triangle is read and h is overwritten; res
     * is host memory (qs_quant_result_init). */
    qs_status (*gptq)(void *ctx, const float *w, int64_t rows, int64_t cols, float *h, const qs_quant_opts *o,
                      qs_quant_result *res, qs_error *err);
    /* RTN (contract of kernels/cpu/rtn.h): w host or backend memory, res host. */
    qs_status (*rtn)(void *ctx, const float *w, int64_t rows, int64_t cols, const qs_quant_opts *o,
                     qs_quant_result *res, qs_error *err);

    /* The forward ops on backend memory (kernels/ops_table.h). */
    const struct qs_ops_i *ops;
} qs_backend_i;

/* The process-wide CPU backend (OpenBLAS + LAPACKE + OpenMP). */
const qs_backend_i *qs_backend_cpu(void);

#ifdef __cplusplus
}
#endif

#endif
