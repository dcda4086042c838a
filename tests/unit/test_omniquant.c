/* test_omniquant.c — OmniQuant's block trainer (workers/omniquant.c,
 * workers/block_train.c, kernels/cpu/lwc.c).
 *
 * 1. Whole-block gradient checks (see gradcheck.h): for llama (GQA, llama3
 *    RoPE, q/k/v/o biases), OPT pre-LN and post-LN, and BLOOM (ALiBi, fused
 *    qkv, 6 heads), with LWC alone and with LWC + LET, the gradient of the
 *    training loss with respect to every γ, β, LET scale and shift against
 *    central differences of a double-precision block written here. The
 *    quantizer's rounding has no derivative; what the trainer computes is the
 *    straight-through (STE) gradient, i.e. the exact derivative of the
 *    surrogate whose discrete choices are frozen at the point of evaluation:
 *    each weight's code class (inside the grid, clamped low, clamped high)
 *    and rounding residual, the zero point and the fp16 rounding of the
 *    scale. The reference takes those choices from the f32 grid
 *    (kernels/quant_grid.h) at the base point and differentiates everything
 *    else — bounds, scales, LET, the whole block — in double.
 * 2. The fake-quantized block the trainer runs equals, bit for bit, the block
 *    qs_omni_finish leaves (dequantized codes, folded norms), through
 *    qs_block_forward.
 * 3. Training lowers the loss below its initial parameters' and RTN's, and
 *    gives the same bytes with 1 and 2 threads.
 * 4. qs_omni_check refuses LET where it cannot be folded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "kernels/backend.h"
#include "kernels/cpu/rtn.h"
#include "kernels/lwc_grid.h"
#include "kernels/ops.h"
#include "kernels/quant_opts.h"
#include "workers/block.h"
#include "workers/block_train.h"
#include "workers/omniquant.h"

static const char *LLAMA_CFG =
    "{\"model_type\":\"llama\",\"hidden_size\":32,\"intermediate_size\":48,\"num_hidden_layers\":1,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":50,\"max_position_embeddings\":256,"
    "\"rms_norm_eps\":1e-6,\"rope_theta\":10000.0,\"attention_bias\":true,"
    "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
    "\"original_max_position_embeddings\":32}}";
static const char *OPT_CFG =
    "{\"model_type\":\"opt\",\"hidden_size\":24,\"ffn_dim\":40,\"num_hidden_layers\":1,\"num_attention_heads\":3,"
    "\"vocab_size\":50,\"max_position_embeddings\":256,\"do_layer_norm_before\":true,\"word_embed_proj_dim\":24,"
    "\"activation_function\":\"relu\"}";
static const char *OPT_POST_CFG =
    "{\"model_type\":\"opt\",\"hidden_size\":24,\"ffn_dim\":40,\"num_hidden_layers\":1,\"num_attention_heads\":3,"
    "\"vocab_size\":50,\"max_position_embeddings\":256,\"do_layer_norm_before\":false,\"word_embed_proj_dim\":24,"
    "\"activation_function\":\"relu\"}";
static const char *BLOOM_CFG =
    "{\"model_type\":\"bloom\",\"hidden_size\":24,\"n_layer\":1,\"n_head\":6,\"vocab_size\":50,"
    "\"layer_norm_epsilon\":1e-5}";

static void fill(qs_tensor *t, double scale, double offset)
{
    if (!t->data) return;
    float *d = t->data;
    for (int64_t i = 0; i < qs_tensor_numel(t); i++) d[i] = (float)(offset + scale * gc_urand());
}

static void make_block(qs_block *blk, qs_model_names *names, const char *json)
{
    qs_model_config cfg;
    qs_error err;
    if (qs_model_config_parse(json, "test", &cfg, &err) != QS_OK) fail_msg("%s", err.msg);
    if (qs_model_names_init(&cfg, NULL, NULL, names, &err) != QS_OK) fail_msg("%s", err.msg);
    if (qs_block_init(blk, &cfg, names, 0, &err) != QS_OK) fail_msg("%s", err.msg);
    for (int i = 0; i < blk->n_linears; i++) {
        fill(&blk->weight[i], 1.5 / sqrt((double)blk->lin[i].in), 0.0);
        fill(&blk->bias[i], 0.1, 0.0);
    }
    fill(&blk->attn_norm_w, 0.3, 1.0);
    fill(&blk->attn_norm_b, 0.1, 0.0);
    fill(&blk->mlp_norm_w, 0.3, 1.0);
    fill(&blk->mlp_norm_b, 0.1, 0.0);
}

static qs_quant_opts omni_opts(int bits, int group, bool sym, bool let)
{
    qs_quant_opts o;
    qs_quant_opts_default(&o);
    o.method = QS_QUANT_METHOD_OMNIQUANT;
    o.bits = bits;
    o.group_size = group;
    o.sym = sym;
    o.omni.let = let;
    return o;
}

/* ============================================= the double-precision block == */

typedef struct ref_w {
    double *w[QS_MAX_BLOCK_LINEARS], *b[QS_MAX_BLOCK_LINEARS]; /* b NULL: none */
    double *anw, *anb, *mnw, *mnb;
} ref_w;

static void ref_norm(const qs_model_config *c, const double *w, const double *b, const double *x, double *y,
                     int64_t R)
{
    int64_t H = c->hidden;
    for (int64_t r = 0; r < R; r++) {
        const double *xr = x + r * H;
        double mu = 0, var = 0;
        if (c->norm == QS_NORM_LAYER) {
            for (int64_t i = 0; i < H; i++) mu += xr[i];
            mu /= (double)H;
        }
        for (int64_t i = 0; i < H; i++) var += (xr[i] - mu) * (xr[i] - mu);
        double inv = 1.0 / sqrt(var / (double)H + c->norm_eps);
        for (int64_t i = 0; i < H; i++) y[r * H + i] = (xr[i] - mu) * inv * w[i] + (b ? b[i] : 0.0);
    }
}

static void ref_linear(const qs_block *blk, const ref_w *w, qs_linear_role role, const double *x, int64_t R, double *y)
{
    int idx = qs_block_find(blk, role);
    const qs_block_linear *l = &blk->lin[idx];
    for (int64_t r = 0; r < R; r++)
        for (int64_t o = 0; o < l->out; o++) {
            double s = w->b[idx] ? w->b[idx][o] : 0.0;
            for (int64_t i = 0; i < l->in; i++) s += x[r * l->in + i] * w->w[idx][o * l->in + i];
            y[r * l->out + o] = s;
        }
}

static double *dz(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }

/* HF semantics from the definitions: explicit loops, full softmax. */
static void ref_block(const qs_block *blk, const ref_w *w, const double *x, int64_t B, int64_t S, double *out)
{
    const qs_model_config *c = &blk->cfg;
    const int64_t R = B * S, H = c->hidden, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    const bool post = c->arch == QS_ARCH_OPT && !c->do_layer_norm_before;
    double *a_in = dz(R * H), *q = dz(R * nh * hd), *k = dz(R * nkv * hd), *v = dz(R * nkv * hd);
    if (post) memcpy(a_in, x, sizeof(double) * (size_t)(R * H));
    else ref_norm(c, w->anw, w->anb, x, a_in, R);
    if (c->arch == QS_ARCH_BLOOM) {
        double *f = dz(R * 3 * H);
        ref_linear(blk, w, QS_LIN_QKV, a_in, R, f);
        for (int64_t r = 0; r < R; r++)
            for (int64_t h = 0; h < nh; h++)
                for (int64_t d = 0; d < hd; d++) {
                    q[(r * nh + h) * hd + d] = f[r * 3 * H + h * 3 * hd + d];
                    k[(r * nh + h) * hd + d] = f[r * 3 * H + h * 3 * hd + hd + d];
                    v[(r * nh + h) * hd + d] = f[r * 3 * H + h * 3 * hd + 2 * hd + d];
                }
        free(f);
    } else {
        ref_linear(blk, w, QS_LIN_Q, a_in, R, q);
        ref_linear(blk, w, QS_LIN_K, a_in, R, k);
        ref_linear(blk, w, QS_LIN_V, a_in, R, v);
    }
    if (c->pos == QS_POS_ROPE)
        for (int64_t r = 0; r < R; r++) {
            double pos = (double)(r % S);
            for (int which = 0; which < 2; which++) {
                double *m = which ? k : q;
                int64_t heads = which ? nkv : nh;
                for (int64_t h = 0; h < heads; h++)
                    for (int64_t d = 0; d < hd / 2; d++) {
                        double f = pow(c->rope_theta, -2.0 * (double)d / (double)hd);
                        if (c->rope_scaling == QS_ROPE_SCALING_LLAMA3)
                            f = qs_op_rope_llama3_scale(f, c->rope_factor, c->rope_low_freq_factor,
                                                        c->rope_high_freq_factor, c->rope_original_max_positions);
                        double *e = m + (r * heads + h) * hd, x0 = e[d], x1 = e[d + hd / 2];
                        e[d] = x0 * cos(pos * f) - x1 * sin(pos * f);
                        e[d + hd / 2] = x1 * cos(pos * f) + x0 * sin(pos * f);
                    }
            }
        }
    double *att = dz(R * nh * hd), *sc = dz(S);
    for (int64_t bb = 0; bb < B; bb++)
        for (int64_t h = 0; h < nh; h++) {
            int64_t kh = h / (nh / nkv);
            double slope = c->pos == QS_POS_ALIBI ? qs_op_alibi_slope((int)h, (int)nh) : 0.0;
            for (int64_t i = 0; i < S; i++) {
                double mx = -INFINITY, z = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < hd; d++)
                        s += q[((bb * S + i) * nh + h) * hd + d] * k[((bb * S + j) * nkv + kh) * hd + d];
                    sc[j] = s / sqrt((double)hd) + slope * (double)j;
                    mx = fmax(mx, sc[j]);
                }
                for (int64_t j = 0; j <= i; j++) z += exp(sc[j] - mx);
                for (int64_t j = 0; j <= i; j++)
                    for (int64_t d = 0; d < hd; d++)
                        att[((bb * S + i) * nh + h) * hd + d] += exp(sc[j] - mx) / z * v[((bb * S + j) * nkv + kh) * hd + d];
            }
        }
    double *t = dz(R * H), *r1 = dz(R * H), *m_in = dz(R * H);
    ref_linear(blk, w, QS_LIN_O, att, R, t);
    for (int64_t i = 0; i < R * H; i++) r1[i] = x[i] + t[i];
    if (post) {
        ref_norm(c, w->anw, w->anb, r1, m_in, R);
        memcpy(r1, m_in, sizeof(double) * (size_t)(R * H));
    } else {
        ref_norm(c, w->mnw, w->mnb, r1, m_in, R);
    }
    int64_t F = c->ffn;
    double *g = dz(R * F);
    if (c->arch == QS_ARCH_LLAMA) {
        double *u = dz(R * F);
        ref_linear(blk, w, QS_LIN_GATE, m_in, R, g);
        ref_linear(blk, w, QS_LIN_UP, m_in, R, u);
        for (int64_t i = 0; i < R * F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
        free(u);
        ref_linear(blk, w, QS_LIN_DOWN, g, R, t);
    } else {
        ref_linear(blk, w, QS_LIN_FC1, m_in, R, g);
        for (int64_t i = 0; i < R * F; i++) {
            double a = g[i];
            g[i] = c->act == QS_ACT_RELU ? (a > 0 ? a : 0)
                                         : 0.5 * a * (1 + tanh(sqrt(2 / M_PI) * (a + 0.044715 * a * a * a)));
        }
        ref_linear(blk, w, QS_LIN_FC2, g, R, t);
    }
    for (int64_t i = 0; i < R * H; i++) out[i] = r1[i] + t[i];
    if (post) {
        ref_norm(c, w->mnw, w->mnb, out, t, R);
        memcpy(out, t, sizeof(double) * (size_t)(R * H));
    }
    free(a_in), free(q), free(k), free(v), free(att), free(sc), free(t), free(r1), free(m_in), free(g);
}

/* ============================== the reference of OmniQuant's parameters == */

/* Frozen discrete choices of one linear's quantizer (see the file comment). */
typedef struct lin_dec {
    double *zero, *d16;  /* per segment: zero point, fp16 rounding of the scale (scale − unrounded scale) */
    double *s_fixed;     /* per segment: the scale when it does not depend on the bounds */
    bool *grad;
    signed char *cls;    /* per weight: 0 inside, −1 clamped at 0, +1 clamped at maxq */
    double *rho;         /* per weight: (code − zero) − w / scale */
} lin_dec;

typedef struct gctx {
    const qs_block *blk;
    qs_quant_grid grid;
    int64_t gs[QS_MAX_BLOCK_LINEARS];
    bool let, shift[2];
    double *W[QS_MAX_BLOCK_LINEARS], *Bv[QS_MAX_BLOCK_LINEARS], *anw, *anb, *mnw, *mnb;
    double *gamma[QS_MAX_BLOCK_LINEARS], *beta[QS_MAX_BLOCK_LINEARS], *ls[3], *ld[2];
    lin_dec dec[QS_MAX_BLOCK_LINEARS];
    double *x, *y;
    int64_t B, S;
} gctx;

static int64_t ref_v_row(const qs_block *blk, int64_t r)
{
    int64_t hd = blk->cfg.head_dim;
    return blk->cfg.arch == QS_ARCH_BLOOM ? (r / hd) * 3 * hd + 2 * hd + r % hd : r;
}

static int64_t ref_o_chan(const qs_block *blk, int64_t c)
{
    int64_t hd = blk->cfg.head_dim, group = blk->cfg.n_heads / blk->cfg.n_kv_heads;
    return ((c / hd) / group) * hd + c % hd;
}

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

/* The LET-transformed weights in double (W' of linear i), biases and norms. */
static void ref_effective(const gctx *c, ref_w *e)
{
    const qs_block *blk = c->blk;
    const int64_t H = blk->cfg.hidden;
    for (int i = 0; i < blk->n_linears; i++) {
        const qs_block_linear *l = &blk->lin[i];
        memcpy(e->w[i], c->W[i], sizeof(double) * (size_t)(l->out * l->in));
        if (c->Bv[i]) memcpy(e->b[i], c->Bv[i], sizeof(double) * (size_t)l->out);
    }
    memcpy(e->anw, c->anw, sizeof(double) * (size_t)H);
    memcpy(e->mnw, c->mnw, sizeof(double) * (size_t)H);
    if (c->anb) memcpy(e->anb, c->anb, sizeof(double) * (size_t)H);
    if (c->mnb) memcpy(e->mnb, c->mnb, sizeof(double) * (size_t)H);
    if (!c->let) return;
    for (int k = 0; k < 2; k++) {
        const double *s = c->ls[k], *d = c->shift[k] ? c->ld[k] : NULL;
        double *nw = k ? e->mnw : e->anw, *nb = k ? e->mnb : e->anb;
        for (int64_t i = 0; i < H; i++) {
            nw[i] /= s[i];
            if (nb) nb[i] = (nb[i] - (d ? d[i] : 0)) / s[i];
        }
        for (int i = 0; i < blk->n_linears; i++) {
            const qs_block_linear *l = &blk->lin[i];
            if (l->stage != (k ? 2 : 0)) continue;
            for (int64_t o = 0; o < l->out; o++) {
                if (d)
                    for (int64_t j = 0; j < l->in; j++) e->b[i][o] += c->W[i][o * l->in + j] * d[j];
                for (int64_t j = 0; j < l->in; j++) e->w[i][o * l->in + j] *= s[j];
            }
        }
    }
    int iv = qs_block_find(blk, blk->cfg.arch == QS_ARCH_BLOOM ? QS_LIN_QKV : QS_LIN_V), io = qs_block_find(blk, QS_LIN_O);
    int64_t kvd = (int64_t)blk->cfg.n_kv_heads * blk->cfg.head_dim;
    for (int64_t r = 0; r < kvd; r++) {
        int64_t row = ref_v_row(blk, r);
        for (int64_t j = 0; j < blk->lin[iv].in; j++) e->w[iv][row * blk->lin[iv].in + j] /= c->ls[2][r];
        if (e->b[iv]) e->b[iv][row] /= c->ls[2][r];
    }
    for (int64_t o = 0; o < blk->lin[io].out; o++)
        for (int64_t j = 0; j < blk->lin[io].in; j++) e->w[io][o * blk->lin[io].in + j] *= c->ls[2][ref_o_chan(blk, j)];
}

/* The straight-through surrogate of the fake quantizer, in place on e->w[i]. */
static void ref_lwc(const gctx *c, int i, double *w)
{
    const qs_block_linear *l = &c->blk->lin[i];
    const int64_t gs = c->gs[i], groups = l->in / gs;
    const int maxq = c->grid.maxq;
    const lin_dec *dc = &c->dec[i];
    for (int64_t r = 0; r < l->out; r++)
        for (int64_t g = 0; g < groups; g++) {
            int64_t seg = r * groups + g;
            double *ws = w + r * l->in + g * gs;
            double mx = 0, mn = 0;
            for (int64_t j = 0; j < gs; j++) mx = fmax(mx, ws[j]), mn = fmin(mn, ws[j]);
            double hi = (c->gamma[i] ? sigm(c->gamma[i][seg]) : 1.0) * mx;
            double lo = (c->beta[i] ? sigm(c->beta[i][seg]) : 1.0) * mn;
            double s;
            if (!dc->grad[seg]) s = dc->s_fixed[seg];
            else if (!c->grid.sym) s = (hi - lo) / maxq + dc->d16[seg];
            else {
                double M = fmax(fabs(lo), hi);
                s = (lo < 0 ? 2 * M : M) / maxq + dc->d16[seg];
            }
            for (int64_t j = 0; j < gs; j++) {
                int64_t at = r * l->in + g * gs + j;
                signed char k = dc->cls[at];
                ws[j] = k == 0 ? ws[j] + s * dc->rho[at] : k < 0 ? s * (-dc->zero[seg]) : s * (maxq - dc->zero[seg]);
            }
        }
}

static double ref_loss(void *p)
{
    gctx *c = p;
    const qs_block *blk = c->blk;
    const int64_t H = blk->cfg.hidden, N = c->B * c->S * H;
    ref_w e;
    memset(&e, 0, sizeof e);
    for (int i = 0; i < blk->n_linears; i++) {
        e.w[i] = dz(blk->lin[i].out * blk->lin[i].in);
        e.b[i] = c->Bv[i] ? dz(blk->lin[i].out) : NULL;
    }
    e.anw = dz(H), e.mnw = dz(H), e.anb = c->anb ? dz(H) : NULL, e.mnb = c->mnb ? dz(H) : NULL;
    ref_effective(c, &e);
    for (int i = 0; i < blk->n_linears; i++) ref_lwc(c, i, e.w[i]);
    double *out = dz(N), L = 0;
    ref_block(blk, &e, c->x, c->B, c->S, out);
    for (int64_t k = 0; k < N; k++) L += (out[k] - c->y[k]) * (out[k] - c->y[k]);
    free(out);
    for (int i = 0; i < blk->n_linears; i++) free(e.w[i]), free(e.b[i]);
    free(e.anw), free(e.mnw), free(e.anb), free(e.mnb);
    return L / (double)N;
}

static double *tensor_d(const qs_tensor *t) { return t->data ? gc_tod(t->data, qs_tensor_numel(t)) : NULL; }

/* Freezes the quantizer's choices at the trainer's current point. */
static void make_decisions(gctx *c, qs_omni_state *s, int i, const float *gamma, const float *beta)
{
    const qs_block_linear *l = &c->blk->lin[i];
    const int64_t gs = c->gs[i], groups = l->in / gs, n = l->out * l->in;
    const float *w = qs_omni_effective_weight(s, i);
    lin_dec *d = &c->dec[i];
    d->zero = dz(l->out * groups), d->d16 = dz(l->out * groups), d->s_fixed = dz(l->out * groups);
    d->grad = calloc((size_t)(l->out * groups), 1);
    d->cls = calloc((size_t)n, 1);
    d->rho = dz(n);
    for (int64_t r = 0; r < l->out; r++)
        for (int64_t g = 0; g < groups; g++) {
            int64_t seg = r * groups + g;
            qs_lwc_seg sg;
            qs_lwc_seg_params(w + r * l->in + g * gs, gs, 1, gamma != NULL, gamma ? gamma[seg] : 0, beta ? beta[seg] : 0,
                              &c->grid, &sg);
            float su, zu;
            qs_quant_range_params(sg.lo, sg.hi, c->grid.maxq, c->grid.sym, &su, &zu);
            d->zero[seg] = sg.zero;
            d->d16[seg] = (double)sg.scale - (double)su;
            d->s_fixed[seg] = sg.scale;
            d->grad[seg] = sg.grad;
            for (int64_t j = 0; j < gs; j++) {
                int64_t at = r * l->in + g * gs + j;
                float u = rintf(w[at] / sg.scale) + sg.zero;
                d->cls[at] = u < 0 ? -1 : u > (float)c->grid.maxq ? 1 : 0;
                d->rho[at] = (double)(u - sg.zero) - (double)w[at] / (double)sg.scale;
            }
        }
}

static void check_block_grad(const char *label, const char *json, bool let, bool sym, bool lwc)
{
    qs_block blk;
    qs_model_names names;
    make_block(&blk, &names, json);
    const int64_t B = 2, S = 34, H = blk.cfg.hidden, N = B * S * H; /* 34: crosses the 32-query attention tile */
    qs_quant_opts o = omni_opts(3, 8, sym, let);
    o.omni.lwc = lwc;
    qs_omni_state *s = NULL;
    qs_error err;
    if (qs_omni_init(&s, &blk, &o, B, S, &err) != QS_OK) fail_msg("%s", err.msg);
    float *x = gc_randf(N, 1.0), *y = malloc(sizeof(float) * (size_t)N);
    if (let && qs_omni_init_let(s, qs_backend_cpu(), x, B, &err) != QS_OK) fail_msg("%s", err.msg);
    /* a point away from the initial values: varied clipping, scales and shifts */
    for (int p = 0; p < qs_omni_param_count(s); p++) {
        qs_omni_param_view v = qs_omni_param(s, p);
        for (int64_t j = 0; j < v.n; j++) {
            if (strstr(v.name, ".lwc_")) v.value[j] = (float)(3.0 + 2.5 * gc_urand());
            else if (strstr(v.name, "_scale")) v.value[j] *= (float)(1.0 + 0.3 * gc_urand());
            else v.value[j] += (float)(0.1 * gc_urand());
        }
    }
    /* the target: the FP block's output plus noise */
    qs_block_forward(&blk, qs_backend_cpu(), x, B, S, y, NULL, &err);
    for (int64_t k = 0; k < N; k++) y[k] += (float)(0.05 * gc_urand());
    double loss = 0;
    if (qs_omni_loss_grad(s, qs_backend_cpu(), x, y, B, &loss, &err) != QS_OK) fail_msg("%s", err.msg);

    gctx c;
    memset(&c, 0, sizeof c);
    c.blk = &blk;
    c.grid = qs_quant_opts_grid(&o);
    c.let = let;
    c.B = B, c.S = S;
    c.x = gc_tod(x, N), c.y = gc_tod(y, N);
    for (int i = 0; i < blk.n_linears; i++) {
        c.gs[i] = 8;
        c.W[i] = tensor_d(&blk.weight[i]);
        c.Bv[i] = tensor_d(&blk.bias[i]);
    }
    c.anw = tensor_d(&blk.attn_norm_w), c.anb = tensor_d(&blk.attn_norm_b);
    c.mnw = tensor_d(&blk.mlp_norm_w), c.mnb = tensor_d(&blk.mlp_norm_b);
    double *pd[QS_OMNI_MAX_TENSORS] = {0};
    for (int p = 0; p < qs_omni_param_count(s); p++) {
        qs_omni_param_view v = qs_omni_param(s, p);
        pd[p] = gc_tod(v.value, v.n);
        for (int i = 0; i < blk.n_linears; i++) {
            char pre[QS_NAME_MAX];
            snprintf(pre, sizeof pre, "%.*s.lwc_", (int)(strlen(blk.lin[i].weight) - 7), blk.lin[i].weight);
            if (!strncmp(v.name, pre, strlen(pre))) {
                if (strstr(v.name, "gamma")) c.gamma[i] = pd[p];
                else c.beta[i] = pd[p];
            }
        }
        if (!strcmp(v.name, "let.attn_scale")) c.ls[0] = pd[p];
        if (!strcmp(v.name, "let.mlp_scale")) c.ls[1] = pd[p];
        if (!strcmp(v.name, "let.vo_scale")) c.ls[2] = pd[p];
        if (!strcmp(v.name, "let.attn_shift")) c.ld[0] = pd[p], c.shift[0] = true;
        if (!strcmp(v.name, "let.mlp_shift")) c.ld[1] = pd[p], c.shift[1] = true;
    }
    for (int i = 0; i < blk.n_linears; i++) {
        const float *ga = NULL, *be = NULL;
        for (int p = 0; p < qs_omni_param_count(s); p++) {
            if (pd[p] == c.gamma[i]) ga = qs_omni_param(s, p).value;
            if (pd[p] == c.beta[i]) be = qs_omni_param(s, p).value;
        }
        make_decisions(&c, s, i, ga, be);
    }
    double ref = ref_loss(&c);
    if (fabs(ref - loss) > 1e-5 * fabs(ref))
        fail_msg("%s: loss %.10g, the double reference %.10g", label, loss, ref);
    for (int p = 0; p < qs_omni_param_count(s); p++) {
        qs_omni_param_view v = qs_omni_param(s, p);
        char name[160];
        snprintf(name, sizeof name, "%s %s", label, v.name);
        double rel = gc_check(name, ref_loss, &c, pd[p], v.n, v.grad, 12);
        if (!(rel < GC_TOL)) fail_msg("%s: relative error %g", name, rel);
    }
    for (int p = 0; p < qs_omni_param_count(s); p++) free(pd[p]);
    for (int i = 0; i < blk.n_linears; i++) {
        lin_dec *d = &c.dec[i];
        free(d->zero), free(d->d16), free(d->s_fixed), free(d->grad), free(d->cls), free(d->rho);
        free(c.W[i]), free(c.Bv[i]);
    }
    free(c.anw), free(c.anb), free(c.mnw), free(c.mnb), free(c.x), free(c.y);
    free(x), free(y);
    qs_omni_free(s);
    qs_block_free(&blk);
}

static void test_grad_llama(void **state)
{
    (void)state;
    check_block_grad("llama lwc", LLAMA_CFG, false, false, true);
    check_block_grad("llama lwc sym", LLAMA_CFG, false, true, true);
    check_block_grad("llama lwc+let", LLAMA_CFG, true, false, true);
    check_block_grad("llama let alone", LLAMA_CFG, true, false, false);
}

static void test_grad_opt(void **state)
{
    (void)state;
    check_block_grad("opt lwc", OPT_CFG, false, false, true);
    check_block_grad("opt lwc+let", OPT_CFG, true, false, true);
    check_block_grad("opt post-LN lwc", OPT_POST_CFG, false, false, true);
}

static void test_grad_bloom(void **state)
{
    (void)state;
    check_block_grad("bloom lwc", BLOOM_CFG, false, false, true);
    check_block_grad("bloom lwc+let", BLOOM_CFG, true, false, true);
    check_block_grad("bloom let alone", BLOOM_CFG, true, false, false);
}

/* ================================================== trained block == exported == */

/* Trains briefly, finishes, and checks: the training forward at the final
 * parameters equals qs_block_forward of the finished block bit for bit; the
 * codes dequantize to the block's weights; the loss fell below RTN's. */
static void check_finish(const char *json, bool let)
{
    qs_block blk;
    qs_model_names names;
    make_block(&blk, &names, json);
    const int64_t rows = 6, S = 40, H = blk.cfg.hidden, N = rows * S * H;
    qs_quant_opts o = omni_opts(3, 8, false, let);
    o.omni.epochs = 8;
    o.omni.batch = 2;
    o.omni.lwc_lr = 5e-2; /* few steps: move further per step than the default */
    o.omni.let_lr = 1e-2;
    const qs_backend_i *be = qs_backend_cpu();
    qs_error err;
    float *x = gc_randf(N, 1.0), *y = malloc(sizeof(float) * (size_t)N), *out = malloc(sizeof(float) * (size_t)N);
    assert_int_equal(qs_block_forward(&blk, be, x, rows, S, y, NULL, &err), QS_OK);
    /* RTN's loss on the same grid */
    qs_block rtn;
    make_block(&rtn, &names, json); /* other random weights: overwritten below */
    for (int i = 0; i < blk.n_linears; i++) {
        qs_quant_opts ro = o;
        ro.method = QS_QUANT_METHOD_RTN;
        qs_quant_result r;
        qs_quant_result_init(&r, blk.lin[i].out, blk.lin[i].in, &ro, &err);
        qs_quant_rtn(blk.weight[i].data, blk.lin[i].out, blk.lin[i].in, &ro, &r, &err);
        memcpy(rtn.weight[i].data, r.q, sizeof(float) * (size_t)(r.rows * r.cols));
        if (blk.bias[i].data) memcpy(rtn.bias[i].data, blk.bias[i].data, sizeof(float) * (size_t)blk.lin[i].out);
        qs_quant_result_free(&r);
    }
    memcpy(rtn.attn_norm_w.data, blk.attn_norm_w.data, sizeof(float) * (size_t)H);
    memcpy(rtn.mlp_norm_w.data, blk.mlp_norm_w.data, sizeof(float) * (size_t)H);
    if (blk.attn_norm_b.data) memcpy(rtn.attn_norm_b.data, blk.attn_norm_b.data, sizeof(float) * (size_t)H);
    if (blk.mlp_norm_b.data) memcpy(rtn.mlp_norm_b.data, blk.mlp_norm_b.data, sizeof(float) * (size_t)H);
    assert_int_equal(qs_block_forward(&rtn, be, x, rows, S, out, NULL, &err), QS_OK);
    double rtn_loss = 0;
    for (int64_t k = 0; k < N; k++) rtn_loss += (double)(out[k] - y[k]) * (out[k] - y[k]);
    rtn_loss /= (double)N;

    /* the loss on all rows at the initial parameters */
    qs_omni_state *s0 = NULL;
    double init_loss = 0;
    assert_int_equal(qs_omni_init(&s0, &blk, &o, rows, S, &err), QS_OK);
    if (let) assert_int_equal(qs_omni_init_let(s0, be, x, rows, &err), QS_OK);
    assert_int_equal(qs_omni_loss_grad(s0, be, x, y, rows, &init_loss, &err), QS_OK);
    qs_omni_free(s0);
    qs_omni_state *s = NULL;
    assert_int_equal(qs_omni_init(&s, &blk, &o, 2, S, &err), QS_OK);
    if (let) assert_int_equal(qs_omni_init_let(s, be, x, rows, &err), QS_OK);
    assert_int_equal(qs_omni_train(s, be, x, y, rows, 0, &err), QS_OK);
    /* the training forward's loss on rows 0-1 at the final parameters */
    double final_loss = 0;
    assert_int_equal(qs_omni_loss_grad(s, be, x, y, 2, &final_loss, &err), QS_OK);
    qs_quant_result res[QS_MAX_BLOCK_LINEARS];
    memset(res, 0, sizeof res);
    qs_omni_record rec;
    assert_int_equal(qs_omni_finish(s, &blk, NULL, &names, res, &rec, &err), QS_OK);
    assert_int_equal(rec.epochs, 8);
    print_message("loss curve:");
    for (int e = 0; e < rec.epochs; e++) print_message(" %.5g", rec.loss[e]);
    print_message(" (RTN %.5g, initial parameters %.5g)\n", rtn_loss, init_loss);
    for (int i = 0; i < blk.n_linears; i++) {
        float *q = malloc(sizeof(float) * (size_t)(res[i].rows * res[i].cols));
        qs_quant_dequantize(&res[i], q);
        assert_memory_equal(q, blk.weight[i].data, sizeof(float) * (size_t)(res[i].rows * res[i].cols));
        for (int64_t k = 0; k < res[i].rows * res[i].cols; k++) assert_true(res[i].codes[k] <= 7);
        free(q);
    }
    /* the finished block's forward equals the training forward at the final parameters */
    assert_int_equal(qs_block_forward(&blk, be, x, rows, S, out, NULL, &err), QS_OK);
    double l2 = 0, lall = 0;
    for (int64_t k = 0; k < 2 * S * H; k++) l2 += (double)(out[k] - y[k]) * (out[k] - y[k]);
    l2 /= (double)(2 * S * H);
    assert_true(l2 == final_loss);
    for (int64_t k = 0; k < N; k++) lall += (double)(out[k] - y[k]) * (out[k] - y[k]);
    lall /= (double)N;
    print_message("trained block loss %.5g vs RTN %.5g, initial parameters %.5g\n", lall, rtn_loss, init_loss);
    assert_true(lall < rtn_loss);
    assert_true(lall < 0.99 * init_loss); /* training helped, on the rows it saw */
    /* LET left folded norms in the record */
    if (let) assert_true(rec.n_fp >= 2 && qs_omni_record_fp(&rec, rec.fp[0].name) == &rec.fp[0]);
    else assert_int_equal(rec.n_fp, 0);
    for (int i = 0; i < blk.n_linears; i++) qs_quant_result_free(&res[i]);
    qs_omni_record_free(&rec);
    qs_omni_free(s);
    free(x), free(y), free(out);
    qs_block_free(&blk);
    qs_block_free(&rtn);
}

static void test_finish_exact(void **state)
{
    (void)state;
    check_finish(LLAMA_CFG, false);
    check_finish(LLAMA_CFG, true);
    check_finish(OPT_CFG, true);
    check_finish(BLOOM_CFG, true);
}

/* Training gives the same bytes with 1 and 2 threads. */
static void test_threads(void **state)
{
    (void)state;
    uint8_t *codes[2] = {NULL, NULL};
    size_t bytes = 0;
    for (int run = 0; run < 2; run++) {
        int saved = omp_get_max_threads();
        omp_set_num_threads(run + 1);
        gc_rng = 12345;
        qs_block blk;
        qs_model_names names;
        make_block(&blk, &names, LLAMA_CFG);
        const int64_t rows = 4, S = 70, N = rows * S * blk.cfg.hidden;
        qs_quant_opts o = omni_opts(2, 16, false, true);
        o.omni.epochs = 2;
        o.omni.batch = 2;
        float *x = gc_randf(N, 1.0), *y = malloc(sizeof(float) * (size_t)N);
        qs_error err;
        qs_block_forward(&blk, qs_backend_cpu(), x, rows, S, y, NULL, &err);
        qs_quant_result res[QS_MAX_BLOCK_LINEARS];
        memset(res, 0, sizeof res);
        qs_omni_record rec;
        assert_int_equal(qs_omni_quantize_block(&blk, qs_backend_cpu(), &o, NULL, &names, x, x, y, rows, S, res, &rec,
                                                NULL, &err),
                         QS_OK);
        bytes = 0;
        for (int i = 0; i < blk.n_linears; i++) bytes += (size_t)(res[i].rows * res[i].cols + 4 * res[i].rows * res[i].groups);
        codes[run] = malloc(bytes + 8 * (size_t)rec.epochs);
        size_t at = 0;
        for (int i = 0; i < blk.n_linears; i++) {
            memcpy(codes[run] + at, res[i].codes, (size_t)(res[i].rows * res[i].cols));
            at += (size_t)(res[i].rows * res[i].cols);
            memcpy(codes[run] + at, res[i].scales, (size_t)(4 * res[i].rows * res[i].groups));
            at += (size_t)(4 * res[i].rows * res[i].groups);
            qs_quant_result_free(&res[i]);
        }
        memcpy(codes[run] + at, rec.loss, 8 * (size_t)rec.epochs);
        bytes += 8 * (size_t)rec.epochs;
        qs_omni_record_free(&rec);
        free(x), free(y);
        qs_block_free(&blk);
        omp_set_num_threads(saved);
    }
    assert_memory_equal(codes[0], codes[1], bytes);
    free(codes[0]), free(codes[1]);
}

static void test_check_let(void **state)
{
    (void)state;
    qs_model_config cfg;
    qs_error err;
    assert_int_equal(qs_model_config_parse(OPT_POST_CFG, "t", &cfg, &err), QS_OK);
    qs_quant_opts o = omni_opts(3, 8, false, true);
    assert_int_equal(qs_omni_check(&cfg, &o, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--let"));
    o.omni.let = false;
    assert_int_equal(qs_omni_check(&cfg, &o, &err), QS_OK);
    assert_int_equal(qs_model_config_parse(LLAMA_CFG, "t", &cfg, &err), QS_OK);
    o.omni.let = true;
    assert_int_equal(qs_omni_check(&cfg, &o, &err), QS_OK);
    /* options: epochs, learning rates, nothing to train */
    qs_quant_opts bad = o;
    bad.omni.epochs = 0;
    assert_int_equal(qs_quant_opts_check(&bad, 8, 8, &err), QS_ERR_INPUT);
    bad = o;
    bad.omni.lwc_lr = -1e-3;
    assert_int_equal(qs_quant_opts_check(&bad, 8, 8, &err), QS_ERR_INPUT);
    bad = o;
    bad.omni.lwc = bad.omni.let = false;
    assert_int_equal(qs_quant_opts_check(&bad, 8, 8, &err), QS_ERR_INPUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_llama),   cmocka_unit_test(test_grad_opt),  cmocka_unit_test(test_grad_bloom),
        cmocka_unit_test(test_finish_exact), cmocka_unit_test(test_threads),   cmocka_unit_test(test_check_let),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
