/* ops_cuda.cu — the forward ops table (kernels/ops_table.h) on the GPU:
 * RMSNorm/LayerNorm, residuals and biases, SiLU/GELU/ReLU, RoPE, tiled
 * causal attention with GQA and ALiBi, the embedding gather, NLL/KL rows, and
 * the Hessian helpers (widening, merging, mirroring).
 *
 * Every per-element formula is the QS_HD function of kernels/ops.h that the
 * CPU loops (kernels/cpu/ops.c) call, built with --fmad=false, so an element
 * computed in the same order is the CPU's bit for bit. What differs is the
 * order of sums over a row (a tree of partial sums here, a loop there): norms
 * and log-sum-exps sum in double, so they agree to ~1e-15 relative before the
 * final rounding; attention's running sums of exp are f32 on both, summed
 * in a different order (~1e-7 relative). The gpu tests hold every op to 1e-4
 * relative of the CPU's and report the largest difference.
 *
 * Attention mirrors the CPU's tiling: a thread block per (batch, head, tile
 * of QS_ATTN_TILE_Q queries), key tiles of QS_ATTN_TILE_K in shared memory,
 * the same online-softmax rescaling points; each warp owns some query rows,
 * a lane scores two keys of the tile and accumulates head_dim/32 output
 * components (head_dim <= 256).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_util.cuh"
#include "kernels/ops.h"

/* ============================================================ reductions == */

#define RED_THREADS 256

/* Sum over the block (RED_THREADS threads); sh is [32] scratch. Every thread
 * gets the sum; sh may be reused after. */
__device__ double block_sum(double v, double *sh)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        v = lane < nw ? sh[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    double r = sh[0];
    __syncthreads();
    return r;
}

/* Max over the block; NaN is ignored as the CPU's `x > m ? x : m` ignores it. */
__device__ float block_max(float v, float *sh)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_down_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        v = lane < nw ? sh[lane] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1) {
            float u = __shfl_down_sync(0xffffffffu, v, o);
            v = u > v ? u : v;
        }
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    float r = sh[0];
    __syncthreads();
    return r;
}

/* (value, index) of the largest element, the first index on ties. */
__device__ bool argmax_better(float v, int64_t i, float bv, int64_t bi)
{
    return v > bv || (v == bv && i < bi);
}

__device__ int64_t block_argmax(float v, int64_t i, float *shv, int64_t *shi)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_down_sync(0xffffffffu, v, o);
        int64_t k = __shfl_down_sync(0xffffffffu, i, o);
        if (argmax_better(u, k, v, i)) v = u, i = k;
    }
    if (lane == 0) shv[wid] = v, shi[wid] = i;
    __syncthreads();
    if (wid == 0) {
        v = lane < nw ? shv[lane] : -INFINITY;
        i = lane < nw ? shi[lane] : INT64_MAX;
        for (int o = 16; o > 0; o >>= 1) {
            float u = __shfl_down_sync(0xffffffffu, v, o);
            int64_t k = __shfl_down_sync(0xffffffffu, i, o);
            if (argmax_better(u, k, v, i)) v = u, i = k;
        }
        if (lane == 0) shi[0] = i;
    }
    __syncthreads();
    int64_t r = shi[0];
    __syncthreads();
    return r;
}

/* ================================================================= norms == */

__global__ void k_rmsnorm(const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps)
{
    __shared__ double sh[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * n;
        double ss = 0.0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
        ss = block_sum(ss, sh);
        const float inv = qs_op_rmsnorm_inv(ss, n, eps);
        float *yr = y + r * n;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = qs_op_rmsnorm_apply(xr[i], inv, w[i]);
        __syncthreads(); /* y may alias x: the next row's reads come after this row's writes */
    }
}

__global__ void k_layernorm(const float *x, const float *w, const float *b, float *y, int64_t rows, int64_t n,
                            float eps)
{
    __shared__ double sh[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * n;
        double s = 0.0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xr[i];
        const double mean = block_sum(s, sh) / (double)n;
        double v = 0.0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            double dd = (double)xr[i] - mean;
            v += dd * dd;
        }
        const double inv = qs_op_layernorm_inv(block_sum(v, sh), n, eps);
        float *yr = y + r * n;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
            yr[i] = qs_op_layernorm_apply(xr[i], mean, inv, w[i], b ? b[i] : 0.0f, b != NULL);
        __syncthreads();
    }
}

static unsigned row_blocks(int64_t rows) { return (unsigned)(rows < (1 << 20) ? (rows > 0 ? rows : 1) : (1 << 20)); }

static qs_status op_rmsnorm(void *ctx, const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps,
                            qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (rows <= 0 || n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_rmsnorm, row_blocks(rows), RED_THREADS, 0, x, w, y, rows, n, eps);
    return QS_OK;
}

static qs_status op_layernorm(void *ctx, const float *x, const float *w, const float *b, float *y, int64_t rows,
                              int64_t n, float eps, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (rows <= 0 || n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_layernorm, row_blocks(rows), RED_THREADS, 0, x, w, b, y, rows, n, eps);
    return QS_OK;
}

/* ========================================================== element-wise == */

__global__ void k_add_bias(float *y, const float *bias, int64_t rows, int64_t n)
{
    QS_CU_FOR(i, rows * n) y[i] += bias[i % n];
}

__global__ void k_add(float *y, const float *x, int64_t n)
{
    QS_CU_FOR(i, n) y[i] += x[i];
}

__global__ void k_scale(float *y, float s, int64_t n)
{
    QS_CU_FOR(i, n) y[i] *= s;
}

__global__ void k_silu_mul(float *gate, const float *up, int64_t n)
{
    QS_CU_FOR(i, n) gate[i] = qs_op_silu(gate[i]) * up[i];
}

__global__ void k_relu(float *x, int64_t n)
{
    QS_CU_FOR(i, n) x[i] = qs_op_relu(x[i]);
}

__global__ void k_gelu_tanh(float *x, int64_t n)
{
    QS_CU_FOR(i, n) x[i] = qs_op_gelu_tanh(x[i]);
}

static qs_status op_add_bias(void *ctx, float *y, const float *bias, int64_t rows, int64_t n, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (rows * n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_add_bias, qs_cu_blocks(rows * n), QS_CU_THREADS, 0, y, bias, rows, n);
    return QS_OK;
}

static qs_status op_add(void *ctx, float *y, const float *x, int64_t n, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_add, qs_cu_blocks(n), QS_CU_THREADS, 0, y, x, n);
    return QS_OK;
}

static qs_status op_scale(void *ctx, float *y, float s, int64_t n, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_scale, qs_cu_blocks(n), QS_CU_THREADS, 0, y, s, n);
    return QS_OK;
}

static qs_status op_silu_mul(void *ctx, float *gate, const float *up, int64_t n, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_silu_mul, qs_cu_blocks(n), QS_CU_THREADS, 0, gate, up, n);
    return QS_OK;
}

static qs_status op_relu(void *ctx, float *x, int64_t n, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_relu, qs_cu_blocks(n), QS_CU_THREADS, 0, x, n);
    return QS_OK;
}

static qs_status op_gelu_tanh(void *ctx, float *x, int64_t n, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_gelu_tanh, qs_cu_blocks(n), QS_CU_THREADS, 0, x, n);
    return QS_OK;
}

/* ================================================================== RoPE == */

/* One thread per (token, head, pair i < head_dim/2). */
__global__ void k_rope(float *x, int64_t rows, int64_t seq, int heads, int head_dim, int64_t tok_stride,
                       int64_t head_stride, const float *cs, const float *sn)
{
    const int h2 = head_dim / 2;
    QS_CU_FOR(idx, rows * heads * h2)
    {
        const int64_t r = idx / ((int64_t)heads * h2);
        const int h = (int)((idx / h2) % heads), i = (int)(idx % h2);
        const int64_t t = r % seq;
        float *xh = x + r * tok_stride + (int64_t)h * head_stride;
        qs_op_rope_pair(&xh[i], &xh[i + h2], cs[t * h2 + i], sn[t * h2 + i]);
    }
}

static qs_status op_rope(void *ctx, float *x, int64_t batch, int64_t seq, int heads, int head_dim, int64_t tok_stride,
                         int64_t head_stride, const float *cs, const float *sn, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    const int64_t work = batch * seq * heads * (head_dim / 2);
    if (work <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_rope, qs_cu_blocks(work), QS_CU_THREADS, 0, x, batch * seq, seq, heads, head_dim,
                 tok_stride, head_stride, cs, sn);
    return QS_OK;
}

/* ============================================================= attention == */

#define ATT_TQ QS_ATTN_TILE_Q            /* 32 queries per thread block, as on the CPU */
#define ATT_TK QS_ATTN_TILE_K            /* 64 keys per tile, as on the CPU */
#define ATT_WARPS 4
#define ATT_RPW (ATT_TQ / ATT_WARPS)     /* query rows per warp */
#define ATT_MAXC 8                       /* output components per lane: head_dim <= 256 */
#define ATT_MAX_HEAD_DIM (32 * ATT_MAXC)

static size_t att_smem(int d)
{
    return ((size_t)ATT_TK * (size_t)(d + 1) + (size_t)ATT_TK * d + (size_t)ATT_TQ * d) * sizeof(float);
}

__global__ void __launch_bounds__(32 * ATT_WARPS) k_attention(qs_attn_args a, int64_t n_qt)
{
    QS_CU_DYNAMIC_SMEM(float, sm);
    const int d = a.head_dim, dk = d + 1; /* keys' rows padded: lanes read a column without bank conflicts */
    float *ks = sm;                       /* [TK][d + 1] */
    float *vs = ks + ATT_TK * dk;         /* [TK][d] */
    float *qs = vs + ATT_TK * d;          /* [TQ][d], q · scale */
    const int64_t wi = blockIdx.x;
    const int64_t qt = wi % n_qt;
    const int h = (int)((wi / n_qt) % a.n_heads);
    const int64_t b = wi / (n_qt * a.n_heads);
    const int64_t i0 = qt * ATT_TQ, i1 = i0 + ATT_TQ < a.seq_q ? i0 + ATT_TQ : a.seq_q, nq = i1 - i0;
    const int kvh = h / (a.n_heads / a.n_kv_heads);
    const int64_t off = a.seq_k - a.seq_q;
    const float slope = a.alibi ? a.alibi[h] : 0.0f;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    for (int64_t idx = threadIdx.x; idx < nq * d; idx += blockDim.x) {
        const int64_t i = idx / d;
        const int c = (int)(idx % d);
        qs[i * d + c] = a.q[(b * a.seq_q + i0 + i) * a.q_tok + (int64_t)h * a.q_head + c] * a.scale;
    }

    qs_softmax_state st[ATT_RPW];
    float acc[ATT_RPW][ATT_MAXC];
#pragma unroll
    for (int rr = 0; rr < ATT_RPW; rr++) {
        st[rr].m = -INFINITY;
        st[rr].l = 0.0f;
#pragma unroll
        for (int t = 0; t < ATT_MAXC; t++) acc[rr][t] = 0.0f;
    }

    /* the last key any query of this tile may see */
    int64_t kend = a.causal ? i1 - 1 + off + 1 : a.seq_k;
    if (kend > a.seq_k) kend = a.seq_k;

    for (int64_t j0 = 0; j0 < kend; j0 += ATT_TK) {
        const int64_t nk = j0 + ATT_TK < kend ? ATT_TK : kend - j0;
        __syncthreads(); /* the previous tile is consumed (and qs is written, the first time) */
        for (int64_t idx = threadIdx.x; idx < nk * d; idx += blockDim.x) {
            const int64_t j = idx / d;
            const int c = (int)(idx % d);
            const int64_t tok = b * a.seq_k + j0 + j;
            ks[j * dk + c] = a.k[tok * a.k_tok + (int64_t)kvh * a.k_head + c];
            vs[j * d + c] = a.v[tok * a.v_tok + (int64_t)kvh * a.v_head + c];
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < ATT_RPW; rr++) {
            const int64_t i = (int64_t)warp * ATT_RPW + rr;
            if (i >= nq) continue;
            /* keys of this tile row i may see: all, or up to its causal limit */
            int64_t nj = a.causal ? i0 + i + off - j0 + 1 : nk;
            if (nj > nk) nj = nk;
            if (nj <= 0) continue;
            /* scores of keys lane and lane + 32, summed over c in order (the CPU's order) */
            const float *qi = qs + i * d;
            float s0 = -INFINITY, s1 = -INFINITY;
            if (lane < nj) {
                float s = 0.0f;
                const float *kj = ks + lane * dk;
                for (int c = 0; c < d; c++) s += qi[c] * kj[c];
                if (a.alibi) s += slope * (float)(j0 + lane);
                s0 = s;
            }
            if (lane + 32 < nj) {
                float s = 0.0f;
                const float *kj = ks + (lane + 32) * dk;
                for (int c = 0; c < d; c++) s += qi[c] * kj[c];
                if (a.alibi) s += slope * (float)(j0 + lane + 32);
                s1 = s;
            }
            float row_max = s0 > s1 ? s0 : s1;
            for (int o = 16; o > 0; o >>= 1) {
                float u = __shfl_xor_sync(0xffffffffu, row_max, o);
                row_max = u > row_max ? u : row_max;
            }
            const float alpha = qs_op_softmax_rescale(&st[rr], row_max);
            if (alpha != 1.0f) {
#pragma unroll
                for (int t = 0; t < ATT_MAXC; t++) acc[rr][t] *= alpha;
            }
            const float m = st[rr].m;
            const float p0 = lane < nj ? qs_op_expf(s0 - m) : 0.0f;
            const float p1 = lane + 32 < nj ? qs_op_expf(s1 - m) : 0.0f;
            float lsum = p0 + p1;
            for (int o = 16; o > 0; o >>= 1) lsum += __shfl_xor_sync(0xffffffffu, lsum, o);
            st[rr].l += lsum;
            for (int64_t j = 0; j < nj; j++) {
                const float p = __shfl_sync(0xffffffffu, j < 32 ? p0 : p1, (int)(j & 31));
                const float *vj = vs + j * d;
#pragma unroll
                for (int t = 0; t < ATT_MAXC; t++) {
                    const int c = lane + 32 * t;
                    if (c < d) acc[rr][t] += p * vj[c];
                }
            }
        }
    }

#pragma unroll
    for (int rr = 0; rr < ATT_RPW; rr++) {
        const int64_t i = (int64_t)warp * ATT_RPW + rr;
        if (i >= nq) continue;
        float *o = a.out + (b * a.seq_q + i0 + i) * a.o_tok + (int64_t)h * a.o_head;
        /* a row that sees no key at all (only with seq_k < seq_q) outputs zeros */
        const float inv = st[rr].l > 0.0f ? 1.0f / st[rr].l : 0.0f;
#pragma unroll
        for (int t = 0; t < ATT_MAXC; t++) {
            const int c = lane + 32 * t;
            if (c < d) o[c] = acc[rr][t] * inv;
        }
    }
}

static qs_status op_attention(void *ctx, const qs_attn_args *a, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads != 0 || a->head_dim <= 0)
        return qs_error_set(err, QS_ERR_INPUT, "attention: %d query heads, %d kv heads, head_dim %d: expected "
                                               "positive counts with heads divisible by kv heads",
                            a->n_heads, a->n_kv_heads, a->head_dim);
    if (a->head_dim > ATT_MAX_HEAD_DIM)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: attention: head_dim %d, the CUDA kernel takes <= %d",
                            cx->name, a->head_dim, ATT_MAX_HEAD_DIM);
    if (a->batch <= 0 || a->seq_q <= 0 || a->seq_k <= 0) return QS_OK;
    const size_t smem = att_smem(a->head_dim);
    int optin = 0;
    QS_CU_CHECK(cx, err, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, cx->device));
    if (smem > (size_t)optin)
        return qs_error_set(err, QS_ERR_UNSUPPORTED,
                            "%s: attention: head_dim %d needs %zu bytes of shared memory, the device has %d", cx->name,
                            a->head_dim, smem, optin);
    QS_CU_CHECK(cx, err, cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const int64_t n_qt = (a->seq_q + ATT_TQ - 1) / ATT_TQ;
    const int64_t blocks = a->batch * a->n_heads * n_qt;
    if (blocks > INT32_MAX)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: attention: %lld tiles, expected < 2^31", cx->name,
                            (long long)blocks);
    QS_CU_LAUNCH(cx, err, k_attention, (unsigned)blocks, 32 * ATT_WARPS, smem, *a, n_qt);
    return QS_OK;
}

/* ============================================================= embedding == */

__global__ void k_embed_check(const int32_t *ids, int64_t n, int64_t vocab, unsigned long long *bad)
{
    QS_CU_FOR(i, n)
    if (ids[i] < 0 || ids[i] >= vocab) atomicMin(bad, (unsigned long long)i);
}

__global__ void k_embed(const float *table, int64_t hidden, const int32_t *ids, int64_t n, float *out)
{
    QS_CU_FOR(idx, n * hidden)
    {
        const int64_t i = idx / hidden, c = idx % hidden;
        out[idx] = table[(int64_t)ids[i] * hidden + c];
    }
}

/* The ids are checked first (as the CPU does, nothing is written for a bad
 * one): this op waits for the stream. */
static qs_status op_embed(void *ctx, const float *table, int64_t vocab, int64_t hidden, const int32_t *ids, int64_t n,
                          float *out, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n <= 0) return QS_OK;
    qs_dbuf<unsigned long long> d_bad;
    QS_TRY(d_bad.alloc(cx, 1, "a flag", err));
    QS_CU_CHECK(cx, err, cudaMemsetAsync(d_bad.p, 0xff, sizeof(unsigned long long), cx->stream));
    QS_CU_LAUNCH(cx, err, k_embed_check, qs_cu_blocks(n), QS_CU_THREADS, 0, ids, n, vocab, d_bad.p);
    unsigned long long bad = 0;
    QS_TRY(qs_cuda_copy(cx, &bad, d_bad.p, sizeof bad, err));
    if (bad != ~0ull) {
        int32_t id = 0;
        QS_TRY(qs_cuda_copy(cx, &id, ids + bad, sizeof id, err));
        return qs_error_set(err, QS_ERR_INPUT, "token %lld: id %d is outside the vocabulary [0, %lld)",
                            (long long)bad, id, (long long)vocab);
    }
    QS_CU_LAUNCH(cx, err, k_embed, qs_cu_blocks(n * hidden), QS_CU_THREADS, 0, table, hidden, ids, n, out);
    return QS_OK;
}

/* ======================================================== NLL, KL rows == */

/* log Σ exp of a row with exp in double (the CPU's qs_cpu_logsumexp). */
__device__ double row_lse_double(const float *x, int64_t n, float *shf, double *shd)
{
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = x[i] > m ? x[i] : m;
    m = block_max(m, shf);
    if (m == -INFINITY || !isfinite(m)) return (double)m;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += exp((double)x[i] - (double)m);
    return qs_op_lse(m, block_sum(s, shd));
}

/* nll[r] = logsumexp(logits[r]) − logits[r, targets[r]], the CPU's exp in f32
 * (qs_op_expf) summed in double; a non-finite max as the CPU handles it. */
__global__ void k_nll_rows(const float *logits, int64_t rows, int64_t vocab, const int32_t *targets, double *nll)
{
    __shared__ float shf[32];
    __shared__ double shd[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *x = logits + r * vocab;
        float m = -INFINITY;
        for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) m = x[i] > m ? x[i] : m;
        m = block_max(m, shf);
        double lse;
        if (isfinite(m)) {
            double s = 0.0;
            for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) s += qs_op_expf(x[i] - m);
            lse = qs_op_lse(m, block_sum(s, shd));
        } else {
            lse = row_lse_double(x, vocab, shf, shd);
        }
        if (threadIdx.x == 0) nll[r] = lse - (double)x[targets[r]];
        __syncthreads();
    }
}

__global__ void k_kl_rows(const float *ref, const float *x, int64_t rows, int64_t vocab, double *kl, uint8_t *same)
{
    __shared__ float shf[32];
    __shared__ double shd[32];
    __shared__ int64_t shi[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *pr = ref + r * vocab, *px = x + r * vocab;
        const double lse_r = row_lse_double(pr, vocab, shf, shd);
        const double lse_x = row_lse_double(px, vocab, shf, shd);
        double s = 0.0;
        for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) s += qs_op_kl_term(pr[i], px[i], lse_r, lse_x);
        s = block_sum(s, shd);
        if (threadIdx.x == 0) kl[r] = s > 0.0 ? s : 0.0; /* KL >= 0; tiny negatives are rounding */
        if (same) {
            float bv = -INFINITY, bx = -INFINITY;
            int64_t bi = INT64_MAX, bj = INT64_MAX;
            for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
                if (argmax_better(pr[i], i, bv, bi)) bv = pr[i], bi = i;
                if (argmax_better(px[i], i, bx, bj)) bx = px[i], bj = i;
            }
            const int64_t ar = block_argmax(bv, bi, shf, shi);
            const int64_t ax = block_argmax(bx, bj, shf, shi);
            /* a row of NaN or -inf only: the CPU's argmax is 0 */
            if (threadIdx.x == 0) same[r] = (ar == INT64_MAX ? 0 : ar) == (ax == INT64_MAX ? 0 : ax);
        }
        __syncthreads();
    }
}

static qs_status op_nll_rows(void *ctx, const float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                             double *nll, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (rows <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_nll_rows, row_blocks(rows), RED_THREADS, 0, logits, rows, vocab, targets, nll);
    return QS_OK;
}

static qs_status op_kl_rows(void *ctx, const float *ref, const float *x, int64_t rows, int64_t vocab, double *kl,
                            uint8_t *same, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (rows <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_kl_rows, row_blocks(rows), RED_THREADS, 0, ref, x, rows, vocab, kl, same);
    return QS_OK;
}

/* ==================================================== Hessian helpers == */

__global__ void k_widen_f64(const float *x, int64_t rows, int64_t cols, int64_t ldx, double *y)
{
    QS_CU_FOR(i, rows * cols)
    {
        const int64_t r = i / cols, c = i % cols;
        y[i] = (double)x[r * ldx + c];
    }
}

__global__ void k_hessian_merge(float *h32, double *h64, const float *o32, const double *o64, int64_t n, double a,
                                double b)
{
    QS_CU_FOR(k, n * n)
    {
        const int64_t i = k / n, j = k % n;
        if (j < i) continue;
        const double o = o64 ? o64[k] : (double)o32[k];
        if (h64) h64[k] = qs_op_mean_merge(h64[k], o, a, b);
        else h32[k] = (float)qs_op_mean_merge((double)h32[k], o, a, b);
    }
}

__global__ void k_hessian_full(const float *h32, const double *h64, int64_t n, float *out)
{
    QS_CU_FOR(k, n * n)
    {
        const int64_t i = k / n, j = k % n;
        const int64_t u = i <= j ? k : j * n + i; /* the upper triangle's element */
        out[k] = h64 ? (float)h64[u] : h32[u];
    }
}

static qs_status op_widen_f64(void *ctx, const float *x, int64_t rows, int64_t cols, int64_t ldx, double *y,
                              qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (rows * cols <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_widen_f64, qs_cu_blocks(rows * cols), QS_CU_THREADS, 0, x, rows, cols, ldx, y);
    return QS_OK;
}

static qs_status op_hessian_merge(void *ctx, float *h32, double *h64, const float *o32, const double *o64, int64_t n,
                                  double a, double b, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_hessian_merge, qs_cu_blocks(n * n), QS_CU_THREADS, 0, h32, h64, o32, o64, n, a, b);
    return QS_OK;
}

static qs_status op_hessian_full(void *ctx, const float *h32, const double *h64, int64_t n, float *out, qs_error *err)
{
    qs_cuda_ctx *cx = (qs_cuda_ctx *)ctx;
    if (n <= 0) return QS_OK;
    QS_CU_LAUNCH(cx, err, k_hessian_full, qs_cu_blocks(n * n), QS_CU_THREADS, 0, h32, h64, n, out);
    return QS_OK;
}

/* Filled by name (C++17 has no designated initializers). */
static qs_ops_i make_table(void)
{
    qs_ops_i t;
    memset(&t, 0, sizeof t);
    t.rmsnorm = op_rmsnorm;
    t.layernorm = op_layernorm;
    t.add_bias = op_add_bias;
    t.add = op_add;
    t.scale = op_scale;
    t.silu_mul = op_silu_mul;
    t.relu = op_relu;
    t.gelu_tanh = op_gelu_tanh;
    t.rope = op_rope;
    t.attention = op_attention;
    t.embed = op_embed;
    t.nll_rows = op_nll_rows;
    t.kl_rows = op_kl_rows;
    t.widen_f64 = op_widen_f64;
    t.hessian_merge = op_hessian_merge;
    t.hessian_full = op_hessian_full;
    return t;
}

const qs_ops_i qs_ops_cuda_table = make_table();
