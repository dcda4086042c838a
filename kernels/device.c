/* device.c — `--device` values, the choice of a device for a rank, and the
 * memory fit check: the parts of kernels/device.h that need no GPU. */
#include "kernels/device.h"

#include <stdio.h>
#include <string.h>

qs_status qs_device_parse(const char *s, const char *what, qs_device_kind *out, qs_error *err)
{
    if (s && !strcmp(s, "cpu")) *out = QS_DEVICE_CPU;
    else if (s && !strcmp(s, "cuda")) *out = QS_DEVICE_CUDA;
    else if (s && !strcmp(s, "auto")) *out = QS_DEVICE_AUTO;
    else return qs_error_set(err, QS_ERR_INPUT, "%s: expected cpu, cuda or auto, got '%s'", what, s ? s : "");
    return QS_OK;
}

const char *qs_device_kind_name(qs_device_kind k)
{
    switch (k) {
    case QS_DEVICE_CPU: return "cpu";
    case QS_DEVICE_CUDA: return "cuda";
    case QS_DEVICE_AUTO: return "auto";
    }
    return "?";
}

qs_status qs_device_pick(qs_device_kind requested, int local_rank, int local_size, int n_cuda, const char *why,
                         qs_device_kind *kind, int *index, qs_error *err)
{
    *kind = QS_DEVICE_CPU;
    *index = -1;
    if (requested == QS_DEVICE_CPU) return QS_OK;
    if (local_size < 1 || local_rank < 0 || local_rank >= local_size)
        return qs_error_set(err, QS_ERR_INTERNAL, "device: node-local rank %d of %d", local_rank, local_size);
    if (n_cuda <= 0) {
        if (requested == QS_DEVICE_AUTO) return QS_OK;
        return qs_error_set(err, QS_ERR_INPUT, "--device cuda: no CUDA device was found (%s)",
                            why && *why ? why : "no reason given");
    }
    if (local_size > n_cuda) {
        if (requested == QS_DEVICE_AUTO) return QS_OK;
        return qs_error_set(err, QS_ERR_INPUT,
                            "--device cuda: %d ranks on this node but %d CUDA device%s: one rank per GPU "
                            "(start at most %d ranks per node)",
                            local_size, n_cuda, n_cuda == 1 ? "" : "s", n_cuda);
    }
    *kind = QS_DEVICE_CUDA;
    *index = local_rank;
    return QS_OK;
}

static const char *fmt_gib(uint64_t b, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.2f GiB", (double)b / (double)(1ull << 30));
    return buf;
}

qs_status qs_device_fit_check(uint64_t need, uint64_t free_bytes, uint64_t total_bytes, const char *device,
                              const char *what, qs_error *err)
{
    uint64_t reserve = total_bytes / 20;
    if (reserve < (256ull << 20)) reserve = 256ull << 20;
    uint64_t usable = free_bytes > reserve ? free_bytes - reserve : 0;
    if (need <= usable) return QS_OK;
    char a[32], b[32], c[32], d[32];
    return qs_error_set(err, QS_ERR_INPUT,
                        "%s: needs %s of device memory but %s has %s free of %s (%s kept for cuBLAS/cuSOLVER "
                        "workspaces): use more ranks (qshard plan --gpu-mem), fewer calibration rows or a "
                        "smaller --micro-batch",
                        what, fmt_gib(need, a, sizeof a), device, fmt_gib(free_bytes, b, sizeof b),
                        fmt_gib(total_bytes, c, sizeof c), fmt_gib(reserve, d, sizeof d));
}
