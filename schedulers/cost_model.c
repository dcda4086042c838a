/* cost_model.c — FLOPs, bytes, peak memory and communication volumes of
 * quantizing one block on a stage of D replicas. Everything is computed in
 * double after the inputs were checked against explicit bounds, so sizes
 * from a hostile config.json or absurd flags cannot overflow. */
#include "schedulers/cost_model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- parameters ---------------------------------------------------------------------- */

void qs_cost_params_default(qs_cost_params *p)
{
    memset(p, 0, sizeof *p);
    p->calib_rows = 128;
    p->calib_len = 2048;
    p->micro_batch = 8;
    p->device_flops = 30e12;
    p->io_bytes_per_s = 2e9;
    p->link_bytes_per_s = 100e9 / 8;   /* 100 Gb/s per rank between nodes */
    p->intra_bytes_per_s = 1600e9 / 8; /* 1600 Gb/s (200 GB/s) within a node */
    p->ranks_per_node = 8;
    p->group_size = 128;
    p->weight_bytes = 2;
    p->true_sequential = true;
    p->activations_on_device = false;
    p->schedule = QS_SCHEDULE_EXACT;
}

/* at least 1 per second: every time estimate then stays finite */
static bool rate_ok(double r) { return isfinite(r) && r >= 1 && r <= QS_COST_MAX_RATE; }

qs_status qs_cost_params_check(const qs_cost_params *p, qs_error *err)
{
    if (p->calib_rows < 1 || p->calib_rows > QS_COST_MAX_ROWS || p->calib_len < 2 || p->calib_len > QS_COST_MAX_ROWS)
        return qs_error_set(err, QS_ERR_INPUT, "calibration tokens %lldx%lld: rows and length must be in [1, %lld] and [2, %lld]",
                            (long long)p->calib_rows, (long long)p->calib_len, QS_COST_MAX_ROWS, QS_COST_MAX_ROWS);
    if ((double)p->calib_rows * (double)p->calib_len > QS_COST_MAX_TOKENS)
        return qs_error_set(err, QS_ERR_INPUT, "calibration tokens %lldx%lld: more than 2^40 tokens",
                            (long long)p->calib_rows, (long long)p->calib_len);
    if (p->micro_batch < 1 || p->micro_batch > QS_COST_MAX_ROWS)
        return qs_error_set(err, QS_ERR_INPUT, "micro-batch %lld: expected [1, %lld] rows", (long long)p->micro_batch,
                            QS_COST_MAX_ROWS);
    if (!rate_ok(p->device_flops) || !rate_ok(p->io_bytes_per_s) || !rate_ok(p->link_bytes_per_s) ||
        !rate_ok(p->intra_bytes_per_s))
        return qs_error_set(err, QS_ERR_INPUT,
                            "device rate, read and link bandwidths must be in [1, %g] per second", QS_COST_MAX_RATE);
    if (p->ranks_per_node < 1 || p->ranks_per_node > QS_COST_MAX_RANKS)
        return qs_error_set(err, QS_ERR_INPUT, "ranks per node %d: expected [1, %d]", p->ranks_per_node, QS_COST_MAX_RANKS);
    if (p->group_size == 0 || p->group_size < -1)
        return qs_error_set(err, QS_ERR_INPUT, "group size %d: expected a positive size or -1", p->group_size);
    if (p->weight_bytes != 2 && p->weight_bytes != 4)
        return qs_error_set(err, QS_ERR_INPUT, "weight bytes %d: expected 2 or 4", p->weight_bytes);
    return QS_OK;
}

/* ---- one block -------------------------------------------------------------------------- */

qs_status qs_cost_block(const qs_model_config *c, const qs_cost_params *p, int replicas, qs_block_cost *o,
                        qs_error *err)
{
    memset(o, 0, sizeof *o);
    QS_TRY(qs_cost_params_check(p, err));
    if (replicas < 1 || replicas > QS_COST_MAX_RANKS)
        return qs_error_set(err, QS_ERR_INPUT, "%d replicas: expected [1, %d]", replicas, QS_COST_MAX_RANKS);
    /* the linears as the model files name them (standard HF names: no checkpoint to probe) */
    qs_model_names names;
    memset(&names, 0, sizeof names);
    qs_block_linear s[QS_MAX_BLOCK_LINEARS];
    int n = qs_block_linears(c, &names, 0, s);

    /* Bounds first: every product below is then far inside double's exact
     * range and the int64 parameter count cannot overflow. */
    double lin_params = 0, all_params = 2.0 * (double)c->hidden * (c->norm == QS_NORM_LAYER ? 2 : 1);
    for (int i = 0; i < n; i++) {
        if (s[i].out < 1 || s[i].in < 1)
            return qs_error_set(err, QS_ERR_INPUT, "config: linear %s has shape [%lld, %lld]", s[i].short_name,
                                (long long)s[i].out, (long long)s[i].in);
        double w = (double)s[i].out * (double)s[i].in;
        lin_params += w;
        all_params += w + (s[i].bias[0] ? (double)s[i].out : 0);
    }
    if (!(all_params <= QS_COST_MAX_BLOCK_PARAMS))
        return qs_error_set(err, QS_ERR_INPUT,
                            "config: one block has %.3g parameters, more than the 2^50 the planner handles "
                            "(hidden %d, ffn %d, %d heads of %d)",
                            all_params, c->hidden, c->ffn, c->n_heads, c->head_dim);
    o->params = qs_block_param_count(c);
    o->replicas = replicas;

    const double N = (double)p->calib_rows, L = (double)p->calib_len, h = (double)c->hidden;
    const double tokens = N * L;
    const double D = (double)replicas;
    o->rows_per_replica = (p->calib_rows + replicas - 1) / replicas;
    const double row_share = (double)o->rows_per_replica / N; /* ceil(N/D)/N: the slowest replica */

    double stage_in[4] = {0, 0, 0, 0}, stage_params[4] = {0, 0, 0, 0};
    const char *stage_name[4] = {NULL, NULL, NULL, NULL};
    double sweep_replica = 0, gather = 0, gptq_bytes = 0;
    for (int i = 0; i < n; i++) {
        const double din = (double)s[i].in, dout = (double)s[i].out;
        if (!stage_name[s[i].stage]) stage_name[s[i].stage] = s[i].short_name;
        stage_in[s[i].stage] = din;
        stage_params[s[i].stage] += din * dout;
        /* factorization once; the sweep's trailing updates and the H-weighted
         * loss tr((W−Q) H (W−Q)ᵀ) the report gives per linear (one more GEMM)
         * split by output rows */
        o->flops_gptq_factor += (4.0 / 3.0) * din * din * din;
        o->flops_gptq_sweep += 2.0 * 2.0 * dout * din * din;
        const double rows_mine = ceil(dout / D);
        sweep_replica += 2.0 * 2.0 * rows_mine * din * din;
        const double gb = din * din * 4.0 + rows_mine * din * 4.0;
        if (gb > gptq_bytes) gptq_bytes = gb;
        /* the quantized linear every replica needs for the quantized forward:
         * uint8 codes + f32 scale and zero per group and output row */
        const double groups = p->group_size > 0 ? ceil(din / (double)p->group_size) : 1.0;
        gather += dout * din + groups * dout * 8.0;
    }
    o->flops_gptq = o->flops_gptq_factor + o->flops_gptq_sweep;

    /* Forward: 2 flops per weight per token, plus causal attention
     * (QKᵀ and AV over the L(L+1)/2 causal pairs, as workers/block.c counts). */
    const double attn = 2.0 * tokens * (L + 1.0) * (double)c->n_heads * (double)c->head_dim;
    o->flops_forward = 2.0 * lin_params * tokens + attn;

    double hmax = 0;
    for (int st = 0; st < 4; st++) {
        const double din = stage_in[st];
        if (din <= 0) continue;
        o->flops_hessian += din * din * tokens;
        const double hb = din * din * 4.0;
        o->bytes_hessian_each[o->n_hessians] = hb;
        o->hessian_name[o->n_hessians] = stage_name[st];
        o->n_hessians++;
        o->bytes_reduce += hb;
        if (hb > hmax) {
            hmax = hb;
            o->largest_hessian = stage_name[st];
        }
    }
    /* The share of a forward before boundary b (the linears of stages < b,
     * attention from boundary 1 on). True-sequential resumes each stage from
     * the previous boundary: one forward. Re-running from the block input for
     * each stage (the fallback) costs 1 + up(1) + up(2) + up(3); without
     * true-sequential an FP pass up to the last stage, then the quantized one. */
    double up[5] = {0, 0, 0, 0, 0};
    for (int b = 1; b <= 4; b++) up[b] = up[b - 1] + 2.0 * stage_params[b - 1] * tokens + (b == 1 ? attn : 0);
    for (int b = 1; b <= 4; b++) up[b] /= o->flops_forward > 0 ? o->flops_forward : 1;
    o->passes_recompute = 1.0 + up[1] + up[2] + up[3];
    o->passes = p->true_sequential ? 1.0 : 1.0 + up[3];
    o->flops_total = o->passes * o->flops_forward + o->flops_hessian + o->flops_gptq;

    o->seconds_forward = o->passes * o->flops_forward * row_share / p->device_flops;
    o->seconds_hessian = o->flops_hessian * row_share / p->device_flops;
    o->seconds_factor = o->flops_gptq_factor / p->device_flops;
    o->seconds_sweep = sweep_replica / p->device_flops;
    o->flops_replica = o->passes * o->flops_forward * row_share + o->flops_hessian * row_share +
                       o->flops_gptq_factor + sweep_replica;
    o->seconds_compute = o->seconds_forward + o->seconds_hessian + o->seconds_factor + o->seconds_sweep;

    o->bytes_gather = gather;
    o->bytes_handoff = tokens * h * 4.0;
    o->bytes_disk = (double)o->params * (double)p->weight_bytes;
    o->seconds_io = o->bytes_disk / p->io_bytes_per_s;

    o->bytes_weights_f32 = (double)o->params * 4.0;
    o->bytes_hessian = hmax;
    o->bytes_gptq = gptq_bytes;
    const double rows = (double)o->rows_per_replica;
    o->bytes_act_boundary = 2.0 * rows * L * h * 4.0;
    const double qd = (double)c->n_heads * (double)c->head_dim;
    if (p->true_sequential) o->bytes_act_carry = rows * L * ((double)c->ffn > qd ? (double)c->ffn : qd) * 4.0;
    const double widest = (double)c->ffn > 3.0 * h ? (double)c->ffn : 3.0 * h;
    const double mb_rows = (double)(p->micro_batch < o->rows_per_replica ? p->micro_batch : o->rows_per_replica);
    o->bytes_act_micro = mb_rows * L * (widest + 2.0 * h) * 4.0 * 2.0;

    double device = o->bytes_weights_f32 + o->bytes_hessian + o->bytes_gptq + o->bytes_act_micro;
    double host = o->bytes_act_boundary + o->bytes_act_carry + o->bytes_disk;
    if (p->activations_on_device) device += o->bytes_act_boundary + o->bytes_act_carry;
    o->peak_device = device;
    o->peak_host = host;
    if (!isfinite(o->flops_total) || !isfinite(device) || !isfinite(host))
        return qs_error_set(err, QS_ERR_INTERNAL, "cost model: a non-finite estimate within the bounds");
    return QS_OK;
}

/* ---- communication --------------------------------------------------------------------------- */

double qs_cost_allreduce_seconds(double bytes, int d, double bytes_per_s)
{
    return d > 1 ? 2.0 * (double)(d - 1) / (double)d * bytes / bytes_per_s : 0.0;
}

double qs_cost_allgather_seconds(double bytes, int d, double bytes_per_s)
{
    return d > 1 ? (double)(d - 1) / (double)d * bytes / bytes_per_s : 0.0;
}

double qs_cost_embedding_bytes(const qs_model_config *c, int bytes_per_param)
{
    double n = (double)c->vocab * (double)c->hidden;
    if (c->pos == QS_POS_LEARNED) n += ((double)c->max_positions + (double)c->pos_offset) * (double)c->hidden;
    return n * (double)bytes_per_param;
}

/* ---- formatting ------------------------------------------------------------------------------- */

const char *qs_fmt_bytes(double b, char *buf, int cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = b;
    int i = 0;
    while (fabs(v) >= 1024.0 && i < 6) {
        v /= 1024.0;
        i++;
    }
    snprintf(buf, (size_t)cap, i ? "%.1f %s" : "%.0f %s", v, u[i]);
    return buf;
}

const char *qs_fmt_seconds(double s, char *buf, int cap)
{
    /* whole units are split with fmod on doubles: no int conversion can overflow */
    if (!isfinite(s)) snprintf(buf, (size_t)cap, "%g s", s);
    else if (s < 60) snprintf(buf, (size_t)cap, "%.1f s", s);
    else if (s < 3600) snprintf(buf, (size_t)cap, "%.0fm %02.0fs", floor(s / 60), floor(fmod(s, 60)));
    else if (s < 86400) snprintf(buf, (size_t)cap, "%.0fh %02.0fm", floor(s / 3600), floor(fmod(s, 3600) / 60));
    else if (s < 86400.0 * 1000) snprintf(buf, (size_t)cap, "%.0fd %02.0fh", floor(s / 86400), floor(fmod(s, 86400) / 3600));
    else snprintf(buf, (size_t)cap, "%.3g years", s / (86400.0 * 365.25));
    return buf;
}
