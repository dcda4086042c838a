/* bench_gemm.c — the machine's f32 and bf16 GEMM rates on a block forward's
 * shapes, through the CPU backend (OpenBLAS sgemm; oneDNN bf16 or its
 * emulation), with the threads the process runs with.
 *
 *   bench_gemm [M N K]   prints one line:
 *     "gemm_f32_gflops <r> gemm_bf16_gflops <r> threads <t> m <M> n <N> k <K> bf16_kernel <name>"
 *
 * Default shape: one micro-batch of 8 × 256 tokens through an MLP up
 * projection (M = 2048, N = 2816, K = 1024), y = x·Wᵀ as the block runs it.
 * Best of 10 after a warm-up. bench/e2e.sh turns the rates into the job's
 * FLOP floor. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/cpu/threads.h"
#include "kernels/half.h"
#include "kernels/tensor.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int64_t m = 2048, n = 2816, k = 1024;
    if (argc == 4) m = atoll(argv[1]), n = atoll(argv[2]), k = atoll(argv[3]);
    if (m < 1 || n < 1 || k < 1) return 2;
    qs_cpu_threads th;
    qs_cpu_threads_init(&th);
    const qs_backend_i *be = qs_backend_cpu();
    float *a = qs_malloc(sizeof(float) * (size_t)(m * k)), *b = qs_malloc(sizeof(float) * (size_t)(n * k));
    float *c = qs_malloc(sizeof(float) * (size_t)(m * n));
    uint16_t *ab = qs_malloc(sizeof(uint16_t) * (size_t)(m * k)), *bb = qs_malloc(sizeof(uint16_t) * (size_t)(n * k));
    if (!a || !b || !c || !ab || !bb) return 1;
    for (int64_t i = 0; i < m * k; i++) ab[i] = qs_f32_to_bf16(a[i] = (float)(i % 13) * 0.01f - 0.06f);
    for (int64_t i = 0; i < n * k; i++) bb[i] = qs_f32_to_bf16(b[i] = (float)(i % 7) * 0.02f - 0.06f);
    double flops = 2.0 * (double)m * (double)n * (double)k, best32 = 1e30, best16 = 1e30;
    qs_error err;
    for (int r = 0; r < 11; r++) {
        double t0 = now();
        be->sgemm(be->ctx, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        double t = now() - t0;
        if (r && t < best32) best32 = t;
        t0 = now();
        if (be->gemm_bf16(be->ctx, false, true, m, n, k, 1.0f, ab, k, bb, k, 0.0f, c, n, &err) != QS_OK) {
            fprintf(stderr, "bench_gemm: %s\n", err.msg);
            return 1;
        }
        t = now() - t0;
        if (r && t < best16) best16 = t;
    }
    printf("gemm_f32_gflops %.1f gemm_bf16_gflops %.1f threads %d m %lld n %lld k %lld bf16_kernel %s\n",
           flops / best32 / 1e9, flops / best16 / 1e9, th.threads, (long long)m, (long long)n, (long long)k,
           be->bf16_kernel(be->ctx));
    qs_free(a), qs_free(b), qs_free(c), qs_free(ab), qs_free(bb);
    return 0;
}
