/* gemm_bf16.c — the CPU backend's bf16 GEMM: bfloat16 operands, f32
 * accumulation.
 *
 * On a CPU with bf16 dot-product or matrix instructions (AVX512_BF16,
 * AMX-BF16) the GEMM is oneDNN's matmul primitive (Debian's libdnnl: its
 * brgemm kernels use vdpbf16ps / AMX tiles). Debian's OpenBLAS 0.3.21 is
 * built without BUILD_BFLOAT16 (no cblas_sbgemm), so oneDNN is the one
 * well-kept library here that has the kernel; measured against OpenBLAS's
 * sgemm in docs/forward.md. Anywhere else the same math is emulated: the
 * operands are widened to f32 (exactly) and multiplied by sgemm — products
 * of bf16 numbers are exact in f32 either way, so both compute "bf16
 * operands, f32 sums" and differ only in summation order.
 *
 * oneDNN runs on the OpenMP runtime (libgomp), the pool the rest of the CPU
 * code uses; primitives are created once per shape and kept. Results for a
 * given shape and thread count are the same on every call (no atomics, no
 * K-split that depends on timing), which is what byte-identical exports
 * across ranks need.
 */
#include "kernels/cpu/gemm_bf16.h"

#include <cblas.h>
#include <dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"
#include "kernels/tensor.h"

/* ================================================================ oneDNN == */

typedef struct mm_key {
    int64_t m, n, k, lda, ldb, ldc;
    bool ta, tb;
    bool accumulate; /* C += A·B (oneDNN's sum post-op) instead of C = A·B */
} mm_key;

typedef struct mm_entry {
    mm_key key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t ad, bd, cd;
    uint64_t used;
} mm_entry;

#define MM_CACHE 64

static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    bool ok;          /* the engine and stream exist */
    bool native;      /* the CPU has bf16 instructions (oneDNN's effective ISA) */
    bool emulate;     /* QS_BF16_GEMM=emulated, or no bf16 instructions */
    char kernel[64];
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    mm_entry cache[MM_CACHE];
    int n_cache;
    uint64_t tick;
} g = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

static void init_once(void)
{
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    g.native = (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
    const char *force = getenv("QS_BF16_GEMM");
    g.emulate = !g.native || (force && !strcmp(force, "emulated"));
    if (!g.emulate) {
        g.ok = dnnl_engine_create(&g.eng, dnnl_cpu, 0) == dnnl_success &&
               dnnl_stream_create(&g.stream, g.eng, dnnl_stream_default_flags) == dnnl_success;
        if (!g.ok) g.emulate = true;
    }
    if (g.emulate) snprintf(g.kernel, sizeof g.kernel, "emulated: f32 sgemm on widened bf16");
    else
        snprintf(g.kernel, sizeof g.kernel, "onednn %s",
                 (isa & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx ? "amx-bf16" : "avx512_bf16");
}

bool qs_cpu_bf16_native(void)
{
    pthread_once(&g.once, init_once);
    return g.native;
}

const char *qs_cpu_bf16_kernel(void)
{
    pthread_once(&g.once, init_once);
    return g.kernel;
}

static qs_status dnnl_fail(qs_error *err, const char *what, dnnl_status_t s)
{
    return qs_error_set(err, QS_ERR_INTERNAL, "oneDNN bf16 matmul: %s failed (status %d)", what, (int)s);
}

static bool key_eq(const mm_key *a, const mm_key *b)
{
    return a->m == b->m && a->n == b->n && a->k == b->k && a->lda == b->lda && a->ldb == b->ldb &&
           a->ldc == b->ldc && a->ta == b->ta && a->tb == b->tb && a->accumulate == b->accumulate;
}

/* The primitive for one shape, from the cache or made now. Caller holds g.lock. */
static qs_status get_prim(const mm_key *key, mm_entry **out, qs_error *err)
{
    for (int i = 0; i < g.n_cache; i++)
        if (key_eq(&g.cache[i].key, key)) {
            g.cache[i].used = ++g.tick;
            *out = &g.cache[i];
            return QS_OK;
        }
    mm_entry *e;
    if (g.n_cache < MM_CACHE) e = &g.cache[g.n_cache++];
    else {
        e = &g.cache[0];
        for (int i = 1; i < MM_CACHE; i++)
            if (g.cache[i].used < e->used) e = &g.cache[i];
        dnnl_primitive_destroy(e->prim);
    }
    memset(e, 0, sizeof *e);
    dnnl_dims_t da = {key->m, key->k}, db = {key->k, key->n}, dc = {key->m, key->n};
    dnnl_dims_t sa = {key->ta ? 1 : key->lda, key->ta ? key->lda : 1};
    dnnl_dims_t sb = {key->tb ? 1 : key->ldb, key->tb ? key->ldb : 1};
    dnnl_dims_t sc = {key->ldc, 1};
    dnnl_status_t s;
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (key->accumulate &&
        ((s = dnnl_primitive_attr_create(&attr)) != dnnl_success || (s = dnnl_post_ops_create(&po)) != dnnl_success ||
         (s = dnnl_post_ops_append_sum(po, 1.0f)) != dnnl_success ||
         (s = dnnl_primitive_attr_set_post_ops(attr, po)) != dnnl_success)) {
        if (po) dnnl_post_ops_destroy(po);
        if (attr) dnnl_primitive_attr_destroy(attr);
        g.n_cache--;
        if (e != &g.cache[g.n_cache]) *e = g.cache[g.n_cache];
        return dnnl_fail(err, "making the sum post-op", s);
    }
    if ((s = dnnl_memory_desc_init_by_strides(&e->ad, 2, da, dnnl_bf16, sa)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_strides(&e->bd, 2, db, dnnl_bf16, sb)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_strides(&e->cd, 2, dc, dnnl_f32, sc)) != dnnl_success ||
        (s = dnnl_matmul_desc_init(&md, &e->ad, &e->bd, NULL, &e->cd)) != dnnl_success ||
        (s = dnnl_primitive_desc_create(&pd, &md, attr, g.eng, NULL)) != dnnl_success ||
        (s = dnnl_primitive_create(&e->prim, pd)) != dnnl_success) {
        if (pd) dnnl_primitive_desc_destroy(pd);
        if (po) dnnl_post_ops_destroy(po);
        if (attr) dnnl_primitive_attr_destroy(attr);
        g.n_cache--; /* e is the last slot or the evicted one: either way not valid now */
        if (e != &g.cache[g.n_cache]) *e = g.cache[g.n_cache];
        return dnnl_fail(err, "creating the primitive", s);
    }
    dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    e->key = *key;
    e->used = ++g.tick;
    *out = e;
    return QS_OK;
}

static qs_status onednn_gemm(const mm_key *key, const uint16_t *a, const uint16_t *b, float *c, qs_error *err)
{
    pthread_mutex_lock(&g.lock);
    mm_entry *e = NULL;
    qs_status st = get_prim(key, &e, err);
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL;
    dnnl_status_t s = dnnl_success;
    if (st == QS_OK) {
        if ((s = dnnl_memory_create(&am, &e->ad, g.eng, (void *)a)) != dnnl_success ||
            (s = dnnl_memory_create(&bm, &e->bd, g.eng, (void *)b)) != dnnl_success ||
            (s = dnnl_memory_create(&cm, &e->cd, g.eng, c)) != dnnl_success)
            st = dnnl_fail(err, "wrapping the operands", s);
    }
    if (st == QS_OK) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
        if ((s = dnnl_primitive_execute(e->prim, g.stream, 3, args)) != dnnl_success ||
            (s = dnnl_stream_wait(g.stream)) != dnnl_success)
            st = dnnl_fail(err, "executing", s);
    }
    if (am) dnnl_memory_destroy(am);
    if (bm) dnnl_memory_destroy(bm);
    if (cm) dnnl_memory_destroy(cm);
    pthread_mutex_unlock(&g.lock);
    return st;
}

/* ============================================================== emulated == */

/* Widens the [rows, cols] matrix at x (leading dimension ld) to f32. */
static float *widen(const uint16_t *x, int64_t rows, int64_t cols, int64_t ld)
{
    float *y = qs_malloc(sizeof(float) * (size_t)(rows * cols));
    if (!y) return NULL;
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 20))
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) y[r * cols + j] = qs_bf16_to_f32(x[r * ld + j]);
    return y;
}

static qs_status emulated_gemm(const mm_key *key, float alpha, const uint16_t *a, const uint16_t *b, float beta,
                               float *c, qs_error *err)
{
    /* stored shapes: A is [m,k] (or [k,m] when transposed), B is [k,n] (or [n,k]) */
    int64_t ar = key->ta ? key->k : key->m, ac = key->ta ? key->m : key->k;
    int64_t br = key->tb ? key->n : key->k, bc = key->tb ? key->k : key->n;
    float *af = widen(a, ar, ac, key->lda), *bf = widen(b, br, bc, key->ldb);
    if (!af || !bf) {
        qs_free(af), qs_free(bf);
        return qs_error_set(err, QS_ERR_NOMEM, "bf16 gemm (emulated): widening [%lld,%lld] and [%lld,%lld]",
                            (long long)ar, (long long)ac, (long long)br, (long long)bc);
    }
    cblas_sgemm(CblasRowMajor, key->ta ? CblasTrans : CblasNoTrans, key->tb ? CblasTrans : CblasNoTrans,
                (int)key->m, (int)key->n, (int)key->k, alpha, af, (int)ac, bf, (int)bc, beta, c, (int)key->ldc);
    qs_free(af), qs_free(bf);
    return QS_OK;
}

/* ================================================================== entry == */

qs_status qs_cpu_gemm_bf16_emulated(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t *a,
                                    int64_t lda, const uint16_t *b, int64_t ldb, float beta, float *c, int64_t ldc,
                                    qs_error *err)
{
    if (m <= 0 || n <= 0) return QS_OK;
    mm_key key = {m, n, k, lda, ldb, ldc, ta, tb, false};
    if (k <= 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return QS_OK;
    }
    return emulated_gemm(&key, alpha, a, b, beta, c, err);
}

qs_status qs_cpu_gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t *a,
                           int64_t lda, const uint16_t *b, int64_t ldb, float beta, float *c, int64_t ldc,
                           qs_error *err)
{
    pthread_once(&g.once, init_once);
    if (g.emulate || k <= 0) return qs_cpu_gemm_bf16_emulated(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, err);
    if (m <= 0 || n <= 0) return QS_OK;
    mm_key key = {m, n, k, lda, ldb, ldc, ta, tb, false};
    if (alpha == 1.0f && beta == 0.0f) return onednn_gemm(&key, a, b, c, err);
    if (alpha == 1.0f && beta == 1.0f) {
        key.accumulate = true;
        return onednn_gemm(&key, a, b, c, err);
    }
    /* other alpha/beta: the product into a scratch matrix, then combined (one
     * primitive per shape instead of one per alpha/beta pair) */
    float *t = qs_malloc(sizeof(float) * (size_t)(m * n));
    if (!t) return qs_error_set(err, QS_ERR_NOMEM, "bf16 gemm: scratch [%lld,%lld]", (long long)m, (long long)n);
    key.ldc = n;
    qs_status st = onednn_gemm(&key, a, b, t, err);
    if (st == QS_OK) {
#pragma omp parallel for schedule(static) if (m * n >= (1 << 18))
        for (int64_t i = 0; i < m; i++) {
            float *ci = c + i * ldc;
            const float *ti = t + i * n;
            if (beta == 0.0f)
                for (int64_t j = 0; j < n; j++) ci[j] = alpha * ti[j];
            else
                for (int64_t j = 0; j < n; j++) ci[j] = alpha * ti[j] + beta * ci[j];
        }
    }
    qs_free(t);
    return st;
}
