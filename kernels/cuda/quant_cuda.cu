/* quant_cuda.cu — RTN, dequantization and the GPTQ checkpoint's packing on
 * the GPU. Each thread runs the CPU's per-element code (the QS_HD grid of
 * kernels/quant_grid.h, the bit stream of kernels/gptq_pack_bits.h), so the
 * results equal kernels/cpu/rtn.c and kernels/gptq_pack.c bit for bit. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/quant_cuda.h"
#include "kernels/gptq_pack_bits.h"
#include "kernels/quant_grid.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ================================================================== RTN == */

/* One thread per (group, row): find_params on W as given, then its codes. */
__global__ void k_rtn(const float *w, int64_t rows, int64_t cols, int64_t gs, int64_t groups, qs_quant_grid grid,
                      uint8_t *codes, float *q, float *scales, int32_t *zeros)
{
    QS_CU_FOR(i, rows * groups)
    {
        const int64_t g = i / rows, r = i % rows;
        const float *wr = w + r * cols;
        float scale, zero;
        qs_quant_find_params(wr + g * gs, gs, 1, &grid, &scale, &zero);
        scales[g * rows + r] = scale;
        zeros[g * rows + r] = (int32_t)zero;
        for (int64_t c = g * gs; c < (g + 1) * gs; c++) {
            int code = qs_quant_code(wr[c], scale, zero, grid.maxq);
            codes[r * cols + c] = (uint8_t)code;
            q[r * cols + c] = qs_quant_dequant(code, scale, zero);
        }
    }
}

qs_status qs_cuda_rtn_run(void *ctx, const float *w, int64_t rows, int64_t cols, const qs_quant_opts *o,
                          qs_quant_result *res, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    QS_TRY(qs_quant_opts_check(o, rows, cols, err));
    if (res->rows != rows || res->cols != cols || res->groups != qs_quant_groups(o, cols))
        return qs_error_set(err, QS_ERR_INTERNAL, "%s: rtn: result sized for [%lld,%lld], weight is [%lld,%lld]",
                            cx->name, (long long)res->rows, (long long)res->cols, (long long)rows, (long long)cols);
    double t0 = now_s();
    QS_CU_CHECK(cx, err, cudaSetDevice(cx->device));
    const qs_quant_grid grid = qs_quant_opts_grid(o);
    const int64_t gs = o->group_size > 0 ? o->group_size : cols, groups = res->groups;
    const size_t n = (size_t)rows * (size_t)cols, ng = (size_t)groups * (size_t)rows;
    qs_dbuf<float> d_w, d_q, d_scales;
    qs_dbuf<uint8_t> d_codes;
    qs_dbuf<int32_t> d_zeros;
    QS_TRY(d_w.alloc(cx, n, "W", err));
    QS_TRY(d_q.alloc(cx, n, "Q", err));
    QS_TRY(d_codes.alloc(cx, n, "the codes", err));
    QS_TRY(d_scales.alloc(cx, ng, "the scales", err));
    QS_TRY(d_zeros.alloc(cx, ng, "the zeros", err));
    QS_TRY(qs_cuda_copy(cx, d_w.p, w, n * sizeof(float), err));
    QS_CU_LAUNCH(cx, err, k_rtn, qs_cu_blocks(rows * groups), QS_CU_THREADS, 0, d_w.p, rows, cols, gs, groups, grid,
                 d_codes.p, d_q.p, d_scales.p, d_zeros.p);
    QS_TRY(qs_cuda_copy(cx, res->codes, d_codes.p, n, err));
    QS_TRY(qs_cuda_copy(cx, res->q, d_q.p, n * sizeof(float), err));
    QS_TRY(qs_cuda_copy(cx, res->scales, d_scales.p, ng * sizeof(float), err));
    QS_TRY(qs_cuda_copy(cx, res->zeros, d_zeros.p, ng * sizeof(int32_t), err));
    for (int64_t c = 0; c < cols; c++) res->g_idx[c] = (int32_t)(c / gs);
    res->est_loss = 0.0;
    res->damp_abs = 0.0;
    res->dead_columns = 0;
    res->seconds = now_s() - t0;
    return QS_OK;
}

/* ======================================================== dequantization == */

__global__ void k_dequantize(const uint8_t *codes, const float *scales, const int32_t *zeros, const int32_t *g_idx,
                             int64_t rows, int64_t cols, float *q)
{
    QS_CU_FOR(i, rows * cols)
    {
        const int64_t r = i / cols, c = i % cols;
        const size_t g = (size_t)g_idx[c] * (size_t)rows + (size_t)r;
        q[i] = qs_quant_dequant(codes[i], scales[g], (float)zeros[g]);
    }
}

extern "C" qs_status qs_cuda_dequantize(const qs_backend_i *be, const uint8_t *codes, const float *scales,
                                        const int32_t *zeros, const int32_t *g_idx, int64_t rows, int64_t cols,
                                        float *q, qs_error *err)
{
    qs_cuda_ctx *cx = qs_cuda_ctx_of(be, err);
    if (!cx) return QS_ERR_INTERNAL;
    QS_CU_LAUNCH(cx, err, k_dequantize, qs_cu_blocks(rows * cols), QS_CU_THREADS, 0, codes, scales, zeros, g_idx,
                 rows, cols, q);
    return QS_OK;
}

/* ============================================================== packing == */

/* One thread per (32-value chunk c, output column o): the chunk's `bits` words. */
__global__ void k_pack_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits, int32_t *qweight)
{
    QS_CU_FOR(i, (in / 32) * out)
    {
        const int64_t c = i / out, o = i % out;
        uint32_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = 0; k < 32; k++) qs_pack_put_bits(buf, (int64_t)k * bits, bits, codes[o * in + c * 32 + k]);
        for (int w = 0; w < bits; w++) qweight[(c * bits + w) * out + o] = (int32_t)buf[w];
    }
}

__global__ void k_unpack_qweight(const int32_t *qweight, int64_t out, int64_t in, int bits, uint8_t *codes)
{
    QS_CU_FOR(i, (in / 32) * out)
    {
        const int64_t c = i / out, o = i % out;
        uint32_t buf[8];
        for (int w = 0; w < bits; w++) buf[w] = (uint32_t)qweight[(c * bits + w) * out + o];
        for (int k = 0; k < 32; k++)
            codes[o * in + c * 32 + k] = (uint8_t)qs_pack_get_bits(buf, (int64_t)k * bits, bits);
    }
}

static qs_status check_bits(qs_cuda_ctx *cx, const char *what, int bits, int64_t n, const char *dim, qs_error *err)
{
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return qs_error_set(err, QS_ERR_INPUT, "%s: %s: %d bits, expected 2, 3, 4 or 8", cx->name, what, bits);
    if (n % 32 != 0)
        return qs_error_set(err, QS_ERR_INPUT, "%s: %s: %s = %lld, expected a multiple of 32", cx->name, what, dim,
                            (long long)n);
    return QS_OK;
}

extern "C" qs_status qs_cuda_pack_qweight(const qs_backend_i *be, const uint8_t *codes, int64_t out, int64_t in,
                                          int bits, int32_t *qweight, qs_error *err)
{
    qs_cuda_ctx *cx = qs_cuda_ctx_of(be, err);
    if (!cx) return QS_ERR_INTERNAL;
    QS_TRY(check_bits(cx, "pack qweight", bits, in, "in", err));
    QS_CU_LAUNCH(cx, err, k_pack_qweight, qs_cu_blocks((in / 32) * out), QS_CU_THREADS, 0, codes, out, in, bits,
                 qweight);
    return QS_OK;
}

extern "C" qs_status qs_cuda_unpack_qweight(const qs_backend_i *be, const int32_t *qweight, int64_t out, int64_t in,
                                            int bits, uint8_t *codes, qs_error *err)
{
    qs_cuda_ctx *cx = qs_cuda_ctx_of(be, err);
    if (!cx) return QS_ERR_INTERNAL;
    QS_TRY(check_bits(cx, "unpack qweight", bits, in, "in", err));
    QS_CU_LAUNCH(cx, err, k_unpack_qweight, qs_cu_blocks((in / 32) * out), QS_CU_THREADS, 0, qweight, out, in, bits,
                 codes);
    return QS_OK;
}

/* One thread per (group g, 32-column chunk c): the chunk's `bits` words of
 * row g. A zero-point that cannot be stored marks its index in *bad (the
 * smallest one wins, so the message names the first in row-major order). */
__global__ void k_pack_qzeros(const int32_t *zeros, int64_t groups, int64_t out, int bits, int v1, int32_t *qzeros,
                              unsigned long long *bad)
{
    const int64_t chunks = out / 32, words = out * bits / 32;
    const int32_t maxq = (1 << bits) - 1;
    QS_CU_FOR(i, groups * chunks)
    {
        const int64_t g = i / chunks, c = i % chunks;
        uint32_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = 0; k < 32; k++) {
            const int64_t o = c * 32 + k;
            const int32_t z = zeros[g * out + o];
            const int32_t stored = v1 ? z - 1 : z;
            if (stored < 0 || stored > maxq) {
                atomicMin(bad, (unsigned long long)(g * out + o));
                continue;
            }
            qs_pack_put_bits(buf, (int64_t)k * bits, bits, (uint32_t)stored);
        }
        for (int w = 0; w < bits; w++) qzeros[g * words + c * bits + w] = (int32_t)buf[w];
    }
}

__global__ void k_unpack_qzeros(const int32_t *qzeros, int64_t groups, int64_t out, int bits, int v1, int32_t *zeros)
{
    const int64_t words = out * bits / 32;
    QS_CU_FOR(i, groups * out)
    {
        const int64_t g = i / out, o = i % out;
        zeros[i] = (int32_t)qs_pack_get_bits((const uint32_t *)qzeros + g * words, o * bits, bits) + (v1 ? 1 : 0);
    }
}

extern "C" qs_status qs_cuda_pack_qzeros(const qs_backend_i *be, const int32_t *zeros, int64_t groups, int64_t out,
                                         int bits, bool v1, int32_t *qzeros, qs_error *err)
{
    qs_cuda_ctx *cx = qs_cuda_ctx_of(be, err);
    if (!cx) return QS_ERR_INTERNAL;
    QS_TRY(check_bits(cx, "pack qzeros", bits, out, "out", err));
    qs_dbuf<unsigned long long> d_bad;
    QS_TRY(d_bad.alloc(cx, 1, "a flag", err));
    QS_CU_CHECK(cx, err, cudaMemsetAsync(d_bad.p, 0xff, sizeof(unsigned long long), cx->stream));
    QS_CU_LAUNCH(cx, err, k_pack_qzeros, qs_cu_blocks(groups * (out / 32)), QS_CU_THREADS, 0, zeros, groups, out, bits,
                 v1 ? 1 : 0, qzeros, d_bad.p);
    unsigned long long bad = 0;
    QS_TRY(qs_cuda_copy(cx, &bad, d_bad.p, sizeof bad, err));
    if (bad != ~0ull) {
        int32_t z = 0;
        QS_TRY(qs_cuda_copy(cx, &z, zeros + bad, sizeof z, err));
        return qs_error_set(err, QS_ERR_INPUT,
                            "zero-point %d (group %lld, column %lld) cannot be stored in %s at %d bits%s", z,
                            (long long)(bad / (unsigned long long)out), (long long)(bad % (unsigned long long)out),
                            v1 ? "gptq v1" : "gptq_v2", bits,
                            v1 ? " (v1 stores zero-1: use --checkpoint-format gptq_v2)" : "");
    }
    return QS_OK;
}

extern "C" qs_status qs_cuda_unpack_qzeros(const qs_backend_i *be, const int32_t *qzeros, int64_t groups, int64_t out,
                                           int bits, bool v1, int32_t *zeros, qs_error *err)
{
    qs_cuda_ctx *cx = qs_cuda_ctx_of(be, err);
    if (!cx) return QS_ERR_INTERNAL;
    QS_TRY(check_bits(cx, "unpack qzeros", bits, out, "out", err));
    QS_CU_LAUNCH(cx, err, k_unpack_qzeros, qs_cu_blocks(groups * out), QS_CU_THREADS, 0, qzeros, groups, out, bits,
                 v1 ? 1 : 0, zeros);
    return QS_OK;
}
