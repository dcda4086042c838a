/* gpu_bench.cu — the CUDA backend at the sizes of the mission, against the
 * device's own cuBLAS SGEMM rate measured in the same run:
 *
 *   qs_gpu_bench [--dry-run] [--json FILE] [--quick | --scale S]
 *
 *   sgemm     8192³ f32 (and TF32, for reference): the rate everything is
 *             compared with (median of 5)
 *   hessian   H [14336, 14336] (BLOOM-176B's hidden size) from 2048×2048
 *             tokens, streamed in chunks of 16384 rows (f32 syrk; flops n²·k)
 *   gptq      a 14336×14336 layer, and BLOOM-176B's dense_4h_to_h
 *             [14336, 57344]: 4-bit, group 128, act-order; H from 16384 random
 *             input rows made on the device. Flops: the trailing GEMMs
 *             (2·rows·count·(cols − i2) per block) + the Cholesky (cols³/3);
 *             the first layer again with TF32 GEMMs: its effect on the loss
 *   forward   one BLOOM-176B block over 2048 tokens through the backend
 *             table (LayerNorm, fused QKV GEMM, causal attention with ALiBi
 *             over 112 heads of 128, dense GEMM, residual, LayerNorm,
 *             h→4h GEMM, GELU, 4h→h GEMM, residual), each op timed alone
 *
 * Prints one line per measurement with TFLOP/s (or GB/s for memory-bound
 * ops) and the ratio to the measured SGEMM rate, and the same as JSON with
 * --json. --dry-run prints the plan (sizes, flops, device memory) and touches
 * no GPU; --quick divides every size by 4 (a smoke run), --scale S by S (the
 * CUDA emulator's run of this benchmark, tests/gpu.cmake, uses 56).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/device.h"
#include "kernels/hessian.h"
#include "kernels/ops_table.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

/* ---- results ----------------------------------------------------------------------- */

typedef struct result {
    char name[64];
    double seconds, flops, bytes; /* flops or bytes (one of them) of one run */
    char note[160];
} result;

static result g_res[64];
static int g_nres;
static double g_sgemm_rate; /* flop/s */

static void record(const char *name, double seconds, double flops, double bytes, const char *note)
{
    result *r = &g_res[g_nres++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->seconds = seconds, r->flops = flops, r->bytes = bytes;
    snprintf(r->note, sizeof r->note, "%s", note ? note : "");
    if (flops > 0)
        printf("%-28s %9.3f ms  %8.2f TFLOP/s  %5.1f%% of SGEMM  %s\n", name, 1e3 * seconds, flops / seconds / 1e12,
               g_sgemm_rate > 0 ? 100.0 * flops / seconds / g_sgemm_rate : 0.0, r->note);
    else
        printf("%-28s %9.3f ms  %8.1f GB/s  %s\n", name, 1e3 * seconds, bytes / seconds / 1e9, r->note);
    fflush(stdout);
}

/* ---- device helpers ------------------------------------------------------------------ */

static qs_backend_i g_be;
static qs_cuda_ctx *g_cx;
static qs_error E;

#define DIE(...)                                  \
    do {                                          \
        fprintf(stderr, "qs_gpu_bench: ");        \
        fprintf(stderr, __VA_ARGS__);             \
        fputc('\n', stderr);                      \
        exit(1);                                  \
    } while (0)
#define OK(call)                                                             \
    do {                                                                     \
        qs_error_clear(&E);                                                  \
        if ((call) != QS_OK) DIE("%s: %s", #call, E.msg);                    \
    } while (0)

/* Deterministic values on the device: a hash of the index, uniform in [-s, s). */
__global__ void k_fill(float *x, int64_t n, uint64_t seed, float s)
{
    QS_CU_FOR(i, n)
    {
        uint64_t z = (uint64_t)i * 0x9E3779B97F4A7C15ull + seed;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x[i] = s * ((float)(z >> 40) * (1.0f / 8388608.0f) - 1.0f);
    }
}

static float *dalloc(size_t n, const char *what)
{
    float *p = (float *)g_be.alloc(g_be.ctx, n * sizeof(float));
    if (!p) DIE("cannot allocate %s (%.2f GiB) on the device", what, (double)n * 4 / 1073741824.0);
    return p;
}

static qs_status fill_(float *x, int64_t n, uint64_t seed, float s, qs_error *err)
{
    QS_CU_LAUNCH(g_cx, err, k_fill, qs_cu_blocks(n), QS_CU_THREADS, 0, x, n, seed, s);
    return QS_OK;
}
#define FILL(x, n, seed, s) OK(fill_((x), (int64_t)(n), (seed), (s), &E))

static void sync_(void) { OK(g_be.sync(g_be.ctx, &E)); }

/* ---- the measurements ------------------------------------------------------------------ */

static void bench_sgemm(int64_t n)
{
    float *a = dalloc((size_t)(n * n), "A"), *b = dalloc((size_t)(n * n), "B"), *c = dalloc((size_t)(n * n), "C");
    FILL(a, n * n, 1, 1.0f);
    FILL(b, n * n, 2, 1.0f);
    const double flops = 2.0 * (double)n * n * n;
    for (int tf = 0; tf < 2; tf++) {
        qs_backend_i be = g_be, tfb;
        if (tf) {
            qs_cuda_opts o = {true};
            OK(qs_backend_cuda_init(&tfb, g_cx->device, &o, &E));
            be = tfb;
        }
        be.sgemm(be.ctx, false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
        OK(be.sync(be.ctx, &E));
        double t[5];
        for (int r = 0; r < 5; r++) {
            double t0 = now_s();
            be.sgemm(be.ctx, false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            OK(be.sync(be.ctx, &E));
            t[r] = now_s() - t0;
        }
        double m = median(t, 5);
        char name[64];
        snprintf(name, sizeof name, "sgemm %lld^3%s", (long long)n, tf ? " tf32" : "");
        if (!tf) g_sgemm_rate = flops / m;
        record(name, m, flops, 0, tf ? "TF32 tensor cores (opt-in, --tf32)" : "the reference rate (median of 5)");
        if (tf) qs_backend_cuda_free(&tfb);
    }
    g_be.free(g_be.ctx, a), g_be.free(g_be.ctx, b), g_be.free(g_be.ctx, c);
}

static void bench_hessian(int64_t n, int64_t tokens, int64_t chunk)
{
    tokens = tokens / chunk * chunk; /* whole chunks */
    float *x = dalloc((size_t)(chunk * n), "X chunk");
    FILL(x, chunk * n, 3, 1.0f);
    qs_hessian h;
    OK(qs_hessian_init_on(&h, &g_be, n, false, &E));
    OK(qs_hessian_add(&h, &g_be, x, chunk, n, &E)); /* warm-up */
    qs_hessian_reset(&h);
    sync_();
    double t0 = now_s();
    for (int64_t r = 0; r < tokens; r += chunk) OK(qs_hessian_add(&h, &g_be, x, chunk, n, &E));
    sync_();
    double t = now_s() - t0;
    char note[160];
    snprintf(note, sizeof note, "H [%lld,%lld] from %lld tokens, chunks of %lld (flops n^2*k)", (long long)n,
             (long long)n, (long long)tokens, (long long)chunk);
    record("hessian f32", t, (double)n * n * (double)tokens, 0, note);
    qs_hessian_free(&h);
    g_be.free(g_be.ctx, x);
}

/* tf32: also run it with TF32 GEMMs and report what that does to GPTQ's loss. */
static void bench_gptq(const char *name, int64_t rows, int64_t cols, int64_t samples, bool tf32)
{
    float *w = dalloc((size_t)(rows * cols), "W"), *h = dalloc((size_t)(cols * cols), "H");
    float *x = dalloc((size_t)(samples * cols), "X");
    FILL(w, rows * cols, 4, 0.05f);
    FILL(x, samples * cols, 5, 1.0f);
    OK(g_be.zero(g_be.ctx, h, (size_t)(cols * cols) * sizeof(float), &E));
    g_be.ssyrk_t(g_be.ctx, cols, samples, 2.0f / (float)samples, x, cols, 0.0f, h, cols);
    sync_();
    g_be.free(g_be.ctx, x);
    qs_quant_opts o;
    qs_quant_opts_default(&o);
    o.act_order = true;
    o.name = name;
    qs_quant_result res;
    OK(qs_quant_result_init(&res, rows, cols, &o, &E));
    double t0 = now_s();
    OK(g_be.gptq(g_be.ctx, w, rows, cols, h, &o, &res, &E));
    double t = now_s() - t0;
    const double factor = (double)cols * cols * cols / 3.0;
    char note[160];
    snprintf(note, sizeof note, "[%lld,%lld] 4-bit g128 act-order: factor %.2f s, sweeps %.2f s, GEMMs %.2f s (%.1f TF/s)",
             (long long)rows, (long long)cols, res.seconds_factor, res.seconds_sweep, res.seconds_update,
             res.seconds_update > 0 ? res.update_flops / res.seconds_update / 1e12 : 0.0);
    record(name, t, res.update_flops + factor, 0, note);
    /* the CPU benchmark's ratio: GPTQ time / the time of one 2·rows·cols² GEMM at the SGEMM rate */
    printf("%-28s GPTQ time / (2*rows*cols^2 / SGEMM rate) = %.2f\n", "", t / (2.0 * rows * (double)cols * cols / g_sgemm_rate));
    if (tf32) {
        /* the same layer with TF32 GEMMs (--tf32): its time and its loss against f32's (H again: GPTQ consumed it) */
        float *x2 = dalloc((size_t)(samples * cols), "X");
        FILL(x2, samples * cols, 5, 1.0f);
        g_be.ssyrk_t(g_be.ctx, cols, samples, 2.0f / (float)samples, x2, cols, 0.0f, h, cols);
        sync_();
        g_be.free(g_be.ctx, x2);
        qs_backend_i tfb;
        qs_cuda_opts to = {true};
        OK(qs_backend_cuda_init(&tfb, g_cx->device, &to, &E));
        qs_quant_result r2;
        OK(qs_quant_result_init(&r2, rows, cols, &o, &E));
        double t1 = now_s();
        OK(tfb.gptq(tfb.ctx, w, rows, cols, h, &o, &r2, &E));
        double t2 = now_s() - t1;
        int64_t diff = 0;
        for (int64_t i = 0; i < rows * cols; i++) diff += r2.codes[i] != res.codes[i];
        char nm[64];
        snprintf(nm, sizeof nm, "%s tf32", name);
        snprintf(note, sizeof note, "TF32 GEMMs: GPTQ est. loss %.6e vs f32 %.6e (%+.3f%%), %.3f%% of codes differ",
                 r2.est_loss, res.est_loss, 100.0 * (r2.est_loss / res.est_loss - 1.0),
                 100.0 * (double)diff / (double)(rows * cols));
        record(nm, t2, r2.update_flops + factor, 0, note);
        qs_quant_result_free(&r2);
        qs_backend_cuda_free(&tfb);
    }
    qs_quant_result_free(&res);
    g_be.free(g_be.ctx, w), g_be.free(g_be.ctx, h);
}

/* One BLOOM block over `tokens` tokens through the backend table; each step timed alone. */
static void bench_forward(int64_t hidden, int heads, int64_t tokens)
{
    const int hd = (int)(hidden / heads);
    const int64_t ff = 4 * hidden, qkv = 3 * hidden;
    float *wqkv = dalloc((size_t)(qkv * hidden), "W_qkv"), *wd = dalloc((size_t)(hidden * hidden), "W_dense");
    float *w1 = dalloc((size_t)(ff * hidden), "W_h_to_4h"), *w2 = dalloc((size_t)(hidden * ff), "W_4h_to_h");
    float *lnw = dalloc((size_t)hidden, "ln"), *lnb = dalloc((size_t)hidden, "ln bias"), *bq = dalloc((size_t)qkv, "b");
    float *xa = dalloc((size_t)(tokens * hidden), "x"), *xn = dalloc((size_t)(tokens * hidden), "x norm");
    float *yq = dalloc((size_t)(tokens * qkv), "qkv"), *att = dalloc((size_t)(tokens * hidden), "attn");
    float *y = dalloc((size_t)(tokens * hidden), "y"), *u = dalloc((size_t)(tokens * ff), "4h");
    float *alibi = dalloc((size_t)heads, "alibi");
    FILL(wqkv, qkv * hidden, 6, 0.02f);
    FILL(wd, hidden * hidden, 7, 0.02f);
    FILL(w1, ff * hidden, 8, 0.02f);
    FILL(w2, hidden * ff, 9, 0.02f);
    FILL(lnw, hidden, 10, 1.0f);
    FILL(lnb, hidden, 11, 0.1f);
    FILL(bq, qkv, 12, 0.1f);
    FILL(xa, tokens * hidden, 13, 1.0f);
    FILL(alibi, heads, 14, 0.05f);
    const qs_ops_i *ops = g_be.ops;
    void *c = g_be.ctx;
    qs_attn_args a;
    memset(&a, 0, sizeof a);
    a.batch = 1, a.seq_q = a.seq_k = tokens, a.n_heads = a.n_kv_heads = heads, a.head_dim = hd;
    a.scale = 1.0f / sqrtf((float)hd), a.causal = true, a.alibi = alibi;
    a.q = yq, a.k = yq + hidden, a.v = yq + 2 * hidden; /* [q | k | v] per token */
    a.q_tok = a.k_tok = a.v_tok = qkv, a.q_head = a.k_head = a.v_head = hd;
    a.out = att, a.o_tok = hidden, a.o_head = hd;
    const double h = (double)hidden, t = (double)tokens;
    const double act = t * h * 4.0; /* bytes of one [tokens, hidden] f32 activation */
    double total = 0.0, total_flops = 0.0;
    for (int rep = 0; rep < 2; rep++) { /* the first pass warms up; the second is recorded */
        const bool rec = rep == 1;
#define STEP(label, flops_, bytes_, call)                   \
    do {                                                    \
        sync_();                                            \
        double t0_ = now_s();                               \
        call;                                               \
        sync_();                                            \
        double dt_ = now_s() - t0_;                         \
        if (rec) {                                          \
            record(label, dt_, flops_, bytes_, NULL);       \
            total += dt_;                                   \
            total_flops += flops_;                          \
        }                                                   \
    } while (0)
        STEP("fwd layernorm", 0, 2 * act, OK(ops->layernorm(c, xa, lnw, lnb, xn, tokens, hidden, 1e-5f, &E)));
        STEP("fwd gemm qkv", 2 * t * h * 3 * h, 0,
             g_be.sgemm(c, false, true, tokens, qkv, hidden, 1.0f, xn, hidden, wqkv, hidden, 0.0f, yq, qkv));
        STEP("fwd bias qkv", 0, 2 * 3 * act, OK(ops->add_bias(c, yq, bq, tokens, qkv, &E)));
        STEP("fwd attention alibi", 4.0 * t * t / 2 * h, 0, OK(ops->attention(c, &a, &E)));
        STEP("fwd gemm dense", 2 * t * h * h, 0,
             g_be.sgemm(c, false, true, tokens, hidden, hidden, 1.0f, att, hidden, wd, hidden, 0.0f, y, hidden));
        STEP("fwd residual", 0, 3 * act, OK(ops->add(c, y, xa, tokens * hidden, &E)));
        STEP("fwd layernorm 2", 0, 2 * act, OK(ops->layernorm(c, y, lnw, lnb, xn, tokens, hidden, 1e-5f, &E)));
        STEP("fwd gemm h_to_4h", 2 * t * h * 4 * h, 0,
             g_be.sgemm(c, false, true, tokens, ff, hidden, 1.0f, xn, hidden, w1, hidden, 0.0f, u, ff));
        STEP("fwd gelu", 0, 2 * 4 * act, OK(ops->gelu_tanh(c, u, tokens * ff, &E)));
        STEP("fwd gemm 4h_to_h", 2 * t * 4 * h * h, 0,
             g_be.sgemm(c, false, true, tokens, hidden, ff, 1.0f, u, ff, w2, ff, 0.0f, xa, hidden));
        STEP("fwd residual 2", 0, 3 * act, OK(ops->add(c, xa, y, tokens * hidden, &E)));
#undef STEP
    }
    char note[160];
    snprintf(note, sizeof note, "one BLOOM block, %lld tokens, hidden %lld, %d heads of %d (sum of the steps)",
             (long long)tokens, (long long)hidden, heads, hd);
    record("fwd block total", total, total_flops, 0, note);
    float *bufs[] = {wqkv, wd, w1, w2, lnw, lnb, bq, xa, xn, yq, att, y, u, alibi};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) g_be.free(g_be.ctx, bufs[i]);
}

static void write_json(const char *path, const qs_device_info *info)
{
    FILE *f = fopen(path, "w");
    if (!f) DIE("%s: cannot write", path);
    fprintf(f, "{\"device\": \"%s\", \"compute_capability\": \"%d.%d\", \"sgemm_tflops\": %.4f, \"results\": [\n",
            info->name, info->cc_major, info->cc_minor, g_sgemm_rate / 1e12);
    for (int i = 0; i < g_nres; i++) {
        const result *r = &g_res[i];
        fprintf(f, "  {\"name\": \"%s\", \"seconds\": %.6g, \"flops\": %.6g, \"bytes\": %.6g, \"tflops\": %.4f, "
                   "\"of_sgemm\": %.4f, \"gbps\": %.3f, \"note\": \"%s\"}%s\n",
                r->name, r->seconds, r->flops, r->bytes, r->flops > 0 ? r->flops / r->seconds / 1e12 : 0.0,
                r->flops > 0 && g_sgemm_rate > 0 ? r->flops / r->seconds / g_sgemm_rate : 0.0,
                r->bytes > 0 ? r->bytes / r->seconds / 1e9 : 0.0, r->note, i + 1 < g_nres ? "," : "");
    }
    fprintf(f, "]}\n");
    fclose(f);
}

int main(int argc, char **argv)
{
    bool dry = false;
    int64_t s = 1;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dry-run")) dry = true;
        else if (!strcmp(argv[i], "--quick")) s = 4;
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc) s = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else DIE("usage: qs_gpu_bench [--dry-run] [--quick | --scale S] [--json FILE]");
    }
    if (s < 1 || 112 % s != 0) DIE("--scale %lld: expected a divisor of 112 (the heads stay whole)", (long long)s);
    /* sizes over s; the heads keep their 128 dimensions */
    const int64_t n_sgemm = 8192 / s, hidden = 14336 / s, ff = 4 * hidden, tokens = s == 1 ? 2048 : 2048 / (s > 8 ? 32 : 2);
    const int heads = (int)(112 / s);
    const int64_t h_tokens = 2048 * 2048 / (s * s), h_chunk = 16384 / s, samples = 16384 / s;
    printf("plan: sgemm %lld^3; hessian [%lld]^2 from %lld tokens; gptq [%lld,%lld] and [%lld,%lld] (H from %lld rows);\n"
           "      forward: one BLOOM block, %lld tokens, hidden %lld, %d heads\n",
           (long long)n_sgemm, (long long)hidden, (long long)h_tokens, (long long)hidden, (long long)hidden,
           (long long)hidden, (long long)ff, (long long)samples, (long long)tokens, (long long)hidden, heads);
    const double gib = 1073741824.0;
    printf("plan: largest device footprint: gptq [%lld,%lld] ~ %.1f GiB (H, its factor, W twice, the codes)\n",
           (long long)hidden, (long long)ff,
           (2.0 * ff * ff * 4 + 3.0 * hidden * ff * 4 + 2.0 * hidden * ff) / gib);
    if (dry) {
        printf("dry run: no GPU touched\n");
        return 0;
    }
    char why[512];
    if (qs_cuda_device_count(why, sizeof why) == 0) DIE("no CUDA device (%s)", why);
    qs_device_info info;
    OK(qs_cuda_device_info(0, &info, &E));
    printf("device: %s, compute capability %d.%d, %d SMs, %.1f GiB free of %.1f GiB\n", info.name, info.cc_major,
           info.cc_minor, info.sm_count, (double)info.free_bytes / gib, (double)info.total_bytes / gib);
    OK(qs_backend_cuda_init(&g_be, 0, NULL, &E));
    g_cx = qs_cuda_ctx_of(&g_be, &E);
    bench_sgemm(n_sgemm);
    bench_hessian(hidden, h_tokens, h_chunk);
    char n1[64], n2[64];
    snprintf(n1, sizeof n1, "gptq %lldx%lld", (long long)hidden, (long long)hidden);
    snprintf(n2, sizeof n2, "gptq %lldx%lld", (long long)hidden, (long long)ff);
    bench_gptq(n1, hidden, hidden, samples, true);
    bench_gptq(n2, hidden, ff, samples, false);
    bench_forward(hidden, heads, tokens);
    if (json) write_json(json, &info);
    qs_backend_cuda_free(&g_be);
    return 0;
}
