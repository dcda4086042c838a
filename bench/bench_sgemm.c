/* bench_sgemm.c — the machine's measured sgemm rate, the yardstick the other
 * benchmarks and the scheduler's cost model are compared with.
 *
 *   bench_sgemm [N]      prints "sgemm_gflops <rate> threads <t> n <N>"
 *
 * Best of 5 runs of an N×N×N sgemm through the CPU backend (OpenBLAS). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/tensor.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2048;
    if (n < 64) n = 64;
    const qs_backend_i *be = qs_backend_cpu();
    float *a = qs_malloc(sizeof(float) * (size_t)n * (size_t)n);
    float *b = qs_malloc(sizeof(float) * (size_t)n * (size_t)n);
    float *c = qs_malloc(sizeof(float) * (size_t)n * (size_t)n);
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < (size_t)n * (size_t)n; i++) {
        a[i] = (float)(i % 13) * 0.01f;
        b[i] = (float)(i % 7) * 0.02f;
    }
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        be->sgemm(be->ctx, false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = now() - t0;
        if (t < best) best = t;
    }
    printf("sgemm_gflops %.2f threads %d n %d\n", 2.0 * n * (double)n * n / best / 1e9, be->threads(be->ctx), n);
    qs_free(a), qs_free(b), qs_free(c);
    return 0;
}
