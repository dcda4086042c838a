/* partition.c — contiguous block ranges per rank and the run plan. */
#include "schedulers/partition.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

qs_status qs_partition_linear(const double *costs, int n, int parts, int *starts, qs_error *err)
{
    if (parts < 1 || parts > n)
        return qs_error_set(err, QS_ERR_INPUT, "cannot split %d blocks into %d non-empty ranges", n, parts);
    /* best[k][i]: minimal max-sum splitting the first i items into k ranges;
     * cut[k][i]: start of the last range in that optimum. */
    size_t w = (size_t)n + 1;
    double *prefix = calloc(w, sizeof *prefix);
    double *best = malloc(sizeof(double) * w * (size_t)(parts + 1));
    int *cut = malloc(sizeof(int) * w * (size_t)(parts + 1));
    if (!prefix || !best || !cut) {
        free(prefix), free(best), free(cut);
        return qs_error_set(err, QS_ERR_NOMEM, "partition of %d blocks", n);
    }
    for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + costs[i];
    for (size_t i = 0; i < w * (size_t)(parts + 1); i++) best[i] = DBL_MAX, cut[i] = 0;
    best[0] = 0;
    for (int k = 1; k <= parts; k++) {
        for (int i = k; i <= n - (parts - k); i++) {
            double b = DBL_MAX;
            int bc = k - 1;
            for (int j = k - 1; j < i; j++) {
                double prev = best[(size_t)(k - 1) * w + (size_t)j];
                if (prev == DBL_MAX) continue;
                double last = prefix[i] - prefix[j];
                double m = prev > last ? prev : last;
                /* strict '<' with a relative epsilon keeps the earliest cut on ties */
                if (m < b * (1 - 1e-12)) b = m, bc = j;
            }
            best[(size_t)k * w + (size_t)i] = b;
            cut[(size_t)k * w + (size_t)i] = bc;
        }
    }
    starts[parts] = n;
    int i = n;
    for (int k = parts; k >= 1; k--) {
        int j = cut[(size_t)k * w + (size_t)i];
        starts[k - 1] = j;
        i = j;
    }
    free(prefix), free(best), free(cut);
    return QS_OK;
}

qs_status qs_plan_make(const qs_model_config *cfg, const qs_cost_params *p, int ranks, uint64_t device_mem,
                       uint64_t host_mem, qs_plan *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    int n = cfg->n_layers;
    if (ranks < 1) return qs_error_set(err, QS_ERR_INPUT, "--ranks must be at least 1, got %d", ranks);
    if (ranks > n)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%d ranks for %d blocks: each rank needs at least one block (use at most %d ranks)",
                            ranks, n, n);
    out->n_ranks = ranks;
    out->n_blocks = n;
    out->params = *p;
    out->device_mem = device_mem;
    out->host_mem = host_mem;
    qs_cost_block(cfg, p, &out->block);

    /* Costs per block; the embedding and head stages add their I/O to the
     * first and last block so the partition accounts for them. */
    double *costs = malloc(sizeof(double) * (size_t)n);
    int *starts = malloc(sizeof(int) * (size_t)(ranks + 1));
    out->stages = calloc((size_t)ranks, sizeof *out->stages);
    if (!costs || !starts || !out->stages) {
        free(costs), free(starts);
        qs_plan_free(out);
        return qs_error_set(err, QS_ERR_NOMEM, "plan for %d ranks", ranks);
    }
    uint64_t embed_bytes = qs_cost_embedding_bytes(cfg, p->weight_bytes);
    double embed_s = (double)embed_bytes / p->io_bytes_per_s;
    for (int i = 0; i < n; i++) costs[i] = out->block.seconds;
    costs[0] += embed_s;
    qs_status st = qs_partition_linear(costs, n, ranks, starts, err);
    if (st != QS_OK) {
        free(costs), free(starts);
        qs_plan_free(out);
        return st;
    }

    out->fits = true;
    double sum = 0, max_stage = 0, max_fwd = 0;
    char b1[32], b2[32];
    for (int r = 0; r < ranks; r++) {
        qs_stage_plan *s = &out->stages[r];
        s->rank = r;
        s->first_block = starts[r];
        s->end_block = starts[r + 1];
        s->embed = r == 0;
        s->head = r == ranks - 1;
        int nb = s->end_block - s->first_block;
        s->seconds = nb * out->block.seconds + (s->embed ? embed_s : 0);
        s->peak_device = out->block.peak_device;
        /* the embedding table is read on the host of the first rank */
        s->peak_host = out->block.peak_host + (s->embed ? embed_bytes : 0);
        sum += s->seconds;
        if (s->seconds > max_stage) max_stage = s->seconds;
        double fwd = nb * out->block.flops_forward / p->device_flops;
        if (fwd > max_fwd) max_fwd = fwd;
        if (out->fits && device_mem && s->peak_device > device_mem) {
            out->fits = false;
            snprintf(out->why, sizeof out->why,
                     "rank %d needs %s of device memory per block but has %s: block weights in f32 %s, "
                     "the Hessian of %s %s, GPTQ workspace %s, micro-batch activations %s "
                     "(lower --micro-batch, or use more memory per rank)",
                     r, qs_fmt_bytes(s->peak_device, b1, 32), qs_fmt_bytes(device_mem, b2, 32),
                     qs_fmt_bytes(out->block.bytes_weights_f32, (char[32]){0}, 32),
                     out->block.largest_hessian ? out->block.largest_hessian : "?",
                     qs_fmt_bytes(out->block.bytes_hessian, (char[32]){0}, 32),
                     qs_fmt_bytes(out->block.bytes_gptq, (char[32]){0}, 32),
                     qs_fmt_bytes(out->block.bytes_act_micro, (char[32]){0}, 32));
        }
        if (out->fits && host_mem && s->peak_host > host_mem) {
            out->fits = false;
            snprintf(out->why, sizeof out->why,
                     "rank %d needs %s of host memory but has %s: boundary activations of %lld×%lld tokens %s%s "
                     "(use fewer calibration tokens or more host memory)",
                     r, qs_fmt_bytes(s->peak_host, b1, 32), qs_fmt_bytes(host_mem, b2, 32),
                     (long long)p->calib_rows, (long long)p->calib_len,
                     qs_fmt_bytes(out->block.bytes_act_boundary, (char[32]){0}, 32),
                     s->embed ? " plus the embedding table" : "");
        }
    }
    if (p->schedule == QS_SCHEDULE_EXACT) {
        /* Block b+1 waits for block b's quantized output over all samples:
         * the stages run one after the other; hand-offs add their transfer. */
        out->seconds_total = sum + (ranks - 1) * out->block.seconds_comm;
    } else {
        /* One FP pass through the pipeline (fill + drain of micro-batches),
         * then every stage quantizes its own blocks at once. */
        double n_micro = (double)(p->calib_rows + p->micro_batch - 1) / (double)p->micro_batch;
        double fp_pass = max_fwd * (1.0 + (ranks - 1) / (n_micro > 0 ? n_micro : 1));
        out->seconds_total = fp_pass + max_stage + out->block.seconds_comm;
    }
    free(costs), free(starts);
    return QS_OK;
}

void qs_plan_free(qs_plan *plan)
{
    if (!plan) return;
    free(plan->stages);
    plan->stages = NULL;
}
