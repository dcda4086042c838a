/* partition.c — contiguous block ranges per stage, stages × replicas, and the
 * run plan (what `qshard plan` prints and `qshard run` follows). */
#include "schedulers/partition.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the partition: binary search on the bottleneck + greedy ------------------------------
 *
 * Costs are first scaled by a power of two to integers below 2^50 (equal
 * costs stay equal, integer costs stay exact), so every range sum is exact
 * and ties are real ties. For a bound B, "can [0, i) be cut into at most k
 * ranges of sum <= B?" is answered exactly by the greedy that makes each
 * range as long as B allows; the smallest such B is found by bisection over
 * the integers. Ties are broken as the dynamic program this replaces did:
 * walking from the last range back, each range starts as early as the
 * optimum of the blocks before its end allows (the prefix's own optimum,
 * recomputed only when it can have dropped).
 */

/* Can items [0, i) be cut into at most k ranges, each of sum <= b? The
 * greedy also says how far the answer holds: when it does, *used_max is the
 * largest range sum it made (the answer holds down to there); when it does
 * not, *grow is the smallest b at which one of its ranges could take one
 * more item (below that the greedy makes the same ranges and fails again). */
static bool cover(const int64_t *pre, int i, int k, int64_t b, int64_t *used_max, int64_t *grow)
{
    int start = 0;
    int64_t mx = 0, ext = INT64_MAX;
    for (int used = 0; start < i; used++) {
        if (used == k) {
            *grow = ext;
            return false;
        }
        const int64_t lim = pre[start] + b;
        if (pre[start + 1] > lim) { /* one item alone is above b */
            *grow = ext < pre[start + 1] - pre[start] ? ext : pre[start + 1] - pre[start];
            return false;
        }
        /* the range ends at the last e <= i with pre[e] <= lim: gallop, then bisect */
        int lo = start + 1, hi;
        int64_t step = 1;
        for (;;) {
            int64_t cand = (int64_t)lo + step;
            if (cand > i) {
                hi = i + 1;
                break;
            }
            if (pre[cand] > lim) {
                hi = (int)cand;
                break;
            }
            lo = (int)cand;
            step *= 2;
        }
        while (hi - lo > 1) {
            int mid = lo + (hi - lo) / 2;
            if (pre[mid] <= lim) lo = mid;
            else hi = mid;
        }
        if (pre[lo] - pre[start] > mx) mx = pre[lo] - pre[start];
        if (lo < i && pre[lo + 1] - pre[start] < ext) ext = pre[lo + 1] - pre[start];
        start = lo;
    }
    *used_max = mx;
    return true;
}

/* The smallest b in [lo, hi] with cover(i, k, b); cover(i, k, hi) holds.
 * Bisection, with each answer moving its bound as far as the greedy proves
 * (a few steps for near-uniform costs). */
static int64_t bottleneck(const int64_t *pre, int i, int k, int64_t lo, int64_t hi)
{
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2, used_max = 0, grow = 0;
        if (cover(pre, i, k, mid, &used_max, &grow)) hi = used_max;
        else lo = grow > mid + 1 ? grow : mid + 1;
    }
    return hi;
}

/* The greedy's ranges of sum <= b over [0, i), from the left: brk[0] = 0 <
 * brk[1] < ... < brk[m]. They do not depend on where the prefix ends, so
 * [0, x) needs as many ranges as there are breaks before x: one pass answers
 * "is the optimum of [0, x) in k ranges below b + 1?" for every x and k.
 * brk[m] < i when an item alone is above b. Returns m. */
static int greedy_breaks(const int64_t *pre, int i, int64_t b, int *brk)
{
    int m = 0;
    brk[0] = 0;
    while (brk[m] < i) {
        const int start = brk[m];
        const int64_t lim = pre[start] + b;
        if (pre[start + 1] > lim) break;
        int lo = start + 1, hi = i + 1;
        for (int64_t step = 1;; step *= 2) {
            int64_t cand = (int64_t)lo + step;
            if (cand > i) break;
            if (pre[cand] > lim) {
                hi = (int)cand;
                break;
            }
            lo = (int)cand;
        }
        while (hi - lo > 1) {
            int mid = lo + (hi - lo) / 2;
            if (pre[mid] <= lim) lo = mid;
            else hi = mid;
        }
        brk[++m] = lo;
    }
    return m;
}

/* With brk from greedy_breaks: can [0, x) be cut into at most k ranges? */
static bool breaks_cover(const int *brk, int m, int x, int k)
{
    if (brk[m] < x) return false;
    int lo = 0, hi = m; /* the first j with brk[j] >= x: [0, x) needs j ranges */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (brk[mid] >= x) hi = mid;
        else lo = mid + 1;
    }
    return lo <= k;
}

/* A lower bound of the optimum for [0, i) in k ranges: the largest item, the mean. */
static int64_t lower_bound_of(const int64_t *pre, const int64_t *pmax, int i, int k)
{
    int64_t mean = (pre[i] + k - 1) / k;
    return pmax[i] > mean ? pmax[i] : mean;
}

qs_status qs_partition_linear(const double *costs, int n, int parts, int *starts, qs_error *err)
{
    if (n < 1 || parts < 1 || parts > n)
        return qs_error_set(err, QS_ERR_INPUT, "cannot split %d blocks into %d non-empty ranges", n, parts);
    double total = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(costs[i]) || costs[i] < 0)
            return qs_error_set(err, QS_ERR_INPUT, "partition: cost of block %d is %g (expected finite, >= 0)", i,
                                costs[i]);
        total += costs[i];
    }
    if (!isfinite(total)) return qs_error_set(err, QS_ERR_INPUT, "partition: the sum of the block costs overflows");
    int64_t *pre = malloc(sizeof *pre * ((size_t)n + 1));
    int64_t *pmax = malloc(sizeof *pmax * ((size_t)n + 1));
    int *brk = malloc(sizeof *brk * ((size_t)n + 1));
    if (!pre || !pmax || !brk) {
        free(pre), free(pmax), free(brk);
        return qs_error_set(err, QS_ERR_NOMEM, "partition of %d blocks", n);
    }
    /* total < 2^e: scaling by 2^(50−e) puts every cost and every sum below 2^50 */
    int e = 0;
    if (total > 0) frexp(total, &e);
    pre[0] = pmax[0] = 0;
    for (int i = 0; i < n; i++) {
        int64_t w = total > 0 ? (int64_t)llround(ldexp(costs[i], 50 - e)) : 0;
        pre[i + 1] = pre[i] + w;
        pmax[i + 1] = pmax[i] > w ? pmax[i] : w;
    }

    int i = n;
    int64_t bound = bottleneck(pre, n, parts, lower_bound_of(pre, pmax, n, parts), pre[n]);
    starts[parts] = n;
    int m = 0;
    int64_t breaks_for = -1; /* the b that brk was built for */
    for (int k = parts; k >= 2; k--) {
        /* bound = the optimum of [0, i) in k ranges: it only ever drops, and
         * whether it dropped is one lookup in the greedy's breaks for bound − 1 */
        int64_t lb = lower_bound_of(pre, pmax, i, k);
        if (bound > lb) {
            if (breaks_for != bound - 1) {
                m = greedy_breaks(pre, i, bound - 1, brk);
                breaks_for = bound - 1;
            }
            if (breaks_cover(brk, m, i, k)) bound = bottleneck(pre, i, k, lb, bound - 1);
        }
        /* the last range starts at the first j with sum(j, i) <= bound, leaving k−1 blocks before it */
        int lo = 0, hi = i - 1; /* pre[i] − pre[i−1] <= bound always */
        const int64_t need = pre[i] - bound;
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (pre[mid] >= need) hi = mid;
            else lo = mid + 1;
        }
        int j = lo > k - 1 ? lo : k - 1;
        starts[k - 1] = j;
        i = j;
    }
    starts[0] = 0;
    free(pre), free(pmax), free(brk);
    return QS_OK;
}

/* ---- one decomposition: S stages × D replicas ------------------------------------------- */

static int node_of(int rank, int per_node) { return rank / per_node; }

/* Does some replica of stage s hand off to a rank of stage s+1 on another node? */
static bool handoff_crosses(int s, int d, int per_node)
{
    if (d >= per_node) return true; /* the partner is d ranks away: always another node */
    for (int i = 0; i < d; i++)
        if (node_of(s * d + i, per_node) != node_of((s + 1) * d + i, per_node)) return true;
    return false;
}

static void why_device(qs_plan *out, const qs_stage_plan *s)
{
    char a[32], b[32], c1[32], c2[32], c3[32], c4[32];
    const qs_block_cost *bc = &out->block;
    snprintf(out->why, sizeof out->why,
             "rank %d needs %s of device memory per block but has %s: block weights in f32 %s, "
             "the Hessian of %s %s, GPTQ workspace %s, micro-batch activations %s "
             "(lower --micro-batch, or use more memory per rank)",
             s->rank, qs_fmt_bytes(s->peak_device, a, 32), qs_fmt_bytes((double)out->device_mem, b, 32),
             qs_fmt_bytes(bc->bytes_weights_f32, c1, 32), bc->largest_hessian ? bc->largest_hessian : "?",
             qs_fmt_bytes(bc->bytes_hessian, c2, 32), qs_fmt_bytes(bc->bytes_gptq, c3, 32),
             qs_fmt_bytes(bc->bytes_act_micro, c4, 32));
}

static void why_host(qs_plan *out, const qs_stage_plan *s)
{
    char a[32], b[32], c[32];
    const qs_cost_params *p = &out->params;
    snprintf(out->why, sizeof out->why,
             "rank %d needs %s of host memory but has %s: boundary activations of %lld×%lld tokens %s%s "
             "(use fewer calibration tokens, more replicas or more host memory)",
             s->rank, qs_fmt_bytes(s->peak_host, a, 32), qs_fmt_bytes((double)out->host_mem, b, 32),
             (long long)out->block.rows_per_replica, (long long)p->calib_len,
             qs_fmt_bytes(out->block.bytes_act_boundary, c, 32), s->embed ? " plus the embedding table" : "");
}

/* Fills out (stages, times, fit) for S = ranks / d stages. */
static qs_status plan_one(const qs_model_config *cfg, const qs_cost_params *p, int ranks, int d, uint64_t device_mem,
                          uint64_t host_mem, qs_plan *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    const int n = cfg->n_layers, S = ranks / d;
    out->n_ranks = ranks;
    out->n_stages = S;
    out->n_replicas = d;
    out->n_blocks = n;
    out->params = *p;
    out->device_mem = device_mem;
    out->host_mem = host_mem;
    QS_TRY(qs_cost_block(cfg, p, d, &out->block, err));
    const qs_block_cost *bc = &out->block;

    /* Costs per block; the embedding stage adds its read to the first block
     * so the partition accounts for it. */
    double *costs = malloc(sizeof(double) * (size_t)n);
    int *starts = malloc(sizeof(int) * ((size_t)S + 1));
    out->stages = calloc((size_t)S, sizeof *out->stages);
    if (!costs || !starts || !out->stages) {
        free(costs), free(starts);
        qs_plan_free(out);
        return qs_error_set(err, QS_ERR_NOMEM, "plan for %d stages", S);
    }
    const double embed_bytes = qs_cost_embedding_bytes(cfg, p->weight_bytes);
    const double embed_s = embed_bytes / p->io_bytes_per_s;
    const double block_own = bc->seconds_compute + bc->seconds_io;
    for (int i = 0; i < n; i++) costs[i] = block_own;
    costs[0] += embed_s;
    qs_status st = qs_partition_linear(costs, n, S, starts, err);
    free(costs);
    if (st != QS_OK) {
        free(starts);
        qs_plan_free(out);
        return st;
    }

    const int g = p->ranks_per_node;
    out->fits = true;
    double max_fwd = 0, max_handoff = 0;
    int slowest = 0;
    qs_plan_time sum = {0};
    for (int k = 0; k < S; k++) {
        qs_stage_plan *s = &out->stages[k];
        s->stage = k;
        s->rank = k * d;
        s->replicas = d;
        s->first_block = starts[k];
        s->end_block = starts[k + 1];
        s->embed = k == 0;
        s->head = k == S - 1;
        const double nb = s->end_block - s->first_block;
        s->reduce_across_nodes = node_of(k * d, g) != node_of(k * d + d - 1, g);
        const double bw = s->reduce_across_nodes ? p->link_bytes_per_s : p->intra_bytes_per_s;
        s->seconds_reduce = qs_cost_allreduce_seconds(bc->bytes_reduce, d, bw);
        s->seconds_gather = qs_cost_allgather_seconds(bc->bytes_gather, d, bw);
        s->seconds_block = bc->seconds_compute + bc->seconds_io + s->seconds_reduce + s->seconds_gather;
        if (k < S - 1) {
            s->handoff_across_nodes = handoff_crosses(k, d, g);
            const double bwh = s->handoff_across_nodes ? p->link_bytes_per_s : p->intra_bytes_per_s;
            /* every replica sends its own rows, all at once */
            s->seconds_handoff = bc->bytes_handoff * (double)bc->rows_per_replica / (double)p->calib_rows / bwh;
        }
        s->seconds = nb * s->seconds_block + (s->embed ? embed_s : 0);
        s->peak_device = bc->peak_device;
        /* the embedding table is read on the host of the first stage */
        s->peak_host = bc->peak_host + (s->embed ? embed_bytes : 0);
        sum.compute += nb * bc->seconds_compute;
        sum.io += nb * bc->seconds_io + (s->embed ? embed_s : 0);
        sum.reduce += nb * s->seconds_reduce;
        sum.gather += nb * s->seconds_gather;
        sum.handoff += s->seconds_handoff;
        if (s->seconds > out->stages[slowest].seconds) slowest = k;
        if (s->seconds_handoff > max_handoff) max_handoff = s->seconds_handoff;
        const double fwd = nb * bc->seconds_forward / bc->passes; /* one FP forward of the replica's rows */
        if (fwd > max_fwd) max_fwd = fwd;
        if (out->fits && device_mem && s->peak_device > (double)device_mem) {
            out->fits = false;
            why_device(out, s);
        }
        if (out->fits && host_mem && s->peak_host > (double)host_mem) {
            out->fits = false;
            why_host(out, s);
        }
    }
    free(starts);
    if (p->schedule == QS_SCHEDULE_EXACT) {
        /* Block b+1 waits for block b's quantized output over all samples:
         * the stages run one after the other; hand-offs add their transfer. */
        out->time = sum;
    } else {
        /* One FP pass through the pipeline (fill + drain of micro-batches),
         * then every stage quantizes its own blocks at once. */
        const double rows = (double)bc->rows_per_replica;
        const double n_micro = ceil(rows / (double)p->micro_batch);
        const qs_stage_plan *s = &out->stages[slowest];
        const double nb = s->end_block - s->first_block;
        out->time.fp_pass = max_fwd * (1.0 + (S - 1) / n_micro);
        out->time.compute = nb * bc->seconds_compute;
        out->time.io = nb * bc->seconds_io + (s->embed ? embed_s : 0);
        out->time.reduce = nb * s->seconds_reduce;
        out->time.gather = nb * s->seconds_gather;
        out->time.handoff = max_handoff;
    }
    const qs_plan_time *t = &out->time;
    out->seconds_total = t->fp_pass + t->compute + t->io + t->reduce + t->gather + t->handoff;
    return QS_OK;
}

/* ---- the plan: which decomposition ------------------------------------------------------ */

static bool valid_split(const qs_model_config *cfg, const qs_cost_params *p, int ranks, int d)
{
    return d >= 1 && ranks % d == 0 && ranks / d <= cfg->n_layers && d <= p->calib_rows;
}

qs_status qs_plan_make(const qs_model_config *cfg, const qs_cost_params *p, int ranks, int replicas,
                       uint64_t device_mem, uint64_t host_mem, qs_plan *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    const int n = cfg->n_layers;
    QS_TRY(qs_cost_params_check(p, err));
    if (ranks < 1 || ranks > QS_COST_MAX_RANKS)
        return qs_error_set(err, QS_ERR_INPUT, "--ranks %d: expected [1, %d]", ranks, QS_COST_MAX_RANKS);
    if (n < 1 || n > QS_COST_MAX_BLOCKS)
        return qs_error_set(err, QS_ERR_INPUT, "config: %d blocks, expected [1, %d] for a plan", n, QS_COST_MAX_BLOCKS);
    if (replicas < 0 || replicas > ranks)
        return qs_error_set(err, QS_ERR_INPUT, "--replicas %d: expected [1, --ranks %d]", replicas, ranks);
    if (replicas > 0) {
        if (ranks % replicas)
            return qs_error_set(err, QS_ERR_INPUT, "--replicas %d does not divide --ranks %d (ranks = stages × replicas)",
                                replicas, ranks);
        if (ranks / replicas > n)
            return qs_error_set(err, QS_ERR_INPUT,
                                "%d ranks as %d replicas make %d stages for %d blocks: each stage needs at least one "
                                "block (use at most %d stages)",
                                ranks, replicas, ranks / replicas, n, n);
        if (replicas > p->calib_rows)
            return qs_error_set(err, QS_ERR_INPUT,
                                "--replicas %d for %lld calibration rows: each replica needs at least one row",
                                replicas, (long long)p->calib_rows);
    }

    /* Every decomposition, fewest stages first (S = 1, 2, ... dividing P). */
    int n_opts = 0;
    for (int s = 1; s <= ranks && s <= n; s++)
        if (ranks % s == 0 && valid_split(cfg, p, ranks, ranks / s)) n_opts++;
    if (n_opts == 0)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%d ranks cannot be split into stages × replicas with at most %d stages (one block each) "
                            "and at most %lld replicas (one calibration row each)",
                            ranks, n, (long long)p->calib_rows);
    qs_plan_option *opts = calloc((size_t)n_opts, sizeof *opts);
    if (!opts) return qs_error_set(err, QS_ERR_NOMEM, "plan options");
    int chosen = -1, k = 0, skipped = 0;
    for (int s = 1; s <= ranks && s <= n; s++) {
        if (ranks % s || !valid_split(cfg, p, ranks, ranks / s)) continue;
        /* a P with many divisors: the alternatives shown are the first
         * QS_PLAN_MAX_OPTIONS (fewest stages); the one chosen is always planned */
        bool needed = replicas > 0 ? ranks / s == replicas : chosen < 0;
        if (k >= QS_PLAN_MAX_OPTIONS && !needed) {
            skipped++;
            continue;
        }
        qs_plan tmp;
        qs_status st = plan_one(cfg, p, ranks, ranks / s, device_mem, host_mem, &tmp, err);
        if (st != QS_OK) {
            free(opts);
            return st;
        }
        opts[k] = (qs_plan_option){s, ranks / s, tmp.seconds_total, tmp.fits};
        if (replicas > 0 ? ranks / s == replicas : (chosen < 0 && tmp.fits)) chosen = k;
        qs_plan_free(&tmp);
        k++;
    }
    /* nothing fits: report the decomposition with the most replicas (the least memory per rank) */
    if (chosen < 0) chosen = 0;
    qs_status st = plan_one(cfg, p, ranks, opts[chosen].replicas, device_mem, host_mem, out, err);
    if (st != QS_OK) {
        free(opts);
        return st;
    }
    out->options = opts;
    out->n_options = k;
    out->n_options_skipped = skipped;
    out->replicas_chosen = replicas == 0;
    return QS_OK;
}

void qs_plan_free(qs_plan *plan)
{
    if (!plan) return;
    free(plan->stages);
    free(plan->options);
    plan->stages = NULL;
    plan->options = NULL;
}
