/* gptq_pack_bits.h — the bit stream of GPTQ's int32 packing, element-wise.
 *
 * Value k of a b-bit stream occupies bits [k·b, k·b + b) counting from the
 * least significant bit of word 0 (kernels/gptq_pack.h has the layouts).
 * QS_HD: the CPU packer (kernels/gptq_pack.c) and the CUDA pack kernels
 * (kernels/cuda/quant_cuda.cu) run these same functions.
 */
#ifndef QS_GPTQ_PACK_BITS_H
#define QS_GPTQ_PACK_BITS_H

#include <stdint.h>

#include "kernels/half.h"

/* Writes `bits` bits of v at stream bit position pos (words zeroed first). */
QS_HD void qs_pack_put_bits(uint32_t *words, int64_t pos, int bits, uint32_t v)
{
    int64_t w = pos >> 5;
    int sh = (int)(pos & 31);
    words[w] |= v << sh;
    if (sh + bits > 32) words[w + 1] |= v >> (32 - sh);
}

QS_HD uint32_t qs_pack_get_bits(const uint32_t *words, int64_t pos, int bits)
{
    int64_t w = pos >> 5;
    int sh = (int)(pos & 31);
    uint64_t two = words[w] >> sh;
    if (sh + bits > 32) two |= (uint64_t)words[w + 1] << (32 - sh);
    return (uint32_t)two & ((1u << bits) - 1u);
}

#endif
