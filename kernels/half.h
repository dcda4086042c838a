/* half.h — IEEE fp16 and bfloat16 <-> f32, shared by the CPU and CUDA backends.
 *
 * QS_HD marks functions that nvcc compiles for host and device; the CPU tests
 * exercise exactly the code the GPU kernels run. Rounding is round-to-nearest-
 * even in both directions (what PyTorch and NumPy do), NaN stays NaN.
 */
#ifndef QS_HALF_H
#define QS_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define QS_HD __host__ __device__ __forceinline__
#else
#define QS_HD static inline
#endif

QS_HD uint32_t qs_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
QS_HD float qs_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

QS_HD float qs_bf16_to_f32(uint16_t h) { return qs_bits_f32((uint32_t)h << 16); }

QS_HD uint16_t qs_f32_to_bf16(float f)
{
    uint32_t u = qs_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

QS_HD float qs_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        if (man == 0) return qs_bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return qs_bits_f32(sign | 0x7f800000u | (man << 13));
    return qs_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

QS_HD uint16_t qs_f32_to_f16(float f)
{
    uint32_t u = qs_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);      /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);     /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                       /* below 2^-14: subnormal or 0 */
        if (a < 0x33000000u) return sign;                        /* < 2^-25 rounds to 0 */
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;                               /* 14..24 */
        uint32_t half_m = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (half_m & 1u))) half_m++;
        return (uint16_t)(sign | half_m);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;    /* rebias 127->15, round */
    return (uint16_t)(sign | (r >> 13));
}

#endif
