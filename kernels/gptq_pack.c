/* gptq_pack.c — b-bit integers to and from GPTQ's int32 bit streams. */
#include "kernels/gptq_pack.h"

#include <string.h>

#include "kernels/gptq_pack_bits.h"

void qs_gptq_pack_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits, int32_t *qweight)
{
    int64_t rows = in * bits / 32;
    memset(qweight, 0, sizeof(int32_t) * (size_t)(rows * out));
    /* The stream for column o runs down the rows of qweight (stride out);
     * pack one 32-value chunk (= `bits` words) at a time through a local
     * buffer. The last chunk may hold fewer values (in need only make
     * in·bits a multiple of 32, e.g. in = 36 at 8 bits): k values fill
     * k·bits/32 whole words. */
    for (int64_t o = 0; o < out; o++) {
        for (int64_t c0 = 0; c0 < in; c0 += 32) {
            int k_n = in - c0 < 32 ? (int)(in - c0) : 32;
            uint32_t buf[8] = {0};
            for (int k = 0; k < k_n; k++) qs_pack_put_bits(buf, (int64_t)k * bits, bits, codes[o * in + c0 + k]);
            for (int w = 0; w < k_n * bits / 32; w++) qweight[(c0 / 32 * bits + w) * out + o] = (int32_t)buf[w];
        }
    }
}

void qs_gptq_unpack_qweight(const int32_t *qweight, int64_t out, int64_t in, int bits, uint8_t *codes)
{
    for (int64_t o = 0; o < out; o++) {
        for (int64_t c0 = 0; c0 < in; c0 += 32) {
            int k_n = in - c0 < 32 ? (int)(in - c0) : 32;
            uint32_t buf[8] = {0};
            for (int w = 0; w < k_n * bits / 32; w++) buf[w] = (uint32_t)qweight[(c0 / 32 * bits + w) * out + o];
            for (int k = 0; k < k_n; k++) codes[o * in + c0 + k] = (uint8_t)qs_pack_get_bits(buf, (int64_t)k * bits, bits);
        }
    }
}

qs_status qs_gptq_pack_qzeros(const int32_t *zeros, int64_t groups, int64_t out, int bits, bool v1, int32_t *qzeros,
                              qs_error *err)
{
    int64_t words = out * bits / 32;
    memset(qzeros, 0, sizeof(int32_t) * (size_t)(groups * words));
    uint32_t maxq = (1u << bits) - 1u;
    for (int64_t g = 0; g < groups; g++) {
        uint32_t *row = (uint32_t *)qzeros + g * words;
        for (int64_t o = 0; o < out; o++) {
            int32_t z = zeros[g * out + o];
            int32_t stored = v1 ? z - 1 : z;
            if (stored < 0 || (uint32_t)stored > maxq)
                return qs_error_set(err, QS_ERR_INPUT,
                                    "zero-point %d (group %lld, column %lld) cannot be stored in %s at %d bits%s", z,
                                    (long long)g, (long long)o, v1 ? "gptq v1" : "gptq_v2", bits,
                                    v1 ? " (v1 stores zero-1: use --checkpoint-format gptq_v2)" : "");
            qs_pack_put_bits(row, o * bits, bits, (uint32_t)stored);
        }
    }
    return QS_OK;
}

void qs_gptq_unpack_qzeros(const int32_t *qzeros, int64_t groups, int64_t out, int bits, bool v1, int32_t *zeros)
{
    int64_t words = out * bits / 32;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t o = 0; o < out; o++)
            zeros[g * out + o] =
                (int32_t)qs_pack_get_bits((const uint32_t *)qzeros + g * words, o * bits, bits) + (v1 ? 1 : 0);
}
