/* fuzz_tokenizer.c — libFuzzer target for tokenizer.json
 * (pipeline/formats/tokenizer/) and the checks of the tokenizer files copied
 * into an export (pipeline/export/side_files.h: JSON, merges.txt,
 * tokenizer.model), all on the same input. The input is a whole
 * tokenizer.json. A file
 * that loads is then used: a fixed text (ASCII, UTF-8, an added-token-like
 * "<s>" and digits) and the input's own first 64 bytes are encoded and the
 * ids decoded, and every id must be below the vocabulary size the tokenizer
 * reports. The parser must return an error value, never crash, read out of
 * bounds, leak, or size a table by a number written in the file (ids are
 * bounded by the tokens present; -rss_limit_mb catches a table sized by one).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/export/side_files.h"
#include "pipeline/formats/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void use(const qs_tokenizer *t, const char *text, size_t len, bool special)
{
    qs_token_ids ids = {0};
    qs_error err;
    qs_encode_options o = {.add_special_tokens = special};
    if (qs_tokenizer_encode(t, text, len, &o, &ids, &err) == QS_OK) {
        int32_t n = qs_tokenizer_vocab_size(t);
        for (size_t i = 0; i < ids.n; i++)
            if (ids.ids[i] < 0 || ids.ids[i] >= n) abort();
        char *out = NULL;
        size_t out_len = 0;
        if (qs_tokenizer_decode(t, ids.ids, ids.n, !special, &out, &out_len, &err) == QS_OK) free(out);
    }
    qs_token_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qs_tokenizer *t = NULL;
    qs_error err;
    static const char *const side[] = {"tokenizer_config.json", "merges.txt", "tokenizer.model"};
    for (int k = 0; k < 3; k++) {
        char *out = NULL;
        size_t out_len = 0;
        if (qs_side_file_check(side[k], side[k], (const char *)data, size, &out, &out_len, &err) == QS_OK) {
            if (!out || (k > 0 && (out_len != size || memcmp(out, data, size)))) abort(); /* copied as checked */
            free(out);
        }
    }
    if (qs_tokenizer_parse((const char *)data, size, "fuzz/tokenizer.json", &t, &err) != QS_OK) return 0;
    static const char text[] = "Hello, wörld! <s> 12345 \xe2\x96\x81tiny  stories\n\tend";
    use(t, text, sizeof text - 1, true);
    use(t, (const char *)data, size < 64 ? size : 64, false);
    for (int32_t id = -1; id <= qs_tokenizer_vocab_size(t) && id < 4096; id++) {
        (void)qs_tokenizer_id_to_token(t, id);
        (void)qs_tokenizer_is_special(t, id);
    }
    qs_tokenizer_free(t);
    return 0;
}
