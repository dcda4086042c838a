/* omniquant.c — OmniQuant's per-block training (see omniquant.h): the
 * parameters and their effective weights, the chain rule from the block's
 * gradients to LWC and LET, AdamW, the epoch loop, folding and the final
 * quantization. The block's own forward/backward is workers/block_train.c;
 * the clipping grid and its straight-through gradient kernels/lwc_grid.h. */
#include "workers/omniquant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/lwc.h"
#include "kernels/cpu/ops_backward_cpu.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/lwc_grid.h"
#include "kernels/tensor.h"
#include "workers/block_train.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ================================================================ record == */

void qs_omni_record_free(qs_omni_record *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_params; i++) qs_free(r->params[i].data);
    for (int i = 0; i < r->n_fp; i++) qs_free(r->fp[i].data);
    qs_free(r->loss);
    memset(r, 0, sizeof *r);
}

const qs_omni_tensor *qs_omni_record_fp(const qs_omni_record *r, const char *name)
{
    for (int i = 0; r && i < r->n_fp; i++)
        if (!strcmp(r->fp[i].name, name)) return &r->fp[i];
    return NULL;
}

qs_status qs_omni_record_add(qs_omni_record *r, bool fp, const char *name, int ndim, const int64_t *shape,
                             const float *data, qs_error *err)
{
    int *n = fp ? &r->n_fp : &r->n_params;
    qs_omni_tensor *t = fp ? &r->fp[*n] : &r->params[*n];
    if (*n >= QS_OMNI_MAX_TENSORS) return qs_error_set(err, QS_ERR_INTERNAL, "omniquant record: too many tensors");
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    int64_t count = 1;
    for (int d = 0; d < ndim; d++) count *= (t->shape[d] = shape[d]);
    t->data = qs_malloc(sizeof(float) * (size_t)count);
    if (!t->data) return qs_error_set(err, QS_ERR_NOMEM, "omniquant record: %s", name);
    memcpy(t->data, data, sizeof(float) * (size_t)count);
    (*n)++;
    return QS_OK;
}

/* ================================================================= check == */

qs_status qs_omni_check(const qs_model_config *cfg, const qs_quant_opts *o, qs_error *err)
{
    if (o->method != QS_QUANT_METHOD_OMNIQUANT) return QS_OK;
    if (o->omni.let && cfg->arch == QS_ARCH_OPT && !cfg->do_layer_norm_before)
        return qs_error_set(err, QS_ERR_INPUT,
                            "--let: this OPT model normalizes after the residual (do_layer_norm_before false), so a "
                            "scale cannot be folded into its norms; LET needs pre-LN models (llama, pre-LN OPT, "
                            "bloom): use --let false");
    return QS_OK;
}

/* ================================================================= state == */

enum { LET_ATTN = 0, LET_MLP, LET_VO, LET_N };

typedef struct omni_param {
    char name[QS_NAME_MAX + 16];
    int ndim;
    int64_t shape[2], n;
    float *v, *g, *m, *s2; /* value, gradient, AdamW's moments */
    double lr;
} omni_param;

struct qs_omni_state {
    const qs_block *blk;
    qs_quant_opts o;
    qs_quant_grid grid;
    int nl;
    int64_t seq, max_batch, hd, kvd, qd, group;
    int64_t groups[QS_MAX_BLOCK_LINEARS];
    int p_gamma[QS_MAX_BLOCK_LINEARS], p_beta[QS_MAX_BLOCK_LINEARS];
    bool let_on[LET_N], let_shift[LET_N];
    int p_scale[LET_N], p_shift[LET_N];
    int64_t let_n[LET_N];
    int i_vh, i_o;                          /* the linear holding v (v or bloom's qkv), o */
    bool let_lin[QS_MAX_BLOCK_LINEARS];     /* weight transformed by LET */
    bool eff_bias[QS_MAX_BLOCK_LINEARS];    /* bias transformed by LET */
    omni_param p[QS_OMNI_MAX_TENSORS];
    int np;
    float *sc[LET_N];                       /* scales as applied (truncated) */
    /* effective parameters of the training forward */
    float *wl[QS_MAX_BLOCK_LINEARS];        /* LET-transformed weight (let_lin only) */
    float *wq[QS_MAX_BLOCK_LINEARS];        /* fake-quantized weight */
    float *bl[QS_MAX_BLOCK_LINEARS];        /* LET-transformed bias (eff_bias only) */
    float *an_w, *an_b, *mn_w, *mn_b;       /* LET-transformed norms (LET_ATTN / LET_MLP) */
    /* gradients */
    float *dwq[QS_MAX_BLOCK_LINEARS], *dwl[QS_MAX_BLOCK_LINEARS], *db[QS_MAX_BLOCK_LINEARS];
    float *d_an_w, *d_an_b, *d_mn_w, *d_mn_b;
    float *colbuf;                          /* [max in] */
    qs_train_ctx *tc;
    float *out, *dout;
    int64_t t;                              /* AdamW steps taken */
    double t_fwd, t_bwd, t_opt;
    int64_t steps;
    volatile int *stop;                     /* NULL, or a flag a signal handler sets */
    double *curve;                          /* per-epoch mean loss of the last qs_omni_train */
    int epochs_done;
};

static float *fbuf(int64_t n, bool *ok)
{
    float *p = qs_calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!p) *ok = false;
    return p;
}

static int add_param(qs_omni_state *s, const char *name, int ndim, int64_t d0, int64_t d1, double lr, float init,
                     bool *ok)
{
    if (s->np >= QS_OMNI_MAX_TENSORS) {
        *ok = false;
        return -1;
    }
    omni_param *p = &s->p[s->np];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->n = ndim == 2 ? d0 * d1 : d0;
    p->lr = lr;
    p->v = fbuf(p->n, ok);
    p->g = fbuf(p->n, ok);
    p->m = fbuf(p->n, ok);
    p->s2 = fbuf(p->n, ok);
    if (*ok)
        for (int64_t i = 0; i < p->n; i++) p->v[i] = init;
    return s->np++;
}

/* "<weight name without .weight>" */
static void linear_prefix(const char *weight, char *out, size_t cap)
{
    size_t n = strlen(weight);
    if (n > 7 && !strcmp(weight + n - 7, ".weight")) n -= 7;
    snprintf(out, cap, "%.*s", (int)n, weight);
}

static bool stage_of_let(int let, int stage) { return (let == LET_ATTN && stage == 0) || (let == LET_MLP && stage == 2); }

qs_status qs_omni_init(qs_omni_state **out, const qs_block *blk, const qs_quant_opts *o, int64_t max_batch,
                       int64_t seq, qs_error *err)
{
    QS_TRY(qs_omni_check(&blk->cfg, o, err));
    qs_omni_state *s = qs_calloc(1, sizeof *s);
    if (!s) return qs_error_set(err, QS_ERR_NOMEM, "block %d: omniquant state", blk->layer);
    const qs_model_config *cfg = &blk->cfg;
    s->blk = blk;
    s->o = *o;
    s->grid = qs_quant_opts_grid(o);
    s->grid.mse = false;
    s->nl = blk->n_linears;
    s->seq = seq;
    s->max_batch = max_batch;
    s->hd = cfg->head_dim;
    s->qd = (int64_t)cfg->n_heads * cfg->head_dim;
    s->kvd = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    s->group = cfg->n_heads / cfg->n_kv_heads;
    s->i_vh = qs_block_find(blk, cfg->arch == QS_ARCH_BLOOM ? QS_LIN_QKV : QS_LIN_V);
    s->i_o = qs_block_find(blk, QS_LIN_O);
    bool ok = true;
    int64_t max_in = 0;
    for (int i = 0; i < s->nl; i++) {
        const qs_block_linear *l = &blk->lin[i];
        s->groups[i] = qs_quant_groups(o, l->in);
        s->p_gamma[i] = s->p_beta[i] = -1;
        if (l->in > max_in) max_in = l->in;
        if (o->omni.lwc) {
            char pre[QS_NAME_MAX], name[QS_NAME_MAX + 16];
            linear_prefix(l->weight, pre, sizeof pre);
            snprintf(name, sizeof name, "%s.lwc_gamma", pre);
            s->p_gamma[i] = add_param(s, name, 2, l->out, s->groups[i], o->omni.lwc_lr, QS_LWC_INIT, &ok);
            snprintf(name, sizeof name, "%s.lwc_beta", pre);
            s->p_beta[i] = add_param(s, name, 2, l->out, s->groups[i], o->omni.lwc_lr, QS_LWC_INIT, &ok);
        }
    }
    for (int k = 0; k < LET_N; k++) s->p_scale[k] = s->p_shift[k] = -1;
    if (o->omni.let) {
        static const char *sname[LET_N] = {"let.attn_scale", "let.mlp_scale", "let.vo_scale"};
        static const char *dname[LET_N] = {"let.attn_shift", "let.mlp_shift", "let.vo_shift"};
        for (int k = 0; k < LET_N; k++) {
            s->let_on[k] = true;
            s->let_n[k] = k == LET_VO ? s->kvd : cfg->hidden;
            /* a shift needs a norm bias and a bias on every linear it feeds
             * (OPT, BLOOM); v→o is scale-only everywhere */
            bool shift = k != LET_VO && cfg->norm == QS_NORM_LAYER;
            for (int i = 0; i < s->nl && shift; i++)
                if (stage_of_let(k, blk->lin[i].stage) && !blk->bias[i].data) shift = false;
            s->let_shift[k] = shift;
            s->p_scale[k] = add_param(s, sname[k], 1, s->let_n[k], 0, o->omni.let_lr, 1.0f, &ok);
            if (shift) s->p_shift[k] = add_param(s, dname[k], 1, s->let_n[k], 0, o->omni.let_lr, 0.0f, &ok);
            s->sc[k] = fbuf(s->let_n[k], &ok);
        }
        for (int i = 0; i < s->nl; i++) {
            int st = blk->lin[i].stage;
            s->let_lin[i] = st == 0 || st == 2 || i == s->i_o;
            s->eff_bias[i] = blk->bias[i].data && (((st == 0 && s->let_shift[LET_ATTN]) ||
                                                    (st == 2 && s->let_shift[LET_MLP])) || i == s->i_vh);
        }
        int64_t H = cfg->hidden;
        s->an_w = fbuf(H, &ok), s->mn_w = fbuf(H, &ok), s->d_an_w = fbuf(H, &ok), s->d_mn_w = fbuf(H, &ok);
        if (blk->attn_norm_b.data) s->an_b = fbuf(H, &ok), s->d_an_b = fbuf(H, &ok);
        if (blk->mlp_norm_b.data) s->mn_b = fbuf(H, &ok), s->d_mn_b = fbuf(H, &ok);
    }
    for (int i = 0; i < s->nl && ok; i++) {
        const qs_block_linear *l = &blk->lin[i];
        int64_t n = l->out * l->in;
        s->wq[i] = fbuf(n, &ok);
        s->dwq[i] = fbuf(n, &ok);
        if (s->let_lin[i]) s->wl[i] = fbuf(n, &ok), s->dwl[i] = fbuf(n, &ok);
        if (s->eff_bias[i]) s->bl[i] = fbuf(l->out, &ok), s->db[i] = fbuf(l->out, &ok);
    }
    s->colbuf = fbuf(max_in > s->qd ? max_in : s->qd, &ok);
    int64_t R = max_batch * seq * cfg->hidden;
    s->out = fbuf(R, &ok);
    s->dout = fbuf(R, &ok);
    if (!ok) {
        qs_omni_free(s);
        return qs_error_set(err, QS_ERR_NOMEM, "block %d: omniquant parameters and effective weights", blk->layer);
    }
    qs_status st = qs_train_ctx_init(&s->tc, blk, max_batch, seq, err);
    if (st != QS_OK) {
        qs_omni_free(s);
        return st;
    }
    *out = s;
    return QS_OK;
}

void qs_omni_free(qs_omni_state *s)
{
    if (!s) return;
    for (int i = 0; i < s->np; i++) qs_free(s->p[i].v), qs_free(s->p[i].g), qs_free(s->p[i].m), qs_free(s->p[i].s2);
    for (int k = 0; k < LET_N; k++) qs_free(s->sc[k]);
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) {
        qs_free(s->wl[i]), qs_free(s->wq[i]), qs_free(s->bl[i]);
        qs_free(s->dwq[i]), qs_free(s->dwl[i]), qs_free(s->db[i]);
    }
    qs_free(s->an_w), qs_free(s->an_b), qs_free(s->mn_w), qs_free(s->mn_b);
    qs_free(s->d_an_w), qs_free(s->d_an_b), qs_free(s->d_mn_w), qs_free(s->d_mn_b);
    qs_free(s->colbuf), qs_free(s->out), qs_free(s->dout), qs_free(s->curve);
    qs_train_ctx_free(s->tc);
    qs_free(s);
}

int qs_omni_param_count(const qs_omni_state *s) { return s->np; }

qs_omni_param_view qs_omni_param(const qs_omni_state *s, int i)
{
    qs_omni_param_view v = {s->p[i].name, s->p[i].v, s->p[i].g, s->p[i].n};
    return v;
}

/* ============================================================ LET layout == */

/* Row of the v-holding linear that carries v channel r (kv head r / hd, dim r % hd). */
static int64_t v_row(const qs_omni_state *s, int64_t r)
{
    if (s->blk->cfg.arch != QS_ARCH_BLOOM) return r;
    return (r / s->hd) * 3 * s->hd + 2 * s->hd + r % s->hd; /* bloom's rows are [heads, 3, head_dim] */
}

/* v channel that column c of o reads (query head c / hd reads kv head (c / hd) / group). */
static int64_t o_chan(const qs_omni_state *s, int64_t c) { return ((c / s->hd) / s->group) * s->hd + c % s->hd; }

/* The weight the quantizer sees for linear i. */
static const float *w_used(const qs_omni_state *s, int i)
{
    return s->let_lin[i] ? s->wl[i] : s->blk->weight[i].data;
}

static const float *b_used(const qs_omni_state *s, int i)
{
    return s->eff_bias[i] ? s->bl[i] : s->blk->bias[i].data;
}

/* |s| >= 1e-2, as the OmniQuant reference truncates its scales (the
 * gradient passes straight through). */
static float trunc_scale(float v)
{
    if (v >= 1e-2f || v <= -1e-2f) return v;
    return v < 0.0f ? -1e-2f : 1e-2f;
}

/* Effective weights, biases and norms from the parameters' current values. */
static void effective(qs_omni_state *s)
{
    const qs_block *blk = s->blk;
    if (s->o.omni.let) {
        for (int k = 0; k < LET_N; k++) {
            const float *v = s->p[s->p_scale[k]].v;
            for (int64_t c = 0; c < s->let_n[k]; c++) s->sc[k][c] = trunc_scale(v[c]);
        }
        for (int i = 0; i < s->nl; i++) {
            const qs_block_linear *l = &blk->lin[i];
            if (s->let_lin[i]) memcpy(s->wl[i], blk->weight[i].data, sizeof(float) * (size_t)(l->out * l->in));
            if (s->eff_bias[i]) memcpy(s->bl[i], blk->bias[i].data, sizeof(float) * (size_t)l->out);
        }
        /* norm → linears: norm output / s, linear columns · s; shift: (b − δ)/s, bias + W·δ */
        for (int k = LET_ATTN; k <= LET_MLP; k++) {
            const float *sc = s->sc[k], *d = s->let_shift[k] ? s->p[s->p_shift[k]].v : NULL;
            const qs_tensor *nw = k == LET_ATTN ? &blk->attn_norm_w : &blk->mlp_norm_w;
            const qs_tensor *nb = k == LET_ATTN ? &blk->attn_norm_b : &blk->mlp_norm_b;
            float *ew = k == LET_ATTN ? s->an_w : s->mn_w, *eb = k == LET_ATTN ? s->an_b : s->mn_b;
            const float *w0 = nw->data, *b0 = nb->data;
            for (int64_t c = 0; c < s->let_n[k]; c++) {
                ew[c] = w0[c] / sc[c];
                if (eb) eb[c] = (b0[c] - (d ? d[c] : 0.0f)) / sc[c];
            }
            for (int i = 0; i < s->nl; i++) {
                const qs_block_linear *l = &blk->lin[i];
                if (!stage_of_let(k, l->stage)) continue;
                const float *W = blk->weight[i].data;
                float *wl = s->wl[i];
#pragma omp parallel for schedule(static) if (l->out * l->in >= (1 << 18))
                for (int64_t o = 0; o < l->out; o++)
                    for (int64_t c = 0; c < l->in; c++) wl[o * l->in + c] = W[o * l->in + c] * sc[c];
                if (d && s->eff_bias[i]) {
                    const float *b0l = blk->bias[i].data;
#pragma omp parallel for schedule(static) if (l->out * l->in >= (1 << 18))
                    for (int64_t o = 0; o < l->out; o++) {
                        double acc = 0.0;
                        for (int64_t c = 0; c < l->in; c++) acc += (double)W[o * l->in + c] * (double)d[c];
                        s->bl[i][o] = b0l[o] + (float)acc;
                    }
                }
            }
        }
        /* v → o: rows of v / s, columns of o · s */
        const float *sv = s->sc[LET_VO];
        const qs_block_linear *lv = &blk->lin[s->i_vh], *lo = &blk->lin[s->i_o];
        for (int64_t r = 0; r < s->kvd; r++) {
            int64_t row = v_row(s, r);
            for (int64_t c = 0; c < lv->in; c++) s->wl[s->i_vh][row * lv->in + c] /= sv[r];
            if (s->eff_bias[s->i_vh]) s->bl[s->i_vh][row] /= sv[r];
        }
        for (int64_t o = 0; o < lo->out; o++)
            for (int64_t c = 0; c < lo->in; c++) s->wl[s->i_o][o * lo->in + c] *= sv[o_chan(s, c)];
    }
    for (int i = 0; i < s->nl; i++) {
        const qs_block_linear *l = &blk->lin[i];
        qs_cpu_lwc_fake(w_used(s, i), l->out, l->in, s->o.group_size, s->p_gamma[i] >= 0 ? s->p[s->p_gamma[i]].v : NULL,
                        s->p_beta[i] >= 0 ? s->p[s->p_beta[i]].v : NULL, &s->grid, s->wq[i]);
    }
}

void qs_omni_set_stop(qs_omni_state *s, volatile int *stop) { s->stop = stop; }

void qs_omni_timing(const qs_omni_state *s, double *forward, double *backward, double *optimizer)
{
    *forward = s->t_fwd;
    *backward = s->t_bwd;
    *optimizer = s->t_opt;
}

const float *qs_omni_effective_weight(qs_omni_state *s, int i)
{
    effective(s);
    return w_used(s, i);
}

static void train_views(const qs_omni_state *s, qs_train_weights *w, qs_train_grads *g)
{
    const qs_block *blk = s->blk;
    memset(w, 0, sizeof *w);
    memset(g, 0, sizeof *g);
    for (int i = 0; i < s->nl; i++) {
        w->w[i] = s->wq[i];
        w->b[i] = b_used(s, i);
        if (s->p_gamma[i] >= 0 || s->let_lin[i]) g->w[i] = s->dwq[i];
        if (s->eff_bias[i]) g->b[i] = s->db[i];
    }
    bool let = s->o.omni.let;
    w->attn_norm_w = let ? s->an_w : blk->attn_norm_w.data;
    w->attn_norm_b = let && s->an_b ? s->an_b : blk->attn_norm_b.data;
    w->mlp_norm_w = let ? s->mn_w : blk->mlp_norm_w.data;
    w->mlp_norm_b = let && s->mn_b ? s->mn_b : blk->mlp_norm_b.data;
    if (let) {
        g->attn_norm_w = s->d_an_w, g->attn_norm_b = s->d_an_b;
        g->mlp_norm_w = s->d_mn_w, g->mlp_norm_b = s->d_mn_b;
    }
}

/* ============================================================ chain rule == */

/* From the block's gradients (dwq, db, norm gradients) to every parameter's. */
static void chain(qs_omni_state *s)
{
    const qs_block *blk = s->blk;
    for (int i = 0; i < s->nl; i++) {
        const qs_block_linear *l = &blk->lin[i];
        bool lwc = s->p_gamma[i] >= 0;
        if (!lwc && !s->let_lin[i]) continue;
        qs_cpu_lwc_backward(w_used(s, i), l->out, l->in, s->o.group_size, lwc ? s->p[s->p_gamma[i]].v : NULL,
                            lwc ? s->p[s->p_beta[i]].v : NULL, &s->grid, s->dwq[i],
                            lwc ? s->p[s->p_gamma[i]].g : NULL, lwc ? s->p[s->p_beta[i]].g : NULL,
                            s->let_lin[i] ? s->dwl[i] : NULL);
    }
    if (!s->o.omni.let) return;
    /* v → o first: it sits on top of the norm → linears transform of v */
    {
        const float *sv = s->sc[LET_VO];
        float *gv = s->p[s->p_scale[LET_VO]].g;
        const int iv = s->i_vh, io = s->i_o;
        const qs_block_linear *lv = &blk->lin[iv], *lo = &blk->lin[io];
        memset(gv, 0, sizeof(float) * (size_t)s->kvd);
        for (int64_t r = 0; r < s->kvd; r++) {
            int64_t row = v_row(s, r);
            float *dwr = s->dwl[iv] + row * lv->in;
            const float *wr = s->wl[iv] + row * lv->in;
            double acc = 0.0;
            for (int64_t c = 0; c < lv->in; c++) acc += (double)dwr[c] * (double)wr[c];
            if (s->eff_bias[iv]) {
                acc += (double)s->db[iv][row] * (double)s->bl[iv][row];
                s->db[iv][row] /= sv[r];
            }
            gv[r] = (float)(-acc / (double)sv[r]);
            for (int64_t c = 0; c < lv->in; c++) dwr[c] /= sv[r];
        }
        qs_cpu_colsum_mul(s->dwl[io], blk->weight[io].data, lo->out, lo->in, s->colbuf);
        for (int64_t c = 0; c < lo->in; c++) gv[o_chan(s, c)] += s->colbuf[c];
    }
    for (int k = LET_ATTN; k <= LET_MLP; k++) {
        const float *sc = s->sc[k];
        float *gs = s->p[s->p_scale[k]].g, *gd = s->let_shift[k] ? s->p[s->p_shift[k]].g : NULL;
        const int64_t n = s->let_n[k];
        memset(gs, 0, sizeof(float) * (size_t)n);
        if (gd) memset(gd, 0, sizeof(float) * (size_t)n);
        for (int i = 0; i < s->nl; i++) {
            const qs_block_linear *l = &blk->lin[i];
            if (!stage_of_let(k, l->stage)) continue;
            qs_cpu_colsum_mul(s->dwl[i], blk->weight[i].data, l->out, l->in, s->colbuf);
            for (int64_t c = 0; c < n; c++) gs[c] += s->colbuf[c];
            if (gd) {
                qs_cpu_gemv_t(blk->weight[i].data, s->db[i], l->out, l->in, s->colbuf);
                for (int64_t c = 0; c < n; c++) gd[c] += s->colbuf[c];
            }
        }
        const float *ew = k == LET_ATTN ? s->an_w : s->mn_w, *eb = k == LET_ATTN ? s->an_b : s->mn_b;
        const float *dw = k == LET_ATTN ? s->d_an_w : s->d_mn_w, *dbn = k == LET_ATTN ? s->d_an_b : s->d_mn_b;
        for (int64_t c = 0; c < n; c++) {
            double g = (double)gs[c] - (double)dw[c] * (double)ew[c] / (double)sc[c];
            if (eb) g -= (double)dbn[c] * (double)eb[c] / (double)sc[c];
            gs[c] = (float)g;
            if (gd) gd[c] -= dbn[c] / sc[c];
        }
    }
}

/* ==================================================================== loss == */

qs_status qs_omni_loss_grad(qs_omni_state *s, const qs_backend_i *be, const float *x, const float *y, int64_t batch,
                            double *loss, qs_error *err)
{
    double t0 = now();
    effective(s);
    qs_train_weights w;
    qs_train_grads g;
    train_views(s, &w, &g);
    QS_TRY(qs_train_forward(s->tc, be, &w, x, batch, s->out, err));
    /* mean squared error over every element; the gradient 2 (out − y) / N */
    const int64_t N = batch * s->seq * s->blk->cfg.hidden;
    double sum = 0.0;
    const float k = (float)(2.0 / (double)N);
    for (int64_t i = 0; i < N; i++) {
        float d = s->out[i] - y[i];
        sum += (double)d * (double)d;
        s->dout[i] = k * d;
    }
    *loss = sum / (double)N;
    double t1 = now();
    s->t_fwd += t1 - t0;
    QS_TRY(qs_train_backward(s->tc, be, &w, s->dout, &g, err));
    chain(s);
    s->t_bwd += now() - t1;
    return QS_OK;
}

/* AdamW (torch.optim.AdamW with weight decay 0): betas 0.9, 0.999, eps 1e-8. */
static void adamw_step(qs_omni_state *s, double lr_factor)
{
    double t0 = now();
    s->t++;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const double bc1 = 1.0 - pow(b1, (double)s->t), bc2 = 1.0 - pow(b2, (double)s->t);
    for (int i = 0; i < s->np; i++) {
        omni_param *p = &s->p[i];
        const float step = (float)(p->lr * lr_factor / bc1), sq = (float)sqrt(bc2);
        for (int64_t j = 0; j < p->n; j++) {
            float g = p->g[j];
            p->m[j] = 0.9f * p->m[j] + 0.1f * g;
            p->s2[j] = 0.999f * p->s2[j] + 0.001f * g * g;
            p->v[j] -= step * p->m[j] / (sqrtf(p->s2[j]) / sq + (float)eps);
        }
    }
    s->t_opt += now() - t0;
}

/* ============================================================= LET init == */

typedef struct act_stats {
    float *amax[3], *mx[3], *mn[3]; /* per channel of stage 0, 1, 2 inputs */
} act_stats;

static qs_status on_stats(void *ctx, const qs_block *blk, int idx, const float *x, const uint16_t *xb,
                          int64_t rows, int64_t in, qs_error *err)
{
    (void)err;
    (void)xb;
    act_stats *a = ctx;
    int st = blk->lin[idx].stage;
    if (st > 2) return QS_OK;
    for (int j = 0; j < idx; j++)
        if (blk->lin[j].stage == st) return QS_OK; /* one pass per stage input */
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < in; c++) {
            float v = x[r * in + c];
            if (fabsf(v) > a->amax[st][c]) a->amax[st][c] = fabsf(v);
            if (v > a->mx[st][c]) a->mx[st][c] = v;
            if (v < a->mn[st][c]) a->mn[st][c] = v;
        }
    return QS_OK;
}

/* SmoothQuant: s = max|x|^α / max|w|^(1−α), both floored at 1e-5. */
static float smooth_scale(float act, float w, double alpha)
{
    double a = act > 1e-5f ? act : 1e-5, b = w > 1e-5f ? w : 1e-5;
    double v = pow(a, alpha) / pow(b, 1.0 - alpha);
    return (float)(v > 1e-5 ? v : 1e-5);
}

qs_status qs_omni_init_let(qs_omni_state *s, const qs_backend_i *be, const float *x_fp, int64_t rows, qs_error *err)
{
    if (!s->o.omni.let) return QS_OK;
    const qs_block *blk = s->blk;
    const int64_t H = blk->cfg.hidden, width[3] = {H, s->qd, H};
    act_stats a;
    memset(&a, 0, sizeof a);
    bool ok = true;
    for (int k = 0; k < 3; k++) {
        a.amax[k] = fbuf(width[k], &ok), a.mx[k] = fbuf(width[k], &ok), a.mn[k] = fbuf(width[k], &ok);
        for (int64_t c = 0; ok && c < width[k]; c++) a.mx[k][c] = -INFINITY, a.mn[k][c] = INFINITY;
    }
    qs_status st = ok ? QS_OK : qs_error_set(err, QS_ERR_NOMEM, "block %d: activation statistics", blk->layer);
    qs_block_hooks hooks = {on_stats, &a, -1, 2};
    const int64_t chunk = 4;
    for (int64_t r0 = 0; r0 < rows && st == QS_OK; r0 += chunk) {
        int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        st = qs_block_forward(blk, be, x_fp + r0 * s->seq * H, n, s->seq, NULL, &hooks, err);
    }
    if (st == QS_OK) {
        /* norm → linears (stage inputs 0 and 2) */
        for (int k = LET_ATTN; k <= LET_MLP; k++) {
            int sti = k == LET_ATTN ? 0 : 2;
            float *v = s->p[s->p_scale[k]].v, *d = s->let_shift[k] ? s->p[s->p_shift[k]].v : NULL;
            for (int64_t c = 0; c < H; c++) {
                float wmax = 0.0f;
                for (int i = 0; i < s->nl; i++) {
                    const qs_block_linear *l = &blk->lin[i];
                    if (l->stage != sti) continue;
                    const float *W = blk->weight[i].data;
                    for (int64_t o = 0; o < l->out; o++) wmax = fmaxf(wmax, fabsf(W[o * l->in + c]));
                }
                v[c] = smooth_scale(a.amax[sti][c], wmax, s->o.omni.let_alpha);
                if (d) d[c] = 0.5f * (a.mx[sti][c] + a.mn[sti][c]);
            }
        }
        /* v → o: the attention output (stage 1 input) per v channel, over the heads reading it */
        float *v = s->p[s->p_scale[LET_VO]].v;
        const qs_block_linear *lo = &blk->lin[s->i_o];
        const float *Wo = blk->weight[s->i_o].data;
        for (int64_t r = 0; r < s->kvd; r++) {
            float amax = 0.0f, wmax = 0.0f;
            for (int64_t c = 0; c < s->qd; c++) {
                if (o_chan(s, c) != r) continue;
                amax = fmaxf(amax, a.amax[1][c]);
                for (int64_t o = 0; o < lo->out; o++) wmax = fmaxf(wmax, fabsf(Wo[o * lo->in + c]));
            }
            v[r] = smooth_scale(amax, wmax, s->o.omni.let_alpha);
        }
    }
    for (int k = 0; k < 3; k++) qs_free(a.amax[k]), qs_free(a.mx[k]), qs_free(a.mn[k]);
    return st;
}

/* ================================================================ train == */

/* splitmix64: the row order of (seed, layer, epoch), the same on every rank. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

qs_status qs_omni_train(qs_omni_state *s, const qs_backend_i *be, const float *x_q, const float *y_fp, int64_t rows,
                        int layer, qs_error *err)
{
    const int64_t B = s->max_batch, L = s->seq, H = s->blk->cfg.hidden, row_f = L * H;
    const int64_t steps = (rows + B - 1) / B;
    const int epochs = s->o.omni.epochs;
    int64_t *order = qs_malloc(sizeof(int64_t) * (size_t)rows);
    float *xb = qs_malloc(sizeof(float) * (size_t)(B * row_f)), *yb = qs_malloc(sizeof(float) * (size_t)(B * row_f));
    double *curve = qs_calloc((size_t)epochs, sizeof(double));
    qs_status st = QS_OK;
    if (!order || !xb || !yb || !curve)
        st = qs_error_set(err, QS_ERR_NOMEM, "block %d: training batches", layer);
    for (int e = 0; e < epochs && st == QS_OK; e++) {
        uint64_t rs = mix64(s->o.omni.seed ^ mix64(((uint64_t)(uint32_t)layer << 32) | (uint32_t)e));
        for (int64_t i = 0; i < rows; i++) order[i] = i;
        for (int64_t i = rows - 1; i > 0; i--) { /* Fisher–Yates */
            rs = mix64(rs);
            int64_t j = (int64_t)(rs % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        double sum = 0.0;
        for (int64_t k = 0; k < steps && st == QS_OK; k++) {
            if (s->stop && *s->stop) {
                st = qs_error_set(err, QS_ERR_INTERRUPTED, "stopped while training block %d (epoch %d of %d); it is "
                                                           "trained again on resume", layer, e + 1, epochs);
                break;
            }
            int64_t nb = rows - k * B < B ? rows - k * B : B;
            for (int64_t b = 0; b < nb; b++) {
                memcpy(xb + b * row_f, x_q + order[k * B + b] * row_f, sizeof(float) * (size_t)row_f);
                memcpy(yb + b * row_f, y_fp + order[k * B + b] * row_f, sizeof(float) * (size_t)row_f);
            }
            double loss = 0.0;
            st = qs_omni_loss_grad(s, be, xb, yb, nb, &loss, err);
            if (st == QS_OK && !isfinite(loss))
                st = qs_error_set(err, QS_ERR_NUMERIC, "block %d: the OmniQuant loss is %g at epoch %d, step %lld "
                                                       "(lower --lwc-lr / --let-lr)",
                                  layer, loss, e + 1, (long long)k);
            /* cosine: the rate at step i of n is lr · (1 + cos(π i / n)) / 2 */
            double f = s->o.omni.cosine ? 0.5 * (1.0 + cos(M_PI * (double)(e * steps + k) / (double)(epochs * steps)))
                                        : 1.0;
            if (st == QS_OK) adamw_step(s, f);
            sum += loss;
        }
        curve[e] = sum / (double)steps;
    }
    qs_free(order);
    qs_free(xb);
    qs_free(yb);
    if (st != QS_OK) {
        qs_free(curve);
        return st;
    }
    qs_free(s->curve);
    s->curve = curve; /* moves to qs_omni_finish's record */
    s->epochs_done = epochs;
    s->steps += steps * epochs;
    return st;
}

/* =============================================================== finish == */

/* Rounds a folded tensor to the dtype the model stores it in (the export
 * writes it in that dtype, so the in-memory block must compute with the same
 * values). */
static qs_status round_to_model(const qs_manifest *m, const char *name, float *v, int64_t n, qs_error *err)
{
    const qs_st_info *t = m ? qs_manifest_find(m, name, NULL) : NULL;
    if (!t || t->dtype == QS_DTYPE_F32) return QS_OK;
    void *tmp = qs_malloc(8 * (size_t)n);
    if (!tmp) return qs_error_set(err, QS_ERR_NOMEM, "%s", name);
    qs_status st = qs_convert_from_f32(v, (size_t)n, t->dtype, tmp, err);
    if (st == QS_OK) st = qs_convert_to_f32(tmp, t->dtype, (size_t)n, v, err);
    qs_free(tmp);
    return st;
}

/* Replaces a block vector with its folded value and records it. */
static qs_status fold_vec(qs_omni_record *rec, const qs_manifest *m, const char *name, qs_tensor *t, const float *v,
                          int64_t n, qs_error *err)
{
    memcpy(t->data, v, sizeof(float) * (size_t)n);
    QS_TRY(round_to_model(m, name, t->data, n, err));
    return qs_omni_record_add(rec, true, name, 1, &n, t->data, err);
}

qs_status qs_omni_finish(qs_omni_state *s, qs_block *blk, const qs_manifest *m, const qs_model_names *names,
                         qs_quant_result res[QS_MAX_BLOCK_LINEARS], qs_omni_record *rec, qs_error *err)
{
    if (blk != s->blk) return qs_error_set(err, QS_ERR_INTERNAL, "omniquant: finish on another block");
    memset(rec, 0, sizeof *rec);
    effective(s);
    qs_status st = QS_OK;
    /* every linear from the effective (LET-folded) weight with its learned clipping */
    for (int i = 0; i < s->nl && st == QS_OK; i++) {
        const qs_block_linear *l = &blk->lin[i];
        qs_quant_opts qo = s->o;
        qo.name = l->weight;
        st = qs_quant_result_init(&res[i], l->out, l->in, &qo, err);
        if (st == QS_OK)
            st = qs_quant_lwc(w_used(s, i), l->out, l->in, s->p_gamma[i] >= 0 ? s->p[s->p_gamma[i]].v : NULL,
                              s->p_beta[i] >= 0 ? s->p[s->p_beta[i]].v : NULL, &qo, &res[i], err);
    }
    for (int i = 0; i < s->nl && st == QS_OK; i++)
        memcpy(blk->weight[i].data, res[i].q, sizeof(float) * (size_t)(res[i].rows * res[i].cols));
    /* the folded FP tensors */
    if (st == QS_OK && s->o.omni.let) {
        char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
        qs_block_norm_names(&blk->cfg, names, blk->layer, aw, ab, mw, mb);
        int64_t H = blk->cfg.hidden;
        st = fold_vec(rec, m, aw, &blk->attn_norm_w, s->an_w, H, err);
        if (st == QS_OK && s->an_b) st = fold_vec(rec, m, ab, &blk->attn_norm_b, s->an_b, H, err);
        if (st == QS_OK) st = fold_vec(rec, m, mw, &blk->mlp_norm_w, s->mn_w, H, err);
        if (st == QS_OK && s->mn_b) st = fold_vec(rec, m, mb, &blk->mlp_norm_b, s->mn_b, H, err);
        for (int i = 0; i < s->nl && st == QS_OK; i++)
            if (s->eff_bias[i]) st = fold_vec(rec, m, blk->lin[i].bias, &blk->bias[i], s->bl[i], blk->lin[i].out, err);
    }
    /* what was learned (LET scales as applied, after truncation) */
    for (int i = 0; i < s->np && st == QS_OK; i++) {
        const omni_param *p = &s->p[i];
        const float *v = p->v;
        for (int k = 0; k < LET_N; k++)
            if (s->p_scale[k] == i) v = s->sc[k];
        st = qs_omni_record_add(rec, false, p->name, p->ndim, p->shape, v, err);
    }
    if (st == QS_OK) {
        rec->epochs = s->epochs_done;
        rec->loss = s->curve;
        s->curve = NULL;
        rec->seconds_forward = s->t_fwd;
        rec->seconds_backward = s->t_bwd;
        rec->seconds_optimizer = s->t_opt;
        rec->steps = s->steps;
    }
    if (st != QS_OK) {
        for (int i = 0; i < s->nl; i++) qs_quant_result_free(&res[i]);
        qs_omni_record_free(rec);
    }
    return st;
}

/* ============================================================ one block == */

qs_status qs_omni_quantize_block(qs_block *blk, const qs_backend_i *be, const qs_quant_opts *o, const qs_manifest *m,
                                 const qs_model_names *names, const float *x_q, const float *x_fp, const float *y_fp,
                                 int64_t rows, int64_t seq, qs_quant_result res[QS_MAX_BLOCK_LINEARS],
                                 qs_omni_record *rec, volatile int *stop, qs_error *err)
{
    qs_omni_state *s = NULL;
    int64_t batch = o->omni.batch < rows ? o->omni.batch : rows;
    QS_TRY(qs_omni_init(&s, blk, o, batch, seq, err));
    qs_omni_set_stop(s, stop);
    qs_status st = qs_omni_init_let(s, be, x_fp, rows, err);
    if (st == QS_OK) st = qs_omni_train(s, be, x_q, y_fp, rows, blk->layer, err);
    if (st == QS_OK) st = qs_omni_finish(s, blk, m, names, res, rec, err);
    qs_omni_free(s);
    return st;
}

qs_status qs_omni_apply_fp(qs_block *blk, const qs_model_names *names, const qs_omni_record *rec, qs_error *err)
{
    char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
    qs_block_norm_names(&blk->cfg, names, blk->layer, aw, ab, mw, mb);
    for (int k = 0; k < rec->n_fp; k++) {
        const qs_omni_tensor *t = &rec->fp[k];
        qs_tensor *dst = NULL;
        if (!strcmp(t->name, aw)) dst = &blk->attn_norm_w;
        else if (ab[0] && !strcmp(t->name, ab)) dst = &blk->attn_norm_b;
        else if (!strcmp(t->name, mw)) dst = &blk->mlp_norm_w;
        else if (mb[0] && !strcmp(t->name, mb)) dst = &blk->mlp_norm_b;
        for (int i = 0; i < blk->n_linears && !dst; i++)
            if (blk->lin[i].bias[0] && !strcmp(t->name, blk->lin[i].bias)) dst = &blk->bias[i];
        if (!dst || !dst->data || qs_tensor_numel(dst) != t->shape[0] || t->ndim != 1)
            return qs_error_set(err, QS_ERR_INPUT, "block %d: folded tensor '%s' [%lld] does not match the block",
                                blk->layer, t->name, (long long)t->shape[0]);
        memcpy(dst->data, t->data, sizeof(float) * (size_t)t->shape[0]);
    }
    return QS_OK;
}
