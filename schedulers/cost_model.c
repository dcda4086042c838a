/* cost_model.c — FLOPs, bytes and peak memory of quantizing one block. */
#include "schedulers/cost_model.h"

#include <stdio.h>
#include <string.h>

void qs_cost_params_default(qs_cost_params *p)
{
    memset(p, 0, sizeof *p);
    p->calib_rows = 128;
    p->calib_len = 2048;
    p->micro_batch = 8;
    p->device_flops = 30e12;
    p->io_bytes_per_s = 2e9;
    p->link_bytes_per_s = 10e9;
    p->weight_bytes = 2;
    p->true_sequential = true;
    p->activations_on_device = false;
    p->schedule = QS_SCHEDULE_EXACT;
}

void qs_cost_block(const qs_model_config *c, const qs_cost_params *p, qs_block_cost *o)
{
    memset(o, 0, sizeof *o);
    /* the linears as the model files name them (standard HF names: no checkpoint to probe) */
    qs_model_names names;
    memset(&names, 0, sizeof names);
    qs_block_linear s[QS_MAX_BLOCK_LINEARS];
    int n = qs_block_linears(c, &names, 0, s);
    double tokens = (double)p->calib_rows * (double)p->calib_len;
    int64_t h = c->hidden;

    int64_t lin_params = 0;
    int64_t stage_in[4] = {0, 0, 0, 0};
    double stage_params[4] = {0, 0, 0, 0};
    const char *stage_name[4] = {"", "", "", ""};
    double gptq = 0;
    uint64_t gptq_bytes = 0;
    for (int i = 0; i < n; i++) {
        lin_params += s[i].out * s[i].in;
        stage_in[s[i].stage] = s[i].in;
        stage_params[s[i].stage] += (double)(s[i].out * s[i].in);
        stage_name[s[i].stage] = s[i].short_name;
        double din = (double)s[i].in;
        /* factorization, the sweep's trailing updates, and the H-weighted loss
         * tr((W−Q) H (W−Q)ᵀ) the report gives per linear (one more GEMM) */
        gptq += (4.0 / 3.0) * din * din * din + 2.0 * 2.0 * (double)s[i].out * din * din;
        uint64_t gb = (uint64_t)(s[i].in * s[i].in + s[i].out * s[i].in) * 4u;
        if (gb > gptq_bytes) gptq_bytes = gb;
    }
    o->params = qs_block_param_count(c);

    /* Forward: 2 flops per weight per token, plus causal attention
     * (QKᵀ and AV over the L(L+1)/2 causal pairs). */
    double attn = 2.0 * tokens * (double)(p->calib_len + 1) * (double)c->n_heads * (double)c->head_dim;
    o->flops_forward = 2.0 * (double)lin_params * tokens + attn;

    uint64_t hmax = 0;
    for (int st = 0; st < 4; st++) {
        double din = (double)stage_in[st];
        o->flops_hessian += din * din * tokens;
        uint64_t hb = (uint64_t)(stage_in[st] * stage_in[st]) * 4u;
        if (hb > hmax) {
            hmax = hb;
            o->largest_hessian = stage_name[st];
        }
    }
    o->flops_gptq = gptq;
    /* The share of a forward up to boundary b (the linears of stages < b,
     * attention from boundary 1 on). True-sequential resumes each stage from
     * the previous boundary: one forward. Re-running from the block input for
     * each stage (the fallback) costs 1 + up(1) + up(2) + up(3); without
     * true-sequential an FP pass up to the last stage, then the quantized one. */
    double up[5] = {0, 0, 0, 0, 0};
    for (int b = 1; b <= 4; b++) up[b] = up[b - 1] + 2.0 * stage_params[b - 1] * tokens + (b == 1 ? attn : 0);
    for (int b = 1; b <= 4; b++) up[b] /= o->flops_forward > 0 ? o->flops_forward : 1;
    o->forward_passes_recompute = 1.0 + up[1] + up[2] + up[3];
    o->forward_passes = p->true_sequential ? 1.0 : 1.0 + up[3];
    o->flops_total = o->forward_passes * o->flops_forward + o->flops_hessian + o->flops_gptq;

    o->bytes_disk = (uint64_t)o->params * (uint64_t)p->weight_bytes;
    o->bytes_weights_f32 = (uint64_t)o->params * 4u;
    o->bytes_hessian = hmax;
    o->bytes_gptq = gptq_bytes;
    o->bytes_act_boundary = (uint64_t)(2.0 * tokens * (double)h * 4.0);
    int64_t qd = (int64_t)c->n_heads * c->head_dim;
    if (p->true_sequential) o->bytes_act_carry = (uint64_t)(tokens * (double)(c->ffn > qd ? c->ffn : qd) * 4.0);
    int64_t widest = c->ffn > 3 * h ? c->ffn : 3 * h;
    double mb_tokens = (double)(p->micro_batch < p->calib_rows ? p->micro_batch : p->calib_rows) * (double)p->calib_len;
    o->bytes_act_micro = (uint64_t)(mb_tokens * (double)(widest + 2 * h) * 4.0 * 2.0);

    uint64_t device = o->bytes_weights_f32 + o->bytes_hessian + o->bytes_gptq + o->bytes_act_micro;
    uint64_t host = o->bytes_act_boundary + o->bytes_act_carry + o->bytes_disk;
    if (p->activations_on_device) device += o->bytes_act_boundary + o->bytes_act_carry;
    o->peak_device = device;
    o->peak_host = host;

    o->seconds_compute = o->flops_total / p->device_flops;
    o->seconds_io = (double)o->bytes_disk / p->io_bytes_per_s;
    o->seconds_comm = tokens * (double)h * 4.0 / p->link_bytes_per_s;
    o->seconds = o->seconds_compute + o->seconds_io;
}

uint64_t qs_cost_embedding_bytes(const qs_model_config *c, int bytes_per_param)
{
    uint64_t n = (uint64_t)c->vocab * (uint64_t)c->hidden;
    if (c->pos == QS_POS_LEARNED) n += (uint64_t)(c->max_positions + c->pos_offset) * (uint64_t)c->hidden;
    return n * (uint64_t)bytes_per_param;
}

const char *qs_fmt_bytes(uint64_t b, char *buf, int cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024.0 && i < 4) {
        v /= 1024.0;
        i++;
    }
    snprintf(buf, (size_t)cap, i ? "%.1f %s" : "%.0f %s", v, u[i]);
    return buf;
}

const char *qs_fmt_seconds(double s, char *buf, int cap)
{
    if (s < 60) snprintf(buf, (size_t)cap, "%.1f s", s);
    else if (s < 3600) snprintf(buf, (size_t)cap, "%dm %02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, (size_t)cap, "%dh %02dm", (int)(s / 3600), ((int)s % 3600) / 60);
    return buf;
}
