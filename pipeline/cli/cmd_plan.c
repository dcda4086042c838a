/* cmd_plan.c — `qshard plan`: per-rank block ranges, memory and time, from
 * config.json alone (no weights needed), for clusters this machine cannot hold. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/cli/cli.h"
#include "pipeline/formats/model_config.h"
#include "schedulers/partition.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard plan MODEL_DIR|config.json --ranks P [options]\n\n"
            "  --ranks P              MPI ranks (one per GPU)\n"
            "  --gpu-mem SIZE         device memory per rank, e.g. 80GiB (0: not checked)\n"
            "  --host-mem SIZE        host memory per rank (0: not checked)\n"
            "  --calib-tokens NxL     calibration rows × sequence length (default 128x2048)\n"
            "  --micro-batch M        rows per micro-batch (default 8)\n"
            "  --device-flops F       sustained f32 flop/s per rank (default 30e12)\n"
            "  --io-bw B              checkpoint read bytes/s per rank (default 2e9)\n"
            "  --link-bw B            activation transfer bytes/s between ranks (default 10e9)\n"
            "  --schedule exact|pipelined\n"
            "  --activations-on-device  keep all boundary activations on the device\n"
            "  --json                 one JSON object\n");
}

static qs_status parse_tokens(const char *v, qs_cost_params *p, qs_error *err)
{
    long long n = 0, l = 0;
    char x = 0, extra = 0;
    if (sscanf(v, "%lld%c%lld%c", &n, &x, &l, &extra) != 3 || (x != 'x' && x != 'X') || n < 1 || l < 2)
        return qs_error_set(err, QS_ERR_INPUT, "--calib-tokens: expected NxL like 128x2048, got '%s'", v);
    p->calib_rows = n;
    p->calib_len = l;
    return QS_OK;
}

static void print_json(const qs_model_config *cfg, const qs_plan *pl)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "arch", qs_arch_name(cfg->arch));
    cJSON_AddNumberToObject(o, "blocks", pl->n_blocks);
    cJSON_AddNumberToObject(o, "ranks", pl->n_ranks);
    cJSON_AddStringToObject(o, "schedule", pl->params.schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined");
    cJSON_AddNumberToObject(o, "block_params", (double)pl->block.params);
    cJSON_AddNumberToObject(o, "block_flops", pl->block.flops_total);
    cJSON_AddNumberToObject(o, "block_flops_forward", pl->block.flops_forward);
    cJSON_AddNumberToObject(o, "block_flops_hessian", pl->block.flops_hessian);
    cJSON_AddNumberToObject(o, "block_flops_gptq", pl->block.flops_gptq);
    cJSON_AddNumberToObject(o, "forward_passes", pl->block.forward_passes);
    cJSON_AddNumberToObject(o, "forward_passes_recompute", pl->block.forward_passes_recompute);
    cJSON_AddNumberToObject(o, "block_seconds", pl->block.seconds);
    cJSON_AddNumberToObject(o, "seconds_total", pl->seconds_total);
    cJSON_AddBoolToObject(o, "fits", pl->fits);
    if (!pl->fits) cJSON_AddStringToObject(o, "why", pl->why);
    cJSON *arr = cJSON_AddArrayToObject(o, "stages");
    for (int r = 0; r < pl->n_ranks; r++) {
        const qs_stage_plan *s = &pl->stages[r];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "rank", s->rank);
        cJSON_AddNumberToObject(e, "first_block", s->first_block);
        cJSON_AddNumberToObject(e, "end_block", s->end_block);
        cJSON_AddBoolToObject(e, "embed", s->embed);
        cJSON_AddBoolToObject(e, "head", s->head);
        cJSON_AddNumberToObject(e, "seconds", s->seconds);
        cJSON_AddNumberToObject(e, "peak_device_bytes", (double)s->peak_device);
        cJSON_AddNumberToObject(e, "peak_host_bytes", (double)s->peak_host);
        cJSON_AddItemToArray(arr, e);
    }
    char *txt = cJSON_PrintUnformatted(o);
    printf("%s\n", txt);
    free(txt);
    cJSON_Delete(o);
}

static void print_text(const qs_model_config *cfg, const qs_plan *pl)
{
    char a[32], b[32], c[32], d[32];
    const qs_block_cost *bc = &pl->block;
    printf("model: %s, %d blocks, hidden %d, %d heads (%d kv), ffn %d, vocab %d\n", qs_arch_name(cfg->arch),
           cfg->n_layers, cfg->hidden, cfg->n_heads, cfg->n_kv_heads, cfg->ffn, cfg->vocab);
    printf("calibration: %lld × %lld tokens, micro-batch %lld; schedule %s\n", (long long)pl->params.calib_rows,
           (long long)pl->params.calib_len, (long long)pl->params.micro_batch,
           pl->params.schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined");
    printf("per block: %.3g params, %.3g TFLOP (forward %.3g × %.2g passes, Hessians %.3g, GPTQ %.3g), %s\n",
           (double)bc->params, bc->flops_total / 1e12, bc->flops_forward / 1e12, bc->forward_passes,
           bc->flops_hessian / 1e12, bc->flops_gptq / 1e12, qs_fmt_seconds(bc->seconds, a, 32));
    printf("per block memory: weights f32 %s, largest Hessian %s (%s), GPTQ workspace %s, micro-batch %s, "
           "boundary activations %s, kept stage inputs %s\n",
           qs_fmt_bytes(bc->bytes_weights_f32, a, 32), qs_fmt_bytes(bc->bytes_hessian, b, 32),
           bc->largest_hessian ? bc->largest_hessian : "?", qs_fmt_bytes(bc->bytes_gptq, c, 32),
           qs_fmt_bytes(bc->bytes_act_micro, d, 32), qs_fmt_bytes(bc->bytes_act_boundary, (char[32]){0}, 32),
           qs_fmt_bytes(bc->bytes_act_carry, (char[32]){0}, 32));
    printf("\n%5s  %-13s %6s  %-12s %12s %12s %10s\n", "rank", "blocks", "count", "stages", "device peak", "host peak",
           "time");
    for (int r = 0; r < pl->n_ranks; r++) {
        const qs_stage_plan *s = &pl->stages[r];
        char range[32], stages[32];
        snprintf(range, sizeof range, "[%d, %d)", s->first_block, s->end_block);
        snprintf(stages, sizeof stages, "%s%s%s", s->embed ? "embed" : "", s->embed && s->head ? "+" : "",
                 s->head ? "head" : "");
        printf("%5d  %-13s %6d  %-12s %12s %12s %10s\n", r, range, s->end_block - s->first_block,
               stages[0] ? stages : "-", qs_fmt_bytes(s->peak_device, a, 32), qs_fmt_bytes(s->peak_host, b, 32),
               qs_fmt_seconds(s->seconds, c, 32));
    }
    printf("\nestimated wall time: %s\n", qs_fmt_seconds(pl->seconds_total, a, 32));
    if (pl->fits)
        printf("fits: yes (device %s, host %s per rank)\n",
               pl->device_mem ? qs_fmt_bytes(pl->device_mem, a, 32) : "not checked",
               pl->host_mem ? qs_fmt_bytes(pl->host_mem, b, 32) : "not checked");
    else
        printf("fits: NO — %s\n", pl->why);
}

int qs_cmd_plan(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ranks", required_argument, 0, 'r'},        {"gpu-mem", required_argument, 0, 'g'},
        {"host-mem", required_argument, 0, 'm'},     {"calib-tokens", required_argument, 0, 't'},
        {"micro-batch", required_argument, 0, 'b'},  {"device-flops", required_argument, 0, 'f'},
        {"io-bw", required_argument, 0, 'i'},        {"link-bw", required_argument, 0, 'l'},
        {"schedule", required_argument, 0, 's'},     {"activations-on-device", no_argument, 0, 'a'},
        {"json", no_argument, 0, 'j'},               {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    qs_cost_params p;
    qs_cost_params_default(&p);
    long ranks = 0;
    uint64_t gpu_mem = 0, host_mem = 0;
    bool json = false;
    qs_error err = {0};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        qs_status st = QS_OK;
        long v;
        switch (c) {
        case 'r': st = qs_parse_long("--ranks", optarg, 1, 1 << 20, &ranks, &err); break;
        case 'g': st = qs_parse_bytes("--gpu-mem", optarg, &gpu_mem, &err); break;
        case 'm': st = qs_parse_bytes("--host-mem", optarg, &host_mem, &err); break;
        case 't': st = parse_tokens(optarg, &p, &err); break;
        case 'b':
            st = qs_parse_long("--micro-batch", optarg, 1, 1 << 20, &v, &err);
            p.micro_batch = v;
            break;
        case 'f': st = qs_parse_double("--device-flops", optarg, &p.device_flops, &err); break;
        case 'i': st = qs_parse_double("--io-bw", optarg, &p.io_bytes_per_s, &err); break;
        case 'l': st = qs_parse_double("--link-bw", optarg, &p.link_bytes_per_s, &err); break;
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
    if (optind != argc - 1) return qs_cli_usage_error("plan", "expected one MODEL_DIR or config.json");
    if (ranks < 1) return qs_cli_usage_error("plan", "--ranks P is required");
    if (p.device_flops <= 0 || p.io_bytes_per_s <= 0 || p.link_bytes_per_s <= 0)
        return qs_cli_usage_error("plan", "--device-flops, --io-bw and --link-bw must be positive");

    qs_model_config cfg;
    if (qs_model_config_load(argv[optind], &cfg, &err) != QS_OK) return qs_cli_report("plan", &err);
    p.weight_bytes = cfg.torch_dtype == QS_DTYPE_F32 ? 4 : 2;
    qs_plan pl;
    if (qs_plan_make(&cfg, &p, (int)ranks, gpu_mem, host_mem, &pl, &err) != QS_OK) return qs_cli_report("plan", &err);
    if (json) print_json(&cfg, &pl);
    else print_text(&cfg, &pl);
    int code = pl.fits ? 0 : 4;
    qs_plan_free(&pl);
    return code;
}
