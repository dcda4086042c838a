/* gptq_cuda.cu — GPTQ on the GPU: the algorithm of kernels/cpu/gptq.c step
 * by step (read its banner and docs/quantization.md first), with the row
 * panels of the CPU replaced by one thread per row:
 *
 *  1. per-channel params from W as given (group_size = -1);
 *  2. dead columns (H_cc == 0 → H_cc = 1, W[:, c] = 0);
 *  3. static groups from this W in the original column order;
 *  4. act-order: columns by decreasing H_cc, a stable sort (on the host, the
 *     CPU's own comparator, over the n diagonal values);
 *  5. damping H_cc += damp · mean(diag H) (on the host, in double);
 *  6. V (upper) with H[perm][:, perm] = V Vᵀ from ONE Cholesky: the symmetric
 *     permutation by J·perm is a gather from H's upper triangle into the
 *     lower triangle of a copy (row-major lower = column-major upper, what
 *     LAPACK and cuSOLVER's potrf 'U' read), cuSOLVER's 64-bit potrf, then the
 *     reversal k ↔ n²−1−k; with factor_f64 the copy and the factor are double.
 *     The inverses of V's diagonal blocks (T, what the sweep and the
 *     block-start GEMM need) in double, one thread block per block, one
 *     thread per column of T (back substitution);
 *  7. per block of block_size columns: the block-start W (W_S + A_S·T, one
 *     cuBLAS GEMM), ONE kernel for the block's column sweep (a thread per row
 *     running the CPU lane's exact arithmetic: quantize, error, update the
 *     block's later columns; dynamic groups' params from the block-start W),
 *     and the trailing update A[:, i2:] += (W − Q)_block · V[i1:i2, i2:] as
 *     ONE cuBLAS GEMM.
 *
 * Same numbers as the CPU up to the rounding of the libraries: cuSOLVER's
 * Cholesky and cuBLAS's GEMMs sum in other orders than OpenBLAS's, so an
 * element of W a few ulps from a rounding tie can get the other code, and the
 * error feedback then carries that to later columns of its row. The grid,
 * the sweep's per-element arithmetic (built with --fmad=false) and every
 * static choice (permutation, g_idx, static and per-channel params, dead
 * columns, damping) are bit for bit the CPU's. The gpu tests measure the
 * fraction of differing codes against the CPU backend's (tests/gpu/).
 *
 * Device memory for [rows, n]: W twice (the working copy, then A and the
 * values; W in processing order), H once or twice (H, and its permuted copy;
 * once when h is already device memory — it is read, not kept), the codes
 * twice as bytes, and small per-block buffers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda_util.cuh"
#include "kernels/act_order.h"
#include "kernels/quant_grid.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ================================================================ kernels == */

/* Step 1: per-channel params, one thread per row. */
__global__ void k_row_params(const float *w, int64_t rows, int64_t n, qs_quant_grid grid, float *scales,
                             int32_t *zeros)
{
    QS_CU_FOR(r, rows)
    {
        float s, z;
        qs_quant_find_params(w + r * n, n, 1, &grid, &s, &z);
        scales[r] = s;
        zeros[r] = (int32_t)z;
    }
}

/* Step 2: W[:, dead[k]] = 0 for the ndead dead columns. */
__global__ void k_zero_dead(float *w, int64_t rows, int64_t n, const int64_t *dead, int64_t ndead)
{
    QS_CU_FOR(i, rows * ndead)
    {
        const int64_t r = i / ndead, k = i % ndead;
        w[r * n + dead[k]] = 0.0f;
    }
}

/* Step 3: static group params from W (dead columns zeroed), one thread per (group, row). */
__global__ void k_group_params(const float *w, int64_t rows, int64_t n, int64_t gs, qs_quant_grid grid,
                               float *scales, int32_t *zeros)
{
    const int64_t groups = n / gs;
    QS_CU_FOR(i, groups * rows)
    {
        const int64_t g = i / rows, r = i % rows;
        float s, z;
        qs_quant_find_params(w + r * n + g * gs, gs, 1, &grid, &s, &z);
        scales[g * rows + r] = s;
        zeros[g * rows + r] = (int32_t)z;
    }
}

/* pw[r, k] = w[r, perm[k]]: W in processing order. */
__global__ void k_gather_cols(const float *w, int64_t rows, int64_t n, const int64_t *perm, float *pw)
{
    QS_CU_FOR(i, rows * n)
    {
        const int64_t r = i / n, k = i % n;
        pw[i] = w[r * n + perm[k]];
    }
}

/* Step 6, the symmetric permutation by pr = J·perm into the row-major LOWER
 * triangle of hp (the upper stays unwritten): hp[i, j] = H[pr[i], pr[j]] for
 * j <= i, read from H's upper triangle; the diagonal from diag (dead columns
 * set to 1, damped). T is float or double. */
template <typename T>
__global__ void k_permute_lower(const float *h, int64_t n, const int64_t *pr, const float *diag, T *hp)
{
    QS_CU_FOR(idx, n * n)
    {
        const int64_t i = idx / n, j = idx % n;
        if (j > i) continue;
        const int64_t a = pr[i], b = pr[j];
        float v = i == j ? diag[a] : (a < b ? h[a * n + b] : h[b * n + a]);
        hp[idx] = (T)v;
    }
}

/* a[k] ↔ a[n²−1−k]: the lower factor of J·H·J becomes V in the upper triangle. */
__global__ void k_reverse(float *a, int64_t nn)
{
    QS_CU_FOR(k, nn / 2)
    {
        float t = a[k];
        a[k] = a[nn - 1 - k];
        a[nn - 1 - k] = t;
    }
}

/* The f64 factor's reversal, rounded to f32: v[i, j] = hd[n−1−i, n−1−j], j >= i. */
__global__ void k_reverse_f64(const double *hd, int64_t n, float *v)
{
    QS_CU_FOR(idx, n * n)
    {
        const int64_t i = idx / n, j = idx % n;
        if (j < i) continue;
        v[idx] = (float)hd[(n - 1 - i) * n + (n - 1 - j)];
    }
}

/* The sweep's blocks: columns [i1, i2), the block-start W reaches to i1 + len,
 * T = (V[i1:i1+len, i1:i1+len])⁻¹ at toff. */
typedef struct gptq_block {
    int64_t i1, i2, len;
    int64_t toff;
} gptq_block;

/* T of every block, in double: one thread block per diagonal block, one
 * thread per column j of T (upper): T[j, j] = 1 / V[j, j], and for i < j,
 * T[i, j] = −(Σ_{k=i+1..j} V[i, k] T[k, j]) / V[i, i]. t64 is scratch of the
 * same layout as tinv. */
__global__ void k_block_inverse(const float *v, int64_t n, const gptq_block *bl, double *t64, float *tinv)
{
    const gptq_block b = bl[blockIdx.x];
    const int64_t len = b.len, i1 = b.i1;
    double *t = t64 + b.toff;
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
        const float *vr = v + (i1 + j) * n + i1;
        t[j * len + j] = 1.0 / (double)vr[j];
        for (int64_t i = j - 1; i >= 0; i--) {
            const float *vi = v + (i1 + i) * n + i1;
            double s = 0.0;
            for (int64_t k = i + 1; k <= j; k++) s += (double)vi[k] * t[k * len + j];
            t[i * len + j] = -s / (double)vi[i];
        }
        for (int64_t i = j + 1; i < len; i++) t[i * len + j] = 0.0;
        for (int64_t i = 0; i < len; i++) tinv[b.toff + i * len + j] = (float)t[i * len + j];
    }
}

/* Everything the sweep kernel of one block reads and writes. */
typedef struct sweep_args {
    int64_t n, rows, B, gs, ldws;
    int64_t i1, count, ldt;   /* the block: columns [i1, i1 + count); T's leading dimension */
    int dynamic;              /* dynamic groups: params found during the sweep */
    qs_quant_grid grid;
    const int32_t *gpos;      /* processing position → its group */
    const float *ws;          /* [rows, ldws] the block-start W of columns [i1, i1 + len) */
    const float *pw;          /* [rows, n] W in processing order (dead columns zeroed) */
    const float *T;           /* [ldt, ldt] (V_SS)⁻¹; its first count×count part is U's diagonal block */
    float *xg;                /* [count, rows] the working copies when they do not fit in shared memory */
    float *e1;                /* [rows, B] (W − Q) of the block: the trailing GEMM's left operand */
    float *wp;                /* [rows, n] A; the block's columns get the dequantized values */
    uint8_t *codes;           /* [rows, n] codes in processing order */
    float *scales;            /* [groups, rows] */
    int32_t *zeros;
    double *rowloss;          /* [rows] Σ (w − q)² / U_cc², summed over blocks */
} sweep_args;

/* The within-block sweep: one thread per row, the arithmetic of one lane of
 * the CPU's sweep_tile, in the same order. The row's working copy is in
 * shared memory (column i of thread t at [i · blockDim + t]) when it fits,
 * else in a = xg ([i · rows + r]); both are coalesced across a warp. */
__global__ void k_sweep(sweep_args a)
{
    QS_CU_DYNAMIC_SMEM(float, sm);
    const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= a.rows) return;
    float *x;
    int64_t xs;
    if (a.xg) {
        x = a.xg + r;
        xs = a.rows;
    } else {
        x = sm + threadIdx.x;
        xs = blockDim.x;
    }
    const float *wsr = a.ws + r * a.ldws;
    for (int64_t j = 0; j < a.count; j++) x[j * xs] = wsr[j];
    const int maxq = a.grid.maxq;
    float scale = 1.0f, zero = 0.0f;
    int64_t g = -1;
    double loss = 0.0;
    for (int64_t i = 0; i < a.count; i++) {
        const int64_t c = a.i1 + i;
        const int64_t gc = a.gpos[c];
        if (a.dynamic && c == gc * a.gs) {
            /* dynamic group: from W at the start of the block (ws), not from x */
            const int64_t len = a.n - c < a.gs ? a.n - c : a.gs;
            float s, z;
            qs_quant_find_params(wsr + i, len, 1, &a.grid, &s, &z);
            a.scales[gc * a.rows + r] = s;
            a.zeros[gc * a.rows + r] = (int32_t)z;
            g = -1;
        }
        if (gc != g) {
            g = gc;
            scale = a.scales[g * a.rows + r];
            zero = (float)a.zeros[g * a.rows + r];
        }
        const float *urow = a.T + i * a.ldt;
        const float d = urow[i];
        const float xi = x[i * xs];
        const int code = qs_quant_code(xi, scale, zero, maxq);
        const float qv = qs_quant_dequant(code, scale, zero);
        const float e = (xi - qv) / d;
        for (int64_t j = i + 1; j < a.count; j++) x[j * xs] -= e * urow[j];
        loss += (double)e * (double)e;
        a.e1[r * a.B + i] = a.pw[r * a.n + c] - qv;
        a.wp[r * a.n + c] = qv;
        a.codes[r * a.n + c] = (uint8_t)code;
    }
    a.rowloss[r] += loss;
}

/* Codes and values back to the original column order. */
__global__ void k_unpermute(const uint8_t *cp, const float *vp, int64_t rows, int64_t n, const int64_t *perm,
                            uint8_t *codes, float *q)
{
    QS_CU_FOR(i, rows * n)
    {
        const int64_t r = i / n, k = i % n;
        codes[r * n + perm[k]] = cp[i];
        q[r * n + perm[k]] = vp[i];
    }
}

/* =============================================================== driver == */

/* Events around the phases of each block: sweep (with the block-start GEMM)
 * and trailing GEMM, read once at the end. */
typedef struct phase_events {
    cudaEvent_t *ev;
    int64_t count;
} phase_events;

static void events_free(phase_events *pe)
{
    for (int64_t i = 0; i < pe->count; i++)
        if (pe->ev[i]) cudaEventDestroy(pe->ev[i]);
    free(pe->ev);
    pe->ev = NULL;
    pe->count = 0;
}

struct events_guard {
    phase_events pe = {NULL, 0};
    ~events_guard() { events_free(&pe); }
};

/* The lower Cholesky factor of the row-major lower triangle, in place (what
 * the CPU's LAPACKE_spotrf_work(COL_MAJOR, 'U') does on the same memory), with
 * the CPU's message when the damped H is not positive definite. */
static qs_status factor(qs_cuda_ctx *cx, int64_t n, void *a, cudaDataType type, const char *name, qs_error *err)
{
    qs_status st = qs_cuda_potrf(cx, false, n, a, n, type, err);
    if (st == QS_ERR_NUMERIC)
        return qs_error_set(err, QS_ERR_NUMERIC,
                            "tensor '%s': gptq: the damped Hessian [%lld,%lld] is not positive definite "
                            "(raise --damp, or use more calibration samples)",
                            name, (long long)n, (long long)n);
    return st;
}

static qs_status gptq_run(qs_cuda_ctx *cx, const float *w, int64_t rows, int64_t cols, float *h,
                          const qs_quant_opts *o, qs_quant_result *res, qs_error *err)
{
    const char *name = o->name ? o->name : "weight";
    const int64_t n = cols;
    const qs_quant_grid grid = qs_quant_opts_grid(o);
    const int64_t gs = o->group_size;
    const bool grouped = gs > 0, stat = grouped && o->static_groups;
    const int64_t B = o->block_size < n ? o->block_size : n;
    const size_t nw = (size_t)rows * (size_t)n, nn = (size_t)n * (size_t)n, ng = (size_t)res->groups * (size_t)rows;
    double t0 = now_s();

    /* The blocks, and how far the block-start W must reach for dynamic groups. */
    const int64_t nb = (n + B - 1) / B;
    qs_hbuf<gptq_block> bl;
    if (!bl.alloc((size_t)nb))
        return qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: out of host memory", name);
    int64_t tsize = 0, lmax = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t i1 = b * B, i2 = i1 + B < n ? i1 + B : n, len = i2 - i1;
        if (grouped && !stat)
            for (int64_t c = (i1 + gs - 1) / gs * gs; c < i2; c += gs) {
                int64_t end = c + gs < n ? c + gs : n;
                if (end - i1 > len) len = end - i1;
            }
        bl.p[b] = gptq_block{i1, i2, len, tsize};
        tsize += len * len;
        if (len > lmax) lmax = len;
    }

    /* W (a working copy: dead columns get zeroed) and H (read where it is). */
    qs_dbuf<float> d_w, d_hown;
    QS_TRY(d_w.alloc(cx, nw, "W", err));
    QS_TRY(qs_cuda_copy(cx, d_w.p, w, nw * sizeof(float), err));
    cudaPointerAttributes attr;
    memset(&attr, 0, sizeof attr);
    QS_CU_CHECK(cx, err, cudaPointerGetAttributes(&attr, h));
    const float *d_h = h;
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
        QS_TRY(d_hown.alloc(cx, nn, "H", err));
        QS_TRY(qs_cuda_copy(cx, d_hown.p, h, nn * sizeof(float), err));
        d_h = d_hown.p;
    }

    /* Steps 2, 4, 5 on the host, over the diagonal only. */
    qs_hbuf<float> diag;
    qs_hbuf<int64_t> perm, pr, deadlist;
    qs_hbuf<int32_t> gpos;
    if (!diag.alloc(n) || !perm.alloc(n) || !pr.alloc(n) || !deadlist.alloc(n) || !gpos.alloc(n))
        return qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: out of host memory", name);
    QS_CU_CHECK(cx, err,
                cudaMemcpy2DAsync(diag.p, sizeof(float), d_h, (size_t)(n + 1) * sizeof(float), sizeof(float),
                                  (size_t)n, cudaMemcpyDeviceToHost, cx->stream));
    QS_CU_CHECK(cx, err, cudaStreamSynchronize(cx->stream));
    int64_t ndead = 0;
    double diag_sum = 0.0;
    for (int64_t c = 0; c < n; c++) {
        float d = diag.p[c];
        if (d == 0.0f) {
            diag.p[c] = 1.0f;
            deadlist.p[ndead++] = c;
        }
        if (!isfinite(d))
            return qs_error_set(err, QS_ERR_INPUT, "tensor '%s': gptq: Hessian diagonal [%lld] is %g, expected finite",
                                name, (long long)c, (double)d);
        diag_sum += (double)diag.p[c];
    }
    if (qs_act_order_perm(diag.p, 1, n, o->act_order, perm.p) != QS_OK)
        return qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: out of host memory", name);
    const double damp = o->damp * diag_sum / (double)n;
    for (int64_t c = 0; c < n; c++) diag.p[c] = (float)((double)diag.p[c] + damp);
    for (int64_t k = 0; k < n; k++) pr.p[k] = perm.p[n - 1 - k]; /* J · perm */
    for (int64_t c = 0; c < n; c++) gpos.p[c] = (int32_t)(!grouped ? 0 : stat ? perm.p[c] / gs : c / gs);

    qs_dbuf<int64_t> d_perm, d_pr, d_dead;
    qs_dbuf<float> d_diag, d_scales;
    qs_dbuf<int32_t> d_zeros, d_gpos;
    qs_dbuf<gptq_block> d_bl;
    QS_TRY(d_perm.alloc(cx, n, "the permutation", err));
    QS_TRY(d_pr.alloc(cx, n, "the permutation", err));
    QS_TRY(d_dead.alloc(cx, ndead, "the dead columns", err));
    QS_TRY(d_diag.alloc(cx, n, "the diagonal", err));
    QS_TRY(d_gpos.alloc(cx, n, "the groups", err));
    QS_TRY(d_bl.alloc(cx, nb, "the blocks", err));
    QS_TRY(d_scales.alloc(cx, ng, "the scales", err));
    QS_TRY(d_zeros.alloc(cx, ng, "the zeros", err));
    QS_TRY(qs_cuda_copy(cx, d_perm.p, perm.p, n * sizeof(int64_t), err));
    QS_TRY(qs_cuda_copy(cx, d_pr.p, pr.p, n * sizeof(int64_t), err));
    QS_TRY(qs_cuda_copy(cx, d_dead.p, deadlist.p, ndead * sizeof(int64_t), err));
    QS_TRY(qs_cuda_copy(cx, d_diag.p, diag.p, n * sizeof(float), err));
    QS_TRY(qs_cuda_copy(cx, d_gpos.p, gpos.p, n * sizeof(int32_t), err));
    QS_TRY(qs_cuda_copy(cx, d_bl.p, bl.p, nb * sizeof(gptq_block), err));

    /* Steps 1-3 on W; then W in processing order. */
    if (!grouped)
        QS_CU_LAUNCH(cx, err, k_row_params, qs_cu_blocks(rows), QS_CU_THREADS, 0, d_w.p, rows, n, grid, d_scales.p,
                     d_zeros.p);
    if (ndead)
        QS_CU_LAUNCH(cx, err, k_zero_dead, qs_cu_blocks(rows * ndead), QS_CU_THREADS, 0, d_w.p, rows, n, d_dead.p,
                     ndead);
    if (stat)
        QS_CU_LAUNCH(cx, err, k_group_params, qs_cu_blocks((n / gs) * rows), QS_CU_THREADS, 0, d_w.p, rows, n, gs,
                     grid, d_scales.p, d_zeros.p);
    qs_dbuf<float> d_pw;
    QS_TRY(d_pw.alloc(cx, nw, "W in processing order", err));
    QS_CU_LAUNCH(cx, err, k_gather_cols, qs_cu_blocks((int64_t)nw), QS_CU_THREADS, 0, d_w.p, rows, n, d_perm.p,
                 d_pw.p);
    float *d_wp = d_w.p; /* from here on W's copy holds A, then the values */

    /* Step 6: V and the inverses of its diagonal blocks. */
    double tf = now_s();
    qs_dbuf<float> d_v;
    QS_TRY(d_v.alloc(cx, nn, "V (the permuted Hessian's factor)", err));
    if (!o->factor_f64) {
        QS_CU_LAUNCH(cx, err, k_permute_lower<float>, qs_cu_blocks((int64_t)nn), QS_CU_THREADS, 0, d_h, n, d_pr.p,
                     d_diag.p, d_v.p);
        d_hown.release();
        QS_TRY(factor(cx, n, d_v.p, CUDA_R_32F, name, err));
        QS_CU_LAUNCH(cx, err, k_reverse, qs_cu_blocks((int64_t)(nn / 2)), QS_CU_THREADS, 0, d_v.p, (int64_t)nn);
    } else {
        qs_dbuf<double> d_hd;
        QS_TRY(d_hd.alloc(cx, nn, "the f64 Hessian", err));
        QS_CU_LAUNCH(cx, err, k_permute_lower<double>, qs_cu_blocks((int64_t)nn), QS_CU_THREADS, 0, d_h, n, d_pr.p,
                     d_diag.p, d_hd.p);
        d_hown.release();
        QS_TRY(factor(cx, n, d_hd.p, CUDA_R_64F, name, err));
        QS_CU_LAUNCH(cx, err, k_reverse_f64, qs_cu_blocks((int64_t)nn), QS_CU_THREADS, 0, d_hd.p, n, d_v.p);
    }
    qs_dbuf<float> d_tinv;
    QS_TRY(d_tinv.alloc(cx, (size_t)tsize, "the diagonal blocks' inverses", err));
    {
        qs_dbuf<double> d_t64;
        QS_TRY(d_t64.alloc(cx, (size_t)tsize, "the diagonal blocks' inverses (f64)", err));
        QS_CU_LAUNCH(cx, err, k_block_inverse, (unsigned)nb, 128, 0, d_v.p, n, d_bl.p, d_t64.p, d_tinv.p);
        QS_CU_CHECK(cx, err, cudaStreamSynchronize(cx->stream));
    }
    res->seconds_factor = now_s() - tf;

    /* Step 7: the blocked sweep. */
    qs_dbuf<float> d_ws, d_e1, d_xg;
    qs_dbuf<uint8_t> d_cp;
    qs_dbuf<double> d_rowloss;
    QS_TRY(d_ws.alloc(cx, (size_t)rows * (size_t)lmax, "the block-start W", err));
    QS_TRY(d_e1.alloc(cx, (size_t)rows * (size_t)B, "the block's W - Q", err));
    QS_TRY(d_cp.alloc(cx, nw, "the codes", err));
    QS_TRY(d_rowloss.alloc(cx, (size_t)rows, "the row losses", err));
    QS_CU_CHECK(cx, err, cudaMemsetAsync(d_rowloss.p, 0, (size_t)rows * sizeof(double), cx->stream));
    /* 32 rows (one warp) per thread block: rows/32 blocks spread over the SMs;
     * the working copies in shared memory when B columns of them fit in 32 KiB */
    const int threads = 32;
    const size_t smem = (size_t)B * threads * sizeof(float);
    const bool use_smem = smem <= 32 * 1024;
    if (!use_smem) QS_TRY(d_xg.alloc(cx, (size_t)B * (size_t)rows, "the sweep's working copies", err));
    events_guard evg;
    evg.pe.count = 3 * nb;
    evg.pe.ev = (cudaEvent_t *)calloc((size_t)evg.pe.count, sizeof(cudaEvent_t));
    if (!evg.pe.ev) return qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: out of host memory", name);
    for (int64_t i = 0; i < evg.pe.count; i++) QS_CU_CHECK(cx, err, cudaEventCreate(&evg.pe.ev[i]));

    double flops = 0.0;
    for (int64_t b = 0; b < nb; b++) {
        const gptq_block k = bl.p[b];
        const int64_t count = k.i2 - k.i1;
        const float *T = d_tinv.p + k.toff;
        QS_CU_CHECK(cx, err, cudaEventRecord(evg.pe.ev[3 * b], cx->stream));
        /* the block's W, then W at the block start: W_S + A_S · T (nothing to add before block 0) */
        QS_CU_CHECK(cx, err,
                    cudaMemcpy2DAsync(d_ws.p, (size_t)lmax * sizeof(float), d_pw.p + k.i1, (size_t)n * sizeof(float),
                                      (size_t)k.len * sizeof(float), (size_t)rows, cudaMemcpyDeviceToDevice,
                                      cx->stream));
        if (k.i1 > 0)
            QS_TRY(qs_cuda_sgemm(cx, false, false, rows, k.len, k.len, 1.0f, d_wp + k.i1, n, T, k.len, 1.0f, d_ws.p,
                                 lmax, err));
        sweep_args sa;
        memset(&sa, 0, sizeof sa);
        sa.n = n, sa.rows = rows, sa.B = B, sa.gs = gs, sa.ldws = lmax;
        sa.i1 = k.i1, sa.count = count, sa.ldt = k.len;
        sa.dynamic = grouped && !stat;
        sa.grid = grid;
        sa.gpos = d_gpos.p, sa.ws = d_ws.p, sa.pw = d_pw.p, sa.T = T, sa.xg = use_smem ? NULL : d_xg.p;
        sa.e1 = d_e1.p, sa.wp = d_wp, sa.codes = d_cp.p, sa.scales = d_scales.p, sa.zeros = d_zeros.p;
        sa.rowloss = d_rowloss.p;
        QS_CU_LAUNCH(cx, err, k_sweep, (unsigned)((rows + threads - 1) / threads), threads, use_smem ? smem : 0, sa);
        QS_CU_CHECK(cx, err, cudaEventRecord(evg.pe.ev[3 * b + 1], cx->stream));
        if (k.i2 < n) {
            /* A[:, i2:] += (W - Q)[:, i1:i2] · V[i1:i2, i2:]; block 0's sets A (beta 0) */
            QS_TRY(qs_cuda_sgemm(cx, false, false, rows, n - k.i2, count, 1.0f, d_e1.p, B, d_v.p + k.i1 * n + k.i2,
                                 n, k.i1 == 0 ? 0.0f : 1.0f, d_wp + k.i2, n, err));
            flops += 2.0 * (double)rows * (double)count * (double)(n - k.i2);
        }
        QS_CU_CHECK(cx, err, cudaEventRecord(evg.pe.ev[3 * b + 2], cx->stream));
    }

    /* Codes and values to the original column order, and home. */
    qs_dbuf<uint8_t> d_codes;
    QS_TRY(d_codes.alloc(cx, nw, "the codes", err));
    float *d_q = d_pw.p; /* W in processing order is no longer needed */
    QS_CU_LAUNCH(cx, err, k_unpermute, qs_cu_blocks((int64_t)nw), QS_CU_THREADS, 0, d_cp.p, d_wp, rows, n, d_perm.p,
                 d_codes.p, d_q);
    qs_hbuf<double> rowloss;
    if (!rowloss.alloc((size_t)rows))
        return qs_error_set(err, QS_ERR_NOMEM, "tensor '%s': gptq: out of host memory", name);
    QS_TRY(qs_cuda_copy(cx, res->codes, d_codes.p, nw, err));
    QS_TRY(qs_cuda_copy(cx, res->q, d_q, nw * sizeof(float), err));
    QS_TRY(qs_cuda_copy(cx, res->scales, d_scales.p, ng * sizeof(float), err));
    QS_TRY(qs_cuda_copy(cx, res->zeros, d_zeros.p, ng * sizeof(int32_t), err));
    QS_TRY(qs_cuda_copy(cx, rowloss.p, d_rowloss.p, (size_t)rows * sizeof(double), err));

    double est = 0.0;
    for (int64_t r = 0; r < rows; r++) est += rowloss.p[r];
    double t_sweep = 0.0, t_upd = 0.0;
    for (int64_t b = 0; b < nb; b++) {
        float ms1 = 0.0f, ms2 = 0.0f;
        QS_CU_CHECK(cx, err, cudaEventElapsedTime(&ms1, evg.pe.ev[3 * b], evg.pe.ev[3 * b + 1]));
        QS_CU_CHECK(cx, err, cudaEventElapsedTime(&ms2, evg.pe.ev[3 * b + 1], evg.pe.ev[3 * b + 2]));
        t_sweep += 1e-3 * ms1;
        t_upd += 1e-3 * ms2;
    }
    for (int64_t k = 0; k < n; k++) {
        int64_t oc = perm.p[k];
        res->g_idx[oc] = !grouped ? 0 : (int32_t)(stat ? oc / gs : k / gs);
    }
    res->est_loss = est / 2.0;
    res->damp_abs = damp;
    res->dead_columns = ndead;
    res->seconds_sweep = t_sweep;
    res->seconds_update = t_upd;
    res->update_flops = flops;
    res->seconds = now_s() - t0;
    return QS_OK;
}

qs_status qs_cuda_gptq_run(void *ctx, const float *w, int64_t rows, int64_t cols, float *h, const qs_quant_opts *o,
                           qs_quant_result *res, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    QS_TRY(qs_quant_opts_check(o, rows, cols, err));
    const char *name = o->name ? o->name : "weight";
    if (res->rows != rows || res->cols != cols || res->groups != qs_quant_groups(o, cols))
        return qs_error_set(err, QS_ERR_INTERNAL,
                            "tensor '%s': gptq: result sized for [%lld,%lld], weight is [%lld,%lld]", name,
                            (long long)res->rows, (long long)res->cols, (long long)rows, (long long)cols);
    QS_CU_CHECK(cx, err, cudaSetDevice(cx->device));
    qs_status st = gptq_run(cx, w, rows, cols, h, o, res, err);
    if (st != QS_OK && err && strncmp(err->msg, "tensor", 6) != 0) qs_error_prefix(err, "tensor '%s': gptq", name);
    return st;
}
