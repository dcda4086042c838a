/* ops_cpu.h — CPU loops of the transformer forward (norms, RoPE, attention,
 * activations, embedding gather, log-softmax / NLL / KL).
 *
 * The per-element math is kernels/ops.h (shared with CUDA); this file runs it
 * over rows with OpenMP where rows are independent. Matrix products are not
 * here: they go through the backend interface (kernels/backend.h sgemm).
 * All arrays are row-major f32; "rows" means batch·seq tokens.
 */
#ifndef QS_OPS_CPU_H
#define QS_OPS_CPU_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) calls these C functions */
#endif

/* ---- norms over rows ---------------------------------------------------------- */

/* y[r] = rmsnorm(x[r]) * w; y may alias x. */
void qs_cpu_rmsnorm(const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps);
/* y[r] = layernorm(x[r]) * w + b (b may be NULL); y may alias x. */
void qs_cpu_layernorm(const float *x, const float *w, const float *b, float *y, int64_t rows, int64_t n, float eps);

/* ---- element-wise ------------------------------------------------------------- */

/* y[r, :] += bias for every row. */
void qs_cpu_add_bias(float *y, const float *bias, int64_t rows, int64_t n);
/* y += x (n elements): residual connections. */
void qs_cpu_add(float *y, const float *x, int64_t n);
/* y *= s. */
void qs_cpu_scale(float *y, float s, int64_t n);
/* gate[i] = silu(gate[i]) * up[i]  (llama SwiGLU). */
/* y[i] = bf16(x[i]) (round to nearest even, NaN stays NaN). */
void qs_cpu_to_bf16(const float *x, uint16_t *y, int64_t n);
void qs_cpu_silu_mul(float *gate, const float *up, int64_t n);
void qs_cpu_relu(float *x, int64_t n);
void qs_cpu_gelu_tanh(float *x, int64_t n);

/* ---- RoPE ---------------------------------------------------------------------- */

/* inv_freq[i] (i < head_dim/2) = theta^(-2i/d), then the scaling of the config:
 * scaling 0 none, 1 linear (÷ factor), 2 llama3 (see qs_op_rope_llama3_scale).
 * The int matches qs_rope_scaling_kind in pipeline/formats/model_config.h. */
void qs_cpu_rope_inv_freq(int head_dim, double theta, int scaling, double factor, double low_freq_factor,
                          double high_freq_factor, double original_max_positions, double *inv_freq);

/* cos/sin tables [n_pos, head_dim/2] for positions pos0 .. pos0+n_pos-1,
 * angles computed in double and rounded once. */
void qs_cpu_rope_tables(const double *inv_freq, int head_dim, int64_t pos0, int64_t n_pos, float *cs, float *sn);

/* Rotate-half RoPE in place on x viewed as [batch, seq, heads, head_dim]:
 * element (b, t, h, d) is at x[(b·seq + t)·tok_stride + h·head_stride + d];
 * token t uses row t of the tables. */
void qs_cpu_rope(float *x, int64_t batch, int64_t seq, int heads, int head_dim, int64_t tok_stride,
                 int64_t head_stride, const float *cs, const float *sn);

/* ---- attention ------------------------------------------------------------------ */

/* Scaled-dot-product attention over strided views, in tiles with an online
 * softmax (flash-attention style): memory is O(tile · head_dim) per thread,
 * never O(seq²). Query head h reads KV head h / (n_heads / n_kv_heads) (GQA).
 * score(i, j) = scale · q_i·k_j + slope_h · j  (ALiBi as HF BLOOM adds it:
 * softmax is shift-invariant per row, so slope·j ≡ slope·(j − i)).
 * With causal, query i (0-based among seq_q) sees keys j <= i + seq_k − seq_q.
 * Element (b, t, h, d) of a view is at base[(b·seq + t)·tok + h·head + d]. */
typedef struct qs_attn_args {
    int64_t batch, seq_q, seq_k;
    int n_heads, n_kv_heads, head_dim;
    float scale;
    bool causal;
    const float *alibi; /* [n_heads] slopes, or NULL */
    const float *q;
    int64_t q_tok, q_head;
    const float *k;
    int64_t k_tok, k_head;
    const float *v;
    int64_t v_tok, v_head;
    float *out;
    int64_t o_tok, o_head;
    /* NULL, or [batch, n_heads, seq_q]: each query row's log Σ_j exp(score(i, j))
     * (-inf for a row that sees no key), what the backward recomputes
     * probabilities from (kernels/cpu/ops_backward_cpu.h) */
    float *lse;
} qs_attn_args;

/* Tile sizes (exposed so tests can pick sequence lengths that are not multiples). */
#define QS_ATTN_TILE_Q 32
#define QS_ATTN_TILE_K 64

/* QS_ERR_INPUT for inconsistent head counts, QS_ERR_NOMEM for scratch. */
qs_status qs_cpu_attention(const qs_attn_args *a, qs_error *err);

/* Tests: run the plain loops even where the AVX-512 ones would run (both
 * must give the same bits). */
void qs_cpu_attention_force_plain(bool plain);

/* ---- embedding ------------------------------------------------------------------- */

/* out[i, :] = table[ids[i], :]; an id outside [0, vocab) is QS_ERR_INPUT naming
 * the position and the id. */
qs_status qs_cpu_embed(const float *table, int64_t vocab, int64_t hidden, const int32_t *ids, int64_t n, float *out,
                       qs_error *err);

/* ---- log-softmax, NLL, KL --------------------------------------------------------- */

/* log(sum(exp(x))) of one row, stable (max subtracted, sum in double). */
double qs_cpu_logsumexp(const float *x, int64_t n);

/* nll[r] = logsumexp(logits[r]) − logits[r, targets[r]] (natural log). */
void qs_cpu_nll_rows(const float *logits, int64_t rows, int64_t vocab, const int32_t *targets, double *nll);

/* kl[r] = KL(softmax(ref[r]) ‖ softmax(x[r])) = Σ p_ref (log p_ref − log p_x);
 * same[r] = 1 when argmax(ref[r]) == argmax(x[r]) (first index on ties). */
void qs_cpu_kl_rows(const float *ref, const float *x, int64_t rows, int64_t vocab, double *kl, uint8_t *same);

/* Index of the largest element (first on ties). */
int64_t qs_cpu_argmax(const float *x, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
