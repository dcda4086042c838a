/* cmd_export.c — `qshard export`: re-export a finished work dir without recomputing. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "pipeline/cli/cli.h"
#include "pipeline/export/export.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: qshard export --work WORKDIR --format gptq|gguf|hdf5 --out PATH [options]\n\n"
               "Writes an export from the block checkpoints of a finished run (no recomputation).\n"
               "  --out PATH                  a directory for gptq, a file for gguf and hdf5\n"
               "  --checkpoint-format gptq|gptq_v2   gptq: zero-points stored as zero-1 (v1, default) or as is\n"
               "  --max-shard-size SIZE       gptq: shard size (default 4GiB)\n"
               "  --gguf-fallback none|f16    gguf: write linears GGUF cannot hold exactly as F16\n");
}

int qs_cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {
        {"work", required_argument, 0, 'w'},         {"format", required_argument, 0, 'f'},
        {"out", required_argument, 0, 'o'},          {"checkpoint-format", required_argument, 0, 'c'},
        {"max-shard-size", required_argument, 0, 's'}, {"gguf-fallback", required_argument, 0, 'g'},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0},
    };
    const char *work = NULL, *out = NULL, *format = NULL;
    qs_export_opts o;
    memset(&o, 0, sizeof o);
    qs_error err = {0};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'w': work = optarg; break;
        case 'o': out = optarg; break;
        case 'f': format = optarg; break;
        case 'c':
            if (!strcmp(optarg, "gptq_v2")) o.gptq_v2 = true;
            else if (strcmp(optarg, "gptq")) return qs_cli_usage_error("export", "--checkpoint-format: expected gptq or gptq_v2");
            break;
        case 's': {
            uint64_t b;
            if (qs_parse_bytes("--max-shard-size", optarg, &b, &err) != QS_OK) return qs_cli_report("export", &err);
            o.max_shard_size = b;
            break;
        }
        case 'g':
            if (!strcmp(optarg, "f16")) o.gguf_fallback_f16 = true;
            else if (strcmp(optarg, "none")) return qs_cli_usage_error("export", "--gguf-fallback: expected none or f16");
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!work || !out || !format) return qs_cli_usage_error("export", "--work, --format and --out are required");
    if (qs_export_parse_format(format, &o.format, &err) != QS_OK) return qs_cli_report("export", &err);
    if (qs_export_from_work(work, out, &o, &err) != QS_OK) return qs_cli_report("export", &err);
    fprintf(stderr, "qshard export: wrote %s\n", out);
    return 0;
}
