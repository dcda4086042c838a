/* cmd_eval.c — `qshard eval`: perplexity of a model on a token set, and KL
 * divergence / top-1 agreement against a reference model. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "pipeline/cli/cli.h"
#include "pipeline/eval.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/generate.h"
#include "pipeline/report.h"
#include "workers/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard eval --model DIR --tokens T.npy|T.h5 [--tokens T2 ...] [--ref DIR] [--json]\n"
            "                   [--file NAME.safetensors] [--batch B] [--report WORKDIR]\n"
            "                   [--device cpu|cuda|auto] [--compute-dtype auto|f32|bf16]\n\n"
            "Scores every row of the token set [rows, L] on positions 1..L-1 (teacher forcing):\n"
            "mean NLL (nats/token), perplexity, tokens scored and forward tokens/s. With --ref,\n"
            "also the mean KL(ref || model) per token, its 99th percentile and top-1 agreement.\n\n"
            "  --model DIR      HF model directory, or a qshard GPTQ export (dequantized on load)\n"
            "  --tokens T       token set [rows, L]: .npy (int32/int64) or HDF5 dataset input_ids\n"
            "                   (qshard tokenize makes one); several: repeat it or separate with\n"
            "                   commas — one result per token set\n"
            "  --ref DIR        reference model for KL and top-1 agreement (same vocabulary)\n"
            "  --file NAME      use DIR/NAME instead of DIR/model.safetensors\n"
            "  --batch B        rows per forward pass (default 4)\n"
            "  --compute-dtype D  GEMMs of the forwards (model and --ref): f32, or bf16 operands with\n"
            "                   f32 sums; auto (default): bf16 when the CPU has bf16 instructions and\n"
            "                   the model stores bf16/fp16 weights, f32 otherwise\n"
            "  --device D       cpu, cuda or auto (default cpu): the blocks' forward on the GPU with\n"
            "                   cuda (the embedding, head and statistics on the CPU; f32 only)\n"
            "  --json           one JSON object per token set, one per line: nll, ppl, tokens\n"
            "                   (+ kl_mean, kl_p99, top1)\n"
            "  --report WORK    add a row per token set to the eval table of the run in WORK and\n"
            "                   write its report again (qshard report)\n\n"
            "testing aids:\n"
            "  --dump-logits P  write the model's logits [rows, L, vocab] to P (.npy)\n"
            "  --generate N     greedy-decode N tokens after --prompt (default: the BOS id) and\n"
            "                   print the ids (no --tokens needed)\n"
            "  --prompt IDS     comma-separated token ids for --generate\n");
}

static int parse_prompt(const char *s, int32_t **ids, int64_t *n)
{
    int64_t cap = 16, k = 0;
    int32_t *v = malloc(sizeof(int32_t) * (size_t)cap);
    const char *p = s;
    while (v && *p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > 0x7fffffff) break;
        if (k == cap) {
            int32_t *nv = realloc(v, sizeof(int32_t) * (size_t)(cap *= 2));
            if (!nv) break;
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = end;
        if (*p == ',') p++;
        else if (*p) break;
    }
    if (!v || *p || k == 0) {
        free(v);
        return -1;
    }
    *ids = v;
    *n = k;
    return 0;
}

static int run_generate(const char *model_dir, const char *file, const char *prompt, long n_new, bool json)
{
    qs_error err;
    qs_error_clear(&err);
    qs_model model;
    if (qs_model_load_file(&model, model_dir, file, &err) != QS_OK) return qs_cli_report("eval", &err);
    int32_t *ids = NULL;
    int64_t n_prompt = 0;
    int rc = 0;
    if (prompt) {
        if (parse_prompt(prompt, &ids, &n_prompt) != 0) {
            qs_model_free(&model);
            return qs_cli_usage_error("eval", "--prompt: expected comma-separated token ids, got '%s'", prompt);
        }
    } else if (model.cfg.bos_id >= 0) {
        ids = malloc(sizeof(int32_t));
        if (ids) ids[0] = model.cfg.bos_id, n_prompt = 1;
    } else {
        qs_model_free(&model);
        return qs_cli_usage_error("eval", "%s has no bos_token_id: give --prompt", model_dir);
    }
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(n_prompt + n_new));
    int64_t n_out = 0;
    if (!ids || !out) {
        qs_error_set(&err, QS_ERR_NOMEM, "eval: out of memory");
        rc = qs_cli_report("eval", &err);
    } else if (qs_generate_greedy(&model, qs_backend_cpu(), ids, n_prompt, n_new, model.cfg.eos_id, out, &n_out,
                                  &err) != QS_OK) {
        rc = qs_cli_report("eval", &err);
    } else {
        printf(json ? "{\"ids\": [" : "");
        for (int64_t i = 0; i < n_out; i++) printf(json ? "%s%d" : "%s%d", i ? (json ? ", " : " ") : "", out[i]);
        printf(json ? "]}\n" : "\n");
    }
    free(ids);
    free(out);
    qs_model_free(&model);
    return rc;
}

static int eval_sets(qs_eval_opts *o_, const qs_backend_i *be, char **token_sets, int n_sets, bool json,
                     const char *report);

int qs_cmd_eval(int argc, char **argv)
{
    if (qs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    enum { OPT_DUMP = 1000, OPT_GENERATE, OPT_PROMPT, OPT_REPORT, OPT_DEVICE, OPT_COMPUTE };
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},   {"tokens", required_argument, NULL, 't'},
        {"ref", required_argument, NULL, 'r'},     {"json", no_argument, NULL, 'j'},
        {"file", required_argument, NULL, 'f'},    {"batch", required_argument, NULL, 'b'},
        {"dump-logits", required_argument, NULL, OPT_DUMP},
        {"generate", required_argument, NULL, OPT_GENERATE},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"report", required_argument, NULL, OPT_REPORT},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"compute-dtype", required_argument, NULL, OPT_COMPUTE},
        {NULL, 0, NULL, 0},
    };
    qs_eval_opts o = {.batch = 4};
    bool json = false;
    long generate = -1, batch = 4;
    const char *prompt = NULL, *report = NULL, *device = "cpu";
    enum { MAX_TOKEN_SETS = 64 };
    char *token_sets[MAX_TOKEN_SETS];
    int n_sets = 0;
    qs_error err;
    qs_error_clear(&err);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model_dir = optarg; break;
        case 't':
            /* repeated, or a comma list (paths with commas: repeat the flag) */
            for (char *save = NULL, *t = strtok_r(optarg, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (n_sets == MAX_TOKEN_SETS) return qs_cli_usage_error("eval", "at most %d token sets", MAX_TOKEN_SETS);
                token_sets[n_sets++] = t;
            }
            break;
        case 'r': o.ref_dir = optarg; break;
        case 'j': json = true; break;
        case 'f': o.file = optarg; break;
        case 'b':
            if (qs_parse_long("--batch", optarg, 1, 1 << 20, &batch, &err) != QS_OK)
                return qs_cli_usage_error("eval", "%s", err.msg);
            o.batch = batch;
            break;
        case OPT_DUMP: o.dump_logits = optarg; break;
        case OPT_GENERATE:
            if (qs_parse_long("--generate", optarg, 0, 1 << 20, &generate, &err) != QS_OK)
                return qs_cli_usage_error("eval", "%s", err.msg);
            break;
        case OPT_PROMPT: prompt = optarg; break;
        case OPT_REPORT: report = optarg; break;
        case OPT_DEVICE: device = optarg; break;
        case OPT_COMPUTE:
            if (strcmp(optarg, "auto") && strcmp(optarg, "f32") && strcmp(optarg, "bf16"))
                return qs_cli_usage_error("eval", "--compute-dtype: expected auto, f32 or bf16, got '%s'", optarg);
            o.compute_dtype = optarg;
            break;
        case ':': return qs_cli_usage_error("eval", "%s needs a value", argv[optind - 1]);
        default: return qs_cli_usage_error("eval", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return qs_cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!o.model_dir) return qs_cli_usage_error("eval", "--model DIR is required");
    qs_device_choice dev;
    int dcode = qs_cli_device("eval", device, NULL, true, &dev);
    if (dcode >= 0) return dcode;
    if (generate >= 0 && dev.kind == QS_DEVICE_CUDA)
        return qs_cli_usage_error("eval", "--generate runs on the CPU (use --device cpu)");
    if (generate >= 0) return run_generate(o.model_dir, o.file, prompt, generate, json);
    if (n_sets == 0) return qs_cli_usage_error("eval", "--tokens T.npy|T.h5 is required");
    if (report) {
        /* before the work: a row needs a run to belong to */
        char p1[4200], p2[4200];
        snprintf(p1, sizeof p1, "%s/events.jsonl", report);
        snprintf(p2, sizeof p2, "%s/qshard_report.json", report);
        if (!qs_path_exists(p1) && !qs_path_exists(p2))
            return qs_cli_usage_error("eval", "--report %s: not the work dir of a qshard run (no events.jsonl)", report);
    }
    if (o.dump_logits && n_sets > 1) return qs_cli_usage_error("eval", "--dump-logits takes one token set");
    /* on a GPU: the blocks' forward there (the embedding, head and statistics on the CPU) */
    qs_backend_i cuda;
    const qs_backend_i *be = qs_backend_cpu();
    if (dev.kind == QS_DEVICE_CUDA) {
        qs_cuda_opts co = {.tf32 = false};
        if (qs_backend_cuda_init(&cuda, dev.index, &co, &err) != QS_OK) return qs_cli_report("eval", &err);
        be = &cuda;
    }
    int rc = eval_sets(&o, be, token_sets, n_sets, json, report);
    if (be->device) qs_backend_cuda_free(&cuda);
    return rc;
}

/* Runs every token set on be and prints (and reports) its result. */
static int eval_sets(qs_eval_opts *o_, const qs_backend_i *be, char **token_sets, int n_sets, bool json,
                     const char *report)
{
    qs_eval_opts o = *o_;
    qs_error err;

    for (int k = 0; k < n_sets; k++) {
        o.tokens_path = token_sets[k];
        qs_eval_result r;
        if (qs_eval_run(&o, be, &r, &err) != QS_OK) return qs_cli_report("eval", &err);
        if (json) {
            printf("{\"nll\": %.17g, \"ppl\": %.17g, \"tokens\": %lld, \"rows\": %lld, \"seq_len\": %lld", r.nll,
                   r.ppl, (long long)r.tokens, (long long)r.rows, (long long)r.seq_len);
            if (r.has_ref)
                printf(", \"kl_mean\": %.17g, \"kl_p99\": %.17g, \"top1\": %.17g", r.kl_mean, r.kl_p99, r.top1);
            if (n_sets > 1) {
                /* several results: say which token set each is (the path as a JSON string) */
                printf(", \"token_set\": \"");
                for (const char *p = o.tokens_path; *p; p++) {
                    if (*p == '"' || *p == '\\') printf("\\%c", *p);
                    else if ((unsigned char)*p < 0x20) printf("\\u%04x", *p);
                    else putchar(*p);
                }
                printf("\"");
            }
            printf(", \"seconds\": %.6g, \"tokens_per_s\": %.6g, \"compute_dtype\": \"%s\"}\n", r.seconds,
                   r.tokens_per_s, qs_compute_dtype_name(r.compute));
        } else {
            if (k) printf("\n");
            printf("model       %s%s%s\n", o.model_dir, o.file ? "/" : "", o.file ? o.file : "");
            printf("tokens      %s: %lld rows × %lld, %lld scored\n", o.tokens_path, (long long)r.rows,
                   (long long)r.seq_len, (long long)r.tokens);
            printf("nll         %.6f nats/token\n", r.nll);
            printf("perplexity  %.4f\n", r.ppl);
            if (r.has_ref) {
                printf("reference   %s\n", o.ref_dir);
                printf("kl_mean     %.6g nats/token\n", r.kl_mean);
                printf("kl_p99      %.6g nats/token\n", r.kl_p99);
                printf("top1        %.4f\n", r.top1);
            }
            printf("throughput  %.0f tokens/s (%d threads, %s compute)\n", r.tokens_per_s,
                   qs_backend_cpu()->threads(qs_backend_cpu()->ctx), qs_compute_dtype_name(r.compute));
        }
        fflush(stdout);
        if (report) {
            qs_report_eval row = {o.model_dir, o.file, o.tokens_path, o.ref_dir, &r};
            if (qs_report_add_eval(report, &row, &err) != QS_OK) return qs_cli_report("eval", &err);
        }
    }
    if (report) {
        char written[4200];
        if (qs_report_generate(report, NULL, written, sizeof written, &err) != QS_OK)
            return qs_cli_report("eval", &err);
        fprintf(stderr, "qshard eval: %d row(s) added to the report %s\n", n_sets, written);
    }
    return 0;
}
