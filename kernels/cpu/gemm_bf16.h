/* gemm_bf16.h — the CPU backend's bf16 GEMM (oneDNN where the CPU has bf16
 * instructions, an f32 emulation elsewhere; see gemm_bf16.c).
 *
 * QS_BF16_GEMM=emulated in the environment forces the emulation (tests
 * compare the two); DNNL_MAX_CPU_ISA=AVX512_CORE makes a bf16 CPU look like
 * one without (oneDNN's own switch), which also turns off the bf16 default.
 */
#ifndef QS_CPU_GEMM_BF16_H
#define QS_CPU_GEMM_BF16_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/status.h"

/* C[m,n] = alpha · op(A) op(B) + beta · C; A, B bf16 bit patterns, C f32. */
qs_status qs_cpu_gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta, float *c,
                           int64_t ldc, qs_error *err);

/* The same through the emulation (f32 sgemm on the widened operands),
 * whatever the CPU has: what CPUs without bf16 instructions run; tests
 * compare the two. */
qs_status qs_cpu_gemm_bf16_emulated(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                                    const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                                    float *c, int64_t ldc, qs_error *err);

/* The CPU has bf16 dot-product or matrix instructions (and the OS enabled them). */
bool qs_cpu_bf16_native(void);

/* "onednn avx512_bf16", "onednn amx-bf16" or "emulated: ...". */
const char *qs_cpu_bf16_kernel(void);

#endif
