/* cmd_tokenize.c — `qshard tokenize`: calibration / eval token sets from text
 * with the model's own tokenizer.json (see docs/tokenizer.md).
 *
 * The text becomes one id stream (HF encode(text, add_special_tokens=False)),
 * or with --docs one stream of [BOS] + encode(paragraph) per blank-line
 * separated paragraph. Rows are then cut from the stream: consecutive rows of
 * L tokens (the perplexity protocol; the incomplete tail is dropped), or with
 * --rows N --seed S, N windows at random starts (the calibration protocol).
 * --bos makes every row BOS + L-1 stream tokens.
 */
#include <errno.h>
#include <getopt.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/tensor.h"
#include "pipeline/cli/cli.h"
#include "pipeline/formats/token_set.h"
#include "pipeline/formats/tokenizer/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard tokenize --tokenizer tokenizer.json --text FILE --out T.npy|T.h5\n"
            "                       [--seq-len L] [--rows N [--seed S]] [--bos] [--docs] [--no-prefix-space]\n\n"
            "  --tokenizer PATH    HF tokenizer.json (BPE: sentencepiece or byte-level style)\n"
            "  --text FILE         UTF-8 text\n"
            "  --out PATH          token set [rows, L] int32: .npy, or .h5/.hdf5 (dataset input_ids)\n"
            "  --seq-len L         tokens per row (default 512)\n"
            "  --rows N            N rows: the first N consecutive rows, or with --seed N random windows\n"
            "  --seed S            random windows, deterministic in S (splitmix64; docs/tokenizer.md)\n"
            "  --bos               every row starts with the BOS id, then L-1 text tokens\n"
            "  --docs              split the text at blank lines; each paragraph is encoded on its own\n"
            "                      and preceded by BOS in the stream (how TinyStories models were trained)\n"
            "  --no-prefix-space   no leading space / \"▁\" at the start of the text (or of each paragraph)\n\n"
            "Without --rows the whole stream is cut into consecutive rows; the incomplete tail is dropped.\n");
}

static qs_status read_text(const char *path, char **out, size_t *len, qs_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return qs_error_set(err, errno == ENOENT ? QS_ERR_INPUT : QS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0, r;
    char *p = malloc(cap + 1);
    while (p && (r = fread(p + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *q = realloc(p, 2 * cap + 1);
            if (!q) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (!p) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
    if (bad) {
        free(p);
        return qs_error_set(err, QS_ERR_IO, "%s: read failed", path);
    }
    p[n] = '\0';
    *out = p;
    *len = n;
    return QS_OK;
}

/* bos_token from a tokenizer_config.json next to the tokenizer, if there is one. */
static int32_t config_bos(const char *tok_path, const qs_tokenizer *tok)
{
    char cfg[4096];
    const char *slash = strrchr(tok_path, '/');
    int dirlen = slash ? (int)(slash - tok_path) : 1;
    snprintf(cfg, sizeof cfg, "%.*s/tokenizer_config.json", dirlen, slash ? tok_path : ".");
    char *text;
    size_t n;
    qs_error e = {0};
    if (read_text(cfg, &text, &n, &e) != QS_OK) return -1;
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "bos_token");
    if (cJSON_IsObject(b)) b = cJSON_GetObjectItemCaseSensitive(b, "content");
    int32_t id = cJSON_IsString(b) ? qs_tokenizer_token_to_id(tok, b->valuestring) : -1;
    cJSON_Delete(j);
    return id;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (rejection sampling). */
static uint64_t uniform_below(uint64_t *s, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = splitmix64(s);
    while (x >= limit);
    return x % n;
}

/* Encodes each blank-line separated paragraph (stripped) as BOS + its ids. */
static qs_status encode_docs(const qs_tokenizer *tok, const char *text, size_t len, int32_t bos,
                             const qs_encode_options *opts, qs_token_ids *ids, size_t *ndocs, qs_error *err)
{
    size_t i = 0;
    *ndocs = 0;
    while (i < len) {
        /* a paragraph ends at a line that is empty or only spaces/tabs/CR */
        size_t start = i, end = len, next = len;
        for (size_t j = i; j < len; j++) {
            if (text[j] != '\n') continue;
            size_t k = j + 1;
            while (k < len && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r')) k++;
            if (k < len && text[k] == '\n') {
                end = j;
                next = k + 1;
                break;
            }
        }
        while (start < end && (text[start] == ' ' || text[start] == '\n' || text[start] == '\t' || text[start] == '\r'))
            start++;
        while (end > start && (text[end - 1] == ' ' || text[end - 1] == '\n' || text[end - 1] == '\t' ||
                               text[end - 1] == '\r'))
            end--;
        if (end > start) {
            qs_token_ids one = {0};
            if (qs_tokenizer_encode(tok, text + start, end - start, opts, &one, err) != QS_OK) {
                qs_token_ids_free(&one);
                return qs_error_prefix(err, "paragraph at byte %zu", start);
            }
            size_t need = ids->n + one.n + 1;
            if (need > ids->cap) {
                size_t cap = ids->cap ? ids->cap : 1024;
                while (cap < need) cap *= 2;
                int32_t *p = realloc(ids->ids, cap * sizeof *p);
                if (!p) {
                    qs_token_ids_free(&one);
                    return qs_error_set(err, QS_ERR_NOMEM, "out of memory");
                }
                ids->ids = p;
                ids->cap = cap;
            }
            ids->ids[ids->n++] = bos;
            if (one.n) memcpy(ids->ids + ids->n, one.ids, one.n * sizeof *one.ids);
            ids->n += one.n;
            qs_token_ids_free(&one);
            (*ndocs)++;
        }
        i = next;
    }
    return QS_OK;
}

int qs_cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tokenizer", required_argument, NULL, 't'}, {"text", required_argument, NULL, 'x'},
        {"out", required_argument, NULL, 'o'},       {"seq-len", required_argument, NULL, 'L'},
        {"rows", required_argument, NULL, 'n'},      {"seed", required_argument, NULL, 's'},
        {"bos", no_argument, NULL, 'b'},             {"docs", no_argument, NULL, 'd'},
        {"no-prefix-space", no_argument, NULL, 'P'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *tok_path = NULL, *text_path = NULL, *out_path = NULL, *seed_s = NULL;
    long seq_len = 512, rows = -1;
    bool bos_flag = false, docs = false, no_prefix = false;
    qs_error err = {0};
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 't': tok_path = optarg; break;
        case 'x': text_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'L':
            if (qs_parse_long("--seq-len", optarg, 1, 1L << 24, &seq_len, &err) != QS_OK)
                return qs_cli_report("tokenize", &err);
            break;
        case 'n':
            if (qs_parse_long("--rows", optarg, 1, 1L << 30, &rows, &err) != QS_OK) return qs_cli_report("tokenize", &err);
            break;
        case 's': seed_s = optarg; break;
        case 'b': bos_flag = true; break;
        case 'd': docs = true; break;
        case 'P': no_prefix = true; break;
        case 'h': usage(stdout); return 0;
        case ':': return qs_cli_usage_error("tokenize", "%s needs a value", argv[optind - 1]);
        default: return qs_cli_usage_error("tokenize", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return qs_cli_usage_error("tokenize", "unexpected argument '%s'", argv[optind]);
    if (!tok_path || !text_path || !out_path)
        return qs_cli_usage_error("tokenize", "--tokenizer, --text and --out are required");
    uint64_t seed = 0;
    if (seed_s) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(seed_s, &end, 10);
        if (!*seed_s || *end || errno || seed_s[0] == '-')
            return qs_cli_usage_error("tokenize", "--seed: expected a non-negative integer, got '%s'", seed_s);
        seed = v;
        if (rows < 0) return qs_cli_usage_error("tokenize", "--seed needs --rows N (the number of random windows)");
    }
    if (bos_flag && seq_len < 2) return qs_cli_usage_error("tokenize", "--bos needs --seq-len of at least 2");
    qs_token_set_format fmt;
    if (qs_token_set_format_of(out_path, &fmt, &err) != QS_OK) return qs_cli_report("tokenize", &err);

    qs_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len = 0;
    qs_token_ids ids = {0};
    qs_tensor out = {0};
    int rc = 0;
    if (qs_tokenizer_load(tok_path, &tok, &err) != QS_OK || read_text(text_path, &text, &len, &err) != QS_OK) {
        rc = qs_cli_report("tokenize", &err);
        goto done;
    }
    int32_t bos = -1;
    if (bos_flag || docs) {
        bos = config_bos(tok_path, tok);
        if (bos < 0) bos = qs_tokenizer_bos_id(tok);
        if (bos < 0) {
            qs_error_set(&err, QS_ERR_INPUT,
                         "%s: no BOS token known (no post-processor template, tokenizer_config.json bos_token or "
                         "added token like <s>) for %s",
                         tok_path, bos_flag ? "--bos" : "--docs");
            rc = qs_cli_report("tokenize", &err);
            goto done;
        }
    }
    qs_encode_options eo = {.add_special_tokens = false, .no_prefix_space = no_prefix};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t ndocs = 0;
    qs_status st = docs ? encode_docs(tok, text, len, bos, &eo, &ids, &ndocs, &err)
                        : qs_tokenizer_encode(tok, text, len, &eo, &ids, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st != QS_OK) {
        qs_error_prefix(&err, "%s", text_path);
        rc = qs_cli_report("tokenize", &err);
        goto done;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);

    size_t w = (size_t)seq_len - (bos_flag ? 1 : 0); /* stream tokens per row */
    size_t avail = ids.n / w;
    size_t nrows = rows > 0 ? (size_t)rows : avail;
    bool random = seed_s != NULL;
    if ((random && ids.n < w) || (!random && (nrows == 0 || nrows > avail))) {
        qs_error_set(&err, QS_ERR_INPUT,
                     "%s: text too short: %zu tokens give %zu row(s) of %zu text tokens (seq-len %ld%s), %s", text_path,
                     ids.n, avail, w, seq_len, bos_flag ? " with --bos" : "",
                     random ? "need at least one window" : rows > 0 ? "--rows asks for more" : "need at least one");
        rc = qs_cli_report("tokenize", &err);
        goto done;
    }
    int64_t shape[2] = {(int64_t)nrows, (int64_t)seq_len};
    if (qs_tensor_init(&out, QS_DTYPE_I32, 2, shape, &err) != QS_OK) {
        rc = qs_cli_report("tokenize", &err);
        goto done;
    }
    int32_t *o = out.data;
    uint64_t rng = seed;
    for (size_t r = 0; r < nrows; r++) {
        size_t start = random ? (size_t)uniform_below(&rng, (uint64_t)(ids.n - w + 1)) : r * w;
        int32_t *row = o + r * (size_t)seq_len;
        if (bos_flag) *row++ = bos;
        memcpy(row, ids.ids + start, w * sizeof *row);
    }
    if (qs_token_set_write(out_path, &out, &err) != QS_OK) {
        rc = qs_cli_report("tokenize", &err);
        goto done;
    }
    printf("tokenize: %zu bytes -> %zu tokens in %.3f s (%.2f MB/s)\n", len, ids.n, secs,
           secs > 0 ? (double)len / 1e6 / secs : 0.0);
    if (docs) printf("tokenize: %zu paragraphs, each as BOS + its tokens\n", ndocs);
    if (random)
        printf("tokenize: wrote %zu random windows [%zu, %ld] (seed %llu) to %s\n", nrows, nrows, seq_len,
               (unsigned long long)seed, out_path);
    else
        printf("tokenize: wrote %zu rows [%zu, %ld] to %s; %zu tokens dropped (%s)\n", nrows, nrows, seq_len, out_path,
               ids.n - nrows * w, rows > 0 ? "beyond --rows" : "the incomplete tail");
done:
    qs_tensor_free(&out);
    qs_token_ids_free(&ids);
    free(text);
    qs_tokenizer_free(tok);
    return rc;
}
