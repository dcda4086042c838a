/* bench_omniquant.c — OmniQuant's training speed on one synthetic llama block,
 * against the machine's sgemm rate measured in the same run.
 *
 *   bench_omniquant [--hidden 1024] [--rows 128] [--seq 512] [--epochs 1] [--bits 3] [--let]
 *
 * A llama block (hidden 1024, 16 heads, SwiGLU 2816) with random weights of
 * the usual 1/sqrt(in) scale, calibration activations [rows, seq, hidden]
 * and their FP block outputs as targets; OmniQuant trains LWC (and LET with
 * --let) for the given epochs of rows steps (batch 1). Prints seconds per
 * epoch, the shares of forward / backward / optimizer, and the achieved
 * GFLOP/s of the step's GEMMs and attention products against the sgemm rate
 * of the trainer's most common GEMM shape and of a 2048³ cube (each the
 * median of 5 runs). Timings on a shared machine are noisy: compare the
 * ratios, which are measured in the same run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/tensor.h"
#include "workers/block.h"
#include "workers/omniquant.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float gauss(void) /* Box–Muller on xorshift64 */
{
    double u[2];
    for (int k = 0; k < 2; k++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        u[k] = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float)(sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of 5 timed sgemms C[m,n] = A[m,k]·B[n,k]ᵀ (the linear layers' form). */
static double sgemm_rate(const qs_backend_i *be, int64_t m, int64_t n, int64_t k)
{
    float *a = qs_malloc(sizeof(float) * (size_t)(m * k)), *b = qs_malloc(sizeof(float) * (size_t)(n * k));
    float *c = qs_malloc(sizeof(float) * (size_t)(m * n));
    for (int64_t i = 0; i < m * k; i++) a[i] = (float)(i % 13) * 0.01f;
    for (int64_t i = 0; i < n * k; i++) b[i] = (float)(i % 7) * 0.02f;
    double t[5];
    be->sgemm(be->ctx, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n); /* warm-up */
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        be->sgemm(be->ctx, false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        t[r] = now() - t0;
    }
    qsort(t, 5, sizeof *t, cmp_d);
    qs_free(a), qs_free(b), qs_free(c);
    return 2.0 * (double)m * (double)n * (double)k / t[2] / 1e9;
}

int main(int argc, char **argv)
{
    int hidden = 1024, bits = 3, epochs = 1;
    int64_t rows = 128, seq = 512;
    bool let = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hidden") && i + 1 < argc) hidden = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) seq = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bits") && i + 1 < argc) bits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--let")) let = true;
        else {
            fprintf(stderr, "usage: bench_omniquant [--hidden D] [--rows N] [--seq L] [--epochs E] [--bits B] [--let]\n");
            return 2;
        }
    }
    const qs_backend_i *be = qs_backend_cpu();
    qs_error err;
    char json[512];
    int ffn = (8 * hidden / 3 + 255) / 256 * 256;
    snprintf(json, sizeof json,
             "{\"model_type\":\"llama\",\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":1,"
             "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"vocab_size\":32000,"
             "\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0}",
             hidden, ffn, hidden / 64, hidden / 64);
    qs_model_config cfg;
    qs_model_names names;
    qs_block blk;
    if (qs_model_config_parse(json, "bench", &cfg, &err) != QS_OK ||
        qs_model_names_init(&cfg, NULL, NULL, &names, &err) != QS_OK || qs_block_init(&blk, &cfg, &names, 0, &err) != QS_OK) {
        fprintf(stderr, "bench_omniquant: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < blk.n_linears; i++) {
        float *w = blk.weight[i].data, sc = 1.0f / sqrtf((float)blk.lin[i].in);
        for (int64_t k = 0; k < blk.lin[i].out * blk.lin[i].in; k++) w[k] = sc * gauss();
    }
    for (int64_t k = 0; k < hidden; k++) ((float *)blk.attn_norm_w.data)[k] = ((float *)blk.mlp_norm_w.data)[k] = 1.0f;
    const int64_t n = rows * seq * hidden;
    float *x = qs_malloc(sizeof(float) * (size_t)n), *y = qs_malloc(sizeof(float) * (size_t)n);
    if (!x || !y) {
        fprintf(stderr, "bench_omniquant: out of memory for %lld activations\n", (long long)n);
        return 1;
    }
    for (int64_t k = 0; k < n; k++) x[k] = gauss();
    for (int64_t r = 0; r < rows; r += 4)
        qs_block_forward(&blk, be, x + r * seq * hidden, rows - r < 4 ? rows - r : 4, seq, y + r * seq * hidden, NULL,
                         &err);

    /* flops of one step (batch 1 = seq tokens) */
    double lin = 0, lin_dx = 0;
    for (int i = 0; i < blk.n_linears; i++) {
        double f = 2.0 * (double)seq * (double)blk.lin[i].out * (double)blk.lin[i].in;
        lin += f;
        if (let || blk.lin[i].stage != 0) lin_dx += f; /* q/k/v's input gradient is needed only with LET */
    }
    double attn = 2.0 * 2.0 * cfg.n_heads * ((double)seq * (double)(seq + 1) / 2.0) * cfg.head_dim;
    double step_flops = lin /* forward */ + lin /* dW */ + lin_dx /* dX */ + attn + 2.5 * attn;

    double rate_lin = sgemm_rate(be, seq, ffn, hidden), rate_cube = sgemm_rate(be, 2048, 2048, 2048);

    qs_quant_opts o;
    qs_quant_opts_default(&o);
    o.method = QS_QUANT_METHOD_OMNIQUANT;
    o.bits = bits;
    o.group_size = 128;
    o.sym = false;
    o.omni.let = let;
    o.omni.epochs = 1;
    qs_omni_state *s = NULL;
    if (qs_omni_init(&s, &blk, &o, 1, seq, &err) != QS_OK ||
        (let && qs_omni_init_let(s, be, x, rows, &err) != QS_OK)) {
        fprintf(stderr, "bench_omniquant: %s\n", err.msg);
        return 1;
    }
    printf("bench_omniquant: llama block hidden %d, %d heads, ffn %d; %lld rows x %lld tokens; W%d g128 asym %s; "
           "batch 1, %d epoch(s) of %lld steps; %d BLAS threads\n",
           hidden, cfg.n_heads, ffn, (long long)rows, (long long)seq, bits, let ? "LWC+LET" : "LWC", epochs,
           (long long)rows, be->threads(be->ctx));
    double *ep = malloc(sizeof(double) * (size_t)epochs);
    double t_all = 0;
    for (int e = 0; e < epochs; e++) {
        double t0 = now();
        if (qs_omni_train(s, be, x, y, rows, e, &err) != QS_OK) {
            fprintf(stderr, "bench_omniquant: %s\n", err.msg);
            return 1;
        }
        ep[e] = now() - t0;
        t_all += ep[e];
        printf("epoch %d: %.2f s\n", e + 1, ep[e]);
        fflush(stdout);
    }
    double f, b, op;
    qs_omni_timing(s, &f, &b, &op);
    qsort(ep, (size_t)epochs, sizeof *ep, cmp_d);
    double med = ep[epochs / 2];
    double achieved = step_flops * (double)rows / med / 1e9;
    printf("seconds_per_epoch %.2f (median of %d)  forward %.1f%%  backward %.1f%%  optimizer %.2f%%  other %.1f%%\n",
           med, epochs, 100 * f / t_all, 100 * b / t_all, 100 * op / t_all, 100 * (t_all - f - b - op) / t_all);
    printf("step_gflop %.2f (GEMMs %.2f, attention %.2f)  achieved_gflops %.1f  sgemm_gflops %.1f "
           "(%lldx%dx%d, median of 5) ratio %.2f  cube_sgemm_gflops %.1f (2048^3) ratio %.2f\n",
           step_flops / 1e9, (2 * lin + lin_dx) / 1e9, 3.5 * attn / 1e9, achieved, rate_lin, (long long)seq, ffn,
           hidden, achieved / rate_lin, rate_cube, achieved / rate_cube);
    free(ep);
    qs_omni_free(s);
    qs_free(x), qs_free(y);
    qs_block_free(&blk);
    return 0;
}
