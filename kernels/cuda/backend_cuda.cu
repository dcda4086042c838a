/* backend_cuda.cu — the CUDA backend's table (kernels/backend.h) on device
 * memory: sgemm/syrk through cuBLAS, potrf/potri through cuSOLVER, device
 * memory, the device queries of kernels/device.h, and the error check that
 * every CUDA call of the backend goes through (cuda_util.cuh).
 *
 * Row-major data, column-major libraries: a row-major [m, n] matrix with
 * leading dimension ld is the column-major [n, m] matrix with the same ld,
 * its transpose. So C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ (the
 * operands swap, the op flags stay), the row-major upper triangle is the
 * column-major lower one, and syrk's Aᵀ·A of a row-major A is A'·A'ᵀ of its
 * column-major view A'.
 *
 * f32 GEMMs are true f32 (CUBLAS_DEFAULT_MATH) unless the backend was made
 * with tf32 (CUBLAS_TF32_TENSOR_OP_MATH: ~10 bits of mantissa in the products,
 * several times faster). cuBLAS gives the same bits on every run on GPUs of
 * the same architecture and SM count; the bits differ from OpenBLAS's.
 */
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_util.cuh"
#include "kernels/device.h"

/* ================================================================ errors == */

const char *qs_cusolver_status_name(cusolverStatus_t s)
{
    switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_MAPPING_ERROR: return "CUSOLVER_STATUS_MAPPING_ERROR";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_ZERO_PIVOT: return "CUSOLVER_STATUS_ZERO_PIVOT";
    case CUSOLVER_STATUS_INVALID_LICENSE: return "CUSOLVER_STATUS_INVALID_LICENSE";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return "CUSOLVER_STATUS_(other)";
    }
}

const char *qs_cu_short_path(const char *file)
{
    const char *k = strstr(file, "kernels/");
    return k ? k : file;
}

qs_status qs_cu_fail(qs_cuda_ctx *cx, qs_status code, const char *what, const char *file, int line, const char *name,
                     const char *desc, qs_error *err)
{
    /* the call's text can be long (a launch with its arguments): its head names it */
    char head[96];
    size_t n = strlen(what);
    if (n < sizeof head) snprintf(head, sizeof head, "%s", what);
    else snprintf(head, sizeof head, "%.*s...", (int)sizeof head - 4, what);
    const char *dev = cx ? cx->name : "cuda";
    if (err)
        return qs_error_set(err, code, "%s: %s:%d: %s failed: %s (%s)", dev, qs_cu_short_path(file), line, head,
                            name ? name : "?", desc ? desc : "?");
    if (cx) {
        qs_error e;
        qs_error_set(&e, code, "%s: %s:%d: %s failed: %s (%s)", dev, qs_cu_short_path(file), line, head,
                     name ? name : "?", desc ? desc : "?");
        qs_cuda_note(cx, &e);
    }
    return code;
}

void qs_cuda_note(qs_cuda_ctx *cx, const qs_error *e)
{
    if (cx->sticky != QS_OK) return;
    cx->sticky = e->code;
    cx->sticky_err = *e;
}

qs_cuda_ctx *qs_cuda_ctx_of(const qs_backend_i *be, qs_error *err)
{
    qs_cuda_ctx *cx = be && be->device ? (qs_cuda_ctx *)be->ctx : NULL;
    if (!cx || cx->magic != QS_CUDA_CTX_MAGIC) {
        qs_error_set(err, QS_ERR_INTERNAL, "backend '%s' is not a CUDA backend", be && be->name ? be->name : "?");
        return NULL;
    }
    return cx;
}

qs_status qs_cuda_alloc_bytes(qs_cuda_ctx *cx, void **p, size_t bytes, const char *what, qs_error *err)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e == cudaSuccess) return QS_OK;
    (void)cudaGetLastError(); /* an allocation failure is not sticky: keep it out of later checks */
    *p = NULL;
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    return qs_error_set(err, e == cudaErrorMemoryAllocation ? QS_ERR_NOMEM : QS_ERR_IO,
                        "%s: cannot allocate %s (%.3f GiB) on the device: %s (%.2f GiB of %.2f GiB free)",
                        cx ? cx->name : "cuda", what, (double)bytes / 1073741824.0, cudaGetErrorString(e),
                        (double)fr / 1073741824.0, (double)tot / 1073741824.0);
}

/* ============================================================== devices == */

int qs_cuda_device_count(char *why, size_t why_cap)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (why && why_cap)
            snprintf(why, why_cap, "cudaGetDeviceCount: %s: %s%s", cudaGetErrorName(e), cudaGetErrorString(e),
                     e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice
                         ? "; no NVIDIA GPU or driver on this machine (or CUDA_VISIBLE_DEVICES hides them)"
                         : "");
        return 0;
    }
    if (n == 0 && why && why_cap) snprintf(why, why_cap, "cudaGetDeviceCount: 0 devices");
    return n;
}

qs_status qs_cuda_device_info(int index, qs_device_info *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    char why[512];
    int n = qs_cuda_device_count(why, sizeof why);
    if (index < 0 || index >= n)
        return qs_error_set(err, QS_ERR_INPUT, "cuda:%d: no such CUDA device (%d found%s%s)", index, n,
                            n ? "" : ": ", n ? "" : why);
    cudaDeviceProp prop;
    qs_cuda_ctx tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.name, sizeof tmp.name, "cuda:%d", index);
    QS_CU_CHECK(&tmp, err, cudaGetDeviceProperties(&prop, index));
    int prev = 0;
    QS_CU_CHECK(&tmp, err, cudaGetDevice(&prev));
    QS_CU_CHECK(&tmp, err, cudaSetDevice(index));
    size_t fr = 0, tot = 0;
    cudaError_t e = cudaMemGetInfo(&fr, &tot);
    cudaSetDevice(prev);
    QS_CU_CHECK_AS(&tmp, err, e, "cudaMemGetInfo");
    out->index = index;
    snprintf(out->name, sizeof out->name, "%s", prop.name);
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    out->sm_count = prop.multiProcessorCount;
    out->free_bytes = fr;
    out->total_bytes = tot;
    return QS_OK;
}

/* ================================================================= BLAS == */

qs_status qs_cuda_sgemm(qs_cuda_ctx *cx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
                        qs_error *err)
{
    if (m == 0 || n == 0) return QS_OK;
    QS_CU_CHECK(cx, err,
                cublasSgemm_64(cx->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                               &alpha, b, ldb, a, lda, &beta, c, ldc));
    return QS_OK;
}

static void cu_sgemm(void *ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                     int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    qs_error e;
    if (qs_cuda_sgemm(cx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &e) != QS_OK) qs_cuda_note(cx, &e);
}

static void cu_ssyrk_t(void *ctx, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, float beta, float *c,
                       int64_t ldc)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n == 0) return;
    QS_CU_NOTE(cx, cublasSsyrk_64(cx->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &alpha, a, lda, &beta, c, ldc));
}

static void cu_dsyrk_t(void *ctx, int64_t n, int64_t k, double alpha, const double *a, int64_t lda, double beta,
                       double *c, int64_t ldc)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n == 0) return;
    QS_CU_NOTE(cx, cublasDsyrk_64(cx->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &alpha, a, lda, &beta, c, ldc));
}

/* ======================================================== factorizations == */

/* cuSOLVER's info (waits for the stream): > 0 is "not positive definite". */
static qs_status read_info(qs_cuda_ctx *cx, const char *what, qs_error *err)
{
    int info = 0;
    QS_CU_CHECK(cx, err, cudaMemcpyAsync(&info, cx->d_info, sizeof info, cudaMemcpyDeviceToHost, cx->stream));
    QS_CU_CHECK(cx, err, cudaStreamSynchronize(cx->stream));
    if (info > 0)
        return qs_error_set(err, QS_ERR_NUMERIC, "%s: %s: the matrix is not positive definite (leading minor %d)",
                            cx->name, what, info);
    if (info < 0)
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: %s: argument %d is invalid", cx->name, what, -info);
    return QS_OK;
}

/* potrf through the 64-bit API (n² may exceed 2³¹), f32 or f64. */
qs_status qs_cuda_potrf(qs_cuda_ctx *cx, bool upper, int64_t n, void *a, int64_t lda, cudaDataType type,
                           qs_error *err)
{
    if (n == 0) return QS_OK;
    cublasFillMode_t fill = upper ? CUBLAS_FILL_MODE_LOWER : CUBLAS_FILL_MODE_UPPER; /* row-major ↔ column-major */
    size_t dev_bytes = 0, host_bytes = 0;
    QS_CU_CHECK(cx, err,
                cusolverDnXpotrf_bufferSize(cx->solver, cx->params, fill, n, type, a, lda, type, &dev_bytes,
                                            &host_bytes));
    qs_dbuf<char> dwork;
    qs_hbuf<char> hwork;
    QS_TRY(dwork.alloc(cx, dev_bytes, "the potrf workspace", err));
    if (!hwork.alloc(host_bytes))
        return qs_error_set(err, QS_ERR_NOMEM, "%s: potrf: cannot allocate %zu host bytes", cx->name, host_bytes);
    QS_CU_CHECK(cx, err,
                cusolverDnXpotrf(cx->solver, cx->params, fill, n, type, a, lda, type, dwork.p, dev_bytes, hwork.p,
                                 host_bytes, cx->d_info));
    return read_info(cx, type == CUDA_R_32F ? "spotrf" : "dpotrf", err);
}

static qs_status cu_spotrf(void *ctx, bool upper, int64_t n, float *a, int64_t lda)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    qs_error e;
    qs_status st = qs_cuda_potrf(cx, upper, n, a, lda, CUDA_R_32F, &e);
    if (st != QS_OK && st != QS_ERR_NUMERIC) qs_cuda_note(cx, &e);
    return st;
}

static qs_status cu_dpotrf(void *ctx, bool upper, int64_t n, double *a, int64_t lda)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    qs_error e;
    qs_status st = qs_cuda_potrf(cx, upper, n, a, lda, CUDA_R_64F, &e);
    if (st != QS_OK && st != QS_ERR_NUMERIC) qs_cuda_note(cx, &e);
    return st;
}

/* potri has only the 32-bit API: n and lda must fit an int. */
static qs_status spotri_run(qs_cuda_ctx *cx, bool upper, int64_t n, float *a, int64_t lda, qs_error *err)
{
    if (n == 0) return QS_OK;
    if (n > INT32_MAX || lda > INT32_MAX)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: spotri of [%lld,%lld]: cuSOLVER's potri takes int sizes",
                            cx->name, (long long)n, (long long)n);
    cublasFillMode_t fill = upper ? CUBLAS_FILL_MODE_LOWER : CUBLAS_FILL_MODE_UPPER;
    int lwork = 0;
    QS_CU_CHECK(cx, err, cusolverDnSpotri_bufferSize(cx->solver, fill, (int)n, a, (int)lda, &lwork));
    qs_dbuf<float> work;
    QS_TRY(work.alloc(cx, (size_t)lwork, "the potri workspace", err));
    QS_CU_CHECK(cx, err, cusolverDnSpotri(cx->solver, fill, (int)n, a, (int)lda, work.p, lwork, cx->d_info));
    return read_info(cx, "spotri", err);
}

static qs_status dpotri_run(qs_cuda_ctx *cx, bool upper, int64_t n, double *a, int64_t lda, qs_error *err)
{
    if (n == 0) return QS_OK;
    if (n > INT32_MAX || lda > INT32_MAX)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: dpotri of [%lld,%lld]: cuSOLVER's potri takes int sizes",
                            cx->name, (long long)n, (long long)n);
    cublasFillMode_t fill = upper ? CUBLAS_FILL_MODE_LOWER : CUBLAS_FILL_MODE_UPPER;
    int lwork = 0;
    QS_CU_CHECK(cx, err, cusolverDnDpotri_bufferSize(cx->solver, fill, (int)n, a, (int)lda, &lwork));
    qs_dbuf<double> work;
    QS_TRY(work.alloc(cx, (size_t)lwork, "the potri workspace", err));
    QS_CU_CHECK(cx, err, cusolverDnDpotri(cx->solver, fill, (int)n, a, (int)lda, work.p, lwork, cx->d_info));
    return read_info(cx, "dpotri", err);
}

static qs_status cu_spotri(void *ctx, bool upper, int64_t n, float *a, int64_t lda)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    qs_error e;
    qs_status st = spotri_run(cx, upper, n, a, lda, &e);
    if (st != QS_OK && st != QS_ERR_NUMERIC) qs_cuda_note(cx, &e);
    return st;
}

static qs_status cu_dpotri(void *ctx, bool upper, int64_t n, double *a, int64_t lda)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    qs_error e;
    qs_status st = dpotri_run(cx, upper, n, a, lda, &e);
    if (st != QS_OK && st != QS_ERR_NUMERIC) qs_cuda_note(cx, &e);
    return st;
}

static int cu_threads(void *ctx) { return 1; }

/* =============================================================== memory == */

static void *cu_alloc(void *ctx, size_t bytes)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    void *p = NULL;
    if (qs_cuda_alloc_bytes(cx, &p, bytes ? bytes : 1, "a buffer", NULL) != QS_OK) return NULL;
    return p;
}

static void cu_free(void *ctx, void *p)
{
    if (p) cudaFree(p);
}

qs_status qs_cuda_copy(qs_cuda_ctx *cx, void *dst, const void *src, size_t bytes, qs_error *err)
{
    if (!bytes) return QS_OK;
    QS_CU_CHECK(cx, err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cx->stream));
    QS_CU_CHECK(cx, err, cudaStreamSynchronize(cx->stream));
    return QS_OK;
}

static qs_status cu_copy(void *ctx, void *dst, const void *src, size_t bytes, qs_error *err)
{
    return qs_cuda_copy((qs_cuda_ctx *)ctx, dst, src, bytes, err);
}

static qs_status cu_zero(void *ctx, void *p, size_t bytes, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (!bytes) return QS_OK;
    QS_CU_CHECK(cx, err, cudaMemsetAsync(p, 0, bytes, cx->stream));
    return QS_OK;
}

static qs_status cu_sync(void *ctx, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    QS_CU_CHECK(cx, err, cudaStreamSynchronize(cx->stream));
    if (cx->sticky != QS_OK) {
        qs_status st = cx->sticky;
        if (err) *err = cx->sticky_err;
        cx->sticky = QS_OK;
        return st;
    }
    return QS_OK;
}

/* ================================================================ table == */

static void ctx_destroy(qs_cuda_ctx *cx)
{
    if (!cx) return;
    if (cx->d_info) cudaFree(cx->d_info);
    if (cx->params) cusolverDnDestroyParams(cx->params);
    if (cx->solver) cusolverDnDestroy(cx->solver);
    if (cx->blas) cublasDestroy(cx->blas);
    if (cx->stream) cudaStreamDestroy(cx->stream);
    memset(cx, 0, sizeof *cx);
    free(cx);
}

static qs_status ctx_create(qs_cuda_ctx *cx, int index, const qs_cuda_opts *o, qs_error *err)
{
    QS_CU_CHECK(cx, err, cudaSetDevice(index));
    QS_CU_CHECK(cx, err, cudaStreamCreateWithFlags(&cx->stream, cudaStreamNonBlocking));
    QS_CU_CHECK(cx, err, cublasCreate(&cx->blas));
    QS_CU_CHECK(cx, err, cublasSetStream(cx->blas, cx->stream));
    QS_CU_CHECK(cx, err, cublasSetMathMode(cx->blas, cx->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    QS_CU_CHECK(cx, err, cusolverDnCreate(&cx->solver));
    QS_CU_CHECK(cx, err, cusolverDnSetStream(cx->solver, cx->stream));
    QS_CU_CHECK(cx, err, cusolverDnCreateParams(&cx->params));
    QS_TRY(qs_cuda_alloc_bytes(cx, (void **)&cx->d_info, sizeof(int), "cuSOLVER's info", err));
    return QS_OK;
}

qs_status qs_backend_cuda_init(qs_backend_i *be, int index, const qs_cuda_opts *o, qs_error *err)
{
    memset(be, 0, sizeof *be);
    char why[512];
    int n = qs_cuda_device_count(why, sizeof why);
    if (n == 0) return qs_error_set(err, QS_ERR_INPUT, "cuda:%d: no CUDA device was found (%s)", index, why);
    if (index < 0 || index >= n)
        return qs_error_set(err, QS_ERR_INPUT, "cuda:%d: no such CUDA device (%d found)", index, n);
    qs_cuda_ctx *cx = (qs_cuda_ctx *)calloc(1, sizeof *cx);
    if (!cx) return qs_error_set(err, QS_ERR_NOMEM, "cuda:%d: out of memory", index);
    cx->magic = QS_CUDA_CTX_MAGIC;
    cx->device = index;
    cx->tf32 = o && o->tf32;
    snprintf(cx->name, sizeof cx->name, "cuda:%d", index);
    qs_status st = ctx_create(cx, index, o, err);
    if (st != QS_OK) {
        ctx_destroy(cx);
        return st;
    }
    be->name = cx->name;
    be->ctx = cx;
    be->device = true;
    be->sgemm = cu_sgemm;
    be->ssyrk_t = cu_ssyrk_t;
    be->spotrf = cu_spotrf;
    be->spotri = cu_spotri;
    be->dsyrk_t = cu_dsyrk_t;
    be->dpotrf = cu_dpotrf;
    be->dpotri = cu_dpotri;
    be->threads = cu_threads;
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->copy = cu_copy;
    be->zero = cu_zero;
    be->sync = cu_sync;
    be->gptq = qs_cuda_gptq_run;
    be->rtn = qs_cuda_rtn_run;
    be->ops = &qs_ops_cuda_table;
    return QS_OK;
}

void qs_backend_cuda_free(qs_backend_i *be)
{
    qs_cuda_ctx *cx = be && be->device ? (qs_cuda_ctx *)be->ctx : NULL;
    if (cx && cx->magic == QS_CUDA_CTX_MAGIC) {
        cudaStreamSynchronize(cx->stream);
        ctx_destroy(cx);
    }
    if (be) memset(be, 0, sizeof *be);
}
