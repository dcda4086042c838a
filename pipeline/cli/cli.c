/* cli.c — subcommand dispatch and shared option helpers. */
#include "pipeline/cli/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/threads.h"

const qs_command qs_commands[] = {
    {"inspect", qs_cmd_inspect, "what is in a checkpoint: architecture, blocks, tensors, bytes"},
    {"synth", qs_cmd_synth, "write a deterministic synthetic HF checkpoint (llama/opt/bloom)"},
    {"convert", qs_cmd_convert, "convert a llama2.c checkpoint to an HF llama directory"},
    {"layer", qs_cmd_layer, "quantize one weight matrix (RTN/GPTQ) from .npy files"},
    {"tokenize", qs_cmd_tokenize, "make calibration/eval token sets with a tokenizer.json"},
    {"eval", qs_cmd_eval, "perplexity, KL divergence and top-1 agreement of a model"},
    {"generate", qs_cmd_generate, "text from a model: greedy after a prompt, or sampled stories (calibration)"},
    {"run", qs_cmd_run, "quantize a model (under mpirun: layer-wise across ranks)"},
    {"plan", qs_cmd_plan, "per-rank block ranges, memory and time for a cluster"},
    {"export", qs_cmd_export, "re-export a finished work dir (gptq, gguf, hdf5)"},
    {"submit", qs_cmd_submit, "submit a job file to Slurm (requeues and resumes itself)"},
    {"status", qs_cmd_status, "progress of a work dir: blocks done, journal, Slurm job"},
    {"report", qs_cmd_report, "the HTML run report of a work dir (finished or not)"},
    {NULL, NULL, NULL},
};

static void print_help(FILE *f)
{
    fprintf(f,
            "qshard %s — distributed GPTQ quantization for very large language models\n\n"
            "usage: qshard COMMAND [options]     (qshard COMMAND --help for its options)\n\n"
            "commands:\n",
            "0.1.0");
    for (const qs_command *c = qs_commands; c->name; c++) fprintf(f, "  %-10s %s\n", c->name, c->summary);
}

int qs_cli_main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("qshard 0.1.0\n");
        return 0;
    }
    /* OpenMP and OpenBLAS: one thread per CPU this process may run on */
    qs_cpu_threads th;
    qs_cpu_threads_init(&th);
    for (const qs_command *c = qs_commands; c->name; c++)
        if (strcmp(argv[1], c->name) == 0) return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "qshard: error: unknown command '%s' (qshard --help lists them)\n", argv[1]);
    return 2;
}

int qs_cli_report(const char *cmd, const qs_error *err)
{
    fprintf(stderr, "qshard %s: error: %s\n", cmd, err->msg[0] ? err->msg : qs_status_name(err->code));
    int code = qs_status_exit_code(err->code);
    return code ? code : 1;
}

int qs_cli_device(const char *cmd, const char *value, const qs_comm_i *comm, bool gpu_ready, qs_device_choice *out)
{
    qs_error err;
    qs_error_clear(&err);
    const bool speaker = !comm || comm->rank == 0;
    qs_device_kind kind;
    if (qs_device_parse(value, "--device", &kind, &err) != QS_OK) {
        int code = qs_status_exit_code(err.code);
        return speaker ? qs_cli_report(cmd, &err) : code;
    }
    qs_status st = qs_device_select(kind, comm, out, &err);
    if (st != QS_OK) {
        /* the lowest failing rank says why; the others exit quietly with its code */
        if (strstr(err.msg, "failed during set-up")) return qs_status_exit_code(st) ? qs_status_exit_code(st) : 1;
        if (comm && comm->size > 1) qs_error_prefix(&err, "rank %d", comm->rank);
        return qs_cli_report(cmd, &err);
    }
    if (out->kind == QS_DEVICE_CUDA && !gpu_ready) {
        if (kind == QS_DEVICE_AUTO) {
            if (speaker)
                fprintf(stderr, "qshard %s: note: --device auto: computing on the CPU (the block forward does not "
                                "run on the GPU yet, docs/gpu.md)\n", cmd);
            memset(out, 0, sizeof *out);
            out->kind = QS_DEVICE_CPU;
            out->index = -1;
            return -1;
        }
        qs_error_set(&err, QS_ERR_UNSUPPORTED,
                     "--device cuda: found cuda:%d (%s), but `qshard %s` does not run its block forward on the GPU "
                     "yet (docs/gpu.md): use --device cpu or auto",
                     out->index, out->info.name, cmd);
        int code = qs_status_exit_code(err.code);
        return speaker ? qs_cli_report(cmd, &err) : (code ? code : 1);
    }
    return -1;
}

int qs_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[QS_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "qshard %s: error: %s (qshard %s --help)\n", cmd, msg, cmd);
    return 2;
}

bool qs_cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return true;
    return false;
}

