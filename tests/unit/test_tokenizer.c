/* test_tokenizer.c — pieces of the tokenizer (BPE merge order against a naive
 * reference, byte fallback, unk, added tokens, ignore_merges, post-processor,
 * decoders), its error messages, and token-set files round trips.
 * Parity with HF `tokenizers` itself is checked in tests/py/test_tokenize_*.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/formats/npy.h"
#include "pipeline/formats/token_set.h"
#include "pipeline/formats/tokenizer/tokenizer.h"

/* ---- helpers ---- */

static qs_tokenizer *parse_ok(const char *json)
{
    qs_tokenizer *t = NULL;
    qs_error err = {0};
    qs_status s = qs_tokenizer_parse(json, strlen(json), "t.json", &t, &err);
    if (s != QS_OK) fprintf(stderr, "parse failed: %s\n", err.msg);
    assert_int_equal(s, QS_OK);
    return t;
}

static qs_status parse_err(const char *json, qs_error *err)
{
    qs_tokenizer *t = NULL;
    qs_status s = qs_tokenizer_parse(json, strlen(json), "t.json", &t, err);
    assert_null(t);
    return s;
}

/* Encodes and compares with the expected ids (terminated by -1). */
static void expect_ids(const qs_tokenizer *t, const char *text, bool special, const int32_t *want)
{
    qs_token_ids ids = {0};
    qs_error err = {0};
    qs_encode_options o = {.add_special_tokens = special};
    qs_status s = qs_tokenizer_encode(t, text, strlen(text), &o, &ids, &err);
    if (s != QS_OK) fprintf(stderr, "encode failed: %s\n", err.msg);
    assert_int_equal(s, QS_OK);
    size_t n = 0;
    while (want[n] >= 0) n++;
    if (ids.n != n) {
        fprintf(stderr, "'%s': got %zu ids:", text, ids.n);
        for (size_t i = 0; i < ids.n; i++) fprintf(stderr, " %d", ids.ids[i]);
        fprintf(stderr, "\n");
    }
    assert_int_equal(ids.n, n);
    for (size_t i = 0; i < n; i++) assert_int_equal(ids.ids[i], want[i]);
    qs_token_ids_free(&ids);
}

static void expect_decode(const qs_tokenizer *t, const int32_t *ids, size_t n, bool skip, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    qs_error err = {0};
    assert_int_equal(qs_tokenizer_decode(t, ids, n, skip, &out, &len, &err), QS_OK);
    assert_int_equal(len, strlen(want));
    assert_string_equal(out, want);
    free(out);
}

/* ---- BPE merge order against a naive reference ----
 *
 * The reference is the definition: repeatedly merge the adjacent pair with the
 * lowest merge rank (leftmost when several), until no pair has a merge. */

#define MAXTOK 64

typedef struct toy {
    char tok[MAXTOK][32];
    int ntok;
    int ma[MAXTOK], mb[MAXTOK], mnew[MAXTOK];
    int nmerge;
} toy;

static int toy_find(const toy *y, const char *s)
{
    for (int i = 0; i < y->ntok; i++)
        if (strcmp(y->tok[i], s) == 0) return i;
    return -1;
}

static void toy_make(toy *y, unsigned seed, int nmerge)
{
    srand(seed);
    const char *base[] = {"a", "b", "c", "d", "z"}; /* z never merges */
    y->ntok = 0;
    for (int i = 0; i < 5; i++) strcpy(y->tok[y->ntok++], base[i]);
    y->nmerge = 0;
    int tries = 0;
    while (y->nmerge < nmerge && tries++ < 10000) {
        int a = rand() % y->ntok, b = rand() % y->ntok;
        if (a == 4 || b == 4) continue;
        char j[64];
        snprintf(j, sizeof j, "%s%s", y->tok[a], y->tok[b]);
        if (strlen(j) > 8 || toy_find(y, j) >= 0) continue; /* one pair per new token */
        strcpy(y->tok[y->ntok], j);
        y->ma[y->nmerge] = a;
        y->mb[y->nmerge] = b;
        y->mnew[y->nmerge] = y->ntok++;
        y->nmerge++;
    }
}

static char *toy_json(const toy *y, bool string_merges)
{
    static char buf[16384];
    int n = snprintf(buf, sizeof buf, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int i = 0; i < y->ntok; i++) n += snprintf(buf + n, sizeof buf - (size_t)n, "%s\"%s\": %d", i ? "," : "", y->tok[i], i);
    n += snprintf(buf + n, sizeof buf - (size_t)n, "}, \"merges\": [");
    for (int i = 0; i < y->nmerge; i++) {
        if (string_merges)
            n += snprintf(buf + n, sizeof buf - (size_t)n, "%s\"%s %s\"", i ? "," : "", y->tok[y->ma[i]], y->tok[y->mb[i]]);
        else
            n += snprintf(buf + n, sizeof buf - (size_t)n, "%s[\"%s\", \"%s\"]", i ? "," : "", y->tok[y->ma[i]],
                          y->tok[y->mb[i]]);
    }
    snprintf(buf + n, sizeof buf - (size_t)n, "]}}");
    return buf;
}

static size_t toy_reference(const toy *y, const char *s, int *out)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        char c[2] = {s[i], 0};
        out[i] = toy_find(y, c);
    }
    static int rank[MAXTOK][MAXTOK]; /* pair → merge rank, -1 none */
    for (int a = 0; a < MAXTOK; a++)
        for (int b = 0; b < MAXTOK; b++) rank[a][b] = -1;
    for (int m = 0; m < y->nmerge; m++) rank[y->ma[m]][y->mb[m]] = m;
    for (;;) {
        int best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            int m = rank[out[i]][out[i + 1]];
            if (m >= 0 && (best < 0 || m < best)) {
                best = m;
                at = i;
            }
        }
        if (best < 0) return n;
        out[at] = y->mnew[best];
        memmove(out + at + 1, out + at + 2, (n - at - 2) * sizeof *out);
        n--;
    }
}

static void test_merge_order(void **state)
{
    (void)state;
    static int ref[4096];
    static char text[4096];
    for (unsigned seed = 1; seed <= 12; seed++) {
        toy y;
        toy_make(&y, seed, 40);
        qs_tokenizer *t = parse_ok(toy_json(&y, seed % 2 == 0));
        for (int trial = 0; trial < 34; trial++) {
            /* short words, and long ones (> 1024 bytes, where encode cuts at "z") */
            size_t len = trial < 30 ? 1 + (size_t)(rand() % 40) : 1100 + (size_t)(rand() % 600);
            for (size_t i = 0; i < len; i++) text[i] = "abcdabcdabcdz"[rand() % (trial < 30 ? 12 : 13)];
            text[len] = '\0';
            size_t nref = toy_reference(&y, text, ref);
            qs_token_ids ids = {0};
            qs_error err = {0};
            assert_int_equal(qs_tokenizer_encode(t, text, len, NULL, &ids, &err), QS_OK);
            assert_int_equal(ids.n, nref);
            for (size_t i = 0; i < nref; i++) assert_int_equal(ids.ids[i], ref[i]);
            qs_token_ids_free(&ids);
        }
        qs_tokenizer_free(t);
    }
}

/* ---- byte fallback and unk ---- */

static const char *fallback_json(bool fuse, bool with_bytes)
{
    static char buf[32768];
    int n = snprintf(buf, sizeof buf,
                     "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": %s, \"byte_fallback\": true,"
                     " \"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2, \"ab\": 3",
                     fuse ? "true" : "false");
    if (with_bytes)
        for (int b = 0; b < 256; b++)
            if (b != 0xA9) n += snprintf(buf + n, sizeof buf - (size_t)n, ", \"<0x%02X>\": %d", b, 10 + b);
    snprintf(buf + n, sizeof buf - (size_t)n, "}, \"merges\": [\"a b\"]}}");
    return buf;
}

static void test_byte_fallback_and_unk(void **state)
{
    (void)state;
    qs_tokenizer *t = parse_ok(fallback_json(false, true));
    /* "ü" = C3 BC → two byte tokens; "ab" merges; "é" = C3 A9 has no <0xA9> → unk */
    expect_ids(t, "ab\xc3\xbc" "a", false, (const int32_t[]){3, 10 + 0xC3, 10 + 0xBC, 1, -1});
    expect_ids(t, "\xc3\xa9\xc3\xa9" "b", false, (const int32_t[]){0, 0, 2, -1});
    /* the decoder-less tokenizer joins tokens with spaces */
    expect_decode(t, (const int32_t[]){3, 1, 9999, 2}, 4, false, "ab a b");
    qs_tokenizer_free(t);
    t = parse_ok(fallback_json(true, true));
    expect_ids(t, "\xc3\xa9\xc3\xa9" "b\xc3\xa9", false, (const int32_t[]){0, 2, 0, -1}); /* fused */
    qs_tokenizer_free(t);
    t = parse_ok(fallback_json(false, false)); /* no byte tokens at all */
    expect_ids(t, "x\xc3\xbc" "a", false, (const int32_t[]){0, 0, 1, -1});
    qs_tokenizer_free(t);
}

/* ---- added tokens ---- */

static const char ADDED_JSON[] =
    "{\"added_tokens\": ["
    " {\"id\": 10, \"content\": \"<a>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 11, \"content\": \"<ab>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 12, \"content\": \"<m>\", \"special\": false, \"normalized\": false, \"lstrip\": true, \"rstrip\": true},"
    " {\"id\": 13, \"content\": \"cd\", \"special\": false, \"normalized\": false, \"single_word\": true},"
    " {\"id\": 14, \"content\": \"Q\", \"special\": false, \"normalized\": true}],"
    " \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"x\"}, \"content\": \"Q\"},"
    " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"d\": 3, \" \": 4, \"<\": 5, \">\": 6,"
    "  \"ab\": 7}, \"merges\": [[\"a\", \"b\"]]},"
    " \"post_processor\": {\"type\": \"TemplateProcessing\","
    "  \"single\": [{\"SpecialToken\": {\"id\": \"<a>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}},"
    "             {\"SpecialToken\": {\"id\": \"<ab>\", \"type_id\": 0}}],"
    "  \"special_tokens\": {\"<a>\": {\"id\": \"<a>\", \"ids\": [10], \"tokens\": [\"<a>\"]},"
    "                     \"<ab>\": {\"id\": \"<ab>\", \"ids\": [11], \"tokens\": [\"<ab>\"]}}}}";

static void test_added_tokens(void **state)
{
    (void)state;
    qs_tokenizer *t = parse_ok(ADDED_JSON);
    /* leftmost-longest: "<ab>" wins over "<a>" */
    expect_ids(t, "a<ab>b<a>", false, (const int32_t[]){0, 11, 1, 10, -1});
    /* lstrip/rstrip take the spaces around <m> */
    expect_ids(t, "a  <m>  b", false, (const int32_t[]){0, 12, 1, -1});
    /* single_word: "cd" only when not inside a word */
    expect_ids(t, "cd abcd cd", false, (const int32_t[]){13, 4, 7, 2, 3, 4, 13, -1});
    /* a normalized token matches the normalized text ("x" → "Q") */
    expect_ids(t, "axb", false, (const int32_t[]){0, 14, 1, -1});
    /* the post-processor template wraps the sequence */
    expect_ids(t, "ab", true, (const int32_t[]){10, 7, 11, -1});
    expect_ids(t, "", true, (const int32_t[]){10, 11, -1});
    expect_ids(t, "", false, (const int32_t[]){-1});
    assert_int_equal(qs_tokenizer_bos_id(t), 10);
    assert_int_equal(qs_tokenizer_eos_id(t), 11);
    assert_int_equal(qs_tokenizer_vocab_size(t), 15);
    assert_int_equal(qs_tokenizer_token_to_id(t, "<m>"), 12);
    assert_int_equal(qs_tokenizer_token_to_id(t, "ab"), 7);
    assert_int_equal(qs_tokenizer_token_to_id(t, "zz"), -1);
    assert_string_equal(qs_tokenizer_id_to_token(t, 11), "<ab>");
    assert_true(qs_tokenizer_is_special(t, 10));
    assert_false(qs_tokenizer_is_special(t, 12));
    /* decode: specials skipped on request; no decoder → tokens joined by spaces */
    expect_decode(t, (const int32_t[]){10, 7, 12, 11}, 4, true, "ab <m>");
    expect_decode(t, (const int32_t[]){10, 7, 12, 11}, 4, false, "<a> ab <m> <ab>");
    qs_tokenizer_free(t);
}

static void test_ignore_merges(void **state)
{
    (void)state;
    /* "abc" is in the vocabulary, but the merges only make "ab" + "c" */
    const char *fmt = "{\"model\": {\"type\": \"BPE\", \"ignore_merges\": %s, \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2,"
                      " \"ab\": 3, \"abc\": 4}, \"merges\": [\"a b\"]}}";
    char json[512];
    snprintf(json, sizeof json, fmt, "true");
    qs_tokenizer *t = parse_ok(json);
    expect_ids(t, "abc", false, (const int32_t[]){4, -1});
    expect_ids(t, "abcc", false, (const int32_t[]){3, 2, 2, -1});
    qs_tokenizer_free(t);
    snprintf(json, sizeof json, fmt, "false");
    t = parse_ok(json);
    expect_ids(t, "abc", false, (const int32_t[]){3, 2, -1});
    qs_tokenizer_free(t);
}

/* ---- the sentencepiece-style pipeline and its decoder ---- */

static void test_sentencepiece_style(void **state)
{
    (void)state;
    char json[8192];
    int n = snprintf(json, sizeof json,
                     "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": "
                     "\"\xe2\x96\x81\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": "
                     "\"\xe2\x96\x81\"}]},"
                     " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
                     "{\"String\": \"\xe2\x96\x81\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": "
                     "\"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
                     " \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"<unk>\": 0,"
                     " \"\xe2\x96\x81\": 1, \"h\": 2, \"i\": 3, \"hi\": 4, \"\xe2\x96\x81hi\": 5");
    for (int b = 0; b < 256; b++) n += snprintf(json + n, sizeof json - (size_t)n, ", \"<0x%02X>\": %d", b, 6 + b);
    snprintf(json + n, sizeof json - (size_t)n, "}, \"merges\": [\"h i\", \"\xe2\x96\x81 hi\"]}}");
    qs_tokenizer *t = parse_ok(json);
    /* "hi hi!" → "▁hi▁hi!"; '!' falls back to <0x21> */
    expect_ids(t, "hi hi!", false, (const int32_t[]){5, 5, 6 + '!', -1});
    qs_token_ids ids = {0};
    qs_error err = {0};
    qs_encode_options o = {.no_prefix_space = true};
    assert_int_equal(qs_tokenizer_encode(t, "hi hi", 5, &o, &ids, &err), QS_OK);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.ids[0], 4); /* no "▁" at the start */
    assert_int_equal(ids.ids[1], 5);
    qs_token_ids_free(&ids);
    /* decode: the leading space is stripped, byte pieces become UTF-8, and a
     * lone invalid byte becomes U+FFFD */
    expect_decode(t, (const int32_t[]){5, 5, 6 + 0xC3, 6 + 0xBC, 6 + '!'}, 5, false, "hi hi\xc3\xbc!");
    expect_decode(t, (const int32_t[]){4, 6 + 0xC3, 2}, 3, false, "hi\xef\xbf\xbdh");
    /* invalid UTF-8 input is refused */
    assert_int_equal(qs_tokenizer_encode(t, "a\xff", 2, NULL, &ids, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "invalid UTF-8 at byte 1"));
    qs_tokenizer_free(t);
}

static void test_bytelevel_decode(void **state)
{
    (void)state;
    /* GPT-2 byte-level: "Ġ" (U+0120) is the space byte, "Ã" "©" are the two bytes of "é" */
    const char *json = "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true},"
                       " \"decoder\": {\"type\": \"ByteLevel\"},"
                       " \"model\": {\"type\": \"BPE\", \"vocab\": {\"\xc4\xa0\": 0, \"h\": 1, \"\xc3\x83\": 2, \"\xc2\xa9\": 3,"
                       " \"\xc4\xa0h\": 4}, \"merges\": [\"\xc4\xa0 h\"]}}";
    qs_tokenizer *t = parse_ok(json);
    expect_ids(t, "h \xc3\xa9", false, (const int32_t[]){4, 0, 2, 3, -1}); /* add_prefix_space: "Ġh" */
    expect_decode(t, (const int32_t[]){4, 0, 2, 3}, 4, false, " h \xc3\xa9");
    expect_decode(t, (const int32_t[]){2}, 1, false, "\xef\xbf\xbd"); /* half a character */
    qs_tokenizer_free(t);
}

/* ---- errors name the file and the json path ---- */

static void test_errors(void **state)
{
    (void)state;
    qs_error err = {0};
    assert_int_equal(parse_err("{\"model\": {\"type\": \"BPE\", \"vocab\": {", &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "t.json: malformed JSON"));

    assert_int_equal(parse_err("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "t.json: model.type: 'WordPiece' is not supported"));
    assert_int_equal(parse_err("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "model.type: 'Unigram'"));

    assert_int_equal(parse_err("{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"},"
                               " {\"type\": \"Lowercase\"}]}, \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
                               &err),
                     QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "normalizer.normalizers[1].type: normalizer 'Lowercase' is not supported"));

    assert_int_equal(parse_err("{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": \"BPE\","
                               " \"vocab\": {}, \"merges\": []}}",
                               &err),
                     QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "pre_tokenizer.type"));

    assert_int_equal(parse_err("{\"decoder\": {\"type\": \"CTC\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", &err),
                     QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "decoder.type: decoder 'CTC'"));

    assert_int_equal(parse_err("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", &err),
                     QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "model.merges[0]: token 'b' is not in model.vocab"));

    assert_int_equal(parse_err("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a a a\"]}}", &err),
                     QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "model.merges[0]"));

    assert_int_equal(parse_err("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}}}", &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "model.vocab[a]"));

    assert_int_equal(parse_err("{\"model\": {\"type\": \"BPE\", \"continuing_subword_prefix\": \"##\", \"vocab\": {}}}", &err),
                     QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "model.continuing_subword_prefix"));

    assert_int_equal(parse_err("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\":"
                               " \"Isolated\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {}}}",
                               &err),
                     QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "pre_tokenizer.pattern: regex does not compile"));

    assert_int_equal(parse_err("[1, 2]", &err), QS_ERR_INPUT);
    assert_int_equal(parse_err("{}", &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "t.json: model: missing"));

    qs_tokenizer *t = NULL;
    assert_int_equal(qs_tokenizer_load("/nonexistent/tokenizer.json", &t, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "/nonexistent/tokenizer.json"));

    /* an unsupported post-processor only matters when special tokens are asked for */
    t = parse_ok("{\"post_processor\": {\"type\": \"Fancy\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}");
    expect_ids(t, "aa", false, (const int32_t[]){0, 0, -1});
    qs_token_ids ids = {0};
    qs_encode_options o = {.add_special_tokens = true};
    assert_int_equal(qs_tokenizer_encode(t, "a", 1, &o, &ids, &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "post_processor.type: post-processor 'Fancy'"));
    qs_token_ids_free(&ids);
    qs_tokenizer_free(t);

    /* NFC is accepted only for text it leaves unchanged */
    t = parse_ok("{\"normalizer\": {\"type\": \"NFC\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}");
    expect_ids(t, "a", false, (const int32_t[]){0, -1});
    assert_int_equal(qs_tokenizer_encode(t, "a\xcc\x81", 3, NULL, &ids, &err), QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "U+0301"));
    qs_token_ids_free(&ids);
    qs_tokenizer_free(t);
}

/* ---- token sets ---- */

static void test_token_set_roundtrip(void **state)
{
    (void)state;
    char dir[] = "/tmp/qs-tokset-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char npy[256], h5[256], bad[256];
    snprintf(npy, sizeof npy, "%s/t.npy", dir);
    snprintf(h5, sizeof h5, "%s/t.h5", dir);
    snprintf(bad, sizeof bad, "%s/t.txt", dir);
    qs_tensor t;
    qs_error err = {0};
    int64_t shape[2] = {3, 5};
    assert_int_equal(qs_tensor_init(&t, QS_DTYPE_I32, 2, shape, &err), QS_OK);
    int32_t *v = t.data;
    for (int i = 0; i < 15; i++) v[i] = i * 1000 + 7;
    for (int k = 0; k < 2; k++) {
        const char *p = k ? h5 : npy;
        assert_int_equal(qs_token_set_write(p, &t, &err), QS_OK);
        qs_tensor r;
        assert_int_equal(qs_token_set_read(p, &r, &err), QS_OK);
        assert_int_equal(r.dtype, QS_DTYPE_I32);
        assert_int_equal(r.ndim, 2);
        assert_int_equal(r.shape[0], 3);
        assert_int_equal(r.shape[1], 5);
        assert_memory_equal(r.data, t.data, 15 * sizeof(int32_t));
        assert_int_equal(qs_token_set_check_vocab(p, &r, 14008, &err), QS_OK);
        assert_int_equal(qs_token_set_check_vocab(p, &r, 14007, &err), QS_ERR_INPUT);
        assert_non_null(strstr(err.msg, "token id [2,4] is 14007"));
        qs_tensor_free(&r);
    }
    /* no temp files left behind */
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s/t.h5.tmp.%ld", dir, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    assert_int_equal(qs_token_set_write(bad, &t, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "unknown token set format"));
    /* 1-D and negative ids are refused on read */
    qs_tensor one;
    int64_t s1[1] = {4};
    assert_int_equal(qs_tensor_init(&one, QS_DTYPE_I32, 1, s1, &err), QS_OK);
    assert_int_equal(qs_npy_write(npy, &one, &err), QS_OK);
    qs_tensor r;
    assert_int_equal(qs_token_set_read(npy, &r, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "expected 2 [rows, seq_len]"));
    qs_tensor_free(&one);
    v[6] = -1;
    assert_int_equal(qs_token_set_write(npy, &t, &err), QS_OK);
    assert_int_equal(qs_token_set_read(npy, &r, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "token id [1,1] is -1"));
    /* an HDF5 file without input_ids */
    hid_t f = H5Fcreate(h5, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    H5Fclose(f);
    assert_int_equal(qs_token_set_read(h5, &r, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "no dataset 'input_ids'"));
    qs_tensor_free(&t);
    unlink(npy);
    unlink(h5);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_order),        cmocka_unit_test(test_byte_fallback_and_unk),
        cmocka_unit_test(test_added_tokens),       cmocka_unit_test(test_ignore_merges),
        cmocka_unit_test(test_sentencepiece_style), cmocka_unit_test(test_bytelevel_decode),
        cmocka_unit_test(test_errors),             cmocka_unit_test(test_token_set_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
