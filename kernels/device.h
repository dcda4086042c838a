/* device.h — which device a process computes on: `--device cpu|cuda|auto`,
 * the CUDA devices this machine has, the CUDA backend's table, and whether a
 * block's memory fits on a device.
 *
 * The pure decisions (parse, pick a device for a node-local rank, check that
 * bytes fit) are plain C that the CPU tests exercise. The CUDA part is
 * kernels/cuda/backend_cuda.cu in a CUDA build and kernels/cuda_stub.c in a
 * build without CUDA, where every device query says "built without CUDA".
 * workers/device_select.c adds MPI (the node-local rank) and the plan.
 */
#ifndef QS_DEVICE_H
#define QS_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* implemented in C (device.c, cuda_stub.c) and C++ (backend_cuda.cu) */
#endif

typedef enum qs_device_kind {
    QS_DEVICE_CPU = 0,
    QS_DEVICE_CUDA,
    QS_DEVICE_AUTO, /* CUDA when every rank of the node gets a GPU of its own, else CPU */
} qs_device_kind;

/* "cpu", "cuda", "auto" → kind; anything else is QS_ERR_INPUT naming `what`
 * (the flag or job key) and the value. */
qs_status qs_device_parse(const char *s, const char *what, qs_device_kind *out, qs_error *err);
const char *qs_device_kind_name(qs_device_kind k);

/* ---- the pure decisions ----------------------------------------------------- */

/* The device of a rank that is local_rank of local_size ranks on its node,
 * on a node with n_cuda usable CUDA devices (why: the reason when n_cuda is
 * 0, from qs_cuda_device_count). One GPU per rank:
 *   cuda: device local_rank; QS_ERR_INPUT "no CUDA device was found (why)" when
 *         n_cuda is 0, or when the node has more ranks than GPUs;
 *   auto: the same when it can be done, else the CPU;
 *   cpu:  the CPU.
 * *kind is QS_DEVICE_CPU or QS_DEVICE_CUDA, *index the CUDA device (or -1). */
qs_status qs_device_pick(qs_device_kind requested, int local_rank, int local_size, int n_cuda, const char *why,
                         qs_device_kind *kind, int *index, qs_error *err);

/* Whether `need` bytes fit in `free_bytes` of a device of `total_bytes`
 * (described by `device`, e.g. "cuda:0 NVIDIA H200"), for `what` (e.g. "rank
 * 3: blocks 24..31"). QS_ERR_INPUT with one line saying what needs how much,
 * what is free and what to do. A reserve of 5% of the device (at least
 * 256 MiB) stays free for the CUDA libraries' workspaces. */
qs_status qs_device_fit_check(uint64_t need, uint64_t free_bytes, uint64_t total_bytes, const char *device,
                              const char *what, qs_error *err);

/* ---- CUDA --------------------------------------------------------------------- */

/* Usable CUDA devices here; 0 with the reason in why (a build without CUDA,
 * no driver, no device, CUDA_VISIBLE_DEVICES empty). Never fails. */
int qs_cuda_device_count(char *why, size_t why_cap);

typedef struct qs_device_info {
    int index;
    char name[256];
    int cc_major, cc_minor;  /* compute capability */
    int sm_count;
    uint64_t free_bytes, total_bytes; /* cudaMemGetInfo */
} qs_device_info;

qs_status qs_cuda_device_info(int index, qs_device_info *out, qs_error *err);

typedef struct qs_cuda_opts {
    bool tf32; /* let cuBLAS use TF32 tensor cores for f32 GEMMs (faster, ~1e-3 relative); default off */
} qs_cuda_opts;

/* Fills be with the CUDA backend on device `index` (a stream, cuBLAS and
 * cuSOLVER handles of its own). o may be NULL (defaults). Free with
 * qs_backend_cuda_free. */
qs_status qs_backend_cuda_init(qs_backend_i *be, int index, const qs_cuda_opts *o, qs_error *err);
void qs_backend_cuda_free(qs_backend_i *be);

#ifdef __cplusplus
}
#endif

#endif
