/* ops.c — CPU loops of the transformer forward: norms, RoPE, tiled causal
 * attention with an online softmax, activations, embedding gather,
 * log-softmax / NLL / KL. The per-element formulas are kernels/ops.h. */
#include "kernels/cpu/ops_cpu.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/tensor.h"

/* Rows are parallelized only when there is enough work to pay for the team. */
#define QS_OMP_MIN_WORK 32768

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

/* One query tile [i0, i1) of one (batch, head) pair. Scratch: s[TQ·TK] scores,
 * acc[TQ·head_dim] unnormalized outputs, st[TQ] softmax states. */
static void attn_tile(const qs_attn_args *a, int64_t b, int h, int64_t i0, int64_t i1, float *s, float *acc,
                      qs_softmax_state *st)
{
    const int d = a->head_dim;
    const int kvh = h / (a->n_heads / a->n_kv_heads);
    const int64_t off = a->seq_k - a->seq_q;
    const float slope = a->alibi ? a->alibi[h] : 0.0f;
    const int64_t nq = i1 - i0;

    for (int64_t i = 0; i < nq; i++) {
        st[i].m = -INFINITY;
        st[i].l = 0.0f;
    }
    memset(acc, 0, sizeof(float) * (size_t)(nq * d));

    /* the last key any query of this tile may see */
    int64_t kend = a->causal ? i1 - 1 + off + 1 : a->seq_k;
    if (kend > a->seq_k) kend = a->seq_k;

    for (int64_t j0 = 0; j0 < kend; j0 += QS_ATTN_TILE_K) {
        int64_t j1 = j0 + QS_ATTN_TILE_K < kend ? j0 + QS_ATTN_TILE_K : kend;
        int64_t nk = j1 - j0;
        for (int64_t i = 0; i < nq; i++) {
            const float *qi = a->q + (b * a->seq_q + i0 + i) * a->q_tok + (int64_t)h * a->q_head;
            int64_t jmax = a->causal ? i0 + i + off : j1 - 1; /* last visible key of this row */
            float *si = s + i * QS_ATTN_TILE_K;
            float row_max = -INFINITY;
            for (int64_t j = 0; j < nk; j++) {
                int64_t jj = j0 + j;
                if (jj > jmax) {
                    si[j] = -INFINITY;
                    continue;
                }
                const float *kj = a->k + (b * a->seq_k + jj) * a->k_tok + (int64_t)kvh * a->k_head;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int c = 0; c < d; c++) dot += qi[c] * kj[c];
                float sc = dot * a->scale + slope * (float)jj;
                si[j] = sc;
                if (sc > row_max) row_max = sc;
            }
            float alpha = qs_op_softmax_rescale(&st[i], row_max);
            float *ai = acc + i * d;
            if (alpha != 1.0f)
                for (int c = 0; c < d; c++) ai[c] *= alpha;
            if (st[i].m == -INFINITY) continue; /* nothing visible yet */
            float lsum = 0.0f;
            for (int64_t j = 0; j < nk; j++) {
                if (si[j] == -INFINITY) continue;
                float p = expf(si[j] - st[i].m);
                lsum += p;
                const float *vj = a->v + (b * a->seq_k + j0 + j) * a->v_tok + (int64_t)kvh * a->v_head;
#pragma omp simd
                for (int c = 0; c < d; c++) ai[c] += p * vj[c];
            }
            st[i].l += lsum;
        }
    }

    for (int64_t i = 0; i < nq; i++) {
        float *o = a->out + (b * a->seq_q + i0 + i) * a->o_tok + (int64_t)h * a->o_head;
        /* a row that sees no key at all (only with seq_k < seq_q) outputs zeros */
        float inv = st[i].l > 0.0f ? 1.0f / st[i].l : 0.0f;
        for (int c = 0; c < d; c++) o[c] = acc[i * d + c] * inv;
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
    const size_t s_bytes = sizeof(float) * QS_ATTN_TILE_Q * QS_ATTN_TILE_K;
    const size_t acc_bytes = sizeof(float) * QS_ATTN_TILE_Q * (size_t)a->head_dim;
    const size_t st_bytes = sizeof(qs_softmax_state) * QS_ATTN_TILE_Q;
    int failed = 0;

#pragma omp parallel if (n_work > 1)
    {
        float *s = qs_malloc(s_bytes);
        float *acc = qs_malloc(acc_bytes);
        qs_softmax_state *st = qs_malloc(st_bytes);
        if (!s || !acc || !st) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t w = 0; w < n_work; w++) {
            if (!s || !acc || !st) continue;
            int64_t qt = w % n_qt;
            int h = (int)((w / n_qt) % a->n_heads);
            int64_t b = w / (n_qt * a->n_heads);
            int64_t i0 = qt * QS_ATTN_TILE_Q;
            int64_t i1 = i0 + QS_ATTN_TILE_Q < a->seq_q ? i0 + QS_ATTN_TILE_Q : a->seq_q;
            attn_tile(a, b, h, i0, i1, s, acc, st);
        }
        qs_free(s);
        qs_free(acc);
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
    return (double)m + log(s);
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
#pragma omp parallel for schedule(static) if (rows * vocab >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const float *x = logits + r * vocab;
        nll[r] = qs_cpu_logsumexp(x, vocab) - (double)x[targets[r]];
    }
}

void qs_cpu_kl_rows(const float *ref, const float *x, int64_t rows, int64_t vocab, double *kl, uint8_t *same)
{
#pragma omp parallel for schedule(static) if (rows * vocab >= QS_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const float *pr = ref + r * vocab, *px = x + r * vocab;
        double lse_r = qs_cpu_logsumexp(pr, vocab), lse_x = qs_cpu_logsumexp(px, vocab);
        double s = 0.0;
        for (int64_t i = 0; i < vocab; i++) {
            double lr = (double)pr[i] - lse_r;
            double p = exp(lr);
            if (p > 0.0) s += p * (lr - ((double)px[i] - lse_x));
        }
        kl[r] = s > 0.0 ? s : 0.0; /* KL >= 0; tiny negatives are rounding */
        if (same) same[r] = qs_cpu_argmax(pr, vocab) == qs_cpu_argmax(px, vocab);
    }
}
