/* ops_backward.c — CPU loops of the transformer backward (see
 * ops_backward_cpu.h): linear through the backend's sgemm, norms, RoPE,
 * activations, and the tiled attention backward. The per-element formulas
 * are kernels/ops_backward.h. */
#include "kernels/cpu/ops_backward_cpu.h"

#include <math.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/ops_backward.h"
#include "kernels/tensor.h"

/* Element-wise loops go parallel only above ~4 MB (as in ops.c). */
#define QS_OMP_MIN_WORK (1 << 20)
/* Columns per work item of a column reduction: each output column is summed
 * by one thread, in row order, whatever the thread count. */
#define COL_BLOCK 64

/* ================================================================= linear == */

void qs_cpu_linear_backward(const qs_backend_i *be, const float *x, const float *w, const float *dy, int64_t rows,
                            int64_t in, int64_t out, float *dx, float dx_beta, float *dw, float dw_beta, float *db)
{
    if (dx) be->sgemm(be->ctx, false, false, rows, in, out, 1.0f, dy, out, w, in, dx_beta, dx, in);
    if (dw) be->sgemm(be->ctx, true, false, out, in, rows, 1.0f, dy, out, x, in, dw_beta, dw, in);
    if (db) qs_cpu_colsum(dy, rows, out, out, db);
}

void qs_cpu_colsum(const float *a, int64_t rows, int64_t n, int64_t lda, float *out)
{
    int64_t nb = (n + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (rows * n >= QS_OMP_MIN_WORK)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t c0 = blk * COL_BLOCK, c1 = c0 + COL_BLOCK < n ? c0 + COL_BLOCK : n;
        double acc[COL_BLOCK] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *ar = a + r * lda;
            for (int64_t c = c0; c < c1; c++) acc[c - c0] += ar[c];
        }
        for (int64_t c = c0; c < c1; c++) out[c] = (float)acc[c - c0];
    }
}

void qs_cpu_colsum_mul(const float *a, const float *b, int64_t rows, int64_t n, float *out)
{
    int64_t nb = (n + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (rows * n >= QS_OMP_MIN_WORK)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t c0 = blk * COL_BLOCK, c1 = c0 + COL_BLOCK < n ? c0 + COL_BLOCK : n;
        double acc[COL_BLOCK] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *ar = a + r * n, *br = b + r * n;
            for (int64_t c = c0; c < c1; c++) acc[c - c0] += (double)ar[c] * (double)br[c];
        }
        for (int64_t c = c0; c < c1; c++) out[c] = (float)acc[c - c0];
    }
}

void qs_cpu_gemv_t(const float *a, const float *v, int64_t rows, int64_t n, float *out)
{
    int64_t nb = (n + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (rows * n >= QS_OMP_MIN_WORK)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t c0 = blk * COL_BLOCK, c1 = c0 + COL_BLOCK < n ? c0 + COL_BLOCK : n;
        double acc[COL_BLOCK] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *ar = a + r * n;
            const double vr = v[r];
            for (int64_t c = c0; c < c1; c++) acc[c - c0] += vr * (double)ar[c];
        }
        for (int64_t c = c0; c < c1; c++) out[c] = (float)acc[c - c0];
    }
}

/* ================================================================== norms == */

void qs_cpu_rmsnorm_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, int64_t rows,
                             int64_t n, float eps)
{
    if (dw) {
        /* a parameter gradient: rows in order, one thread (cheap next to the
         * GEMMs); before dx, which may overwrite dy */
        memset(dw, 0, sizeof(float) * (size_t)n);
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * n, *dr = dy + r * n;
            double ss = 0.0;
            for (int64_t i = 0; i < n; i++) ss += (double)xr[i] * (double)xr[i];
            float inv = qs_op_rmsnorm_inv(ss, n, eps); /* as the forward rounds it */
            for (int64_t i = 0; i < n; i++) dw[i] += dr[i] * (xr[i] * inv);
        }
    }
    if (dx) {
#pragma omp parallel for schedule(static) if (rows * n >= QS_OMP_MIN_WORK)
        for (int64_t r = 0; r < rows; r++)
            qs_op_rmsnorm_row_backward(x + r * n, w, dy + r * n, dx + r * n, NULL, n, eps);
    }
}

void qs_cpu_layernorm_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, float *db,
                               int64_t rows, int64_t n, float eps)
{
    if (dw || db) {
        /* parameter gradients first (rows in order): dx may overwrite dy */
        if (dw) memset(dw, 0, sizeof(float) * (size_t)n);
        if (db) memset(db, 0, sizeof(float) * (size_t)n);
        for (int64_t r = 0; r < rows; r++)
            qs_op_layernorm_row_backward(x + r * n, w, dy + r * n, NULL, dw, db, n, eps);
    }
    if (dx) {
#pragma omp parallel for schedule(static) if (rows * n >= QS_OMP_MIN_WORK)
        for (int64_t r = 0; r < rows; r++)
            qs_op_layernorm_row_backward(x + r * n, w, dy + r * n, dx + r * n, NULL, NULL, n, eps);
    }
}

/* =================================================================== RoPE == */

void qs_cpu_rope_backward(float *dx, int64_t batch, int64_t seq, int heads, int head_dim, int64_t tok_stride,
                          int64_t head_stride, const float *cs, const float *sn)
{
    int64_t rows = batch * seq;
    int h2 = head_dim / 2;
#pragma omp parallel for schedule(static) if (rows * heads * head_dim >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        int64_t t = r % seq;
        for (int h = 0; h < heads; h++)
            qs_op_rope_rotate_half_backward(dx + r * tok_stride + h * head_stride, cs + t * h2, sn + t * h2,
                                            head_dim);
    }
}

/* ============================================================ activations == */

void qs_cpu_silu_mul_backward(const float *gate, const float *up, const float *dh, float *dgate, float *dup, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], u = up[i], d = dh[i];
        dup[i] = d * qs_op_silu(g);
        dgate[i] = d * u * qs_op_silu_grad(g);
    }
}

void qs_cpu_relu_backward(const float *x, float *d, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) d[i] *= qs_op_relu_grad(x[i]);
}

void qs_cpu_gelu_tanh_backward(const float *x, float *d, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) d[i] *= qs_op_gelu_tanh_grad(x[i]);
}

/* ============================================================== attention == */

enum { TQ = QS_ATTN_TILE_Q, TK = QS_ATTN_TILE_K };

/* Per-thread tiles: the query tile and its output gradient, the key/value
 * tile in both orientations (rows for the gradient sums, transposed so the
 * score loops run over unit-stride memory), probabilities and score
 * gradients, the row terms D_i = dO_i · O_i and lse_i, and the query tile's
 * gradient accumulated over key tiles. */
typedef struct attn_bwd_scratch {
    float *q, *dout, *dq;      /* [TQ, d] */
    float *k, *v;              /* [TK, d] */
    float *kt, *vt;            /* [d, TK] */
    float *p, *ds;             /* [TQ, TK] */
    float *dd, *lse;           /* [TQ] */
} attn_bwd_scratch;

static size_t attn_bwd_floats(int d)
{
    return (size_t)(3 * TQ * d + 4 * TK * d + 2 * TQ * TK + 2 * TQ);
}

static void attn_bwd_carve(float *buf, int d, attn_bwd_scratch *w)
{
    w->q = buf;
    w->dout = w->q + TQ * d;
    w->dq = w->dout + TQ * d;
    w->k = w->dq + TQ * d;
    w->v = w->k + TK * d;
    w->kt = w->v + TK * d;
    w->vt = w->kt + TK * d;
    w->p = w->vt + TK * d;
    w->ds = w->p + TQ * TK;
    w->dd = w->ds + TQ * TK;
    w->lse = w->dd + TQ;
}

/* All gradients of kv head `g` of batch row b: dK and dV of that head, dQ of
 * the query heads that read it. Loops run in a fixed order (query head,
 * query tile, key tile), so the sums do not depend on threads. */
static void attn_bwd_item(const qs_attn_args *a, const float *lse_all, const qs_attn_grad_args *gr, int64_t b, int g,
                          const attn_bwd_scratch *w)
{
    const int d = a->head_dim;
    const int group = a->n_heads / a->n_kv_heads;
    const int64_t off = a->seq_k - a->seq_q;
    for (int64_t j = 0; j < a->seq_k; j++) {
        memset(gr->dk + (b * a->seq_k + j) * gr->dk_tok + (int64_t)g * gr->dk_head, 0, sizeof(float) * (size_t)d);
        memset(gr->dv + (b * a->seq_k + j) * gr->dv_tok + (int64_t)g * gr->dv_head, 0, sizeof(float) * (size_t)d);
    }
    float *restrict q = w->q, *restrict dout = w->dout, *restrict dq = w->dq, *restrict kt = w->kt,
                    *restrict vt = w->vt, *restrict p = w->p, *restrict ds = w->ds;
    for (int h = g * group; h < (g + 1) * group; h++) {
        const float slope = a->alibi ? a->alibi[h] : 0.0f;
        for (int64_t i0 = 0; i0 < a->seq_q; i0 += TQ) {
            const int64_t nq = i0 + TQ < a->seq_q ? TQ : a->seq_q - i0;
            for (int64_t i = 0; i < nq; i++) {
                const int64_t t = b * a->seq_q + i0 + i;
                const float *qi = a->q + t * a->q_tok + (int64_t)h * a->q_head;
                const float *oi = a->out + t * a->o_tok + (int64_t)h * a->o_head;
                const float *gi = gr->dout + t * gr->do_tok + (int64_t)h * gr->do_head;
                memcpy(q + i * d, qi, sizeof(float) * (size_t)d);
                memcpy(dout + i * d, gi, sizeof(float) * (size_t)d);
                float dd = 0.0f;
                for (int c = 0; c < d; c++) dd += gi[c] * oi[c];
                w->dd[i] = dd;
                w->lse[i] = lse_all[(b * a->n_heads + h) * a->seq_q + i0 + i];
            }
            memset(dq, 0, sizeof(float) * (size_t)(nq * d));
            int64_t kend = a->causal ? i0 + nq - 1 + off + 1 : a->seq_k;
            if (kend > a->seq_k) kend = a->seq_k;
            for (int64_t j0 = 0; j0 < kend; j0 += TK) {
                const int64_t nk = j0 + TK < kend ? TK : kend - j0;
                for (int64_t j = 0; j < nk; j++) {
                    const int64_t t = b * a->seq_k + j0 + j;
                    const float *kj = a->k + t * a->k_tok + (int64_t)g * a->k_head;
                    const float *vj = a->v + t * a->v_tok + (int64_t)g * a->v_head;
                    memcpy(w->k + j * d, kj, sizeof(float) * (size_t)d);
                    memcpy(w->v + j * d, vj, sizeof(float) * (size_t)d);
                    for (int c = 0; c < d; c++) {
                        kt[c * TK + j] = kj[c];
                        vt[c * TK + j] = vj[c];
                    }
                }
                /* probabilities and score gradients of the tile (zero where masked) */
                for (int64_t i = 0; i < nq; i++) {
                    int64_t nj = a->causal ? i0 + i + off - j0 + 1 : nk;
                    if (nj > nk) nj = nk;
                    if (nj < 0) nj = 0;
                    float *restrict pi = p + i * TK, *restrict dsi = ds + i * TK;
                    for (int64_t j = 0; j < nk; j++) pi[j] = dsi[j] = 0.0f;
                    if (nj == 0 || w->lse[i] == -INFINITY) continue;
                    /* the score exactly as the forward forms it: (q_c · scale) · k_c summed over c */
                    for (int c = 0; c < d; c++) {
                        const float qc = q[i * d + c] * a->scale;
                        const float *restrict kc = kt + c * TK;
#pragma omp simd
                        for (int64_t j = 0; j < nj; j++) pi[j] += qc * kc[j];
                    }
                    if (a->alibi)
                        for (int64_t j = 0; j < nj; j++) pi[j] += slope * (float)(j0 + j);
                    const float l = w->lse[i];
#pragma omp simd
                    for (int64_t j = 0; j < nj; j++) pi[j] = qs_op_expf(pi[j] - l);
                    /* dP_ij = dO_i · V_j */
                    for (int c = 0; c < d; c++) {
                        const float gc = dout[i * d + c];
                        const float *restrict vc = vt + c * TK;
#pragma omp simd
                        for (int64_t j = 0; j < nj; j++) dsi[j] += gc * vc[j];
                    }
                    const float di = w->dd[i];
#pragma omp simd
                    for (int64_t j = 0; j < nj; j++) dsi[j] = pi[j] * (dsi[j] - di);
                }
                /* dV_j += Σ_i P_ij dO_i;  dK_j += scale Σ_i dS_ij Q_i */
                for (int64_t j = 0; j < nk; j++) {
                    const int64_t t = b * a->seq_k + j0 + j;
                    float *restrict dvj = gr->dv + t * gr->dv_tok + (int64_t)g * gr->dv_head;
                    float *restrict dkj = gr->dk + t * gr->dk_tok + (int64_t)g * gr->dk_head;
                    for (int64_t i = 0; i < nq; i++) {
                        const float pij = p[i * TK + j], sij = ds[i * TK + j] * a->scale;
                        if (pij == 0.0f && sij == 0.0f) continue;
                        const float *restrict gi = dout + i * d, *restrict qi = q + i * d;
#pragma omp simd
                        for (int c = 0; c < d; c++) {
                            dvj[c] += pij * gi[c];
                            dkj[c] += sij * qi[c];
                        }
                    }
                }
                /* dQ_i += scale Σ_j dS_ij K_j */
                for (int64_t i = 0; i < nq; i++) {
                    float *restrict dqi = dq + i * d;
                    for (int64_t j = 0; j < nk; j++) {
                        const float sij = ds[i * TK + j] * a->scale;
                        if (sij == 0.0f) continue;
                        const float *restrict kj = w->k + j * d;
#pragma omp simd
                        for (int c = 0; c < d; c++) dqi[c] += sij * kj[c];
                    }
                }
            }
            for (int64_t i = 0; i < nq; i++) {
                const int64_t t = b * a->seq_q + i0 + i;
                memcpy(gr->dq + t * gr->dq_tok + (int64_t)h * gr->dq_head, dq + i * d, sizeof(float) * (size_t)d);
            }
        }
    }
}

qs_status qs_cpu_attention_backward(const qs_attn_args *a, const float *lse, const qs_attn_grad_args *g,
                                    qs_error *err)
{
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads != 0 || a->head_dim <= 0)
        return qs_error_set(err, QS_ERR_INPUT, "attention backward: %d query heads, %d kv heads, head_dim %d: "
                                               "expected positive counts with heads divisible by kv heads",
                            a->n_heads, a->n_kv_heads, a->head_dim);
    if (!lse) return qs_error_set(err, QS_ERR_INPUT, "attention backward: the forward's row log-sum-exps are needed");
    if (a->batch <= 0 || a->seq_q <= 0 || a->seq_k <= 0) return QS_OK;
    const int64_t n_work = a->batch * a->n_kv_heads;
    const size_t floats = attn_bwd_floats(a->head_dim);
    int failed = 0;
#pragma omp parallel if (n_work > 1)
    {
        float *buf = qs_malloc(sizeof(float) * floats);
        attn_bwd_scratch w = {0};
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        } else {
            attn_bwd_carve(buf, a->head_dim, &w);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t wi = 0; wi < n_work; wi++) {
            if (!buf) continue;
            attn_bwd_item(a, lse, g, wi / a->n_kv_heads, (int)(wi % a->n_kv_heads), &w);
        }
        qs_free(buf);
    }
    if (failed) return qs_error_set(err, QS_ERR_NOMEM, "attention backward: out of memory for tile scratch");
    return QS_OK;
}
