/* tokenizer_tool.c — test-only driver for pipeline/tokenizer: lets the Python
 * parity tests compare qs_tokenizer_encode/decode with HF `tokenizers` on
 * many strings in one process.
 *
 *   tokenizer_tool TOKENIZER.json < request.json > reply.json
 *   request: {"encode": [str...], "add_special_tokens": bool, "no_prefix_space": bool,
 *             "decode": [[id...]...], "skip_special_tokens": bool}
 *   reply:   {"encode": [[id...] | {"error": msg}...], "decode": [[utf-8 byte...]...],
 *             "bos": id, "eos": id, "vocab_size": n}
 *   tokenizer_tool TOKENIZER.json --bench TEXT_FILE   (prints tokens and MB/s)
 *   tokenizer_tool --read-set T.npy|T.h5 [VOCAB]     (qs_token_set_read: {"shape", "ids"} or {"error"})
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline/formats/token_set.h"
#include "pipeline/formats/tokenizer/tokenizer.h"

static char *read_all(FILE *f, size_t *n)
{
    size_t cap = 1 << 16, len = 0;
    char *p = malloc(cap);
    size_t r;
    while (p && (r = fread(p + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) p = realloc(p, cap *= 2);
    }
    *n = len;
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tokenizer_tool TOKENIZER.json [--bench TEXT] < request.json\n");
        return 2;
    }
    qs_error err = {0};
    if (strcmp(argv[1], "--read-set") == 0 && argc >= 3) {
        qs_tensor t = {0};
        bool got = qs_token_set_read(argv[2], &t, &err) == QS_OK;
        if (!got || (argc == 4 && qs_token_set_check_vocab(argv[2], &t, atoll(argv[3]), &err) != QS_OK)) {
            if (err.code == QS_OK) err.code = QS_ERR_INTERNAL;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "error", err.msg);
            cJSON_AddNumberToObject(o, "code", (int)err.code);
            char *j = cJSON_PrintUnformatted(o);
            puts(j);
            free(j);
            cJSON_Delete(o);
            if (got) qs_tensor_free(&t);
            return 0;
        }
        printf("{\"shape\": [%lld, %lld], \"dtype\": \"%s\", \"ids\": [", (long long)t.shape[0],
               (long long)t.shape[1], qs_dtype_name(t.dtype));
        const int32_t *v = t.data;
        for (int64_t i = 0; i < qs_tensor_numel(&t); i++) printf("%s%d", i ? "," : "", (int)v[i]);
        printf("]}\n");
        qs_tensor_free(&t);
        return 0;
    }
    qs_tokenizer *tok;
    if (qs_tokenizer_load(argv[1], &tok, &err) != QS_OK) {
        printf("{\"load_error\": ");
        cJSON *s = cJSON_CreateString(err.msg);
        char *j = cJSON_PrintUnformatted(s);
        printf("%s, \"code\": %d}\n", j, (int)err.code);
        free(j);
        cJSON_Delete(s);
        return 0;
    }
    if (argc == 4 && strcmp(argv[2], "--bench") == 0) {
        FILE *f = fopen(argv[3], "rb");
        if (!f) return 2;
        size_t n;
        char *text = read_all(f, &n);
        fclose(f);
        double best = 1e30;
        size_t ntok = 0;
        for (int rep = 0; rep < 3; rep++) {
            qs_token_ids ids = {0};
            double t0 = now();
            if (qs_tokenizer_encode(tok, text, n, NULL, &ids, &err) != QS_OK) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            double dt = now() - t0;
            if (dt < best) best = dt;
            ntok = ids.n;
            qs_token_ids_free(&ids);
        }
        printf("{\"bytes\": %zu, \"tokens\": %zu, \"seconds\": %.4f, \"mb_per_s\": %.2f}\n", n, ntok, best,
               (double)n / 1e6 / best);
        free(text);
        qs_tokenizer_free(tok);
        return 0;
    }
    size_t n;
    char *req_text = read_all(stdin, &n);
    cJSON *req = cJSON_ParseWithLength(req_text, n);
    free(req_text);
    if (!req) {
        fprintf(stderr, "tokenizer_tool: bad request JSON\n");
        return 2;
    }
    cJSON *reply = cJSON_CreateObject();
    qs_encode_options opts = {
        .add_special_tokens = cJSON_IsTrue(cJSON_GetObjectItem(req, "add_special_tokens")),
        .no_prefix_space = cJSON_IsTrue(cJSON_GetObjectItem(req, "no_prefix_space")),
    };
    cJSON *enc = cJSON_AddArrayToObject(reply, "encode"), *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(req, "encode")) {
        qs_token_ids ids = {0};
        const char *s = cJSON_GetStringValue(it);
        if (qs_tokenizer_encode(tok, s, strlen(s), &opts, &ids, &err) != QS_OK) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "error", err.msg);
            cJSON_AddItemToArray(enc, e);
        } else {
            cJSON *a = cJSON_CreateArray();
            for (size_t i = 0; i < ids.n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids.ids[i]));
            cJSON_AddItemToArray(enc, a);
        }
        qs_token_ids_free(&ids);
    }
    bool skip = cJSON_IsTrue(cJSON_GetObjectItem(req, "skip_special_tokens"));
    cJSON *dec = cJSON_AddArrayToObject(reply, "decode");
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(req, "decode")) {
        int m = cJSON_GetArraySize(it);
        int32_t *ids = malloc(((size_t)m + 1) * sizeof *ids);
        for (int i = 0; i < m; i++) ids[i] = (int32_t)cJSON_GetArrayItem(it, i)->valuedouble;
        char *out;
        size_t len;
        if (qs_tokenizer_decode(tok, ids, (size_t)m, skip, &out, &len, &err) != QS_OK) {
            cJSON_AddItemToArray(dec, cJSON_CreateNull());
        } else {
            /* as bytes: the text may hold NULs, which cJSON strings cannot */
            cJSON *b = cJSON_CreateArray();
            for (size_t i = 0; i < len; i++) cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)out[i]));
            cJSON_AddItemToArray(dec, b);
            free(out);
        }
        free(ids);
    }
    cJSON_AddNumberToObject(reply, "bos", qs_tokenizer_bos_id(tok));
    cJSON_AddNumberToObject(reply, "eos", qs_tokenizer_eos_id(tok));
    cJSON_AddNumberToObject(reply, "vocab_size", qs_tokenizer_vocab_size(tok));
    char *j = cJSON_PrintUnformatted(reply);
    puts(j);
    free(j);
    cJSON_Delete(reply);
    cJSON_Delete(req);
    qs_tokenizer_free(tok);
    return 0;
}
