/* cuda_module.h — what the CUDA backend's module (libqshard_cuda.so) gives
 * the program that loads it (kernels/cuda_loader.c).
 *
 * cuBLAS and cuSOLVER cost every process that links them ~250 MB of memory
 * and up to a second at start (their relocations), GPU or not. So qshard
 * does not link them: the backend is a module, loaded with dlopen the first
 * time a command asks for a GPU (`--device cuda|auto`), and this table is
 * all it exports (qs_cuda_module_v1). The gpu tests and the benchmark link
 * the backend directly (kernels/cuda/, qs_kernels_cuda).
 */
#ifndef QS_CUDA_MODULE_H
#define QS_CUDA_MODULE_H

#include <stddef.h>

#include "kernels/device.h"
#include "kernels/nccl.h"

#define QS_CUDA_MODULE_ABI 2
#define QS_CUDA_MODULE_FILE "libqshard_cuda.so"
#define QS_CUDA_MODULE_SYMBOL "qs_cuda_module_v1"

typedef struct qs_cuda_module {
    int abi; /* QS_CUDA_MODULE_ABI */
    int (*device_count)(char *why, size_t why_cap);
    qs_status (*device_info)(int index, qs_device_info *out, qs_error *err);
    qs_status (*backend_init)(qs_backend_i *be, int index, const qs_cuda_opts *o, qs_error *err);
    void (*backend_free)(qs_backend_i *be);
    /* kernels/nccl.h (NULL in a module without NCCL: the emulator's) */
    qs_status (*nccl_get_id)(qs_nccl_id *id, qs_error *err);
    qs_status (*nccl_init)(qs_nccl **out, const qs_nccl_id *id, int rank, int size, int device, double timeout_s,
                           qs_error *err);
    qs_status (*nccl_send)(qs_nccl *c, const void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err);
    qs_status (*nccl_recv)(qs_nccl *c, void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err);
    qs_status (*nccl_test)(qs_nccl *c, qs_nccl_op *op, int *done, qs_error *err);
    qs_status (*nccl_wait)(qs_nccl *c, qs_nccl_op *op, double timeout_s, qs_error *err);
    qs_status (*nccl_allreduce_sum)(qs_nccl *c, void *buf, size_t n, bool f64, double timeout_s, qs_error *err);
    void (*nccl_abort)(qs_nccl *c);
    void (*nccl_op_free)(qs_nccl_op *op);
    void (*nccl_free)(qs_nccl *c);
} qs_cuda_module;

typedef const qs_cuda_module *(*qs_cuda_module_fn)(void);

#endif
