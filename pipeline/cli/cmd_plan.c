/* cmd_plan.c — `qshard plan`: stages × replicas, per-stage block ranges,
 * memory, time and communication, from config.json alone (no weights
 * needed), for clusters this machine cannot hold. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/cli/cli.h"
#include "pipeline/formats/model_config.h"
#include "pipeline/formats/token_set.h"
#include "pipeline/run_options.h"
#include "schedulers/partition.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard plan MODEL_DIR|config.json --ranks P [options]\n"
            "       qshard plan JOB_FILE.ini [--model DIR|config.json] [options]\n\n"
            "A job file gives the model, the ranks (nodes × gpus-per-node), replicas, link-gbps,\n"
            "intra-node-gbps, micro-batch, schedule, group-size and (when the file exists) the\n"
            "calibration tokens; flags override it.\n\n"
            "  --ranks P              MPI ranks (one per GPU): P = stages × replicas\n"
            "  --replicas D           data-parallel replicas per stage (default: the fewest stages that fit)\n"
            "  --gpu-mem SIZE         device memory per rank, e.g. 80GiB (0: not checked)\n"
            "  --host-mem SIZE        host memory per rank (0: not checked)\n"
            "  --calib-tokens NxL     calibration rows × sequence length (default 128x2048)\n"
            "  --micro-batch M        rows per micro-batch (default 8)\n"
            "  --group-size G         quantization group, for the weight all-gather (default 128; -1 per row)\n"
            "  --device-flops F       sustained f32 flop/s per rank (default 30e12)\n"
            "  --io-bw B              checkpoint read bytes/s per rank (default 2e9)\n"
            "  --gpus-per-node G      ranks per node; ranks are placed stage-major (default 8)\n"
            "  --link-gbps X          Gbit/s per rank between nodes (default 100)\n"
            "  --intra-node-gbps X    Gbit/s per rank within a node (default 1600)\n"
            "  --schedule exact|pipelined\n"
            "  --activations-on-device  keep the boundary activations on the device\n"
            "  --json                 one JSON object\n\n"
            "Exit codes: 0 fits, 4 does not fit (the line says what and by how much), 2 bad input.\n");
}

/* NxL: each part strictly parsed and bounded (no sscanf overflow). */
static qs_status parse_tokens(const char *v, qs_cost_params *p, qs_error *err)
{
    const char *x = strpbrk(v, "xX");
    char rows[64];
    if (!x || (size_t)(x - v) >= sizeof rows)
        return qs_error_set(err, QS_ERR_INPUT, "--calib-tokens: expected NxL like 128x2048, got '%s'", v);
    snprintf(rows, sizeof rows, "%.*s", (int)(x - v), v);
    long n = 0, l = 0;
    QS_TRY(qs_parse_long("--calib-tokens rows", rows, 1, QS_COST_MAX_ROWS, &n, err));
    QS_TRY(qs_parse_long("--calib-tokens length", x + 1, 2, QS_COST_MAX_ROWS, &l, err));
    if ((double)n * (double)l > QS_COST_MAX_TOKENS)
        return qs_error_set(err, QS_ERR_INPUT, "--calib-tokens %s: more than 2^40 tokens", v);
    p->calib_rows = n;
    p->calib_len = l;
    return QS_OK;
}

/* A rate given in Gbit/s → bytes/s. */
static qs_status parse_gbps(const char *opt, const char *v, double *bytes_per_s, qs_error *err)
{
    double g;
    QS_TRY(qs_parse_double(opt, v, &g, err));
    if (!(g >= 1e-8) || g > 1e9) return qs_error_set(err, QS_ERR_INPUT, "%s: expected [1e-8, 1e9] Gbit/s, got '%s'", opt, v);
    *bytes_per_s = g * 1e9 / 8;
    return QS_OK;
}

static const char *sched_name(const qs_plan *pl)
{
    return pl->params.schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined";
}

/* ---- JSON ------------------------------------------------------------------------------- */

static void print_json(const qs_model_config *cfg, const qs_plan *pl)
{
    const qs_block_cost *bc = &pl->block;
    const qs_cost_params *p = &pl->params;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "arch", qs_arch_name(cfg->arch));
    cJSON_AddNumberToObject(o, "blocks", pl->n_blocks);
    cJSON_AddNumberToObject(o, "ranks", pl->n_ranks);
    cJSON_AddNumberToObject(o, "n_stages", pl->n_stages);
    cJSON_AddNumberToObject(o, "replicas", pl->n_replicas);
    cJSON_AddBoolToObject(o, "replicas_chosen", pl->replicas_chosen);
    cJSON_AddStringToObject(o, "schedule", sched_name(pl));
    cJSON_AddNumberToObject(o, "block_params", (double)bc->params);
    cJSON_AddNumberToObject(o, "block_flops", bc->flops_total);
    cJSON_AddNumberToObject(o, "block_flops_replica", bc->flops_replica);
    cJSON_AddNumberToObject(o, "block_flops_forward", bc->flops_forward);
    cJSON_AddNumberToObject(o, "block_flops_hessian", bc->flops_hessian);
    cJSON_AddNumberToObject(o, "block_flops_gptq", bc->flops_gptq);
    /* block-forward equivalents per block, and what re-running each stage from the input would cost */
    cJSON_AddNumberToObject(o, "forward_passes", bc->passes);
    cJSON_AddNumberToObject(o, "forward_passes_recompute", bc->passes_recompute);
    /* one block on one replica: compute + read (communication is per stage) */
    cJSON_AddNumberToObject(o, "block_seconds", bc->seconds_compute + bc->seconds_io);
    cJSON_AddNumberToObject(o, "seconds_total", pl->seconds_total);
    cJSON *t = cJSON_AddObjectToObject(o, "time");
    cJSON_AddNumberToObject(t, "compute", pl->time.compute);
    cJSON_AddNumberToObject(t, "io", pl->time.io);
    cJSON_AddNumberToObject(t, "hessian_allreduce", pl->time.reduce);
    cJSON_AddNumberToObject(t, "weight_allgather", pl->time.gather);
    cJSON_AddNumberToObject(t, "handoff", pl->time.handoff);
    cJSON_AddNumberToObject(t, "fp_pass", pl->time.fp_pass);
    cJSON *c = cJSON_AddObjectToObject(o, "communication_bytes");
    cJSON_AddNumberToObject(c, "hessian_allreduce_per_block", bc->bytes_reduce);
    cJSON_AddNumberToObject(c, "weight_allgather_per_block", bc->bytes_gather);
    cJSON_AddNumberToObject(c, "handoff_per_boundary", bc->bytes_handoff);
    cJSON *a = cJSON_AddObjectToObject(o, "assumptions");
    cJSON_AddNumberToObject(a, "device_flops", p->device_flops);
    cJSON_AddNumberToObject(a, "io_bytes_per_s", p->io_bytes_per_s);
    cJSON_AddNumberToObject(a, "link_gbps", p->link_bytes_per_s * 8 / 1e9);
    cJSON_AddNumberToObject(a, "intra_node_gbps", p->intra_bytes_per_s * 8 / 1e9);
    cJSON_AddNumberToObject(a, "ranks_per_node", p->ranks_per_node);
    cJSON_AddBoolToObject(o, "fits", pl->fits);
    if (!pl->fits) cJSON_AddStringToObject(o, "why", pl->why);
    cJSON_AddNumberToObject(o, "decompositions_not_planned", pl->n_options_skipped);
    cJSON *opts = cJSON_AddArrayToObject(o, "decompositions");
    for (int i = 0; i < pl->n_options; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "stages", pl->options[i].stages);
        cJSON_AddNumberToObject(e, "replicas", pl->options[i].replicas);
        cJSON_AddNumberToObject(e, "seconds_total", pl->options[i].seconds);
        cJSON_AddBoolToObject(e, "fits", pl->options[i].fits);
        cJSON_AddItemToArray(opts, e);
    }
    cJSON *arr = cJSON_AddArrayToObject(o, "stages");
    for (int r = 0; r < pl->n_stages; r++) {
        const qs_stage_plan *s = &pl->stages[r];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "stage", s->stage);
        cJSON_AddNumberToObject(e, "rank", s->rank);
        cJSON_AddNumberToObject(e, "replicas", s->replicas);
        cJSON_AddNumberToObject(e, "first_block", s->first_block);
        cJSON_AddNumberToObject(e, "end_block", s->end_block);
        cJSON_AddBoolToObject(e, "embed", s->embed);
        cJSON_AddBoolToObject(e, "head", s->head);
        cJSON_AddNumberToObject(e, "seconds", s->seconds);
        cJSON_AddNumberToObject(e, "seconds_block", s->seconds_block);
        cJSON_AddNumberToObject(e, "seconds_handoff", s->seconds_handoff);
        cJSON_AddBoolToObject(e, "reduce_across_nodes", s->reduce_across_nodes);
        cJSON_AddNumberToObject(e, "peak_device_bytes", s->peak_device);
        cJSON_AddNumberToObject(e, "peak_host_bytes", s->peak_host);
        cJSON_AddItemToArray(arr, e);
    }
    char *txt = cJSON_PrintUnformatted(o);
    printf("%s\n", txt);
    free(txt);
    cJSON_Delete(o);
}

/* ---- text ------------------------------------------------------------------------------- */

static void print_text(const qs_model_config *cfg, const qs_plan *pl)
{
    char a[32], b[32], c[32], d[32], e[32];
    const qs_block_cost *bc = &pl->block;
    const qs_cost_params *p = &pl->params;
    const int D = pl->n_replicas;
    printf("model: %s, %d blocks, hidden %d, %d heads (%d kv), ffn %d, vocab %d\n", qs_arch_name(cfg->arch),
           cfg->n_layers, cfg->hidden, cfg->n_heads, cfg->n_kv_heads, cfg->ffn, cfg->vocab);
    printf("calibration: %lld × %lld tokens, micro-batch %lld; schedule %s\n", (long long)p->calib_rows,
           (long long)p->calib_len, (long long)p->micro_batch, sched_name(pl));
    printf("decomposition: %d ranks = %d stage%s × %d replica%s (%s)\n", pl->n_ranks, pl->n_stages,
           pl->n_stages == 1 ? "" : "s", D, D == 1 ? "" : "s",
           pl->replicas_chosen ? "chosen: the fewest stages that fit; --replicas D sets it" : "--replicas");
    printf("assumptions: %.3g TFLOP/s f32 per rank; checkpoint reads %.3g GB/s per rank; links %.4g Gb/s within a "
           "node, %.4g Gb/s between nodes, per rank; %d ranks per node, placed stage-major\n",
           p->device_flops / 1e12, p->io_bytes_per_s / 1e9, p->intra_bytes_per_s * 8 / 1e9,
           p->link_bytes_per_s * 8 / 1e9, p->ranks_per_node);
    printf("per block: %.3g params, %.3g TFLOP (forward %.3g, Hessians %.3g, GPTQ %.3g: factorizations %.3g, "
           "sweep %.3g)\n",
           (double)bc->params, bc->flops_total / 1e12, bc->flops_forward / 1e12, bc->flops_hessian / 1e12,
           bc->flops_gptq / 1e12, bc->flops_gptq_factor / 1e12, bc->flops_gptq_sweep / 1e12);
    printf("per block on one replica (%lld calibration rows of %lld): compute %s (forward ×%.1f %s, Hessians %s, "
           "GPTQ factorizations %s, sweep %s), read %s\n",
           (long long)bc->rows_per_replica, (long long)p->calib_rows,
           qs_fmt_seconds(bc->seconds_compute, a, 32), bc->passes, qs_fmt_seconds(bc->seconds_forward, b, 32),
           qs_fmt_seconds(bc->seconds_hessian, c, 32), qs_fmt_seconds(bc->seconds_factor, d, 32),
           qs_fmt_seconds(bc->seconds_sweep, e, 32), qs_fmt_seconds(bc->seconds_io, (char[32]){0}, 32));
    printf("communication per block: Hessian all-reduce %s (", qs_fmt_bytes(bc->bytes_reduce, a, 32));
    for (int i = 0; i < bc->n_hessians; i++)
        printf("%s%s input %s", i ? ", " : "", bc->hessian_name[i], qs_fmt_bytes(bc->bytes_hessian_each[i], a, 32));
    printf("), quantized-weight all-gather %s; hand-off between stages %s (%s per replica)\n",
           qs_fmt_bytes(bc->bytes_gather, a, 32), qs_fmt_bytes(bc->bytes_handoff, b, 32),
           qs_fmt_bytes(bc->bytes_handoff * (double)bc->rows_per_replica / (double)p->calib_rows, c, 32));
    printf("per block memory (one rank): weights f32 %s, largest Hessian %s (%s), GPTQ workspace %s, micro-batch %s, "
           "boundary activations %s, kept stage inputs %s\n",
           qs_fmt_bytes(bc->bytes_weights_f32, a, 32), qs_fmt_bytes(bc->bytes_hessian, b, 32),
           bc->largest_hessian ? bc->largest_hessian : "?", qs_fmt_bytes(bc->bytes_gptq, c, 32),
           qs_fmt_bytes(bc->bytes_act_micro, d, 32), qs_fmt_bytes(bc->bytes_act_boundary, e, 32),
           qs_fmt_bytes(bc->bytes_act_carry, (char[32]){0}, 32));

    printf("\n%5s  %-13s %-13s %6s  %-10s %11s %11s %10s %10s %10s\n", D == 1 ? "rank" : "stage",
           D == 1 ? "" : "ranks", "blocks", "count", "embed/head", "device peak", "host peak", "all-reduce", "block",
           "stage time");
    for (int r = 0; r < pl->n_stages; r++) {
        const qs_stage_plan *s = &pl->stages[r];
        char range[32], ranks[32], stages[32], red[40];
        snprintf(range, sizeof range, "[%d, %d)", s->first_block, s->end_block);
        if (D == 1) ranks[0] = '\0';
        else snprintf(ranks, sizeof ranks, "[%d, %d)", s->rank, s->rank + D);
        snprintf(stages, sizeof stages, "%s%s%s", s->embed ? "embed" : "", s->embed && s->head ? "+" : "",
                 s->head ? "head" : "");
        if (D == 1) snprintf(red, sizeof red, "-");
        else snprintf(red, sizeof red, "%s %s", qs_fmt_seconds(s->seconds_reduce, a, 32),
                      s->reduce_across_nodes ? "inter" : "intra");
        printf("%5d  %-13s %-13s %6d  %-10s %11s %11s %10s %10s %10s\n", D == 1 ? s->rank : s->stage, ranks, range,
               s->end_block - s->first_block, stages[0] ? stages : "-", qs_fmt_bytes(s->peak_device, b, 32),
               qs_fmt_bytes(s->peak_host, c, 32), red, qs_fmt_seconds(s->seconds_block, d, 32),
               qs_fmt_seconds(s->seconds, e, 32));
    }
    const qs_plan_time *t = &pl->time;
    printf("\nestimated wall time: %s = ", qs_fmt_seconds(pl->seconds_total, a, 32));
    if (p->schedule == QS_SCHEDULE_PIPELINED) printf("FP pass %s + the slowest stage: ", qs_fmt_seconds(t->fp_pass, a, 32));
    printf("compute %s + checkpoint reads %s + Hessian all-reduce %s + weight all-gather %s + hand-offs %s\n",
           qs_fmt_seconds(t->compute, a, 32), qs_fmt_seconds(t->io, b, 32), qs_fmt_seconds(t->reduce, c, 32),
           qs_fmt_seconds(t->gather, d, 32), qs_fmt_seconds(t->handoff, e, 32));
    printf("decompositions (stages × replicas: time):");
    for (int i = 0; i < pl->n_options; i++) {
        const qs_plan_option *o = &pl->options[i];
        printf("%s %d×%d %s%s%s", i ? ";" : "", o->stages, o->replicas, qs_fmt_seconds(o->seconds, a, 32),
               o->fits ? "" : " (does not fit)", o->replicas == D ? " ←" : "");
    }
    if (pl->n_options_skipped) printf("; %d more with more stages not planned", pl->n_options_skipped);
    printf("\n");
    if (pl->fits)
        printf("fits: yes (device %s, host %s per rank)\n",
               pl->device_mem ? qs_fmt_bytes((double)pl->device_mem, a, 32) : "not checked",
               pl->host_mem ? qs_fmt_bytes((double)pl->host_mem, b, 32) : "not checked");
    else
        printf("fits: NO — %s\n", pl->why);
}

/* ---- the command ------------------------------------------------------------------------- */

int qs_cmd_plan(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ranks", required_argument, 0, 'r'},        {"gpu-mem", required_argument, 0, 'g'},
        {"host-mem", required_argument, 0, 'm'},     {"calib-tokens", required_argument, 0, 't'},
        {"micro-batch", required_argument, 0, 'b'},  {"device-flops", required_argument, 0, 'f'},
        {"io-bw", required_argument, 0, 'i'},        {"link-gbps", required_argument, 0, 'l'},
        {"intra-node-gbps", required_argument, 0, 'n'}, {"gpus-per-node", required_argument, 0, 'G'},
        {"replicas", required_argument, 0, 'D'},     {"group-size", required_argument, 0, 'q'},
        {"schedule", required_argument, 0, 's'},     {"activations-on-device", no_argument, 0, 'a'},
        {"json", no_argument, 0, 'j'},               {"help", no_argument, 0, 'h'},
        {"model", required_argument, 0, 'M'},
        {0, 0, 0, 0},
    };
    qs_cost_params p;
    qs_cost_params_default(&p);
    long ranks = 0, replicas = 0;
    uint64_t gpu_mem = 0, host_mem = 0;
    bool json = false;
    const char *model = NULL;
    /* flags given on the command line win over a job file's keys */
    bool given[128] = {false};
    qs_error err = {0};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        qs_status st = QS_OK;
        long v;
        if (c > 0 && c < 128) given[c] = true;
        switch (c) {
        case 'M': model = optarg; break;
        case 'r': st = qs_parse_long("--ranks", optarg, 1, QS_COST_MAX_RANKS, &ranks, &err); break;
        case 'D': st = qs_parse_long("--replicas", optarg, 1, QS_COST_MAX_RANKS, &replicas, &err); break;
        case 'g': st = qs_parse_bytes("--gpu-mem", optarg, &gpu_mem, &err); break;
        case 'm': st = qs_parse_bytes("--host-mem", optarg, &host_mem, &err); break;
        case 't': st = parse_tokens(optarg, &p, &err); break;
        case 'b':
            st = qs_parse_long("--micro-batch", optarg, 1, 1 << 20, &v, &err);
            p.micro_batch = v;
            break;
        case 'q':
            st = qs_parse_long("--group-size", optarg, -1, 1 << 20, &v, &err);
            if (st == QS_OK && v == 0) st = qs_error_set(&err, QS_ERR_INPUT, "--group-size: expected a size or -1, got 0");
            p.group_size = (int)v;
            break;
        case 'G':
            st = qs_parse_long("--gpus-per-node", optarg, 1, QS_COST_MAX_RANKS, &v, &err);
            p.ranks_per_node = (int)v;
            break;
        case 'f': st = qs_parse_double("--device-flops", optarg, &p.device_flops, &err); break;
        case 'i': st = qs_parse_double("--io-bw", optarg, &p.io_bytes_per_s, &err); break;
        case 'l': st = parse_gbps("--link-gbps", optarg, &p.link_bytes_per_s, &err); break;
        case 'n': st = parse_gbps("--intra-node-gbps", optarg, &p.intra_bytes_per_s, &err); break;
        case 's':
            if (strcmp(optarg, "exact") == 0) p.schedule = QS_SCHEDULE_EXACT;
            else if (strcmp(optarg, "pipelined") == 0) p.schedule = QS_SCHEDULE_PIPELINED;
            else return qs_cli_usage_error("plan", "--schedule: expected exact or pipelined, got '%s'", optarg);
            break;
        case 'a': p.activations_on_device = true; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (st != QS_OK) return qs_cli_report("plan", &err);
    }
    if (optind != argc - 1) return qs_cli_usage_error("plan", "expected one MODEL_DIR, config.json or JOB_FILE.ini");
    const char *arg = argv[optind];
    size_t alen = strlen(arg);
    qs_run_options job;
    if (alen > 4 && strcmp(arg + alen - 4, ".ini") == 0) {
        qs_run_options_default(&job);
        if (qs_run_options_load_job(&job, arg, &err) != QS_OK) return qs_cli_report("plan", &err);
        if (!model) model = job.model;
        int per_node = job.slurm.gpus_per_node ? job.slurm.gpus_per_node : job.slurm.tasks_per_node;
        if (!given['r']) ranks = (long)job.slurm.nodes * (per_node ? per_node : 1);
        if (!given['G'] && per_node) p.ranks_per_node = per_node;
        if (!given['D']) replicas = job.replicas;
        if (!given['l']) p.link_bytes_per_s = job.link_gbps * 1e9 / 8;
        if (!given['n']) p.intra_bytes_per_s = job.intra_node_gbps * 1e9 / 8;
        if (!given['b']) p.micro_batch = job.micro_batch;
        if (!given['q']) p.group_size = job.group_size;
        if (!given['s']) p.schedule = job.schedule;
        p.true_sequential = job.true_sequential;
        if (!given['t'] && job.calib[0]) {
            /* the calibration set's shape, when the file is here */
            qs_tensor t;
            qs_error why;
            if (qs_token_set_read(job.calib, &t, &why) == QS_OK) {
                p.calib_rows = job.calib_rows > 0 && job.calib_rows < t.shape[0] ? job.calib_rows : t.shape[0];
                p.calib_len = t.shape[1];
                qs_tensor_free(&t);
            } else {
                fprintf(stderr, "qshard plan: note: %s; planning for %lldx%lld calibration tokens (--calib-tokens sets them)\n",
                        why.msg, (long long)p.calib_rows, (long long)p.calib_len);
            }
        }
        if (ranks < 1 || ranks > QS_COST_MAX_RANKS)
            return qs_cli_usage_error("plan", "%s: nodes × gpus-per-node = %ld ranks, expected [1, %d]", arg, ranks,
                                      QS_COST_MAX_RANKS);
    } else {
        if (model) return qs_cli_usage_error("plan", "--model goes with a JOB_FILE.ini");
        model = arg;
    }
    if (ranks < 1) return qs_cli_usage_error("plan", "--ranks P is required");
    if (!(p.device_flops >= 1) || !(p.io_bytes_per_s >= 1) || p.device_flops > QS_COST_MAX_RATE ||
        p.io_bytes_per_s > QS_COST_MAX_RATE)
        return qs_cli_usage_error("plan", "--device-flops and --io-bw must be in [1, %g]", QS_COST_MAX_RATE);

    qs_model_config cfg;
    if (qs_model_config_load(model, &cfg, &err) != QS_OK) return qs_cli_report("plan", &err);
    p.weight_bytes = cfg.torch_dtype == QS_DTYPE_F32 ? 4 : 2;
    qs_plan pl;
    if (qs_plan_make(&cfg, &p, (int)ranks, (int)replicas, gpu_mem, host_mem, &pl, &err) != QS_OK)
        return qs_cli_report("plan", &err);
    if (json) print_json(&cfg, &pl);
    else print_text(&cfg, &pl);
    int code = pl.fits ? 0 : 4;
    qs_plan_free(&pl);
    return code;
}
