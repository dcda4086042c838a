/* gptq_pack.h — the GPTQ checkpoint's integer packing.
 *
 * GPTQ checkpoints (AutoGPTQ / GPTQModel / vLLM / transformers) pack b-bit
 * integers into int32 words as one continuous little-endian bit stream:
 * value k of a stream occupies bits [k·b, k·b + b) counting from the least
 * significant bit of word 0. For b = 2, 4, 8 that is "32/b values per word,
 * LSB first"; for b = 3 values straddle words (10⅔ per word), which is the
 * layout AutoGPTQ's 3-bit pack loop produces.
 *
 *   qweight [in·b/32, out]: for each output column o the stream runs along the
 *                           input dimension i (q[i, o]).
 *   qzeros  [groups, out·b/32]: for each group g the stream runs along the
 *                           output dimension; v1 ("gptq") stores zero − 1,
 *                           v2 ("gptq_v2") stores zero.
 */
#ifndef QS_GPTQ_PACK_H
#define QS_GPTQ_PACK_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) calls these C functions */
#endif

/* codes: [out, in] row-major, values < 2^bits. qweight: [in·bits/32, out].
 * Requires in·bits % 32 == 0. */
void qs_gptq_pack_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits, int32_t *qweight);
void qs_gptq_unpack_qweight(const int32_t *qweight, int64_t out, int64_t in, int bits, uint8_t *codes);

/* zeros: [groups, out] integer zero-points. qzeros: [groups, out·bits/32].
 * v1: stores zero − 1 (a zero-point of 0 cannot be stored: returns
 * QS_ERR_INPUT naming the group and column; callers keep zeros ≥ 1 for v1). */
qs_status qs_gptq_pack_qzeros(const int32_t *zeros, int64_t groups, int64_t out, int bits, bool v1, int32_t *qzeros,
                              qs_error *err);
void qs_gptq_unpack_qzeros(const int32_t *qzeros, int64_t groups, int64_t out, int bits, bool v1, int32_t *zeros);

#ifdef __cplusplus
}
#endif

#endif
