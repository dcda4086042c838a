/* emu.cpp — a CUDA emulator for tests: the runtime calls, cuBLAS and
 * cuSOLVER that kernels/cuda/ uses, and kernel launches, on the CPU
 * (tests/gpu_emu/cuda_runtime.h says what is and is not emulated).
 *
 * A launch runs its blocks one after another. A block's threads are fibers
 * (ucontext) scheduled round-robin on this one OS thread: a thread runs until
 * it reaches __syncthreads (all of the block's live threads must reach it),
 * a warp shuffle (all live lanes of its warp), or its end. Threads that wait
 * at different barriers is a divergence bug in the kernel: the emulator says
 * so and aborts. Device memory is host memory filled with 0xFF bytes (NaN as
 * floats) when allocated, as a GPU's is not zeroed, and the emulator checks
 * that copies, memsets and library calls get device memory where a GPU
 * requires it. Test code: never part of qshard.
 */
#include <cblas.h>
#include <lapacke.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#include <map>
#include <vector>

#include "cusolverDn.h"

dim3 threadIdx, blockIdx, blockDim, gridDim;

/* ================================================================ fibers == */

enum { F_RUN, F_WAIT_BLOCK, F_WAIT_WARP, F_DONE };

struct fiber {
    ucontext_t ctx;
    int state;
};

static const size_t STACK = 256 << 10;
static std::vector<fiber> g_f;
static std::vector<char *> g_stacks;
static std::vector<uint64_t> g_slot;
static std::vector<unsigned char> g_smem;
static ucontext_t g_sched;
static int g_cur, g_n;
static std::function<void()> *g_body;
static const char *g_kernel;
static cudaError_t g_last = cudaSuccess;

static void fiber_entry(void)
{
    (*g_body)();
    g_f[g_cur].state = F_DONE; /* then uc_link resumes the scheduler */
}

static void yield(int state)
{
    g_f[g_cur].state = state;
    swapcontext(&g_f[g_cur].ctx, &g_sched);
}

void __syncthreads(void) { yield(F_WAIT_BLOCK); }

uint64_t qs_emu_shfl(uint64_t v, int src)
{
    const int me = g_cur, w0 = me / 32 * 32;
    g_slot[me] = v;
    yield(F_WAIT_WARP);
    uint64_t r = w0 + src < g_n ? g_slot[w0 + src] : v;
    yield(F_WAIT_WARP);
    return r;
}

void *qs_emu_dynamic_smem(void) { return g_smem.data(); }

static void run_block(void)
{
    for (int i = 0; i < g_n; i++) {
        getcontext(&g_f[i].ctx);
        g_f[i].ctx.uc_stack.ss_sp = g_stacks[i];
        g_f[i].ctx.uc_stack.ss_size = STACK;
        g_f[i].ctx.uc_link = &g_sched;
        makecontext(&g_f[i].ctx, fiber_entry, 0);
        g_f[i].state = F_RUN;
    }
    for (;;) {
        for (int i = 0; i < g_n; i++) {
            if (g_f[i].state != F_RUN) continue;
            g_cur = i;
            threadIdx = dim3((unsigned)i % blockDim.x, (unsigned)i / blockDim.x % blockDim.y,
                             (unsigned)i / (blockDim.x * blockDim.y));
            swapcontext(&g_sched, &g_f[i].ctx);
        }
        int alive = 0, at_block = 0;
        for (int i = 0; i < g_n; i++) {
            alive += g_f[i].state != F_DONE;
            at_block += g_f[i].state == F_WAIT_BLOCK;
        }
        if (!alive) return;
        bool released = false;
        if (at_block == alive) {
            for (int i = 0; i < g_n; i++)
                if (g_f[i].state == F_WAIT_BLOCK) g_f[i].state = F_RUN;
            released = true;
        } else {
            for (int w0 = 0; w0 < g_n; w0 += 32) {
                int live = 0, waiting = 0;
                for (int i = w0; i < w0 + 32 && i < g_n; i++) {
                    live += g_f[i].state != F_DONE;
                    waiting += g_f[i].state == F_WAIT_WARP;
                }
                if (live && waiting == live) {
                    for (int i = w0; i < w0 + 32 && i < g_n; i++) g_f[i].state = F_RUN;
                    released = true;
                }
            }
        }
        if (!released) {
            fprintf(stderr, "gpu emulator: kernel %s, block (%u,%u,%u): threads wait at different barriers "
                            "(__syncthreads in divergent code, or a shuffle some lanes skip)\n",
                    g_kernel, blockIdx.x, blockIdx.y, blockIdx.z);
            abort();
        }
    }
}

static void free_stacks(void)
{
    for (char *p : g_stacks) free(p);
    g_stacks.clear();
}

void qs_emu_launch(const char *name, dim3 grid, dim3 block, size_t smem, std::function<void()> body)
{
    if (g_stacks.empty()) atexit(free_stacks);
    const long n = (long)block.x * block.y * block.z;
    if (n < 1 || n > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535 ||
        smem > 227 * 1024) {
        g_last = cudaErrorInvalidConfiguration;
        return;
    }
    g_kernel = name;
    g_n = (int)n;
    if ((int)g_stacks.size() < g_n) {
        g_f.resize((size_t)g_n);
        g_slot.resize((size_t)g_n);
        while ((int)g_stacks.size() < g_n) g_stacks.push_back((char *)malloc(STACK));
    }
    g_smem.assign(smem ? smem : 1, 0xFF);
    g_body = &body;
    gridDim = grid;
    blockDim = block;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                run_block();
            }
}

/* ======================================================= device memory == */

static std::map<uintptr_t, size_t> g_allocs; /* start → bytes */

static bool is_device(const void *p, size_t bytes)
{
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    if (bytes > (64ull << 30)) {
        *p = NULL;
        return g_last = cudaErrorMemoryAllocation;
    }
    size_t sz = (bytes + 255) / 256 * 256;
    void *q = aligned_alloc(256, sz ? sz : 256);
    if (!q) return g_last = cudaErrorMemoryAllocation;
    memset(q, 0xFF, sz); /* a GPU's fresh memory is not zeroed: make reads of it show */
    g_allocs[(uintptr_t)q] = bytes;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end()) {
        fprintf(stderr, "gpu emulator: cudaFree of %p, which cudaMalloc did not return\n", p);
        abort();
    }
    g_allocs.erase(it);
    free(p);
    return cudaSuccess;
}

static cudaError_t check_kind(void *dst, const void *src, size_t bytes, cudaMemcpyKind k, const char *what)
{
    if (bytes == 0) return cudaSuccess;
    if (!dst || !src) return g_last = cudaErrorInvalidValue;
    bool dd = is_device(dst, 1), sd = is_device(src, 1);
    bool ok = k == cudaMemcpyDefault || (k == cudaMemcpyHostToDevice && dd && !sd) ||
              (k == cudaMemcpyDeviceToHost && sd && !dd) || (k == cudaMemcpyDeviceToDevice && dd && sd) ||
              (k == cudaMemcpyHostToHost && !dd && !sd);
    if (!ok) {
        fprintf(stderr, "gpu emulator: %s of kind %d between %s and %s memory\n", what, (int)k, dd ? "device" : "host",
                sd ? "device" : "host");
        return g_last = cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k, cudaStream_t s)
{
    cudaError_t e = check_kind(dst, src, bytes, k, "cudaMemcpyAsync");
    if (e != cudaSuccess) return e;
    if ((is_device(dst, 1) && !is_device(dst, bytes)) || (is_device(src, 1) && !is_device(src, bytes))) {
        fprintf(stderr, "gpu emulator: cudaMemcpyAsync of %zu bytes runs past an allocation\n", bytes);
        return g_last = cudaErrorInvalidValue;
    }
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t s)
{
    if (width > dpitch || width > spitch) return g_last = cudaErrorInvalidValue;
    cudaError_t e = check_kind(dst, src, width * height, k, "cudaMemcpy2DAsync");
    if (e != cudaSuccess) return e;
    for (size_t r = 0; r < height; r++) {
        const char *sr = (const char *)src + r * spitch;
        char *dr = (char *)dst + r * dpitch;
        if ((is_device(dr, 1) && !is_device(dr, width)) || (is_device(sr, 1) && !is_device(sr, width))) {
            fprintf(stderr, "gpu emulator: cudaMemcpy2DAsync row %zu runs past an allocation\n", r);
            return g_last = cudaErrorInvalidValue;
        }
        memmove(dr, sr, width);
    }
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s)
{
    if (!bytes) return cudaSuccess;
    if (!is_device(p, bytes)) return g_last = cudaErrorInvalidValue;
    memset(p, v, bytes);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p)
{
    memset(a, 0, sizeof *a);
    a->type = is_device(p, 1) ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
    return cudaSuccess;
}

/* ========================================================= the runtime == */

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    }
    return "cudaError(other)";
}

const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}

/* One device, or $QS_EMU_DEVICES (1..8: a node whose ranks each get one, for
 * multi-rank runs through the emulator; each process emulates its own). */
static int emu_devices(void)
{
    const char *v = getenv("QS_EMU_DEVICES");
    int n = v && *v ? atoi(v) : 1;
    return n < 1 ? 1 : n > 8 ? 8 : n;
}

cudaError_t cudaGetDeviceCount(int *n)
{
    if (getenv("QS_EMU_NO_DEVICE")) {
        *n = 0;
        return g_last = cudaErrorNoDevice;
    }
    *n = emu_devices();
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    if (dev < 0 || dev >= emu_devices()) return g_last = cudaErrorInvalidValue;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "qshard CUDA emulator (CPU)");
    p->major = 9, p->minor = 0, p->multiProcessorCount = 1;
    return cudaSuccess;
}

static int g_dev;
cudaError_t cudaGetDevice(int *dev)
{
    *dev = g_dev;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev)
{
    if (dev < 0 || dev >= emu_devices()) return g_last = cudaErrorInvalidValue;
    g_dev = dev;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev)
{
    *v = 227 * 1024;
    return cudaSuccess;
}
/* 64 GiB with 60 free, or what $QS_EMU_FREE_BYTES / $QS_EMU_TOTAL_BYTES say
 * (the tests of the run's memory check make a device that is too small). */
static size_t env_bytes(const char *name, size_t dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end = NULL;
    unsigned long long x = strtoull(v, &end, 10);
    return end && *end == '\0' ? (size_t)x : dflt;
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot)
{
    *tot = env_bytes("QS_EMU_TOTAL_BYTES", 64ull << 30);
    *fr = env_bytes("QS_EMU_FREE_BYTES", 60ull << 30);
    return cudaSuccess;
}

struct qs_emu_stream {
    std::vector<qs_emu_async> pending;
};
struct qs_emu_event {
    double t;
    std::vector<qs_emu_async> pending;
};
void qs_emu_stream_add_async(cudaStream_t s, qs_emu_async a) { s->pending.push_back(a); }
bool qs_emu_is_device(const void *p, size_t bytes) { return is_device(p, bytes); }
static void drop_all(std::vector<qs_emu_async> &v)
{
    for (auto &a : v) a.drop(a.arg);
    v.clear();
}
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    *s = new qs_emu_stream();
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    drop_all(s->pending);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (!s) return cudaSuccess;
    for (auto &a : s->pending) a.wait(a.arg);
    drop_all(s->pending); /* complete: drop only frees */
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = new qs_emu_event();
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    drop_all(e->pending);
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    e->t = now_s();
    if (s) { /* the event completes when what the stream has in flight does */
        e->pending.insert(e->pending.end(), s->pending.begin(), s->pending.end());
        s->pending.clear();
    }
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e)
{
    for (auto &a : e->pending)
        if (!a.test(a.arg)) return cudaErrorNotReady;
    drop_all(e->pending);
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    for (auto &a : e->pending) a.wait(a.arg);
    drop_all(e->pending);
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)(1e3 * (b->t - a->t));
    return cudaSuccess;
}

/* ================================================================ cuBLAS == */

struct qs_emu_blas {
    int unused;
};
cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new qs_emu_blas();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusName(cublasStatus_t s) { return s ? "CUBLAS_STATUS_(emulated error)" : "CUBLAS_STATUS_SUCCESS"; }
const char *cublasGetStatusString(cublasStatus_t s) { return s ? "emulated cuBLAS error" : "success"; }

/* A column-major [rows, cols] operand with leading dimension ld must lie in device memory. */
static bool dev_matrix(const void *p, int64_t rows, int64_t cols, int64_t ld, size_t es, const char *what)
{
    if (rows == 0 || cols == 0) return true;
    if (ld < rows || !is_device(p, ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * es)) {
        fprintf(stderr, "gpu emulator: %s: a [%lld,%lld] column-major operand (ld %lld) that is not device memory\n",
                what, (long long)rows, (long long)cols, (long long)ld);
        return false;
    }
    return true;
}

cublasStatus_t cublasSgemm_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                              int64_t k, const float *alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                              const float *beta, float *c, int64_t ldc)
{
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    if (!dev_matrix(a, ta ? k : m, ta ? m : k, lda, 4, "cublasSgemm A") ||
        !dev_matrix(b, tb ? n : k, tb ? k : n, ldb, 4, "cublasSgemm B") || !dev_matrix(c, m, n, ldc, 4, "cublasSgemm C"))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
                *alpha, a, (int)lda, b, (int)ldb, *beta, c, (int)ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSsyrk_64(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t t, int64_t n, int64_t k,
                              const float *alpha, const float *a, int64_t lda, const float *beta, float *c,
                              int64_t ldc)
{
    if (!dev_matrix(a, t ? k : n, t ? n : k, lda, 4, "cublasSsyrk A") || !dev_matrix(c, n, n, ldc, 4, "cublasSsyrk C"))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    cblas_ssyrk(CblasColMajor, uplo == CUBLAS_FILL_MODE_LOWER ? CblasLower : CblasUpper, t ? CblasTrans : CblasNoTrans,
                (int)n, (int)k, *alpha, a, (int)lda, *beta, c, (int)ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDsyrk_64(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t t, int64_t n, int64_t k,
                              const double *alpha, const double *a, int64_t lda, const double *beta, double *c,
                              int64_t ldc)
{
    if (!dev_matrix(a, t ? k : n, t ? n : k, lda, 8, "cublasDsyrk A") || !dev_matrix(c, n, n, ldc, 8, "cublasDsyrk C"))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    cblas_dsyrk(CblasColMajor, uplo == CUBLAS_FILL_MODE_LOWER ? CblasLower : CblasUpper, t ? CblasTrans : CblasNoTrans,
                (int)n, (int)k, *alpha, a, (int)lda, *beta, c, (int)ldc);
    return CUBLAS_STATUS_SUCCESS;
}

/* ============================================================== cuSOLVER == */

struct qs_emu_solver {
    int unused;
};
struct qs_emu_params {
    int unused;
};
cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *h)
{
    *h = new qs_emu_solver();
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h)
{
    delete h;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s) { return CUSOLVER_STATUS_SUCCESS; }
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t *p)
{
    *p = new qs_emu_params();
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t p)
{
    delete p;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnXpotrf_bufferSize(cusolverDnHandle_t h, cusolverDnParams_t p, cublasFillMode_t uplo,
                                             int64_t n, cudaDataType ta, const void *a, int64_t lda, cudaDataType tc,
                                             size_t *dev_bytes, size_t *host_bytes)
{
    *dev_bytes = 64, *host_bytes = 0;
    return CUSOLVER_STATUS_SUCCESS;
}

/* LAPACK's info: > 0 the order of the first minor that is not positive definite. */
static cusolverStatus_t set_info(int *info, lapack_int v)
{
    if (!is_device(info, sizeof(int))) return CUSOLVER_STATUS_INVALID_VALUE;
    *info = (int)v;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXpotrf(cusolverDnHandle_t h, cusolverDnParams_t p, cublasFillMode_t uplo, int64_t n,
                                  cudaDataType ta, void *a, int64_t lda, cudaDataType tc, void *dwork,
                                  size_t dev_bytes, void *hwork, size_t host_bytes, int *info)
{
    const char ul = uplo == CUBLAS_FILL_MODE_LOWER ? 'L' : 'U';
    if (!dev_matrix(a, n, n, lda, ta == CUDA_R_64F ? 8 : 4, "cusolverDnXpotrf A")) return CUSOLVER_STATUS_EXECUTION_FAILED;
    /* one OpenBLAS thread: its potrf's bits depend on the thread count, cuSOLVER's do not
     * (on one GPU model), and the device path's exports must not depend on the ranks' cores */
    int threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    lapack_int r = ta == CUDA_R_64F ? LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, ul, (lapack_int)n, (double *)a, (lapack_int)lda)
                                    : LAPACKE_spotrf_work(LAPACK_COL_MAJOR, ul, (lapack_int)n, (float *)a, (lapack_int)lda);
    openblas_set_num_threads(threads);
    return set_info(info, r);
}

cusolverStatus_t cusolverDnSpotri_bufferSize(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, float *a, int lda,
                                             int *lwork)
{
    *lwork = 16;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDpotri_bufferSize(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *a, int lda,
                                             int *lwork)
{
    *lwork = 16;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSpotri(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, float *a, int lda, float *work,
                                  int lwork, int *info)
{
    if (!dev_matrix(a, n, n, lda, 4, "cusolverDnSpotri A")) return CUSOLVER_STATUS_EXECUTION_FAILED;
    return set_info(info, LAPACKE_spotri_work(LAPACK_COL_MAJOR, uplo == CUBLAS_FILL_MODE_LOWER ? 'L' : 'U', n, a, lda));
}
cusolverStatus_t cusolverDnDpotri(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *a, int lda,
                                  double *work, int lwork, int *info)
{
    if (!dev_matrix(a, n, n, lda, 8, "cusolverDnDpotri A")) return CUSOLVER_STATUS_EXECUTION_FAILED;
    return set_info(info, LAPACKE_dpotri_work(LAPACK_COL_MAJOR, uplo == CUBLAS_FILL_MODE_LOWER ? 'L' : 'U', n, a, lda));
}
