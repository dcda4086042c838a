/* cusolverDn.h (emulator) — the cuSOLVER calls kernels/cuda/ uses, with
 * cuSOLVER's column-major semantics and its info convention, computed by
 * LAPACKE (tests/gpu_emu/emu.cpp). Test code. */
#ifndef QS_EMU_CUSOLVERDN_H
#define QS_EMU_CUSOLVERDN_H

#include <stddef.h>
#include <stdint.h>

#include "cublas_v2.h"

typedef enum {
    CUSOLVER_STATUS_SUCCESS = 0,
    CUSOLVER_STATUS_NOT_INITIALIZED = 1,
    CUSOLVER_STATUS_ALLOC_FAILED = 2,
    CUSOLVER_STATUS_INVALID_VALUE = 3,
    CUSOLVER_STATUS_ARCH_MISMATCH = 4,
    CUSOLVER_STATUS_MAPPING_ERROR = 5,
    CUSOLVER_STATUS_EXECUTION_FAILED = 6,
    CUSOLVER_STATUS_INTERNAL_ERROR = 7,
    CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED = 8,
    CUSOLVER_STATUS_NOT_SUPPORTED = 9,
    CUSOLVER_STATUS_ZERO_PIVOT = 10,
    CUSOLVER_STATUS_INVALID_LICENSE = 11,
    CUSOLVER_STATUS_INVALID_WORKSPACE = 31,
} cusolverStatus_t;
typedef struct qs_emu_solver *cusolverDnHandle_t;
typedef struct qs_emu_params *cusolverDnParams_t;

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *h);
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h);
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s);
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t *p);
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t p);
cusolverStatus_t cusolverDnXpotrf_bufferSize(cusolverDnHandle_t h, cusolverDnParams_t p, cublasFillMode_t uplo,
                                             int64_t n, cudaDataType ta, const void *a, int64_t lda, cudaDataType tc,
                                             size_t *dev_bytes, size_t *host_bytes);
cusolverStatus_t cusolverDnXpotrf(cusolverDnHandle_t h, cusolverDnParams_t p, cublasFillMode_t uplo, int64_t n,
                                  cudaDataType ta, void *a, int64_t lda, cudaDataType tc, void *dwork,
                                  size_t dev_bytes, void *hwork, size_t host_bytes, int *info);
cusolverStatus_t cusolverDnSpotri_bufferSize(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, float *a, int lda,
                                             int *lwork);
cusolverStatus_t cusolverDnDpotri_bufferSize(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *a, int lda,
                                             int *lwork);
cusolverStatus_t cusolverDnSpotri(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, float *a, int lda, float *work,
                                  int lwork, int *info);
cusolverStatus_t cusolverDnDpotri(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *a, int lda,
                                  double *work, int lwork, int *info);

#endif
