/* cuda_util.cuh — what the CUDA backend's translation units share: the
 * backend's context, the error check (one macro shape for the CUDA runtime,
 * cuBLAS and cuSOLVER, naming file and line), device and host buffers that
 * free themselves, and the grid helpers of the element-wise kernels.
 *
 * Every runtime, cuBLAS and cuSOLVER call and every kernel launch goes
 * through QS_CU_CHECK / QS_CU_LAUNCH (in functions that return a qs_status)
 * or QS_CU_NOTE (in the void BLAS calls of the table, which record the first
 * failure for the next sync). A failure becomes one line:
 *   "cuda:0: kernels/cuda/gptq_cuda.cu:412: cublasSgemm_64(...) failed: CUBLAS_STATUS_EXECUTION_FAILED (...)"
 *
 * These files are CUDA C++ only because nvcc compiles them so: no exceptions,
 * no standard library, C's conventions otherwise.
 */
#ifndef QS_CUDA_UTIL_CUH
#define QS_CUDA_UTIL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/backend.h"
#include "kernels/ops_table.h"
#include "kernels/quant_opts.h"
#include "kernels/status.h"

/* ---- the backend's context ------------------------------------------------------ */

#define QS_CUDA_CTX_MAGIC 0x71734355u /* "qsCU": a qs_backend_i's ctx is ours */

typedef struct qs_cuda_ctx {
    uint32_t magic;
    int device;
    char name[32];             /* "cuda:0", the prefix of every message */
    cudaStream_t stream;       /* all work of the backend, in order */
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    cusolverDnParams_t params; /* cuSOLVER's 64-bit API */
    int *d_info;               /* device int: cuSOLVER's info */
    bool tf32;
    qs_status sticky;          /* first failure a void call met since the last sync */
    qs_error sticky_err;
} qs_cuda_ctx;

/* The context of a CUDA backend table, or NULL (with err) for any other. */
qs_cuda_ctx *qs_cuda_ctx_of(const qs_backend_i *be, qs_error *err);

/* Records a failure of a void call (the first one wins) for the next sync. */
void qs_cuda_note(qs_cuda_ctx *cx, const qs_error *e);

/* ---- the check ------------------------------------------------------------------------ */

const char *qs_cusolver_status_name(cusolverStatus_t s);

/* The source path from "kernels/" on (nvcc gets absolute paths). */
const char *qs_cu_short_path(const char *file);

/* One line into err (and, when err is NULL, into the context's sticky error):
 * "<ctx name>: <file>:<line>: <what> failed: <code> (<description>)". */
qs_status qs_cu_fail(qs_cuda_ctx *cx, qs_status code, const char *what, const char *file, int line, const char *name,
                     const char *desc, qs_error *err);

static inline qs_status qs_cu_check(qs_cuda_ctx *cx, cudaError_t e, const char *what, const char *file, int line,
                                    qs_error *err)
{
    if (e == cudaSuccess) return QS_OK;
    if (e == cudaErrorMemoryAllocation) (void)cudaGetLastError(); /* not sticky: clear it for later launches */
    return qs_cu_fail(cx, e == cudaErrorMemoryAllocation ? QS_ERR_NOMEM : QS_ERR_IO, what, file, line,
                      cudaGetErrorName(e), cudaGetErrorString(e), err);
}

static inline qs_status qs_cu_check(qs_cuda_ctx *cx, cublasStatus_t e, const char *what, const char *file, int line,
                                    qs_error *err)
{
    if (e == CUBLAS_STATUS_SUCCESS) return QS_OK;
    return qs_cu_fail(cx, e == CUBLAS_STATUS_ALLOC_FAILED ? QS_ERR_NOMEM : QS_ERR_IO, what, file, line,
                      cublasGetStatusName(e), cublasGetStatusString(e), err);
}

static inline qs_status qs_cu_check(qs_cuda_ctx *cx, cusolverStatus_t e, const char *what, const char *file, int line,
                                    qs_error *err)
{
    if (e == CUSOLVER_STATUS_SUCCESS) return QS_OK;
    return qs_cu_fail(cx, e == CUSOLVER_STATUS_ALLOC_FAILED ? QS_ERR_NOMEM : QS_ERR_IO, what, file, line,
                      qs_cusolver_status_name(e), "cuSOLVER", err);
}

/* The one shape: evaluate, check, name the call and the place. */
#define QS_CU_CHECK_AS(cx, err, call, what)                                                   \
    do {                                                                                      \
        qs_status qs_cu_s_ = qs_cu_check((cx), (call), (what), __FILE__, __LINE__, (err));    \
        if (qs_cu_s_ != QS_OK) return qs_cu_s_;                                               \
    } while (0)
#define QS_CU_CHECK(cx, err, call) QS_CU_CHECK_AS(cx, err, call, #call)
/* A launch: configuration errors come back at once from cudaGetLastError;
 * errors while it runs surface at the next check of the stream. Under
 * QS_CUDA_EMU (tests/gpu_emu/: these sources built as C++ for the CPU) the
 * launch goes to the emulator, which runs the kernel's threads as fibers. */
#ifdef QS_CUDA_EMU
#define QS_CU_LAUNCH(cx, err, kernel, grid, block, smem, ...)                                   \
    do {                                                                                      \
        qs_emu_launch(#kernel, (grid), (block), (smem), qs_emu_bind(kernel, __VA_ARGS__));    \
        QS_CU_CHECK_AS(cx, err, cudaGetLastError(), #kernel "<<<" #grid ", " #block ">>>");   \
    } while (0)
#define QS_CU_DYNAMIC_SMEM(type, name) type *name = (type *)qs_emu_dynamic_smem()
#else
#define QS_CU_LAUNCH(cx, err, kernel, grid, block, smem, ...)                                   \
    do {                                                                                      \
        kernel<<<(grid), (block), (smem), (cx)->stream>>>(__VA_ARGS__);                       \
        QS_CU_CHECK_AS(cx, err, cudaGetLastError(), #kernel "<<<" #grid ", " #block ">>>");   \
    } while (0)
/* The kernel's dynamic shared memory (the launch's smem bytes). */
#define QS_CU_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif
/* In void functions: record the failure for the next sync instead of returning it. */
#define QS_CU_NOTE(cx, call)                                                                   \
    do {                                                                                      \
        qs_error qs_cu_e_;                                                                    \
        if (qs_cu_check((cx), (call), #call, __FILE__, __LINE__, &qs_cu_e_) != QS_OK)         \
            qs_cuda_note((cx), &qs_cu_e_);                                                    \
    } while (0)

/* ---- buffers that free themselves ------------------------------------------------- */

/* Device memory of n elements of T; freed when it goes out of scope. */
template <typename T> struct qs_dbuf {
    T *p = nullptr;
    size_t n = 0;
    qs_dbuf() = default;
    qs_dbuf(const qs_dbuf &) = delete;
    qs_dbuf &operator=(const qs_dbuf &) = delete;
    ~qs_dbuf() { release(); }
    void release()
    {
        if (p) cudaFree(p);
        p = nullptr;
        n = 0;
    }
    qs_status alloc(qs_cuda_ctx *cx, size_t count, const char *what, qs_error *err);
};

/* QS_ERR_NOMEM naming the buffer, its size and what is free. */
qs_status qs_cuda_alloc_bytes(qs_cuda_ctx *cx, void **p, size_t bytes, const char *what, qs_error *err);

template <typename T> qs_status qs_dbuf<T>::alloc(qs_cuda_ctx *cx, size_t count, const char *what, qs_error *err)
{
    release();
    void *q = nullptr;
    qs_status st = qs_cuda_alloc_bytes(cx, &q, (count ? count : 1) * sizeof(T), what, err);
    if (st != QS_OK) return st;
    p = (T *)q;
    n = count;
    return QS_OK;
}

/* Host memory of n elements of T (malloc); freed when it goes out of scope. */
template <typename T> struct qs_hbuf {
    T *p = nullptr;
    qs_hbuf() = default;
    qs_hbuf(const qs_hbuf &) = delete;
    qs_hbuf &operator=(const qs_hbuf &) = delete;
    ~qs_hbuf() { free(p); }
    bool alloc(size_t count)
    {
        free(p);
        p = (T *)malloc((count ? count : 1) * sizeof(T));
        return p != nullptr;
    }
};

/* ---- grids ------------------------------------------------------------------------- */

#define QS_CU_THREADS 256

/* Blocks for a grid-stride loop over n elements (capped: the loop does the rest). */
static inline unsigned qs_cu_blocks(int64_t n)
{
    int64_t b = (n + QS_CU_THREADS - 1) / QS_CU_THREADS;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)b;
}

#define QS_CU_FOR(i, n) \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- what the translation units give each other ----------------------------------- */

/* gptq_cuda.cu */
qs_status qs_cuda_gptq_run(void *ctx, const float *w, int64_t rows, int64_t cols, float *h, const qs_quant_opts *o,
                           qs_quant_result *res, qs_error *err);
/* quant_cuda.cu */
qs_status qs_cuda_rtn_run(void *ctx, const float *w, int64_t rows, int64_t cols, const qs_quant_opts *o,
                          qs_quant_result *res, qs_error *err);
/* ops_cuda.cu */
extern const qs_ops_i qs_ops_cuda_table;

/* Row-major sgemm on the context's stream (the table's sgemm, with a status). */
qs_status qs_cuda_sgemm(qs_cuda_ctx *cx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
                        qs_error *err);

/* In-place Cholesky of a row-major [n, n] (upper: A = Uᵀ U in the upper
 * triangle, else A = L Lᵀ in the lower), f32 or f64 (type); QS_ERR_NUMERIC
 * when not positive definite. Waits for the stream (it reads the info). */
qs_status qs_cuda_potrf(qs_cuda_ctx *cx, bool upper, int64_t n, void *a, int64_t lda, cudaDataType type,
                        qs_error *err);

/* Copies between any two of host and device memory on the stream, and waits. */
qs_status qs_cuda_copy(qs_cuda_ctx *cx, void *dst, const void *src, size_t bytes, qs_error *err);

#endif
