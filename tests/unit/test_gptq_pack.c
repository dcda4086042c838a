/* test_gptq_pack.c — packing against the pack loops of the GPTQ checkpoint
 * convention, transcribed here literally: for 2/4/8 bits, 32/b values per
 * int32, LSB first; for 3 bits the three-word pattern with values 10 and 21
 * split across words. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gptq_pack.h"

/* intweight is [in, out] (the transposed codes), qweight [in*bits/32, out]. */
static void reference_pack(const uint32_t *intweight, int in, int out, int bits, uint32_t *qweight)
{
    memset(qweight, 0, sizeof(uint32_t) * (size_t)(in * bits / 32 * out));
    for (int o = 0; o < out; o++) {
        int i = 0, row = 0;
#define IW(j) intweight[(j) * out + o]
#define QW(r) qweight[(r) * out + o]
        while (row < in * bits / 32) {
            if (bits == 2 || bits == 4 || bits == 8) {
                for (int j = i; j < i + 32 / bits; j++) QW(row) |= IW(j) << (bits * (j - i));
                i += 32 / bits;
                row += 1;
            } else { /* bits == 3 */
                for (int j = i; j < i + 10; j++) QW(row) |= IW(j) << (3 * (j - i));
                i += 10;
                QW(row) |= IW(i) << 30;
                row += 1;
                QW(row) |= (IW(i) >> 2) & 1;
                i += 1;
                for (int j = i; j < i + 10; j++) QW(row) |= IW(j) << (3 * (j - i) + 1);
                i += 10;
                QW(row) |= IW(i) << 31;
                row += 1;
                QW(row) |= (IW(i) >> 1) & 0x3;
                i += 1;
                for (int j = i; j < i + 10; j++) QW(row) |= IW(j) << (3 * (j - i) + 2);
                i += 10;
                row += 1;
            }
        }
#undef IW
#undef QW
    }
}

static void test_qweight_matches_reference(void **state)
{
    (void)state;
    /* in = 96, and widths whose last 32-value chunk is short (in·bits is a
     * multiple of 32 but in is not): the fuzzer found the packers dropped
     * those columns (issue 15) */
    const int bitss[] = {2, 3, 4, 8, 2, 4, 8, 8};
    const int ins[] = {96, 96, 96, 96, 48, 40, 36, 4};
    srand(3);
    for (int bi = 0; bi < 8; bi++) {
        int bits = bitss[bi], in = ins[bi], out = 5;
        uint8_t *codes = malloc((size_t)(in * out)), *back = malloc((size_t)(in * out));
        uint32_t *iw = malloc(sizeof(uint32_t) * (size_t)(in * out));
        uint32_t *ref = malloc(sizeof(uint32_t) * (size_t)(in * bits / 32 * out));
        int32_t *got = malloc(sizeof(int32_t) * (size_t)(in * bits / 32 * out));
        for (int o = 0; o < out; o++)
            for (int i = 0; i < in; i++) {
                codes[o * in + i] = (uint8_t)(rand() % (1 << bits));
                iw[i * out + o] = codes[o * in + i];
            }
        reference_pack(iw, in, out, bits, ref);
        qs_gptq_pack_qweight(codes, out, in, bits, got);
        assert_memory_equal(ref, got, sizeof(uint32_t) * (size_t)(in * bits / 32 * out));
        qs_gptq_unpack_qweight(got, out, in, bits, back);
        assert_memory_equal(codes, back, (size_t)(in * out));
        free(codes), free(back), free(iw), free(ref), free(got);
    }
}

static void test_qzeros(void **state)
{
    (void)state;
    qs_error err;
    enum { G = 3, OUT = 64 };
    int32_t zeros[G * OUT], back[G * OUT], packed[G * OUT];
    for (int bits = 2; bits <= 8; bits++) {
        if (bits > 4 && bits < 8) continue;
        for (int i = 0; i < G * OUT; i++) zeros[i] = 1 + (i * 7) % ((1 << bits) - 1); /* 1..maxq */
        for (int v1 = 0; v1 <= 1; v1++) {
            assert_int_equal(qs_gptq_pack_qzeros(zeros, G, OUT, bits, v1, packed, &err), QS_OK);
            qs_gptq_unpack_qzeros(packed, G, OUT, bits, v1, back);
            assert_memory_equal(zeros, back, sizeof zeros);
        }
        /* 4-bit v1, first word: stored values zero-1 in nibbles, LSB first */
        if (bits == 4) {
            assert_int_equal(qs_gptq_pack_qzeros(zeros, G, OUT, 4, true, packed, &err), QS_OK);
            uint32_t w = 0;
            for (int k = 0; k < 8; k++) w |= (uint32_t)(zeros[k] - 1) << (4 * k);
            assert_int_equal((uint32_t)packed[0], w);
        }
    }
    /* the v1 trap: a zero-point of 0 is not storable in v1, fine in v2 */
    for (int i = 0; i < G * OUT; i++) zeros[i] = 1 + i % 15;
    zeros[5] = 0;
    assert_int_equal(qs_gptq_pack_qzeros(zeros, G, OUT, 4, true, packed, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "gptq_v2"));
    assert_int_equal(qs_gptq_pack_qzeros(zeros, G, OUT, 4, false, packed, &err), QS_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_qweight_matches_reference), cmocka_unit_test(test_qzeros)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
