/* quant_cuda.h — the CUDA kernels of quantization that are not in the backend
 * table: dequantization and the GPTQ checkpoint's packing, on device memory.
 * (GPTQ and RTN are be->gptq and be->rtn of a CUDA backend; the Hessian is
 * kernels/hessian.h on a CUDA backend.)
 *
 * Only a CUDA build has these; be must be a CUDA backend (kernels/device.h).
 * Every array is device memory; the layouts and results are those of the
 * CPU functions named, bit for bit (kernels/quant_opts.h, gptq_pack.h).
 */
#ifndef QS_QUANT_CUDA_H
#define QS_QUANT_CUDA_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* qs_quant_dequantize: q[r, c] = scales[g_idx[c], r] * (codes[r, c] - zeros[g_idx[c], r]). */
qs_status qs_cuda_dequantize(const qs_backend_i *be, const uint8_t *codes, const float *scales, const int32_t *zeros,
                             const int32_t *g_idx, int64_t rows, int64_t cols, float *q, qs_error *err);

/* qs_gptq_pack_qweight / qs_gptq_unpack_qweight: codes [out, in], qweight [in·bits/32, out]. */
qs_status qs_cuda_pack_qweight(const qs_backend_i *be, const uint8_t *codes, int64_t out, int64_t in, int bits,
                               int32_t *qweight, qs_error *err);
qs_status qs_cuda_unpack_qweight(const qs_backend_i *be, const int32_t *qweight, int64_t out, int64_t in, int bits,
                                 uint8_t *codes, qs_error *err);

/* qs_gptq_pack_qzeros / qs_gptq_unpack_qzeros: zeros [groups, out], qzeros
 * [groups, out·bits/32]; a zero-point that cannot be stored is QS_ERR_INPUT
 * naming the first such group and column (in row-major order). */
qs_status qs_cuda_pack_qzeros(const qs_backend_i *be, const int32_t *zeros, int64_t groups, int64_t out, int bits,
                              bool v1, int32_t *qzeros, qs_error *err);
qs_status qs_cuda_unpack_qzeros(const qs_backend_i *be, const int32_t *qzeros, int64_t groups, int64_t out, int bits,
                                bool v1, int32_t *zeros, qs_error *err);

#ifdef __cplusplus
}
#endif

#endif
