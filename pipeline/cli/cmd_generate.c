/* cmd_generate.c — `qshard generate`: text from a model, greedy or sampled.
 *
 * Two uses: see what a (quantized) model writes after a prompt (greedy by
 * default), and data-free calibration — N stories the model samples itself
 * from BOS with a temperature and a seed, written as text (stories separated
 * by a blank line) for `qshard tokenize --docs` to turn into a token set.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "pipeline/cli/cli.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/strbuf.h"
#include "pipeline/formats/tokenizer/tokenizer.h"
#include "pipeline/generate.h"
#include "workers/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard generate --model DIR [--prompt TEXT] [--max-new N] [--temperature T] [--seed S]\n"
            "                       [--stories N] [--out FILE] [--tokenizer tokenizer.json] [--no-prefix-space]\n\n"
            "Continues --prompt (default: the BOS token alone) with the model and prints the text.\n"
            "With --stories N, samples N independent continuations (data-free calibration text:\n"
            "stories separated by a blank line; `qshard tokenize --docs` makes a token set of them).\n\n"
            "  --model DIR        HF model directory or a qshard GPTQ export\n"
            "  --prompt TEXT      text to continue (encoded with the model's tokenizer, BOS added as\n"
            "                     its post-processor says)\n"
            "  --max-new N        new tokens per sequence (default 40); ends early at EOS\n"
            "  --temperature T    0: greedy (default without --stories); sampling from\n"
            "                     softmax(logits / T) otherwise (default 1 with --stories)\n"
            "  --seed S           sampling seed (default 0); each story has its own stream\n"
            "  --stories N        N sequences (default 1)\n"
            "  --batch B          sequences decoded together (default 16)\n"
            "  --out FILE         write the text to FILE (default: stdout)\n"
            "  --tokenizer PATH   tokenizer.json (default: DIR/tokenizer.json)\n"
            "  --no-prefix-space  no leading space / \"▁\" before the prompt (TinyStories models were\n"
            "                     trained with BOS directly before the story)\n"
            "  --ids              print token ids instead of text\n");
}

int qs_cmd_generate(int argc, char **argv)
{
    if (qs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    enum { OPT_NO_PREFIX = 1000, OPT_IDS, OPT_BATCH };
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},      {"prompt", required_argument, NULL, 'p'},
        {"max-new", required_argument, NULL, 'n'},    {"temperature", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 's'},       {"stories", required_argument, NULL, 'k'},
        {"out", required_argument, NULL, 'o'},        {"tokenizer", required_argument, NULL, 'z'},
        {"no-prefix-space", no_argument, NULL, OPT_NO_PREFIX}, {"ids", no_argument, NULL, OPT_IDS},
        {"batch", required_argument, NULL, OPT_BATCH}, {NULL, 0, NULL, 0},
    };
    const char *model_dir = NULL, *prompt = NULL, *out_path = NULL, *tok_path = NULL;
    long max_new = 40, stories = 1, seed = 0, batch = 16;
    double temperature = -1;
    bool no_prefix = false, print_ids = false, stories_given = false;
    qs_error err;
    qs_error_clear(&err);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'p': prompt = optarg; break;
        case 'o': out_path = optarg; break;
        case 'z': tok_path = optarg; break;
        case 'n':
            if (qs_parse_long("--max-new", optarg, 0, 1 << 20, &max_new, &err) != QS_OK)
                return qs_cli_usage_error("generate", "%s", err.msg);
            break;
        case 'k':
            if (qs_parse_long("--stories", optarg, 1, 1 << 20, &stories, &err) != QS_OK)
                return qs_cli_usage_error("generate", "%s", err.msg);
            stories_given = true;
            break;
        case 's':
            if (qs_parse_long("--seed", optarg, 0, 0x7fffffffL, &seed, &err) != QS_OK)
                return qs_cli_usage_error("generate", "%s", err.msg);
            break;
        case 't':
            if (qs_parse_double("--temperature", optarg, &temperature, &err) != QS_OK || temperature < 0)
                return qs_cli_usage_error("generate", "--temperature: expected a number >= 0, got '%s'", optarg);
            break;
        case OPT_BATCH:
            if (qs_parse_long("--batch", optarg, 1, 1 << 16, &batch, &err) != QS_OK)
                return qs_cli_usage_error("generate", "%s", err.msg);
            break;
        case OPT_NO_PREFIX: no_prefix = true; break;
        case OPT_IDS: print_ids = true; break;
        case ':': return qs_cli_usage_error("generate", "%s needs a value", argv[optind - 1]);
        default: return qs_cli_usage_error("generate", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return qs_cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    if (!model_dir) return qs_cli_usage_error("generate", "--model DIR is required");
    if (temperature < 0) temperature = stories_given ? 1.0 : 0.0;

    char tpath[4200];
    if (tok_path) snprintf(tpath, sizeof tpath, "%s", tok_path);
    else snprintf(tpath, sizeof tpath, "%s/tokenizer.json", model_dir);
    qs_tokenizer *tok = NULL;
    qs_model model;
    memset(&model, 0, sizeof model);
    bool have_model = false;
    qs_token_ids ids = {0};
    int32_t *out = NULL;
    int64_t *lens = NULL;
    qs_strbuf text = {0};
    int rc = 0;
    if (qs_tokenizer_load(tpath, &tok, &err) != QS_OK) goto fail;
    if (qs_model_load(&model, model_dir, &err) != QS_OK) goto fail;
    have_model = true;
    qs_encode_options eo = {true, no_prefix};
    if (prompt && qs_tokenizer_encode(tok, prompt, strlen(prompt), &eo, &ids, &err) != QS_OK) goto fail;
    if (ids.n == 0 || ids.ids[0] != model.cfg.bos_id) {
        /* a prompt needs something to stand on: BOS first when the model has one and the tokenizer did not add it */
        if (model.cfg.bos_id < 0 && ids.n == 0) {
            qs_error_set(&err, QS_ERR_INPUT, "%s has no bos_token_id: give --prompt", model_dir);
            goto fail;
        }
        if (model.cfg.bos_id >= 0) {
            qs_token_ids with = {0};
            with.ids = malloc(sizeof(int32_t) * (ids.n + 1));
            if (!with.ids) {
                qs_error_set(&err, QS_ERR_NOMEM, "generate: prompt");
                goto fail;
            }
            with.ids[0] = model.cfg.bos_id;
            if (ids.n) memcpy(with.ids + 1, ids.ids, sizeof(int32_t) * ids.n);
            with.n = with.cap = ids.n + 1;
            qs_token_ids_free(&ids);
            ids = with;
        }
    }
    int64_t width = (int64_t)ids.n + max_new;
    out = malloc(sizeof(int32_t) * (size_t)(width * stories));
    lens = malloc(sizeof(int64_t) * (size_t)stories);
    if (!out || !lens) {
        qs_error_set(&err, QS_ERR_NOMEM, "generate: %ld × %lld tokens", stories, (long long)width);
        goto fail;
    }
    qs_sample_opts so = {temperature, (uint64_t)seed, model.cfg.eos_id, batch};
    if (qs_generate_sample(&model, qs_backend_cpu(), ids.ids, (int64_t)ids.n, stories, max_new, &so, out, lens, &err) !=
        QS_OK)
        goto fail;
    for (long r = 0; r < stories; r++) {
        const int32_t *row = out + r * width;
        if (r) qs_strbuf_str(&text, print_ids ? "\n" : "\n\n");
        if (print_ids) {
            for (int64_t i = 0; i < lens[r]; i++) qs_strbuf_fmt(&text, "%s%d", i ? " " : "", row[i]);
            continue;
        }
        char *s = NULL;
        size_t n = 0;
        if (qs_tokenizer_decode(tok, row, (size_t)lens[r], true, &s, &n, &err) != QS_OK) goto fail;
        /* one story per paragraph: blank lines inside a story would split it in two */
        char *w = s;
        for (char *p = s; *p; p++) {
            if (*p == '\n' && w > s && w[-1] == '\n') continue;
            *w++ = *p;
        }
        while (w > s && (w[-1] == '\n' || w[-1] == ' ')) w--;
        qs_strbuf_put(&text, s, (size_t)(w - s));
        free(s);
    }
    qs_strbuf_str(&text, "\n");
    if (text.oom) {
        qs_error_set(&err, QS_ERR_NOMEM, "generate: the text");
        goto fail;
    }
    if (out_path) {
        if (qs_write_file_durable(out_path, text.p, text.len, &err) != QS_OK) goto fail;
        fprintf(stderr, "qshard generate: %ld %s (temperature %g, seed %ld) written to %s\n", stories,
                stories == 1 ? "sequence" : "sequences", temperature, seed, out_path);
    } else {
        fwrite(text.p, 1, text.len, stdout);
    }
    goto done;
fail:
    rc = qs_cli_report("generate", &err);
done:
    qs_strbuf_free(&text);
    free(out);
    free(lens);
    qs_token_ids_free(&ids);
    if (have_model) qs_model_free(&model);
    qs_tokenizer_free(tok);
    return rc;
}
