/* tok_load.c — a loaded tokenizer: qs_tokenizer_parse reads the JSON and
 * hands each section to its part's loader (model, normalizer, pre-tokenizer,
 * decoder, post-processor, added tokens), then works out the vocabulary size
 * and BOS/EOS; qs_tokenizer_load reads the file; qs_tokenizer_free; and the
 * lookups on a loaded tokenizer (token <-> id, BOS, EOS, special). */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>

qs_status qs_tokenizer_parse(const char *json, size_t len, const char *name, qs_tokenizer **out, qs_error *err)
{
    *out = NULL;
    qs_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", name);
    t->name = strdup(name ? name : "tokenizer.json");
    if (!t->name) {
        free(t);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", name);
    }
    qs_status st = QS_OK;
    re_state rs = {0};
    const char *end = NULL;
    cJSON *root = NULL;
    /* JSON is UTF-8 text, and every string of the file can reach the text
     * being encoded (a Replace normalizer's content, a Prepend, an added
     * token): the regexes match it with PCRE2_NO_UTF_CHECK, so an invalid
     * byte there is undefined behaviour in PCRE2's JIT (the fuzzer found a
     * SEGV). Checked once here; cJSON's \u escapes decode to valid UTF-8. */
    size_t bad = qs_utf8_check(json, len);
    if (bad != len) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: byte %zu is not UTF-8 (a tokenizer.json is UTF-8 JSON text)", t->name,
                          bad);
        goto done;
    }
    root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        size_t line = 1;
        for (size_t i = 0; i < off && i < len; i++) line += json[i] == '\n';
        st = qs_error_set(err, QS_ERR_INPUT, "%s: malformed JSON near byte %zu (line %zu)", t->name, off, line);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: expected a JSON object (an HF tokenizer.json)", t->name);
        goto done;
    }
    if (!qs_tok_re_state_init(&rs)) {
        st = nomem(t, err);
        goto done;
    }
    if ((st = qs_tok_compile_builtins(t, err)) != QS_OK) goto done;
    if ((st = qs_tok_load_model(t, qs_tok_jget(root, "model"), err)) != QS_OK) goto done;
    if ((st = qs_tok_load_normalizer(t, qs_tok_jget(root, "normalizer"), "normalizer", err)) != QS_OK) goto done;
    if ((st = qs_tok_load_pretokenizer(t, qs_tok_jget(root, "pre_tokenizer"), "pre_tokenizer", err)) != QS_OK)
        goto done;
    const cJSON *dec = qs_tok_jget(root, "decoder");
    t->has_decoder = !qs_tok_jnull(dec);
    if (t->has_decoder && (st = qs_tok_load_decoder(t, dec, "decoder", err)) != QS_OK) goto done;
    const cJSON *post = qs_tok_jget(root, "post_processor");
    if (!qs_tok_jnull(post) && (st = qs_tok_load_post_processor(t, post, "post_processor", err)) != QS_OK) goto done;
    if ((st = qs_tok_load_added_tokens(t, qs_tok_jget(root, "added_tokens"), &rs, err)) != QS_OK) goto done;

    t->size = t->vocab_r_size;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id >= t->size) t->size = t->added[i].id + 1;
    t->added_of_id = malloc(((size_t)t->size + 1) * sizeof *t->added_of_id);
    if (!t->added_of_id) {
        st = nomem(t, err);
        goto done;
    }
    for (int32_t i = 0; i < t->size; i++) t->added_of_id[i] = -1;
    for (size_t i = 0; i < t->n_added; i++) t->added_of_id[t->added[i].id] = (int32_t)i;
    for (size_t i = 0; i < t->n_post_pre + t->n_post_suf; i++) {
        int32_t id = i < t->n_post_pre ? t->post_pre[i] : t->post_suf[i - t->n_post_pre];
        if (id >= t->size) {
            st = qs_tok_jfail(t, err, QS_ERR_INPUT, "post_processor",
                              "special token id %d is outside the vocabulary (%d)", (int)id, (int)t->size);
            goto done;
        }
    }
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", "<BOS>",
                                            "[CLS]", "<|endoftext|>", NULL};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<EOS>", "[SEP]", NULL};
    t->bos = t->n_post_pre ? t->post_pre[0] : qs_tok_find_special(t, bos_names);
    t->eos = t->n_post_suf ? t->post_suf[t->n_post_suf - 1] : qs_tok_find_special(t, eos_names);
done:
    qs_tok_re_state_free(&rs);
    cJSON_Delete(root);
    if (st != QS_OK) {
        qs_tokenizer_free(t);
        return st;
    }
    *out = t;
    return QS_OK;
}

qs_status qs_tokenizer_load(const char *path, qs_tokenizer **out, qs_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return qs_error_set(err, errno == ENOENT ? QS_ERR_INPUT : QS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    qs_strbuf b = {0};
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        qs_strbuf_put(&b, chunk, r);
        if (b.oom) {
            fclose(f);
            qs_strbuf_free(&b);
            return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        qs_strbuf_free(&b);
        return qs_error_set(err, QS_ERR_IO, "%s: read failed", path);
    }
    qs_status st = qs_tokenizer_parse(b.p ? b.p : "", b.len, path, out, err);
    qs_strbuf_free(&b);
    return st;
}

void qs_tokenizer_free(qs_tokenizer *t)
{
    if (!t) return;
    for (int32_t i = 0; i < t->vocab_r_size; i++) free(t->vocab_r[i]);
    free(t->vocab_r);
    free(t->vocab_r_len);
    for (size_t i = 0; i < t->n_extra; i++) free(t->extra[i]);
    free(t->extra);
    qs_strmap_free(&t->vocab);
    qs_strmap_free(&t->bigrams);
    qs_pairmap_free(&t->merges);
    free(t->unk_token);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->norm_contents[i]);
    }
    free(t->added);
    free(t->norm_contents);
    qs_strmap_free(&t->added_map);
    free(t->added_of_id);
    free(t->raw_set.pats);
    free(t->norm_set.pats);
    for (size_t i = 0; i < t->n_norms; i++) {
        free(t->norms[i].s);
        free(t->norms[i].content);
        pcre2_code_free(t->norms[i].re);
        free(t->norms[i].path);
    }
    free(t->norms);
    for (size_t i = 0; i < t->n_pres; i++) {
        pcre2_code_free(t->pres[i].re);
        free(t->pres[i].lit);
    }
    free(t->pres);
    for (size_t i = 0; i < t->n_decs; i++) {
        free(t->decs[i].lit);
        free(t->decs[i].content);
        pcre2_code_free(t->decs[i].re);
    }
    free(t->decs);
    pcre2_code_free(t->gpt2_re);
    pcre2_code_free(t->word_re);
    pcre2_code_free(t->digit_re);
    pcre2_code_free(t->ws_re);
    pcre2_code_free(t->space_re);
    free(t->post_pre);
    free(t->post_suf);
    free(t->post_unsupported);
    free(t->name);
    free(t);
}

int32_t qs_tokenizer_vocab_size(const qs_tokenizer *t) { return t->size; }
int32_t qs_tokenizer_bos_id(const qs_tokenizer *t) { return t->bos; }
int32_t qs_tokenizer_eos_id(const qs_tokenizer *t) { return t->eos; }

int32_t qs_tokenizer_token_to_id(const qs_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    int32_t id = qs_strmap_get(&t->added_map, token, n);
    return id >= 0 ? id : qs_strmap_get(&t->vocab, token, n);
}

const char *qs_tokenizer_id_to_token(const qs_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->size) return NULL;
    if (t->added_of_id[id] >= 0) return t->added[t->added_of_id[id]].content;
    return id < t->vocab_r_size ? t->vocab_r[id] : NULL;
}

bool qs_tokenizer_is_special(const qs_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->size && t->added_of_id[id] >= 0 && t->added[t->added_of_id[id]].special;
}
