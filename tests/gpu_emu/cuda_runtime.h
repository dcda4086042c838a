/* cuda_runtime.h (emulator) — the part of the CUDA runtime API that
 * kernels/cuda/ uses, on the CPU, for tests/gpu_emu/: the CUDA backend's
 * sources compiled as C++ with -DQS_CUDA_EMU against these headers, so the
 * gpu tests run their kernels and drivers here, with no GPU.
 *
 * What is emulated: device memory (host memory the emulator tracks, so
 * cudaPointerGetAttributes can tell it from other host memory), copies,
 * streams and events (everything runs at once, in order), the launch (every
 * block in turn; its threads as cooperative fibers, so __syncthreads and the
 * warp shuffles behave as on a GPU whose threads interleave only at those
 * points), shared memory, atomics. Not emulated: real concurrency (a data
 * race does not show), the device's rounding of expf/tanhf/exp (the host
 * libm's instead), FMA contraction (none here, as with --fmad=false),
 * resource limits (registers, shared memory beyond the launch's bytes).
 * This is test code: never part of qshard.
 */
#ifndef QS_EMU_CUDA_RUNTIME_H
#define QS_EMU_CUDA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* blocks run one at a time: a static is the block's shared memory */
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

void qs_emu_launch(const char *name, dim3 grid, dim3 block, size_t smem, std::function<void()> body);
/* The kernel with its arguments' values, as a launch passes them. */
template <typename F, typename... A> static inline std::function<void()> qs_emu_bind(F f, A... a)
{
    return [=]() { f(a...); };
}
void *qs_emu_dynamic_smem(void);
void __syncthreads(void);
/* the 8 bytes of v through lane src of the caller's warp */
uint64_t qs_emu_shfl(uint64_t v, int src);

template <typename T> static inline T qs_emu_shfl_t(T v, int src)
{
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    uint64_t u = 0;
    __builtin_memcpy(&u, &v, sizeof v);
    u = qs_emu_shfl(u, src);
    T r;
    __builtin_memcpy(&r, &u, sizeof r);
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src)
{
    return qs_emu_shfl_t(v, src & 31);
}
template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta)
{
    int lane = (int)(threadIdx.x & 31);
    int src = lane + (int)delta;
    T r = qs_emu_shfl_t(v, src < 32 ? src : lane); /* beyond the warp: the lane keeps its value */
    return r;
}
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int m)
{
    return qs_emu_shfl_t(v, (int)(threadIdx.x & 31) ^ m);
}
static inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v)
{
    unsigned long long old = *p; /* fibers interleave only at barriers: no race */
    if (v < old) *p = v;
    return old;
}

/* ---- the runtime API ----------------------------------------------------------------- */

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNotReady = 600,
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
    cudaMemoryTypeManaged = 3,
} cudaMemoryType;

struct cudaPointerAttributes {
    cudaMemoryType type;
    int device;
    void *devicePointer, *hostPointer;
};

struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount;
};

typedef enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 } cudaDeviceAttr;
typedef enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;
typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_64F = 1 } cudaDataType;

typedef struct qs_emu_stream *cudaStream_t;
typedef struct qs_emu_event *cudaEvent_t;
#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02

/* Emulator extension: work that completes asynchronously on a stream (the
 * emulated NCCL's MPI requests). An event recorded on the stream takes it
 * over: cudaEventQuery tests it, cudaEventSynchronize waits for it,
 * destroying the event (or the stream) drops what did not complete. */
typedef struct qs_emu_async {
    int (*test)(void *arg); /* 1 when complete */
    void (*wait)(void *arg);
    void (*drop)(void *arg); /* frees arg; cancels first when not complete */
    void *arg;
} qs_emu_async;
void qs_emu_stream_add_async(cudaStream_t s, qs_emu_async a);
/* Whether [p, p + bytes) is emulated device memory. */
bool qs_emu_is_device(const void *p, size_t bytes);

const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k, cudaStream_t s = 0);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t s = 0);
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s = 0);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
template <typename F> static inline cudaError_t cudaFuncSetAttribute(F *f, cudaFuncAttribute a, int v)
{
    return v <= 227 * 1024 ? cudaSuccess : cudaErrorInvalidValue;
}

#endif
