/* cuda_stub.c — the CUDA entry points of kernels/device.h in a build without
 * CUDA (QS_CUDA=OFF, or AUTO where no nvcc was found): there is no device,
 * and every request for one says why. */
#include <stdio.h>
#include <string.h>

#include "kernels/device.h"

static const char no_cuda[] = "this qshard was built without CUDA: configure with -DQS_CUDA=ON where nvcc is installed";

int qs_cuda_device_count(char *why, size_t why_cap)
{
    if (why && why_cap) snprintf(why, why_cap, "%s", no_cuda);
    return 0;
}

qs_status qs_cuda_device_info(int index, qs_device_info *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    return qs_error_set(err, QS_ERR_UNSUPPORTED, "cuda:%d: %s", index, no_cuda);
}

qs_status qs_backend_cuda_init(qs_backend_i *be, int index, const qs_cuda_opts *o, qs_error *err)
{
    memset(be, 0, sizeof *be);
    return qs_error_set(err, QS_ERR_UNSUPPORTED, "cuda:%d: %s", index, no_cuda);
}

void qs_backend_cuda_free(qs_backend_i *be) { memset(be, 0, sizeof *be); }
