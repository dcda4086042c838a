/* cublas_v2.h (emulator) — the cuBLAS calls kernels/cuda/ uses, with cuBLAS's
 * column-major semantics, computed by OpenBLAS (tests/gpu_emu/emu.cpp). The
 * backend's row-major ↔ column-major mapping is what this checks. Test code. */
#ifndef QS_EMU_CUBLAS_V2_H
#define QS_EMU_CUBLAS_V2_H

#include <stdint.h>

#include "cuda_runtime.h"

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_FILL_MODE_LOWER = 0, CUBLAS_FILL_MODE_UPPER = 1 } cublasFillMode_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;
typedef struct qs_emu_blas *cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
const char *cublasGetStatusName(cublasStatus_t s);
const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasSgemm_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                              int64_t k, const float *alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                              const float *beta, float *c, int64_t ldc);
cublasStatus_t cublasSsyrk_64(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t t, int64_t n, int64_t k,
                              const float *alpha, const float *a, int64_t lda, const float *beta, float *c,
                              int64_t ldc);
cublasStatus_t cublasDsyrk_64(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t t, int64_t n, int64_t k,
                              const double *alpha, const double *a, int64_t lda, const double *beta, double *c,
                              int64_t ldc);

#endif
