/* module.c — the entry point of libqshard_cuda.so: the CUDA backend's device
 * calls and NCCL (kernels/nccl.h) as one table (kernels/cuda_module.h), the
 * module's only exported symbol (kernels/cuda/module.map). */
#include "kernels/cuda_module.h"

static const qs_cuda_module module = {
    .abi = QS_CUDA_MODULE_ABI,
    .device_count = qs_cuda_device_count,
    .device_info = qs_cuda_device_info,
    .backend_init = qs_backend_cuda_init,
    .backend_free = qs_backend_cuda_free,
    .nccl_get_id = qs_nccl_get_id,
    .nccl_init = qs_nccl_init,
    .nccl_send = qs_nccl_send,
    .nccl_recv = qs_nccl_recv,
    .nccl_test = qs_nccl_test,
    .nccl_wait = qs_nccl_wait,
    .nccl_allreduce_sum = qs_nccl_allreduce_sum,
    .nccl_abort = qs_nccl_abort,
    .nccl_op_free = qs_nccl_op_free,
    .nccl_free = qs_nccl_free,
};

const qs_cuda_module *qs_cuda_module_v1(void);
const qs_cuda_module *qs_cuda_module_v1(void) { return &module; }
