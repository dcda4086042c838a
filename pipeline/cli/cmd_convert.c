/* cmd_convert.c — `qshard convert`: a llama2.c checkpoint → an HF llama directory. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "pipeline/cli/cli.h"
#include "pipeline/formats/llama2c.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard convert --from llama2c MODEL.bin --out DIR [--tokenizer tok.bin]\n\n"
            "Converts a llama2.c legacy (version 0) checkpoint into an HF llama directory:\n"
            "config.json and model.safetensors (F32). The rows of wq and wk are reordered from\n"
            "llama2.c's interleaved RoPE pairs to HF's rotate-half layout, so the converted model\n"
            "computes the same function; the legacy RoPE table is dropped.\n\n"
            "options:\n"
            "  --from llama2c   the source format (the only one so far)\n"
            "  --out DIR        output directory (created)\n"
            "  --tokenizer F    llama2.c tokenizer (accepted; not converted yet)\n");
}

int qs_cmd_convert(int argc, char **argv)
{
    if (qs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    enum { O_FROM = 256, O_OUT, O_TOK };
    static const struct option opts[] = {{"from", required_argument, 0, O_FROM},
                                         {"out", required_argument, 0, O_OUT},
                                         {"tokenizer", required_argument, 0, O_TOK},
                                         {0, 0, 0, 0}};
    const char *from = NULL, *out = NULL;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_FROM: from = optarg; break;
        case O_OUT: out = optarg; break;
        case O_TOK: break; /* tokenizer conversion is not done yet */
        default: return qs_cli_usage_error("convert", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (!from) return qs_cli_usage_error("convert", "--from is required (llama2c)");
    if (strcmp(from, "llama2c") != 0)
        return qs_cli_usage_error("convert", "--from: '%s' is not a supported format (llama2c)", from);
    if (optind != argc - 1)
        return qs_cli_usage_error("convert", "expected exactly one MODEL.bin, got %d", argc - optind);
    if (!out) return qs_cli_usage_error("convert", "--out DIR is required");

    qs_error err;
    qs_error_clear(&err);
    qs_llama2c m;
    if (qs_llama2c_open(argv[optind], &m, &err) != QS_OK) return qs_cli_report("convert", &err);
    qs_status st = qs_llama2c_to_hf(&m, out, &err);
    if (st == QS_OK)
        printf("wrote %s: llama, %d layers, dim %d, %d/%d heads, hidden %d, vocab %d (%s), seq_len %d\n", out,
               m.n_layers, m.dim, m.n_heads, m.n_kv_heads, m.hidden_dim, m.vocab,
               m.shared ? "tied classifier" : "own classifier", m.seq_len);
    qs_llama2c_close(&m);
    return st == QS_OK ? 0 : qs_cli_report("convert", &err);
}
