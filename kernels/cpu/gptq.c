/* gptq.c — GPTQ on the CPU: backend GEMM/Cholesky + OpenMP row sweeps.
 *
 * The algorithm is the reference's fasterquant (IST-DASLab/gptq gptq.py, kept
 * as is by AutoGPTQ and GPTQModel), step by step:
 *
 *  1. per-channel params (group_size = -1) from W as given — the reference
 *     calls find_params(W) BEFORE zeroing dead columns, and so do we;
 *  2. dead columns: H_cc == 0 → H_cc = 1 and W[:, c] = 0;
 *  3. static groups: params of every group from this W, in ORIGINAL column
 *     order, before any permutation or update;
 *  4. act-order: perm = columns by decreasing H_cc (a stable sort: ties keep
 *     their original order; torch.argsort leaves that unspecified);
 *  5. H_cc += damp · mean(diag H);
 *  6. the reference then takes U = the upper Cholesky factor of H^-1
 *     (H^-1 = Uᵀ U: cholesky(cholesky_inverse(cholesky(H)), upper=True));
 *  7. for each block of block_size columns [i1, i2): for each column c in the
 *     block, quantize, err = (w - q) / U_cc, and update the block's later
 *     columns with err · U[c, c+1:i2]; then the trailing update
 *     W[:, i2:] -= Err · U[i1:i2, i2:] as one GEMM.
 *
 * We compute the same thing without ever forming U (2/3 of the reference's
 * factorization flops saved, and no inverse of a large matrix). U = V^-1 for
 * the upper V with H = V Vᵀ, and V = J L J where L = chol(J H J) (J reverses
 * the index order): one Cholesky of H, with the act-order permutation and
 * the reversal applied to H in place as one symmetric permutation. Then, from
 * the sweep's definition, (W - Q) = Err · U for the original W (column c of
 * Err·U is err_c U_cc + Σ_{k<c} err_k U_kc = w_c - q_c), and the block
 * inverse of the upper-triangular V gives, for the columns S = [i1, i1+len)
 * at the start of a block,
 *     W_S(block start) = W_S - Err_{<i1} U_{<i1,S} = W_S + A_S · (V_SS)^-1,
 *     A = Σ over finished blocks I of (W - Q)_I · V_{I,·}.
 * So the trailing GEMM accumulates A[:, i2:] += (W - Q)_I V[I, i2:] (the same
 * shape and flops as the reference's), and each block starts with a small
 * GEMM by the inverse of V's diagonal block, whose first count×count part is
 * exactly U's diagonal block that the within-block sweep needs. Equal to the
 * reference in exact arithmetic; tests/unit/test_quant.c checks the codes
 * against a plain column-by-column GPTQ that does form U.
 *
 * Dynamic groups (group_size > 0, not static): the reference calls
 *   find_params(W[:, (i1+i):(i1+i+groupsize)])
 * when the sweep reaches a column c = i1 + i with c % groupsize == 0. W there
 * is the full matrix, which only the trailing GEMMs update; the within-block
 * updates go to the block's copy W1. So a group's scale and zero come from
 * the matrix as it stood at the START of the current block: without the
 * updates of the block's own earlier columns, and (for a group reaching past
 * i2) with the later columns as the last trailing GEMM left them. We do
 * exactly that: the block-start W is computed for S = [i1, i1+len), len
 * reaching to the end of the last group that starts in the block, find_params
 * reads it, and the sweep updates only its own copy. A different block_size
 * therefore gives (slightly) different groups, as in the reference.
 *
 * Rows are independent (scales and zeros are per row): a panel of rows goes
 * through all blocks on its own, with single-threaded BLAS, panels in
 * parallel; inside a panel, tiles of 16 rows are swept as SIMD lanes.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/gptq.h"
#include "kernels/act_order.h"
#include "kernels/tensor.h"

#ifndef QS_GPTQ_CLOCK
#define QS_GPTQ_CLOCK CLOCK_MONOTONIC /* -DQS_GPTQ_CLOCK=CLOCK_THREAD_CPUTIME_ID: phase CPU times */
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(QS_GPTQ_CLOCK, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- in-place symmetric permutation and reversal ------------------------ */

/* a ← a[p][:, p] for a row-major [n, n] matrix, in place (cycle-following for
 * rows, a scratch row per thread for columns). */
static qs_status permute_sym_f32(float *a, int64_t n, const int64_t *p)
{
    unsigned char *done = calloc((size_t)n, 1);
    float *tmp = qs_malloc((size_t)n * sizeof(float));
    if (!done || !tmp) {
        free(done);
        qs_free(tmp);
        return QS_ERR_NOMEM;
    }
    size_t rb = (size_t)n * sizeof(float);
    for (int64_t s = 0; s < n; s++) {
        if (done[s]) continue;
        if (p[s] == s) {
            done[s] = 1;
            continue;
        }
        memcpy(tmp, a + s * n, rb);
        int64_t i = s;
        for (;;) {
            done[i] = 1;
            int64_t j = p[i];
            if (j == s) {
                memcpy(a + i * n, tmp, rb);
                break;
            }
            memcpy(a + i * n, a + j * n, rb);
            i = j;
        }
    }
    free(done);
    qs_free(tmp);
    int fail = 0;
#pragma omp parallel reduction(| : fail)
    {
        float *row = qs_malloc(rb);
        if (!row) fail = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n; r++) {
            if (!row) continue;
            memcpy(row, a + r * n, rb);
            for (int64_t c = 0; c < n; c++) a[r * n + c] = row[p[c]];
        }
        qs_free(row);
    }
    return fail ? QS_ERR_NOMEM : QS_OK;
}

/* a[i][j] ↔ a[n-1-i][n-1-j]: the element at flat index k goes to n²-1-k. */
static void reverse_f32(float *a, int64_t n)
{
    size_t nn = (size_t)n * (size_t)n;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nn / 2; k++) {
        float t = a[k];
        a[k] = a[nn - 1 - k];
        a[nn - 1 - k] = t;
    }
}

/* Lower Cholesky factor, in place, on row-major memory.
 *
 * A row-major lower triangle is a column-major upper one, so LAPACK runs on
 * the memory as it is. The backend's spotrf is row-major through LAPACKE,
 * which transposes into a scratch copy and back: n² extra floats and, at
 * n = 4096, +60% time. So these call LAPACKE directly (column-major, the
 * _work entry points: no O(n²) NaN scan), and so does the small triangular
 * inversion, which is not in the backend table — see docs/quantization.md. */
/* OpenBLAS's potrf gives different roundings with different thread counts
 * (measured: thousands of differing elements at n = 128, 1 vs 2 threads),
 * and ranks of one run may have different thread counts (mpirun binds a
 * rank to one core when ranks <= cores, not when oversubscribed). Exports
 * must not depend on that, so the factorization always runs on one BLAS
 * thread; gemm and syrk, checked the same way, do not depend on it. */
static qs_status potrf_lower_f32(float *a, int64_t n)
{
    int threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    lapack_int info = LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'U', (lapack_int)n, a, (lapack_int)n);
    openblas_set_num_threads(threads);
    return info == 0 ? QS_OK : QS_ERR_NUMERIC;
}

static qs_status potrf_lower_f64(double *a, int64_t n)
{
    int threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'U', (lapack_int)n, a, (lapack_int)n);
    openblas_set_num_threads(threads);
    return info == 0 ? QS_OK : QS_ERR_NUMERIC;
}

/* h (full symmetric, damped) → V in its upper triangle, H[perm][:, perm] =
 * V Vᵀ. The lower triangle is left as scratch. */
static qs_status v_factor(float *h, int64_t n, const int64_t *perm, bool f64, const char *name, qs_error *err)
{
    int64_t *pr = malloc((size_t)n * sizeof(int64_t));
    if (!pr) return qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: out of memory", name);
    for (int64_t k = 0; k < n; k++) pr[k] = perm[n - 1 - k]; /* J · perm */
    qs_status st = QS_OK;
    if (!f64) {
        st = permute_sym_f32(h, n, pr);
        if (st != QS_OK) {
            free(pr);
            return qs_error_set(err, st, "tensor '%s': gptq: out of memory permuting H", name);
        }
        st = potrf_lower_f32(h, n);
        if (st == QS_OK) reverse_f32(h, n);
    } else {
        double *hd = qs_malloc((size_t)n * (size_t)n * sizeof(double));
        if (!hd) {
            free(pr);
            return qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: cannot allocate the f64 [%lld,%lld] H", name,
                                (long long)n, (long long)n);
        }
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) hd[i * n + j] = (double)h[pr[i] * n + pr[j]];
        st = potrf_lower_f64(hd, n);
        if (st == QS_OK) {
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = i; j < n; j++) h[i * n + j] = (float)hd[(n - 1 - i) * n + (n - 1 - j)];
        }
        qs_free(hd);
    }
    free(pr);
    if (st != QS_OK)
        return qs_error_set(err, QS_ERR_NUMERIC,
                            "tensor '%s': gptq: the damped Hessian [%lld,%lld] is not positive definite "
                            "(raise --damp, or use more calibration samples)",
                            name, (long long)n, (long long)n);
    return QS_OK;
}

/* The blocks of the sweep and the inverses of V's diagonal blocks. */
typedef struct gptq_block {
    int64_t i1, i2, len; /* columns [i1, i2); the block-start W is needed for [i1, i1 + len) */
    size_t toff;         /* T = (V[i1:i1+len, i1:i1+len])^-1 at tinv + toff, [len, len], upper */
} gptq_block;

/* T for every block, in double (small: n·len²/3 flops in all), as f32. */
static qs_status block_inverses(const float *v, int64_t n, const gptq_block *bl, int64_t nb, float *tinv)
{
    int fail = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : fail)
    for (int64_t b = 0; b < nb; b++) {
        int64_t len = bl[b].len, i1 = bl[b].i1;
        double *t = malloc((size_t)(len * len) * sizeof(double));
        if (!t) {
            fail = 1;
            continue;
        }
        for (int64_t i = 0; i < len; i++)
            for (int64_t j = 0; j < len; j++) t[i * len + j] = j >= i ? (double)v[(i1 + i) * n + i1 + j] : 0.0;
        /* row-major upper = column-major lower */
        if (LAPACKE_dtrtri_work(LAPACK_COL_MAJOR, 'L', 'N', (lapack_int)len, t, (lapack_int)len) != 0) fail = 1;
        float *out = tinv + bl[b].toff;
        for (int64_t i = 0; i < len * len; i++) out[i] = (float)t[i];
        free(t);
    }
    return fail ? QS_ERR_NUMERIC : QS_OK;
}

/* ---- the within-block sweep of a tile of rows ------------------------------ */

/* Rows per tile: the sweep runs the rows of a tile as SIMD lanes, so the
 * serial chain of a column (quantize, error, divide) is paid once per tile,
 * and each later column's update is one vector operation. */
#define QS_GPTQ_LANES 16

typedef struct sweep_ctx {
    int64_t n, rows, B, gs;
    bool dynamic;         /* dynamic groups: params found during the sweep */
    qs_quant_grid grid;
    const int64_t *perm;  /* processing position → original column */
    const int32_t *gpos;  /* processing position → its group (no division in the sweep) */
    const float *ws;      /* [rows, ldws]: the block-start W of columns [i1, i1+len) */
    int64_t ldws;
    float *wp;            /* [rows, n] A (see the banner); a finished block's columns then
                           * hold the dequantized values, in processing order */
    float *e1;            /* [rows, B] the block's original W, then W - Q: the GEMM's left operand */
    float *w1, *et, *qt;  /* per tile of rows at r0: [B][LANES] at +r0·B: working copy, errors, values */
    uint8_t *ct;          /* per tile: codes, [B][LANES] */
    qs_quant_result *res;
} sweep_ctx;

/* Quantizes columns [bl->i1, bl->i2) of rows [r0, r0 + nr), nr <= LANES,
 * with U's diagonal block T (the first count×count of bl's inverse, leading
 * dimension bl->len); returns Σ (w - q)² / U_cc² over them. Each lane does
 * exactly the per-row arithmetic of the reference, in f32. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static double
sweep_tile(const sweep_ctx *sc, const gptq_block *bl, const float *T, int64_t r0, int64_t nr)
{
    enum { L = QS_GPTQ_LANES };
    const int64_t n = sc->n, rows = sc->rows, gs = sc->gs, B = sc->B, ldws = sc->ldws;
    const int64_t i1 = bl->i1, count = bl->i2 - bl->i1, ldt = bl->len;
    const float *ws = sc->ws;
    float *restrict xt = sc->w1 + r0 * B; /* xt[j·L + l]: column i1 + j of row r0 + l */
    float *restrict et = sc->et + r0 * B, *restrict qt = sc->qt + r0 * B;
    uint8_t *restrict ct = sc->ct + r0 * B;
    float *scales = sc->res->scales;
    int32_t *zeros = sc->res->zeros;
    const int maxq = sc->grid.maxq;
    for (int64_t j = 0; j < count; j++)
        for (int l = 0; l < L; l++) xt[j * L + l] = l < nr ? ws[(r0 + l) * ldws + j] : 0.0f;
    float scale[L], zero[L], e[L], qv[L];
    int code[L];
    for (int l = 0; l < L; l++) scale[l] = 1.0f, zero[l] = 0.0f; /* idle lanes: x = 0 stays 0 */
    int64_t g = -1;
    for (int64_t i = 0; i < count; i++) {
        const int64_t c = i1 + i;
        const int64_t gc = sc->gpos[c];
        if (sc->dynamic && c == gc * gs) {
            /* Dynamic group: from W at the start of the block (banner), which
             * ws holds; the sweep changes only its copy xt. */
            int64_t len = n - c < gs ? n - c : gs;
            for (int64_t l = 0; l < nr; l++) {
                float s, z;
                qs_quant_find_params(ws + (r0 + l) * ldws + i, len, 1, &sc->grid, &s, &z);
                scales[gc * rows + r0 + l] = s;
                zeros[gc * rows + r0 + l] = (int32_t)z;
            }
            g = -1;
        }
        if (gc != g) {
            g = gc;
            for (int64_t l = 0; l < nr; l++) {
                scale[l] = scales[g * rows + r0 + l];
                zero[l] = (float)zeros[g * rows + r0 + l];
            }
        }
        const float d = T[i * ldt + i];
        float *restrict xi = xt + i * L;
#pragma omp simd
        for (int l = 0; l < L; l++) {
            code[l] = qs_quant_code(xi[l], scale[l], zero[l], maxq);
            qv[l] = qs_quant_dequant(code[l], scale[l], zero[l]);
            e[l] = (xi[l] - qv[l]) / d;
        }
        const float *restrict urow = T + i * ldt;
        for (int64_t j = i + 1; j < count; j++) {
            const float u = urow[j];
            float *restrict xj = xt + j * L;
#pragma omp simd
            for (int l = 0; l < L; l++) xj[l] -= e[l] * u;
        }
        /* Keep the column's results in the tile (lane-contiguous); they go
         * to the row-major outputs below, a row at a time: 16 scattered
         * stores per column into rows 16 KiB apart cost more than the sweep. */
        float *restrict ei = et + i * L, *restrict qi = qt + i * L;
        uint8_t *restrict ci = ct + i * L;
        for (int l = 0; l < L; l++) {
            ei[l] = e[l];
            qi[l] = qv[l];
            ci[l] = (uint8_t)code[l];
        }
    }
    /* Out in PROCESSING order (contiguous): W - Q into e1 (which holds the
     * original W of the block), values into wp's finished columns — A there
     * was consumed at the block start — and codes into res->codes; the
     * caller moves values and codes to the original column order at the end. */
    double loss = 0.0;
    for (int64_t l = 0; l < nr; l++) {
        const int64_t r = r0 + l;
        float *restrict dr = sc->e1 + r * B, *restrict qr = sc->wp + r * n + i1;
        uint8_t *restrict cr = sc->res->codes + r * n + i1;
        for (int64_t i = 0; i < count; i++) {
            const float ev = et[i * L + l];
            loss += (double)ev * (double)ev; /* (w - q)² / d² */
            dr[i] -= qt[i * L + l];
            qr[i] = qt[i * L + l];
            cr[i] = ct[i * L + l];
        }
    }
    return loss;
}

/* ---- the algorithm ------------------------------------------------------- */

qs_status qs_quant_gptq(const qs_backend_i *be, const float *w, int64_t rows, int64_t cols, float *h,
                        const qs_quant_opts *o, qs_quant_result *res, qs_error *err)
{
    QS_TRY(qs_quant_opts_check(o, rows, cols, err));
    const char *name = o->name ? o->name : "weight";
    if (res->rows != rows || res->cols != cols || res->groups != qs_quant_groups(o, cols))
        return qs_error_set(err, QS_ERR_INTERNAL, "tensor '%s': gptq: result sized for [%lld,%lld], weight is [%lld,%lld]",
                            name, (long long)res->rows, (long long)res->cols, (long long)rows, (long long)cols);
    double t0 = now_s();
    const int64_t n = cols;
    const qs_quant_grid grid = qs_quant_opts_grid(o);
    const int64_t gs = o->group_size;
    const bool grouped = gs > 0, stat = grouped && o->static_groups;
    const int64_t B = o->block_size < n ? o->block_size : n;

    /* The blocks, and how far the block-start W must reach for dynamic groups. */
    const int64_t nb = (n + B - 1) / B;
    gptq_block *bl = malloc((size_t)nb * sizeof(gptq_block));
    size_t tsize = 0;
    int64_t lmax = 0;
    for (int64_t b = 0; bl && b < nb; b++) {
        int64_t i1 = b * B, i2 = i1 + B < n ? i1 + B : n, len = i2 - i1;
        if (grouped && !stat)
            for (int64_t c = (i1 + gs - 1) / gs * gs; c < i2; c += gs) {
                int64_t end = c + gs < n ? c + gs : n;
                if (end - i1 > len) len = end - i1;
            }
        bl[b] = (gptq_block){.i1 = i1, .i2 = i2, .len = len, .toff = tsize};
        tsize += (size_t)(len * len);
        if (len > lmax) lmax = len;
    }
    float *tinv = qs_malloc((tsize ? tsize : 1) * sizeof(float));
    float *ws = qs_malloc((size_t)rows * (size_t)(lmax ? lmax : 1) * sizeof(float)); /* block-start W */
    float *wp = qs_malloc((size_t)rows * (size_t)n * sizeof(float)); /* A, then the values */
    float *w1 = qs_malloc((size_t)(rows + QS_GPTQ_LANES) * (size_t)B * sizeof(float)); /* block copies */
    float *e1 = qs_malloc((size_t)rows * (size_t)B * sizeof(float));   /* block W - Q */
    float *et = qs_malloc((size_t)(rows + QS_GPTQ_LANES) * (size_t)B * sizeof(float));
    float *qt = qs_malloc((size_t)(rows + QS_GPTQ_LANES) * (size_t)B * sizeof(float));
    uint8_t *ct = qs_malloc((size_t)(rows + QS_GPTQ_LANES) * (size_t)B);
    int64_t *perm = malloc((size_t)n * sizeof(int64_t));
    unsigned char *dead = calloc((size_t)n, 1);
    int32_t *gpos = malloc((size_t)n * sizeof(int32_t));
    qs_status st = QS_OK;
    if (!bl || !tinv || !ws || !wp || !w1 || !e1 || !et || !qt || !ct || !perm || !dead || !gpos) {
        st = qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: cannot allocate work buffers for [%lld,%lld]", name,
                          (long long)rows, (long long)cols);
        goto done;
    }

    /* Mirror the upper triangle: everything below uses the full matrix. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t ib = 0; ib < n; ib += 64) /* 64×64 tiles: the transposed reads stay in cache */
        for (int64_t jb = 0; jb <= ib; jb += 64)
            for (int64_t i = ib; i < ib + 64 && i < n; i++)
                for (int64_t j = jb; j < jb + 64 && j < i; j++) h[i * n + j] = h[j * n + i];

    /* Step 1: per-channel params from W as given (see the banner). */
    if (!grouped) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            float s, z;
            qs_quant_find_params(w + r * n, n, 1, &grid, &s, &z);
            res->scales[r] = s;
            res->zeros[r] = (int32_t)z;
        }
    }

    /* Step 2: dead columns. */
    int64_t ndead = 0;
    double diag_sum = 0.0;
    for (int64_t c = 0; c < n; c++) {
        float d = h[c * n + c];
        if (d == 0.0f) {
            dead[c] = 1;
            h[c * n + c] = 1.0f;
            ndead++;
        }
        if (!isfinite(d)) {
            st = qs_error_set(err, QS_ERR_INPUT, "tensor '%s': gptq: Hessian diagonal [%lld] is %g, expected finite",
                              name, (long long)c, (double)d);
            goto done;
        }
        diag_sum += (double)h[c * n + c];
    }

    /* Step 4: act-order permutation (stable by decreasing diagonal). */
    if (qs_act_order_perm(h, n + 1, n, o->act_order, perm) != QS_OK) {
        st = qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: cannot allocate the act-order keys", name);
        goto done;
    }

    /* Step 3: static group params from W with dead columns zeroed, in the
     * original order. (The sweep gathers W's columns in processing order
     * block by block, zeroing dead ones, so W is never copied whole.) */
    if (stat) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *src = w + r * n;
            float *tmp = wp + r * n; /* A's row is scratch: block 0's GEMM overwrites it */
            for (int64_t c = 0; c < n; c++) tmp[c] = dead[c] ? 0.0f : src[c];
            for (int64_t g = 0; g < n / gs; g++) {
                float s, z;
                qs_quant_find_params(tmp + g * gs, gs, 1, &grid, &s, &z);
                res->scales[g * rows + r] = s;
                res->zeros[g * rows + r] = (int32_t)z;
            }
        }
    }

    /* Step 5: damping. */
    double damp = o->damp * diag_sum / (double)n;
    for (int64_t c = 0; c < n; c++) h[c * n + c] = (float)((double)h[c * n + c] + damp);

    /* Step 6: V (upper) in h, in processing order, and the inverses of its
     * diagonal blocks (the banner says why U itself is never formed). */
    double tf = now_s();
    st = v_factor(h, n, perm, o->factor_f64, name, err);
    if (st == QS_OK && block_inverses(h, n, bl, nb, tinv) != QS_OK)
        st = qs_error_set(err, QS_ERR_NUMERIC, "tensor '%s': gptq: a diagonal block of the Cholesky factor is singular",
                          name);
    res->seconds_factor = now_s() - tf;
    if (st != QS_OK) goto done;
    const float *V = h;

    /* Step 7: the blocked sweep. Rows are independent, so a panel of rows goes
     * through ALL blocks on its own — sweep, then its share of the trailing
     * GEMM — with no barrier between blocks. Panels run in parallel with BLAS
     * single-threaded inside each: the pthread OpenBLAS workers and the
     * OpenMP team would otherwise take turns spinning on the same cores. */
    for (int64_t c = 0; c < n; c++) gpos[c] = (int32_t)(!grouped ? 0 : stat ? perm[c] / gs : c / gs);
    sweep_ctx sc = {.n = n, .rows = rows, .B = B, .gs = gs, .dynamic = grouped && !stat, .grid = grid,
                    .perm = perm, .gpos = gpos, .ws = ws, .ldws = lmax, .wp = wp, .e1 = e1, .w1 = w1, .et = et,
                    .qt = qt, .ct = ct, .res = res};
    int threads = omp_get_max_threads();
    int64_t panel = (rows + 4 * threads - 1) / (4 * threads); /* ~4 panels a thread: balance under load */
    if (panel < 64) panel = 64;
    if (panel > 512) panel = 512; /* a thread's gathered W is panel·cols floats */
    panel = (panel + QS_GPTQ_LANES - 1) / QS_GPTQ_LANES * QS_GPTQ_LANES; /* whole tiles: no shared w1 */
    int64_t npanels = (rows + panel - 1) / panel;
    bool solo = threads > 1 && npanels > 1;
    int blas_threads = openblas_get_num_threads();
    if (solo) openblas_set_num_threads(1);
    double est = 0.0, t_sweep = 0.0, t_upd = 0.0, flops = 0.0;
    int no_mem = 0;
#pragma omp parallel if (solo) reduction(+ : est, t_sweep, t_upd, flops) reduction(| : no_mem)
    {
        /* The panel's W in processing order, dead columns zeroed: gathered
         * once per panel (reading rows through perm block by block would
         * stream each row ~B/2 times over). */
        float *pw = qs_malloc((size_t)panel * (size_t)n * sizeof(float));
        if (!pw) no_mem = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < npanels; p++) {
            if (!pw) continue;
            const int64_t r0 = p * panel, r1 = r0 + panel < rows ? r0 + panel : rows, m = r1 - r0;
            double tg = now_s();
            for (int64_t r = r0; r < r1; r++) {
                const float *src = w + r * n;
                float *dst = pw + (r - r0) * n;
                for (int64_t k = 0; k < n; k++) dst[k] = dead[perm[k]] ? 0.0f : src[perm[k]];
            }
            t_sweep += now_s() - tg;
            for (int64_t b = 0; b < nb; b++) {
                const gptq_block *k = &bl[b];
                const int64_t i1 = k->i1, i2 = k->i2, count = i2 - i1, len = k->len;
                const float *T = tinv + k->toff;
                double ts = now_s();
                /* The block's W into ws, and its first count columns into e1 for W - Q. */
                for (int64_t r = r0; r < r1; r++) {
                    memcpy(ws + r * lmax, pw + (r - r0) * n + i1, (size_t)len * sizeof(float));
                    memcpy(e1 + r * B, pw + (r - r0) * n + i1, (size_t)count * sizeof(float));
                }
                /* W at the block start: W_S + A_S · T (nothing to add before block 0). */
                if (i1 > 0)
                    be->sgemm(be->ctx, false, false, m, len, len, 1.0f, wp + r0 * n + i1, n, T, len, 1.0f,
                              ws + r0 * lmax, lmax);
                for (int64_t t = r0; t < r1; t += QS_GPTQ_LANES)
                    est += sweep_tile(&sc, k, T, t, r1 - t < QS_GPTQ_LANES ? r1 - t : QS_GPTQ_LANES);
                double tu = now_s();
                t_sweep += tu - ts;
                if (i2 < n) {
                    /* A[r0:r1, i2:] += (W - Q)[:, i1:i2] · V[i1:i2, i2:] — one GEMM per block and panel;
                     * block 0's sets A (beta 0: A is never zeroed, columns < B are never read). */
                    be->sgemm(be->ctx, false, false, m, n - i2, count, 1.0f, e1 + r0 * B, B, V + i1 * n + i2, n,
                              i1 == 0 ? 0.0f : 1.0f, wp + r0 * n + i2, n);
                    flops += 2.0 * (double)m * (double)count * (double)(n - i2);
                }
                t_upd += now_s() - tu;
            }
        }
        qs_free(pw);
    }
    if (solo) openblas_set_num_threads(blas_threads);
    if (no_mem) {
        st = qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: cannot allocate a [%lld,%lld] panel", name,
                          (long long)panel, (long long)n);
        goto done;
    }
    /* Thread-seconds → the wall-time share of each phase. */
    int used = solo ? (npanels < threads ? (int)npanels : threads) : 1;
    t_sweep /= used;
    t_upd /= used;

    /* Codes (in res->codes) and values (in wp) to the original column order. */
    int oom = 0;
#pragma omp parallel reduction(| : oom)
    {
        uint8_t *tmp = malloc((size_t)n);
        if (!tmp) oom = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!tmp) continue;
            uint8_t *cr = res->codes + r * n;
            const float *src = wp + r * n;
            float *qr = res->q + r * n;
            memcpy(tmp, cr, (size_t)n);
            for (int64_t k = 0; k < n; k++) {
                cr[perm[k]] = tmp[k];
                qr[perm[k]] = src[k];
            }
        }
        free(tmp);
    }
    if (oom) {
        st = qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: out of memory", name);
        goto done;
    }

    /* g_idx: the group of each original column. */
    for (int64_t k = 0; k < n; k++) {
        int64_t oc = perm[k];
        res->g_idx[oc] = !grouped ? 0 : (int32_t)(stat ? oc / gs : k / gs);
    }
    res->est_loss = est / 2.0;
    res->damp_abs = damp;
    res->dead_columns = ndead;
    res->seconds_sweep = t_sweep;
    res->seconds_update = t_upd;
    res->update_flops = flops;
    res->seconds = now_s() - t0;

done:
    free(bl);
    qs_free(tinv);
    qs_free(ws);
    qs_free(wp);
    qs_free(w1);
    qs_free(e1);
    qs_free(et);
    qs_free(qt);
    qs_free(ct);
    free(perm);
    free(dead);
    free(gpos);
    return st;
}
