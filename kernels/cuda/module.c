/* module.c — the entry point of libqshard_cuda.so: the CUDA backend's device
 * calls as one table (kernels/cuda_module.h), the module's only exported
 * symbol (kernels/cuda/module.map). */
#include "kernels/cuda_module.h"

static const qs_cuda_module module = {
    .abi = QS_CUDA_MODULE_ABI,
    .device_count = qs_cuda_device_count,
    .device_info = qs_cuda_device_info,
    .backend_init = qs_backend_cuda_init,
    .backend_free = qs_backend_cuda_free,
};

const qs_cuda_module *qs_cuda_module_v1(void);
const qs_cuda_module *qs_cuda_module_v1(void) { return &module; }
