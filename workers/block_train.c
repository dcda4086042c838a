/* block_train.c — a block's forward keeping its activations, and its
 * hand-written backward (see block_train.h). Element-wise work is
 * kernels/cpu/ops.c and ops_backward.c; every GEMM goes through the
 * backend's sgemm. */
#include "workers/block_train.h"

#include <math.h>
#include <string.h>

#include "kernels/cpu/ops_backward_cpu.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/ops.h"

struct qs_train_ctx {
    qs_model_config cfg;
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
    int n_linears;
    int i_q, i_k, i_v, i_qkv, i_o, i_gate, i_up, i_down, i_fc1, i_fc2;
    bool bloom, llama, post_ln;
    int64_t max_batch, seq, H, qd, kvd, qkv_w, ffn;
    float *cs, *sn, *slopes;
    /* the last forward */
    const float *x;
    int64_t batch;
    float *a_in, *qkv, *att, *lse, *s1, *r1, *m_in, *f1, *f2, *act, *s2;
    /* backward scratch */
    float *d_h, *d_m, *d_a, *d_act, *d_f2, *d_att, *d_qkv;
};

static void *alloc_f(int64_t n, bool *ok)
{
    void *p = qs_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!p) *ok = false;
    return p;
}

qs_status qs_train_ctx_init(qs_train_ctx **out, const qs_block *blk, int64_t max_batch, int64_t seq, qs_error *err)
{
    qs_train_ctx *c = qs_calloc(1, sizeof *c);
    if (!c) return qs_error_set(err, QS_ERR_NOMEM, "block %d: training context", blk->layer);
    const qs_model_config *cfg = &blk->cfg;
    c->cfg = *cfg;
    c->n_linears = blk->n_linears;
    memcpy(c->lin, blk->lin, sizeof c->lin);
    c->i_q = qs_block_find(blk, QS_LIN_Q), c->i_k = qs_block_find(blk, QS_LIN_K), c->i_v = qs_block_find(blk, QS_LIN_V);
    c->i_qkv = qs_block_find(blk, QS_LIN_QKV), c->i_o = qs_block_find(blk, QS_LIN_O);
    c->i_gate = qs_block_find(blk, QS_LIN_GATE), c->i_up = qs_block_find(blk, QS_LIN_UP);
    c->i_down = qs_block_find(blk, QS_LIN_DOWN), c->i_fc1 = qs_block_find(blk, QS_LIN_FC1);
    c->i_fc2 = qs_block_find(blk, QS_LIN_FC2);
    c->bloom = cfg->arch == QS_ARCH_BLOOM;
    c->llama = cfg->arch == QS_ARCH_LLAMA;
    c->post_ln = cfg->arch == QS_ARCH_OPT && !cfg->do_layer_norm_before;
    c->max_batch = max_batch;
    c->seq = seq;
    c->H = cfg->hidden;
    c->qd = (int64_t)cfg->n_heads * cfg->head_dim;
    c->kvd = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    c->qkv_w = c->bloom ? 3 * c->qd : c->qd + 2 * c->kvd;
    c->ffn = blk->lin[c->llama ? c->i_up : c->i_fc1].out;
    if (c->i_o < 0 || (c->llama ? c->i_gate < 0 || c->i_up < 0 || c->i_down < 0 : c->i_fc1 < 0 || c->i_fc2 < 0) ||
        (c->bloom ? c->i_qkv < 0 : c->i_q < 0 || c->i_k < 0 || c->i_v < 0)) {
        qs_free(c);
        return qs_error_set(err, QS_ERR_INTERNAL, "block %d: linears missing for training", blk->layer);
    }
    const int64_t R = max_batch * seq, H = c->H;
    bool ok = true;
    c->a_in = alloc_f(R * H, &ok);
    c->qkv = alloc_f(R * c->qkv_w, &ok);
    c->att = alloc_f(R * c->qd, &ok);
    c->lse = alloc_f(R * cfg->n_heads, &ok);
    c->s1 = alloc_f(R * H, &ok);
    c->r1 = alloc_f(R * H, &ok);
    c->m_in = alloc_f(R * H, &ok);
    c->f1 = alloc_f(R * c->ffn, &ok);
    c->f2 = c->llama ? alloc_f(R * c->ffn, &ok) : NULL;
    c->act = alloc_f(R * c->ffn, &ok);
    c->s2 = alloc_f(R * H, &ok);
    c->d_h = alloc_f(R * H, &ok);
    c->d_m = alloc_f(R * H, &ok);
    c->d_a = alloc_f(R * H, &ok);
    c->d_act = alloc_f(R * c->ffn, &ok);
    c->d_f2 = c->llama ? alloc_f(R * c->ffn, &ok) : NULL;
    c->d_att = alloc_f(R * c->qd, &ok);
    c->d_qkv = alloc_f(R * c->qkv_w, &ok);
    if (cfg->pos == QS_POS_ROPE) {
        int h2 = cfg->head_dim / 2;
        double inv[512];
        c->cs = alloc_f(seq * h2, &ok);
        c->sn = alloc_f(seq * h2, &ok);
        if (ok && h2 <= 512) {
            qs_cpu_rope_inv_freq(cfg->head_dim, cfg->rope_theta, (int)cfg->rope_scaling, cfg->rope_factor,
                                 cfg->rope_low_freq_factor, cfg->rope_high_freq_factor,
                                 (double)cfg->rope_original_max_positions, inv);
            qs_cpu_rope_tables(inv, cfg->head_dim, 0, seq, c->cs, c->sn);
        } else if (ok) {
            qs_train_ctx_free(c);
            return qs_error_set(err, QS_ERR_UNSUPPORTED, "block %d: head_dim %d above 1024", blk->layer,
                                cfg->head_dim);
        }
    } else if (cfg->pos == QS_POS_ALIBI) {
        c->slopes = alloc_f(cfg->n_heads, &ok);
        if (ok)
            for (int h = 0; h < cfg->n_heads; h++) c->slopes[h] = (float)qs_op_alibi_slope(h, cfg->n_heads);
    }
    if (!ok) {
        qs_train_ctx_free(c);
        return qs_error_set(err, QS_ERR_NOMEM, "block %d: training activations for %lld tokens", blk->layer,
                            (long long)R);
    }
    *out = c;
    return QS_OK;
}

void qs_train_ctx_free(qs_train_ctx *c)
{
    if (!c) return;
    float *bufs[] = {c->a_in, c->qkv, c->att, c->lse, c->s1, c->r1, c->m_in, c->f1, c->f2, c->act, c->s2, c->d_h,
                     c->d_m, c->d_a, c->d_act, c->d_f2, c->d_att, c->d_qkv, c->cs, c->sn, c->slopes};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) qs_free(bufs[i]);
    qs_free(c);
}

/* ================================================================ forward == */

/* y[rows, out] = x · Wᵀ + b */
static void linear(const qs_train_ctx *c, const qs_backend_i *be, const qs_train_weights *w, int idx, const float *x,
                   int64_t rows, float *y)
{
    const qs_block_linear *l = &c->lin[idx];
    be->sgemm(be->ctx, false, true, rows, l->out, l->in, 1.0f, x, l->in, w->w[idx], l->in, 0.0f, y, l->out);
    if (w->b[idx]) qs_cpu_add_bias(y, w->b[idx], rows, l->out);
}

static void norm(const qs_train_ctx *c, const float *nw, const float *nb, const float *x, float *y, int64_t rows)
{
    if (c->cfg.norm == QS_NORM_RMS) qs_cpu_rmsnorm(x, nw, y, rows, c->H, (float)c->cfg.norm_eps);
    else qs_cpu_layernorm(x, nw, nb, y, rows, c->H, (float)c->cfg.norm_eps);
}

/* The attention call of the last forward's q/k/v (and the gradient views). */
static qs_attn_args attn_args(const qs_train_ctx *c, int64_t batch)
{
    const int hd = c->cfg.head_dim;
    qs_attn_args a = {.batch = batch, .seq_q = c->seq, .seq_k = c->seq, .n_heads = c->cfg.n_heads,
                      .n_kv_heads = c->cfg.n_kv_heads, .head_dim = hd, .scale = (float)(1.0 / sqrt((double)hd)),
                      .causal = true, .alibi = c->slopes, .out = c->att, .o_tok = c->qd, .o_head = hd,
                      .lse = c->lse};
    const int64_t R = batch * c->seq;
    if (c->bloom) {
        a.q = c->qkv, a.k = c->qkv + hd, a.v = c->qkv + 2 * hd;
        a.q_tok = a.k_tok = a.v_tok = 3 * c->qd;
        a.q_head = a.k_head = a.v_head = 3 * hd;
    } else {
        a.q = c->qkv, a.k = c->qkv + R * c->qd, a.v = c->qkv + R * (c->qd + c->kvd);
        a.q_tok = c->qd, a.k_tok = a.v_tok = c->kvd;
        a.q_head = a.k_head = a.v_head = hd;
    }
    return a;
}

qs_status qs_train_forward(qs_train_ctx *c, const qs_backend_i *be, const qs_train_weights *w, const float *x,
                           int64_t batch, float *out, qs_error *err)
{
    if (batch > c->max_batch || batch < 1)
        return qs_error_set(err, QS_ERR_INTERNAL, "training forward: batch %lld, context holds %lld",
                            (long long)batch, (long long)c->max_batch);
    const int64_t R = batch * c->seq, H = c->H;
    c->x = x;
    c->batch = batch;
    /* ---- attention ---- */
    const float *a_in = x;
    if (!c->post_ln) {
        norm(c, w->attn_norm_w, w->attn_norm_b, x, c->a_in, R);
        a_in = c->a_in;
    }
    if (c->bloom) linear(c, be, w, c->i_qkv, a_in, R, c->qkv);
    else {
        linear(c, be, w, c->i_q, a_in, R, c->qkv);
        linear(c, be, w, c->i_k, a_in, R, c->qkv + R * c->qd);
        linear(c, be, w, c->i_v, a_in, R, c->qkv + R * (c->qd + c->kvd));
    }
    qs_attn_args a = attn_args(c, batch);
    if (c->cfg.pos == QS_POS_ROPE) {
        qs_cpu_rope((float *)a.q, batch, c->seq, c->cfg.n_heads, c->cfg.head_dim, a.q_tok, a.q_head, c->cs, c->sn);
        qs_cpu_rope((float *)a.k, batch, c->seq, c->cfg.n_kv_heads, c->cfg.head_dim, a.k_tok, a.k_head, c->cs, c->sn);
    }
    QS_TRY(qs_cpu_attention(&a, err));
    linear(c, be, w, c->i_o, c->att, R, c->s1);
    qs_cpu_add(c->s1, x, R * H);
    const float *r1 = c->s1;
    if (c->post_ln) {
        norm(c, w->attn_norm_w, w->attn_norm_b, c->s1, c->r1, R);
        r1 = c->r1;
    }
    /* ---- MLP ---- */
    const float *m_in = r1;
    if (!c->post_ln) {
        norm(c, w->mlp_norm_w, w->mlp_norm_b, r1, c->m_in, R);
        m_in = c->m_in;
    }
    int i_down;
    if (c->llama) {
        linear(c, be, w, c->i_gate, m_in, R, c->f1);
        linear(c, be, w, c->i_up, m_in, R, c->f2);
        memcpy(c->act, c->f1, sizeof(float) * (size_t)(R * c->ffn));
        qs_cpu_silu_mul(c->act, c->f2, R * c->ffn);
        i_down = c->i_down;
    } else {
        linear(c, be, w, c->i_fc1, m_in, R, c->f1);
        memcpy(c->act, c->f1, sizeof(float) * (size_t)(R * c->ffn));
        if (c->cfg.act == QS_ACT_RELU) qs_cpu_relu(c->act, R * c->ffn);
        else if (c->cfg.act == QS_ACT_GELU_TANH) qs_cpu_gelu_tanh(c->act, R * c->ffn);
        else return qs_error_set(err, QS_ERR_UNSUPPORTED, "training: activation %d", (int)c->cfg.act);
        i_down = c->i_fc2;
    }
    if (c->post_ln) {
        linear(c, be, w, i_down, c->act, R, c->s2);
        qs_cpu_add(c->s2, r1, R * H);
        norm(c, w->mlp_norm_w, w->mlp_norm_b, c->s2, out, R);
    } else {
        linear(c, be, w, i_down, c->act, R, out);
        qs_cpu_add(out, r1, R * H);
    }
    return QS_OK;
}

/* =============================================================== backward == */

static void norm_backward(const qs_train_ctx *c, const float *nw, const float *x, const float *dy, float *dx,
                          float *dw, float *db, int64_t rows)
{
    if (c->cfg.norm == QS_NORM_RMS) qs_cpu_rmsnorm_backward(x, nw, dy, dx, dw, rows, c->H, (float)c->cfg.norm_eps);
    else qs_cpu_layernorm_backward(x, nw, dy, dx, dw, db, rows, c->H, (float)c->cfg.norm_eps);
}

/* Gradients of linear idx from its input x and output gradient dy; dx (when
 * not NULL) overwritten (accumulate false) or added to (accumulate true). */
static void linear_backward(const qs_train_ctx *c, const qs_backend_i *be, const qs_train_weights *w,
                            const qs_train_grads *g, int idx, const float *x, const float *dy, int64_t rows, float *dx,
                            bool accumulate)
{
    const qs_block_linear *l = &c->lin[idx];
    qs_cpu_linear_backward(be, x, w->w[idx], dy, rows, l->in, l->out, dx, accumulate ? 1.0f : 0.0f, g->w[idx], 0.0f,
                           w->b[idx] ? g->b[idx] : NULL);
}

qs_status qs_train_backward(qs_train_ctx *c, const qs_backend_i *be, const qs_train_weights *w, const float *dout,
                            const qs_train_grads *g, qs_error *err)
{
    const int64_t batch = c->batch, R = batch * c->seq, H = c->H;
    const float *x = c->x;
    const float *r1 = c->post_ln ? c->r1 : c->s1;
    const float *m_in = c->post_ln ? c->r1 : c->m_in;
    /* d_h: the gradient of the residual stream after attention (r1) */
    const float *d_mlp_out; /* gradient of the MLP branch's output */
    if (c->post_ln) {
        norm_backward(c, w->mlp_norm_w, c->s2, dout, c->d_h, g->mlp_norm_w, g->mlp_norm_b, R);
        d_mlp_out = c->d_h;
    } else {
        memcpy(c->d_h, dout, sizeof(float) * (size_t)(R * H));
        d_mlp_out = dout;
    }
    /* ---- MLP ---- */
    const int i_down = c->llama ? c->i_down : c->i_fc2;
    linear_backward(c, be, w, g, i_down, c->act, d_mlp_out, R, c->d_act, false);
    if (c->llama) {
        qs_cpu_silu_mul_backward(c->f1, c->f2, c->d_act, c->d_act, c->d_f2, R * c->ffn);
        linear_backward(c, be, w, g, c->i_gate, m_in, c->d_act, R, c->d_m, false);
        linear_backward(c, be, w, g, c->i_up, m_in, c->d_f2, R, c->d_m, true);
    } else {
        if (c->cfg.act == QS_ACT_RELU) qs_cpu_relu_backward(c->f1, c->d_act, R * c->ffn);
        else qs_cpu_gelu_tanh_backward(c->f1, c->d_act, R * c->ffn);
        linear_backward(c, be, w, g, c->i_fc1, m_in, c->d_act, R, c->d_m, false);
    }
    if (c->post_ln) {
        /* r1 = LN_a(s1) feeds both the MLP and the residual */
        qs_cpu_add(c->d_h, c->d_m, R * H);
        norm_backward(c, w->attn_norm_w, c->s1, c->d_h, c->d_m, g->attn_norm_w, g->attn_norm_b, R);
        memcpy(c->d_h, c->d_m, sizeof(float) * (size_t)(R * H)); /* now ∂L/∂s1 */
    } else {
        norm_backward(c, w->mlp_norm_w, r1, c->d_m, c->d_m, g->mlp_norm_w, g->mlp_norm_b, R);
        qs_cpu_add(c->d_h, c->d_m, R * H);
    }
    /* ---- attention ---- */
    linear_backward(c, be, w, g, c->i_o, c->att, c->d_h, R, c->d_att, false);
    qs_attn_args a = attn_args(c, batch);
    qs_attn_grad_args ga = {.dout = c->d_att, .do_tok = c->qd, .do_head = c->cfg.head_dim};
    float *dq, *dk, *dv;
    if (c->bloom) {
        dq = c->d_qkv, dk = c->d_qkv + c->cfg.head_dim, dv = c->d_qkv + 2 * c->cfg.head_dim;
    } else {
        dq = c->d_qkv, dk = c->d_qkv + R * c->qd, dv = c->d_qkv + R * (c->qd + c->kvd);
    }
    ga.dq = dq, ga.dk = dk, ga.dv = dv;
    ga.dq_tok = a.q_tok, ga.dk_tok = a.k_tok, ga.dv_tok = a.v_tok;
    ga.dq_head = a.q_head, ga.dk_head = a.k_head, ga.dv_head = a.v_head;
    QS_TRY(qs_cpu_attention_backward(&a, c->lse, &ga, err));
    if (c->cfg.pos == QS_POS_ROPE) {
        qs_cpu_rope_backward(dq, batch, c->seq, c->cfg.n_heads, c->cfg.head_dim, a.q_tok, a.q_head, c->cs, c->sn);
        qs_cpu_rope_backward(dk, batch, c->seq, c->cfg.n_kv_heads, c->cfg.head_dim, a.k_tok, a.k_head, c->cs, c->sn);
    }
    const float *a_in = c->post_ln ? x : c->a_in;
    /* the attention norm's input gradient is wanted only for its parameters (pre-LN) */
    float *d_a = !c->post_ln && (g->attn_norm_w || g->attn_norm_b) ? c->d_a : NULL;
    if (c->bloom) {
        linear_backward(c, be, w, g, c->i_qkv, a_in, c->d_qkv, R, d_a, false);
    } else {
        linear_backward(c, be, w, g, c->i_q, a_in, dq, R, d_a, false);
        linear_backward(c, be, w, g, c->i_k, a_in, dk, R, d_a, true);
        linear_backward(c, be, w, g, c->i_v, a_in, dv, R, d_a, true);
    }
    if (d_a) norm_backward(c, w->attn_norm_w, x, d_a, NULL, g->attn_norm_w, g->attn_norm_b, R);
    return QS_OK;
}
