/* ops.c — CPU loops of the transformer forward: norms, RoPE, tiled causal
 * attention with an online softmax, activations, embedding gather,
 * log-softmax / NLL / KL. The per-element formulas are kernels/ops.h. */
#include "kernels/cpu/ops_cpu.h"

#include <float.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"

/* Element-wise loops are parallelized only above ~4 MB of data: below it they
 * are memory-bound microseconds, and every parallel region leaves libgomp's
 * threads spin-waiting while the next sgemm wants the cores for OpenBLAS's own
 * threads (measured: 2x slower tinystories eval on 2 cores with 32k). */
#define QS_OMP_MIN_WORK (1 << 20)

/* ================================================================== norms == */

void qs_cpu_rmsnorm(const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps)
{
#pragma omp parallel for schedule(static) if (rows * n >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) qs_op_rmsnorm_row(x + r * n, w, y + r * n, n, eps);
}

void qs_cpu_layernorm(const float *x, const float *w, const float *b, float *y, int64_t rows, int64_t n, float eps)
{
#pragma omp parallel for schedule(static) if (rows * n >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) qs_op_layernorm_row(x + r * n, w, b, y + r * n, n, eps);
}

/* ============================================================ element-wise == */

void qs_cpu_add_bias(float *y, const float *bias, int64_t rows, int64_t n)
{
#pragma omp parallel for schedule(static) if (rows * n >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * n;
        for (int64_t i = 0; i < n; i++) yr[i] += bias[i];
    }
}

void qs_cpu_add(float *y, const float *x, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void qs_cpu_scale(float *y, float s, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) y[i] *= s;
}

void qs_cpu_to_bf16(const float *x, uint16_t *y, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) y[i] = qs_f32_to_bf16(x[i]);
}

void qs_cpu_silu_mul(float *gate, const float *up, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) gate[i] = qs_op_silu(gate[i]) * up[i];
}

void qs_cpu_relu(float *x, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) x[i] = qs_op_relu(x[i]);
}

void qs_cpu_gelu_tanh(float *x, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) x[i] = qs_op_gelu_tanh(x[i]);
}

/* =================================================================== RoPE == */

void qs_cpu_rope_inv_freq(int head_dim, double theta, int scaling, double factor, double low_freq_factor,
                          double high_freq_factor, double original_max_positions, double *inv_freq)
{
    for (int i = 0; i < head_dim / 2; i++) {
        double f = qs_op_rope_inv_freq(i, head_dim, theta);
        if (scaling == 1 && factor > 0) f /= factor;
        else if (scaling == 2)
            f = qs_op_rope_llama3_scale(f, factor, low_freq_factor, high_freq_factor, original_max_positions);
        inv_freq[i] = f;
    }
}

void qs_cpu_rope_tables(const double *inv_freq, int head_dim, int64_t pos0, int64_t n_pos, float *cs, float *sn)
{
    int h = head_dim / 2;
    for (int64_t p = 0; p < n_pos; p++)
        for (int i = 0; i < h; i++) {
            double ang = (double)(pos0 + p) * inv_freq[i];
            cs[p * h + i] = (float)cos(ang);
            sn[p * h + i] = (float)sin(ang);
        }
}

void qs_cpu_rope(float *x, int64_t batch, int64_t seq, int heads, int head_dim, int64_t tok_stride,
                 int64_t head_stride, const float *cs, const float *sn)
{
    int64_t rows = batch * seq;
    int h2 = head_dim / 2;
#pragma omp parallel for schedule(static) if (rows * heads * head_dim >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        int64_t t = r % seq;
        for (int h = 0; h < heads; h++)
            qs_op_rope_rotate_half(x + r * tok_stride + h * head_stride, cs + t * h2, sn + t * h2, head_dim);
    }
}

/* ============================================================== attention == */

/* x[j] = qs_op_expf(x[j] − m) for j < n. GCC does not vectorize the scalar
 * function (its clamps become branches and its bit casts memory), so x86-64
 * gets the same operations, in the same order, as SSE2 intrinsics: the
 * results are bit-identical to qs_op_expf. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* The SSE2 loop below, 16 lanes at a time: the same operations on every
 * element (this file is compiled without FMA contraction), so the same bits. */
__attribute__((target("avx512f"))) static int64_t exp_shifted_avx512(float *x, int64_t n, float m)
{
    const __m512 vm = _mm512_set1_ps(m), lo = _mm512_set1_ps(-87.0f), hi = _mm512_set1_ps(88.0f);
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), magic = _mm512_set1_ps(12582912.0f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    const __m512i magic_bits = _mm512_set1_epi32(0x4B400000), bias = _mm512_set1_epi32(127);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + j), vm);
        v = _mm512_max_ps(v, lo);
        v = _mm512_min_ps(v, hi);
        __m512 t = _mm512_add_ps(_mm512_mul_ps(v, log2e), magic);
        __m512 nf = _mm512_sub_ps(t, magic);
        __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(t), magic_bits);
        __m512 r = _mm512_sub_ps(v, _mm512_mul_ps(nf, ln2_hi));
        r = _mm512_sub_ps(r, _mm512_mul_ps(nf, ln2_lo));
        __m512 z = _mm512_mul_ps(r, r);
        __m512 p = _mm512_set1_ps(1.9875691500e-4f);
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
        p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, z), r), _mm512_set1_ps(1.0f));
        __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ni, bias), 23));
        _mm512_storeu_ps(x + j, _mm512_mul_ps(p, scale));
    }
    return j;
}
#define QS_EXP_AVX512 1
#endif

static bool have_avx512f(void);

static void exp_shifted(float *x, int64_t n, float m)
{
    int64_t j = 0;
#ifdef QS_EXP_AVX512
    if (n >= 16 && have_avx512f()) j = exp_shifted_avx512(x, n, m);
#endif
#ifdef __SSE2__
    const __m128 vm = _mm_set1_ps(m), lo = _mm_set1_ps(-87.0f), hi = _mm_set1_ps(88.0f);
    const __m128 log2e = _mm_set1_ps(1.44269504088896341f), magic = _mm_set1_ps(12582912.0f);
    const __m128 ln2_hi = _mm_set1_ps(0.693359375f), ln2_lo = _mm_set1_ps(-2.12194440e-4f);
    const __m128i magic_bits = _mm_set1_epi32(0x4B400000), bias = _mm_set1_epi32(127);
    for (; j + 4 <= n; j += 4) {
        __m128 v = _mm_sub_ps(_mm_loadu_ps(x + j), vm);
        v = _mm_max_ps(v, lo); /* as `v < lo ? lo : v` for non-NaN v */
        v = _mm_min_ps(v, hi);
        __m128 t = _mm_add_ps(_mm_mul_ps(v, log2e), magic);
        __m128 nf = _mm_sub_ps(t, magic);
        __m128i ni = _mm_sub_epi32(_mm_castps_si128(t), magic_bits);
        __m128 r = _mm_sub_ps(v, _mm_mul_ps(nf, ln2_hi));
        r = _mm_sub_ps(r, _mm_mul_ps(nf, ln2_lo));
        __m128 z = _mm_mul_ps(r, r);
        __m128 p = _mm_set1_ps(1.9875691500e-4f);
        p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.3981999507e-3f));
        p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(8.3334519073e-3f));
        p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(4.1665795894e-2f));
        p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.6666665459e-1f));
        p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(5.0000001201e-1f));
        p = _mm_add_ps(_mm_add_ps(_mm_mul_ps(p, z), r), _mm_set1_ps(1.0f));
        __m128 scale = _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(ni, bias), 23));
        _mm_storeu_ps(x + j, _mm_mul_ps(p, scale));
    }
#endif
    for (; j < n; j++) x[j] = qs_op_expf(x[j] - m);
}

/* Σ_j qs_op_expf(x[j] − m) accumulated in double (x is not modified). */
static double sum_exp_shifted(const float *x, int64_t n, float m)
{
    float buf[256];
    double s = 0.0;
    for (int64_t j0 = 0; j0 < n; j0 += 256) {
        int64_t nb = n - j0 < 256 ? n - j0 : 256;
        memcpy(buf, x + j0, sizeof(float) * (size_t)nb);
        exp_shifted(buf, nb, m);
        for (int64_t j = 0; j < nb; j++) s += buf[j];
    }
    return s;
}

/* One query tile [i0, i1) of one (batch, head) pair. Scratch: s[TQ·TK]
 * scores, acc[TQ·d] unnormalized outputs, st[TQ] softmax states, kt[d·TK]
 * the key tile transposed and vt[TK·d] the value tile, both contiguous so the
 * inner loops run over unit-stride memory and vectorize. */
typedef struct attn_scratch {
    float *s, *acc, *kt, *vt;
    qs_softmax_state *st;
} attn_scratch;

/* ---- the two inner products of a tile, plain and AVX-512 ----------------
 *
 * scores: s[r][j] = Σ_c (q_r[c]·scale)·kt[c][j] for rows r of a group and
 *         keys j < nk, the sum in c order (a product, then an add: two
 *         roundings, no FMA);
 * values: acc[r][c] += Σ_{j < nj_r} p_r[j]·vt[j][c], j in order, the same
 *         way.
 * The AVX-512 versions keep every element's operations and their order and
 * only do 16 elements per instruction for a group of rows held in registers,
 * so they give the same bits as the plain loops (which GCC vectorizes with
 * SSE2 the same way): the exports stay byte-identical whichever runs. */

#define QS_ATTN_GROUP 4 /* query rows per register-blocked group */

static void scores_plain(const float *const *q, int nr, float scale, const float *kt, int d, int64_t nk, float *s)
{
    for (int r = 0; r < nr; r++) {
        float *restrict si = s + r * QS_ATTN_TILE_K;
        for (int64_t j = 0; j < nk; j++) si[j] = 0.0f;
        for (int c = 0; c < d; c++) {
            const float qc = q[r][c] * scale;
            const float *restrict kc = kt + c * QS_ATTN_TILE_K;
#pragma omp simd
            for (int64_t j = 0; j < nk; j++) si[j] += qc * kc[j];
        }
    }
}

static void values_plain(int nr, const int64_t *nj, const float *s, const float *vt, int d, float *acc)
{
    for (int r = 0; r < nr; r++) {
        float *restrict ai = acc + r * d;
        const float *si = s + r * QS_ATTN_TILE_K;
        for (int64_t j = 0; j < nj[r]; j++) {
            const float p = si[j];
            const float *restrict vj = vt + j * d;
#pragma omp simd
            for (int c = 0; c < d; c++) ai[c] += p * vj[c];
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define QS_ATTN_AVX512 1

__attribute__((target("avx512f"))) static void scores_avx512(const float *const *q, int nr, float scale,
                                                              const float *kt, int d, int64_t nk, float *s)
{
    /* 16-key chunks; the tile is QS_ATTN_TILE_K = 64 keys, so at most 4 */
    for (int64_t j0 = 0; j0 < nk; j0 += 16) {
        __mmask16 m = nk - j0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nk - j0)) - 1u);
        __m512 acc[QS_ATTN_GROUP];
        for (int r = 0; r < QS_ATTN_GROUP; r++) acc[r] = _mm512_setzero_ps();
        for (int c = 0; c < d; c++) {
            __m512 k = _mm512_maskz_loadu_ps(m, kt + c * QS_ATTN_TILE_K + j0);
            for (int r = 0; r < nr; r++)
                acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(_mm512_set1_ps(q[r][c] * scale), k));
        }
        for (int r = 0; r < nr; r++) _mm512_mask_storeu_ps(s + r * QS_ATTN_TILE_K + j0, m, acc[r]);
    }
}

__attribute__((target("avx512f"))) static void values_avx512(int nr, const int64_t *nj, const float *s,
                                                              const float *vt, int d, float *acc)
{
    int64_t jmin = nj[0], jmax = nj[0];
    for (int r = 1; r < nr; r++) {
        if (nj[r] < jmin) jmin = nj[r];
        if (nj[r] > jmax) jmax = nj[r];
    }
    for (int c0 = 0; c0 < d; c0 += 16) {
        __mmask16 m = d - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (d - c0)) - 1u);
        __m512 a[QS_ATTN_GROUP];
        for (int r = 0; r < nr; r++) a[r] = _mm512_maskz_loadu_ps(m, acc + r * d + c0);
        int64_t j = 0;
        for (; j < jmin; j++) {
            __m512 v = _mm512_maskz_loadu_ps(m, vt + j * d + c0);
            for (int r = 0; r < nr; r++)
                a[r] = _mm512_add_ps(a[r], _mm512_mul_ps(_mm512_set1_ps(s[r * QS_ATTN_TILE_K + j]), v));
        }
        for (; j < jmax; j++) { /* the diagonal: rows stop at their own causal limit */
            __m512 v = _mm512_maskz_loadu_ps(m, vt + j * d + c0);
            for (int r = 0; r < nr; r++)
                if (j < nj[r]) a[r] = _mm512_add_ps(a[r], _mm512_mul_ps(_mm512_set1_ps(s[r * QS_ATTN_TILE_K + j]), v));
        }
        for (int r = 0; r < nr; r++) _mm512_mask_storeu_ps(acc + r * d + c0, m, a[r]);
    }
}
#endif

static int force_plain = 0;

void qs_cpu_attention_force_plain(bool plain) { force_plain = plain; }

static bool have_avx512f(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return have == 1 && !force_plain;
#else
    return false;
#endif
}

static bool use_avx512(void) { return have_avx512f(); }

static void attn_tile(const qs_attn_args *a, int64_t b, int h, int64_t i0, int64_t i1, const attn_scratch *w)
{
    const int d = a->head_dim;
    const int kvh = h / (a->n_heads / a->n_kv_heads);
    const int64_t off = a->seq_k - a->seq_q;
    const float slope = a->alibi ? a->alibi[h] : 0.0f;
    const int64_t nq = i1 - i0;
    const bool wide = use_avx512();
    float *restrict kt = w->kt, *restrict vt = w->vt, *restrict acc = w->acc;
    qs_softmax_state *st = w->st;

    for (int64_t i = 0; i < nq; i++) {
        st[i].m = -INFINITY;
        st[i].l = 0.0f;
    }
    memset(acc, 0, sizeof(float) * (size_t)(nq * d));

    /* the last key any query of this tile may see */
    int64_t kend = a->causal ? i1 - 1 + off + 1 : a->seq_k;
    if (kend > a->seq_k) kend = a->seq_k;

    for (int64_t j0 = 0; j0 < kend; j0 += QS_ATTN_TILE_K) {
        const int64_t nk = j0 + QS_ATTN_TILE_K < kend ? QS_ATTN_TILE_K : kend - j0;
        for (int64_t j = 0; j < nk; j++) {
            const float *kj = a->k + (b * a->seq_k + j0 + j) * a->k_tok + (int64_t)kvh * a->k_head;
            const float *vj = a->v + (b * a->seq_k + j0 + j) * a->v_tok + (int64_t)kvh * a->v_head;
            for (int c = 0; c < d; c++) kt[c * QS_ATTN_TILE_K + j] = kj[c];
            memcpy(vt + j * d, vj, sizeof(float) * (size_t)d);
        }
        for (int64_t g0 = 0; g0 < nq; g0 += QS_ATTN_GROUP) {
            /* the rows of this group that see a key of this tile */
            const float *q[QS_ATTN_GROUP];
            int64_t nj[QS_ATTN_GROUP], row[QS_ATTN_GROUP];
            int nr = 0;
            for (int64_t i = g0; i < g0 + QS_ATTN_GROUP && i < nq; i++) {
                /* keys of this tile row i may see: all, or up to its causal limit */
                int64_t n = a->causal ? i0 + i + off - j0 + 1 : nk;
                if (n > nk) n = nk;
                if (n <= 0) continue;
                q[nr] = a->q + (b * a->seq_q + i0 + i) * a->q_tok + (int64_t)h * a->q_head;
                nj[nr] = n;
                row[nr++] = i;
            }
            if (!nr) continue;
            int64_t nkmax = 0;
            for (int r = 0; r < nr; r++) nkmax = nj[r] > nkmax ? nj[r] : nkmax;
#ifdef QS_ATTN_AVX512
            if (wide) scores_avx512(q, nr, a->scale, kt, d, nkmax, w->s);
            else
#endif
                scores_plain(q, nr, a->scale, kt, d, nkmax, w->s);
            for (int r = 0; r < nr; r++) {
                const int64_t i = row[r], n = nj[r];
                float *restrict si = w->s + r * QS_ATTN_TILE_K;
                float row_max = -INFINITY;
                if (a->alibi) {
                    for (int64_t j = 0; j < n; j++) si[j] += slope * (float)(j0 + j);
                }
#pragma omp simd reduction(max : row_max)
                for (int64_t j = 0; j < n; j++) row_max = si[j] > row_max ? si[j] : row_max;
                float alpha = qs_op_softmax_rescale(&st[i], row_max);
                float *restrict ai = acc + i * d;
                if (alpha != 1.0f)
                    for (int c = 0; c < d; c++) ai[c] *= alpha;
                const float m = st[i].m;
                exp_shifted(si, n, m);
                float lsum = 0.0f;
#pragma omp simd reduction(+ : lsum)
                for (int64_t j = 0; j < n; j++) lsum += si[j];
                st[i].l += lsum;
            }
            /* the group's rows are consecutive in acc */
#ifdef QS_ATTN_AVX512
            if (wide) values_avx512(nr, nj, w->s, vt, d, acc + row[0] * d);
            else
#endif
                values_plain(nr, nj, w->s, vt, d, acc + row[0] * d);
        }
    }

    for (int64_t i = 0; i < nq; i++) {
        float *o = a->out + (b * a->seq_q + i0 + i) * a->o_tok + (int64_t)h * a->o_head;
        /* a row that sees no key at all (only with seq_k < seq_q) outputs zeros */
        float inv = st[i].l > 0.0f ? 1.0f / st[i].l : 0.0f;
        for (int c = 0; c < d; c++) o[c] = acc[i * d + c] * inv;
        if (a->lse)
            a->lse[(b * a->n_heads + h) * a->seq_q + i0 + i] = st[i].l > 0.0f ? st[i].m + logf(st[i].l) : -INFINITY;
    }
}

qs_status qs_cpu_attention(const qs_attn_args *a, qs_error *err)
{
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads != 0 || a->head_dim <= 0)
        return qs_error_set(err, QS_ERR_INPUT, "attention: %d query heads, %d kv heads, head_dim %d: expected "
                                               "positive counts with heads divisible by kv heads",
                            a->n_heads, a->n_kv_heads, a->head_dim);
    if (a->batch <= 0 || a->seq_q <= 0 || a->seq_k <= 0) return QS_OK;

    const int64_t n_qt = (a->seq_q + QS_ATTN_TILE_Q - 1) / QS_ATTN_TILE_Q;
    const int64_t n_work = a->batch * a->n_heads * n_qt;
    const size_t tile_floats = (size_t)QS_ATTN_TILE_Q * QS_ATTN_TILE_K   /* s */
                               + (size_t)QS_ATTN_TILE_Q * (size_t)a->head_dim /* acc */
                               + 2 * (size_t)QS_ATTN_TILE_K * (size_t)a->head_dim; /* kt, vt */
    int failed = 0;

#pragma omp parallel if (n_work > 1)
    {
        float *buf = qs_malloc(sizeof(float) * tile_floats);
        qs_softmax_state *st = qs_malloc(sizeof(qs_softmax_state) * QS_ATTN_TILE_Q);
        attn_scratch w = {0};
        if (!buf || !st) {
#pragma omp atomic write
            failed = 1;
        } else {
            w.s = buf;
            w.acc = w.s + QS_ATTN_TILE_Q * QS_ATTN_TILE_K;
            w.kt = w.acc + (size_t)QS_ATTN_TILE_Q * (size_t)a->head_dim;
            w.vt = w.kt + (size_t)QS_ATTN_TILE_K * (size_t)a->head_dim;
            w.st = st;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t wi = 0; wi < n_work; wi++) {
            if (!w.s) continue;
            int64_t qt = wi % n_qt;
            int h = (int)((wi / n_qt) % a->n_heads);
            int64_t b = wi / (n_qt * a->n_heads);
            int64_t i0 = qt * QS_ATTN_TILE_Q;
            int64_t i1 = i0 + QS_ATTN_TILE_Q < a->seq_q ? i0 + QS_ATTN_TILE_Q : a->seq_q;
            attn_tile(a, b, h, i0, i1, &w);
        }
        qs_free(buf);
        qs_free(st);
    }
    if (failed) return qs_error_set(err, QS_ERR_NOMEM, "attention: out of memory for tile scratch");
    return QS_OK;
}

/* ============================================================== embedding == */

qs_status qs_cpu_embed(const float *table, int64_t vocab, int64_t hidden, const int32_t *ids, int64_t n, float *out,
                       qs_error *err)
{
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return qs_error_set(err, QS_ERR_INPUT, "token %lld: id %d is outside the vocabulary [0, %lld)",
                                (long long)i, ids[i], (long long)vocab);
#pragma omp parallel for schedule(static) if (n * hidden >= QS_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * hidden, table + (int64_t)ids[i] * hidden, sizeof(float) * (size_t)hidden);
    return QS_OK;
}

/* ================================================== log-softmax, NLL, KL == */

double qs_cpu_logsumexp(const float *x, int64_t n)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > m) m = x[i];
    if (m == -INFINITY || !isfinite(m)) return m;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += exp((double)x[i] - (double)m);
    return qs_op_lse(m, s);
}

int64_t qs_cpu_argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

void qs_cpu_nll_rows(const float *logits, int64_t rows, int64_t vocab, const int32_t *targets, double *nll)
{
    /* exp in f32 (2 ulp) with the sum in double: NLL to ~1e-7 relative, at a
     * fraction of libm's double exp cost over a 32k..250k vocabulary */
#pragma omp parallel for schedule(static) if (rows * vocab >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const float *x = logits + r * vocab;
        float m = -INFINITY;
        for (int64_t i = 0; i < vocab; i++) m = x[i] > m ? x[i] : m;
        nll[r] = isfinite(m) ? qs_op_lse(m, sum_exp_shifted(x, vocab, m)) - (double)x[targets[r]]
                             : qs_cpu_logsumexp(x, vocab) - (double)x[targets[r]];
    }
}

void qs_cpu_kl_rows(const float *ref, const float *x, int64_t rows, int64_t vocab, double *kl, uint8_t *same)
{
#pragma omp parallel for schedule(static) if (rows * vocab >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const float *pr = ref + r * vocab, *px = x + r * vocab;
        double lse_r = qs_cpu_logsumexp(pr, vocab), lse_x = qs_cpu_logsumexp(px, vocab);
        double s = 0.0;
        for (int64_t i = 0; i < vocab; i++) s += qs_op_kl_term(pr[i], px[i], lse_r, lse_x);
        kl[r] = s > 0.0 ? s : 0.0; /* KL >= 0; tiny negatives are rounding */
        if (same) same[r] = qs_cpu_argmax(pr, vocab) == qs_cpu_argmax(px, vocab);
    }
}
