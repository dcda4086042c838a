/* fuzz_parsers.c — libFuzzer target for every parser that reads untrusted
 * bytes from a model directory or a token file, all from memory buffers:
 *   first byte % 5 selects: 0 a whole safetensors file (qs_st_parse),
 *   1 a bare safetensors JSON header (qs_st_parse_header), 2 an .npy header
 *   (qs_npy_parse_header), 3 model.safetensors.index.json (qs_st_index_parse),
 *   4 config.json (qs_model_config_parse, which wants a NUL-terminated string).
 * The rest of the input is the parser's input. Parsers must return an error
 * value, never crash, read out of bounds or leak.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/formats/manifest.h"
#include "pipeline/formats/model_config.h"
#include "pipeline/formats/npy.h"
#include "pipeline/formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned which = data[0] % 5;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    qs_error err;
    qs_error_clear(&err);
    switch (which) {
    case 0: {
        qs_st_header h;
        if (qs_st_parse(p, n, "fuzz.safetensors", &h, &err) == QS_OK) {
            /* what the reader relies on afterwards */
            for (size_t i = 0; i < h.count; i++) {
                if (h.tensors[i].offset + h.tensors[i].nbytes > n) abort();
                if (i && strcmp(h.tensors[i - 1].name, h.tensors[i].name) >= 0) abort();
            }
            qs_st_header_free(&h);
        }
        break;
    }
    case 1: {
        qs_st_header h;
        if (qs_st_parse_header(p, n, 0, 1u << 20, "fuzz.safetensors", &h, &err) == QS_OK) qs_st_header_free(&h);
        break;
    }
    case 2: {
        qs_npy_header h;
        if (qs_npy_parse_header(p, n, "fuzz.npy", &h, &err) == QS_OK && h.data_offset > n) abort();
        break;
    }
    case 3: {
        qs_st_index ix;
        if (qs_st_index_parse((const char *)p, n, "fuzz.index.json", &ix, &err) == QS_OK) {
            for (size_t i = 0; i < ix.count; i++)
                if (ix.shard[i] >= ix.n_shards) abort();
            qs_st_index_free(&ix);
        }
        break;
    }
    default: {
        char *s = malloc(n + 1);
        if (!s) return 0;
        memcpy(s, p, n);
        s[n] = '\0';
        qs_model_config cfg;
        (void)qs_model_config_parse(s, "fuzz/config.json", &cfg, &err);
        free(s);
        break;
    }
    }
    return 0;
}
