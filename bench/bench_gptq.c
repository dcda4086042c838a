/* bench_gptq.c — GPTQ and Hessian accumulation against the machine's sgemm.
 *
 *   bench_gptq [rows cols samples]     (default 4096 4096 8192)
 *
 * A [rows, cols] layer, 4-bit, group 128, act-order, H from `samples` random
 * inputs (16 shared latent factors + noise, a few outlier channels). Prints
 * the times, GFLOP/s and two ratios, all measured in this run:
 *
 *   GPTQ time / (2·rows·cols² ÷ sgemm rate)       target <= 1.5
 *   Hessian GFLOP/s / sgemm GFLOP/s               target >= 0.8
 *
 * Flop conventions: sgemm m·n·k multiply-adds = 2·m·n·k flops; the Hessian's
 * syrk computes one triangle of XᵀX, which we count as n²·k flops (the
 * n(n+1)/2·k multiply-adds it does, ×2) — the useful work, not the work a
 * full GEMM would do. GPTQ's trailing updates are counted as the GEMMs they
 * are (2·rows·count·(cols - i2) per block).
 *
 * REPS rounds of the three, back to back; each round's ratios compare runs
 * that saw the same machine (it may be shared), and the median round's
 * ratios are checked against the targets.
 *
 * Run with OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set to the core count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/hessian.h"
#include "kernels/quant.h"
#include "kernels/tensor.h"

#define REPS 3

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x243F6A8885A308D3ull;
static float nrand(void)
{
    double u, v;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    u = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    v = (double)(rng >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static float *alloc_f(int64_t n)
{
    float *p = qs_malloc((size_t)n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_gptq: out of memory (%lld floats)\n", (long long)n);
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    int64_t rows = argc > 1 ? atoll(argv[1]) : 4096;
    int64_t cols = argc > 2 ? atoll(argv[2]) : 4096;
    int64_t samples = argc > 3 ? atoll(argv[3]) : 8192;
    if (rows <= 0 || cols <= 0 || samples <= 0 || cols % 128 != 0) {
        fprintf(stderr, "usage: bench_gptq [rows cols samples]  (cols a multiple of 128)\n");
        return 2;
    }
    const qs_backend_i *be = qs_backend_cpu();
    printf("bench_gptq: W [%lld,%lld], %lld samples, 4-bit g128 act-order, %d BLAS threads\n", (long long)rows,
           (long long)cols, (long long)samples, be->threads(be->ctx));

    /* Inputs: 16 latent factors + noise, outlier channels ×20. */
    enum { K = 16 };
    float *x = alloc_f(samples * cols), *z = alloc_f(samples * K), *mix = alloc_f(K * cols);
    for (int64_t i = 0; i < samples * K; i++) z[i] = nrand();
    for (int64_t i = 0; i < K * cols; i++) mix[i] = nrand();
    for (int64_t i = 0; i < samples * cols; i++) x[i] = 0.5f * nrand();
    be->sgemm(be->ctx, false, false, samples, cols, K, 1.0f, z, K, mix, cols, 1.0f, x, cols);
    for (int64_t s = 0; s < samples; s++)
        for (int64_t j = 7; j < cols; j += 397) x[s * cols + j] *= 20.0f;
    qs_free(z);
    qs_free(mix);
    /* The sgemm operands: a cols³ GEMM (4096³ by default). */
    int64_t g = cols;
    float *a = alloc_f(g * g), *b = alloc_f(g * g), *c = alloc_f(g * g);
    for (int64_t i = 0; i < g * g; i++) a[i] = nrand(), b[i] = nrand();
    float *h0 = alloc_f(cols * cols), *h = alloc_f(cols * cols), *w = alloc_f(rows * cols);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = 0.02f * nrand();
    be->sgemm(be->ctx, false, false, 512, 512, 512, 1.0f, a, g, b, g, 0.0f, c, g); /* warm-up */

    qs_error err = {0};
    qs_hessian hs;
    qs_quant_opts o;
    qs_quant_opts_default(&o);
    o.bits = 4;
    o.group_size = 128;
    o.act_order = true;
    o.name = "bench";
    qs_quant_result res;
    if (qs_hessian_init(&hs, cols, false, &err) != QS_OK || qs_quant_result_init(&res, rows, cols, &o, &err) != QS_OK) {
        fprintf(stderr, "bench_gptq: %s\n", err.msg);
        return 1;
    }
    /* Rounds of sgemm → Hessian → GPTQ back to back, so each round's ratios
     * compare runs that saw the same machine; the median round decides. */
    double r_gptq[REPS], r_hess[REPS];
    for (int rep = 0; rep < REPS; rep++) {
        double t = now_s();
        be->sgemm(be->ctx, false, false, g, g, g, 1.0f, a, g, b, g, 0.0f, c, g);
        double t_gemm = now_s() - t;
        double gemm_rate = 2.0 * (double)g * (double)g * (double)g / t_gemm / 1e9;

        /* Hessian accumulation in chunks of 2048 samples. */
        qs_hessian_reset(&hs);
        t = now_s();
        for (int64_t r0 = 0; r0 < samples; r0 += 2048) {
            int64_t m = samples - r0 < 2048 ? samples - r0 : 2048;
            qs_hessian_add(&hs, be, x + r0 * cols, m, cols, &err);
        }
        double t_h = now_s() - t;
        double h_rate = (double)cols * (double)cols * (double)samples / t_h / 1e9;

        qs_hessian_get_f32(&hs, h0);
        memcpy(h, h0, (size_t)(cols * cols) * sizeof(float)); /* GPTQ consumes its H */
        if (qs_quant_gptq(be, w, rows, cols, h, &o, &res, &err) != QS_OK) {
            fprintf(stderr, "bench_gptq: %s\n", err.msg);
            return 1;
        }
        double upd_rate = res.update_flops / res.seconds_update / 1e9;
        double ideal = 2.0 * (double)rows * (double)cols * (double)cols / (gemm_rate * 1e9);
        r_gptq[rep] = res.seconds / ideal;
        r_hess[rep] = h_rate / gemm_rate;
        printf("round %d:\n", rep + 1);
        printf("  sgemm %lld^3: %.3f s, %.1f GFLOP/s\n", (long long)g, t_gemm, gemm_rate);
        printf("  hessian: %lld samples in %.3f s, %.1f GFLOP/s (n^2*k convention)\n", (long long)samples, t_h,
               h_rate);
        printf("  gptq: %.3f s (factor %.3f s, sweeps %.3f s, trailing GEMMs %.3f s at %.1f GFLOP/s, other %.3f s)\n",
               res.seconds, res.seconds_factor, res.seconds_sweep, res.seconds_update, upd_rate,
               res.seconds - res.seconds_factor - res.seconds_sweep - res.seconds_update);
        printf("  gptq_time / (2*rows*cols^2 / sgemm_rate) = %.3f / %.3f = %.2f;  hessian_rate / sgemm_rate = %.2f\n",
               res.seconds, ideal, r_gptq[rep], r_hess[rep]);
    }
    double mg = median(r_gptq, REPS), mh = median(r_hess, REPS);
    printf("median ratio gptq_time / (2*rows*cols^2 / sgemm_rate) = %.2f  (target <= 1.5) %s\n", mg,
           mg <= 1.5 ? "MET" : "MISSED");
    printf("median ratio hessian_rate / sgemm_rate = %.2f  (target >= 0.8) %s\n", mh, mh >= 0.8 ? "MET" : "MISSED");
    qs_hessian_free(&hs);
    qs_quant_result_free(&res);
    qs_free(x);
    qs_free(a);
    qs_free(b);
    qs_free(c);
    qs_free(h0);
    qs_free(h);
    qs_free(w);
    return 0;
}
