/* test_hostile_inputs.c — hostile job files and tokenizer.json (issue 15,
 * items 11 and 5), under ASan + UBSan with the "unit" label.
 *
 * Job files: an indented line never continues the previous value (libinih's
 * default would make `bits = 4` then `  3` a 3-bit run), a key given twice —
 * in one section or two, or sym and asym — is an error naming the file and
 * both lines, a line of any length is read whole (libinih's default cut
 * lines at 200 bytes into a second "line"), a NUL byte or a directory is not
 * a job file.
 * tokenizer.json: ids are bounded by the tokens the file defines (before, a
 * 2-token vocabulary with id 2147483646 sized its tables for 2^31 ids,
 * gigabytes), and a number no id can be (3.3e126, -1e300) is refused
 * before it is cast (the fuzzer found that cast: undefined behaviour); ids
 * within the bound still load. A file that is not UTF-8 is refused (a
 * Replace content of bytes that are not UTF-8 crashed PCRE2's JIT).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "pipeline/export/side_files.h"
#include "pipeline/formats/strbuf.h"
#include "pipeline/formats/tokenizer/tokenizer.h"
#include "pipeline/run_options.h"

static qs_status job(const char *text, qs_run_options *o, qs_error *err)
{
    qs_run_options_default(o);
    qs_error_clear(err);
    return qs_run_options_parse_job(o, text, strlen(text), "job.ini", NULL, err);
}

static void test_continuation_line(void **state)
{
    (void)state;
    qs_run_options o;
    qs_error err;
    assert_int_equal(job("[quantization]\nbits = 4\n  3\n", &o, &err), QS_ERR_INPUT);
    printf("%s\n", err.msg);
    assert_non_null(strstr(err.msg, "job.ini:3:"));
    assert_non_null(strstr(err.msg, "an indented line does not continue a value"));
    /* an indented key on its own is a key, not a continuation */
    assert_int_equal(job("[quantization]\nbits = 4\n  group-size = 64\n", &o, &err), QS_OK);
    assert_int_equal(o.bits, 4);
    assert_int_equal(o.group_size, 64);
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    qs_run_options o;
    qs_error err;
    assert_int_equal(job("[quantization]\nbits = 4\n; comment\nbits = 3\n", &o, &err), QS_ERR_INPUT);
    printf("%s\n", err.msg);
    assert_non_null(strstr(err.msg, "job.ini:4: [quantization] bits: 'bits' is already set on line 2"));
    /* across sections, and spelled another way */
    assert_int_equal(job("[quantization]\ngroup_size = 64\n[run]\nGroup-Size = 32\n", &o, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "job.ini:4:"));
    assert_non_null(strstr(err.msg, "line 2"));
    /* sym and asym set one thing */
    assert_int_equal(job("[quantization]\nsym = true\nasym = true\n", &o, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "job.ini:3:"));
}

static void test_long_lines_and_bytes(void **state)
{
    (void)state;
    qs_run_options o;
    qs_error err;
    qs_strbuf b = {0};
    qs_strbuf_str(&b, "[model]\nmodel = /");
    for (int i = 0; i < 300; i++) qs_strbuf_str(&b, "m");
    qs_strbuf_str(&b, "\n[quantization]\nbits = 3\n");
    assert_false(b.oom);
    assert_int_equal(job(b.p, &o, &err), QS_OK);
    assert_int_equal(strlen(o.model), 301); /* one line, read whole */
    assert_int_equal(o.bits, 3);
    qs_strbuf_free(&b);
    /* a long line whose tail looks like a key must not become one */
    qs_strbuf c = {0};
    qs_strbuf_str(&c, "[model]\nmodel = /");
    for (int i = 0; i < 250; i++) qs_strbuf_str(&c, "m");
    qs_strbuf_str(&c, "bits = 2\n");
    assert_int_equal(job(c.p, &o, &err), QS_OK);
    assert_int_equal(o.bits, 4);
    qs_strbuf_free(&c);
    /* a NUL byte: not a text file */
    static const char nul[] = "[q]\nbits = 4\0\nbits = 3\n";
    qs_run_options_default(&o);
    assert_int_equal(qs_run_options_parse_job(&o, nul, sizeof nul - 1, "job.ini", NULL, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "NUL"));
    /* a directory */
    assert_int_equal(qs_run_options_load_job(&o, "/tmp", &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "is a directory, not a job file"));
}

static const char *tok_json(const char *vocab, const char *added)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"version\":\"1.0\",\"added_tokens\":[%s],\"normalizer\":null,\"pre_tokenizer\":null,"
             "\"post_processor\":null,\"decoder\":null,\"model\":{\"type\":\"BPE\",\"dropout\":null,"
             "\"unk_token\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"vocab\":{%s},\"merges\":[]}}",
             added, vocab);
    return buf;
}

static void test_tokenizer_ids(void **state)
{
    (void)state;
    /* at most 1 GiB of address space: the old code asked for 16 GiB and more */
    struct rlimit old, lim;
    bool limited = getenv("QS_NO_RLIMIT") == NULL && getrlimit(RLIMIT_AS, &old) == 0 &&
                   old.rlim_cur == RLIM_INFINITY && access("/proc/self/status", R_OK) == 0;
#if defined(__SANITIZE_ADDRESS__)
    limited = false; /* ASan reserves terabytes of address space */
#endif
    if (limited) {
        lim.rlim_cur = 1ull << 30;
        lim.rlim_max = old.rlim_max;
        setrlimit(RLIMIT_AS, &lim);
    }
    qs_tokenizer *t = NULL;
    qs_error err;
    qs_status s = qs_tokenizer_parse(tok_json("\"a\":0,\"b\":2147483646", ""), strlen(tok_json("\"a\":0,\"b\":2147483646", "")),
                                     "tokenizer.json", &t, &err);
    printf("%s\n", err.msg);
    assert_int_equal(s, QS_ERR_INPUT);
    assert_null(t);
    assert_non_null(strstr(err.msg, "tokenizer.json: model.vocab[b]: id 2147483646 is above 1028"));
    const char *added = "{\"id\":2000000000,\"content\":\"<x>\",\"special\":true}";
    s = qs_tokenizer_parse(tok_json("\"a\":0,\"b\":1", added), strlen(tok_json("\"a\":0,\"b\":1", added)), "tokenizer.json",
                           &t, &err);
    printf("%s\n", err.msg);
    assert_int_equal(s, QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "added_tokens[0]: id 2000000000 is above"));
    /* ids no long can hold (the fuzzer's 3.3e126 was cast before it was
     * range-checked: undefined behaviour, an abort under UBSan) */
    s = qs_tokenizer_parse(tok_json("\"a\":0,\"b\":3.33333e+126", ""), strlen(tok_json("\"a\":0,\"b\":3.33333e+126", "")),
                           "tokenizer.json", &t, &err);
    printf("%s\n", err.msg);
    assert_int_equal(s, QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "model.vocab[b]: expected an integer in [0, 2147483646]"));
    added = "{\"id\":-1e300,\"content\":\"<x>\",\"special\":true}";
    s = qs_tokenizer_parse(tok_json("\"a\":0", added), strlen(tok_json("\"a\":0", added)), "tokenizer.json", &t, &err);
    assert_int_equal(s, QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "expected an integer in"));
    /* bytes that are not UTF-8 in a string of the file (here a Replace
     * normalizer's content, which lands in the text the regexes match with
     * PCRE2_NO_UTF_CHECK: the fuzzer's SEGV in PCRE2's JIT) */
    static const char bad_utf8[] =
        "{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\t\"},\"content\":\"\xff\xfe \"},"
        "\"pre_tokenizer\":{\"type\":\"Digits\",\"individual_digits\":true},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    s = qs_tokenizer_parse(bad_utf8, sizeof bad_utf8 - 1, "tokenizer.json", &t, &err);
    printf("%s\n", err.msg);
    assert_int_equal(s, QS_ERR_INPUT);
    assert_null(t);
    assert_non_null(strstr(err.msg, "tokenizer.json: byte 68 is not UTF-8"));
    /* within the bound: a gap is fine, and the ids are what the file says */
    added = "{\"id\":1000,\"content\":\"<x>\",\"special\":true}";
    s = qs_tokenizer_parse(tok_json("\"a\":0,\"b\":900", added), strlen(tok_json("\"a\":0,\"b\":900", added)),
                           "tokenizer.json", &t, &err);
    assert_int_equal(s, QS_OK);
    assert_int_equal(qs_tokenizer_vocab_size(t), 1001);
    assert_int_equal(qs_tokenizer_token_to_id(t, "b"), 900);
    assert_int_equal(qs_tokenizer_token_to_id(t, "<x>"), 1000);
    qs_tokenizer_free(t);
    if (limited) setrlimit(RLIMIT_AS, &old);
}

/* The files copied into an export: what passes is what is written, what does
 * not is one line naming the file; truncated inputs never read past the end. */
static void test_side_files(void **state)
{
    (void)state;
    char *out = NULL;
    size_t n = 0;
    qs_error err;
    static const char pb[] = {0x0a, 0x03, 'a', 'b', 'c', 0x10, (char)0x96, 0x01, 0x1d, 1, 2, 3, 4};
    assert_int_equal(qs_side_file_check("tokenizer.model", "m/tokenizer.model", pb, sizeof pb, &out, &n, &err), QS_OK);
    assert_int_equal(n, sizeof pb);
    assert_memory_equal(out, pb, sizeof pb);
    free(out);
    for (size_t cut = 1; cut < sizeof pb; cut++) { /* every truncation but the field boundaries fails */
        qs_status s = qs_side_file_check("tokenizer.model", "m/tokenizer.model", pb, cut, &out, &n, &err);
        free(out);
        out = NULL;
        assert_true(s == QS_ERR_INPUT || cut == 5 || cut == 8);
    }
    static const char varint10[] = {0x0a, (char)0xff, (char)0xff, (char)0xff, (char)0xff, (char)0xff,
                                    (char)0xff, (char)0xff, (char)0xff, (char)0xff, (char)0xff};
    assert_int_equal(qs_side_file_check("tokenizer.model", "t", varint10, sizeof varint10, &out, &n, &err), QS_ERR_INPUT);
    static const char merges[] = "#version: 0.2\n\xc4\xa0 t\nh e\n";
    assert_int_equal(qs_side_file_check("merges.txt", "m/merges.txt", merges, strlen(merges), &out, &n, &err), QS_OK);
    free(out);
    static const char cut_utf8[] = "a b\nc \xe2\x96";
    assert_int_equal(qs_side_file_check("merges.txt", "m/merges.txt", cut_utf8, strlen(cut_utf8), &out, &n, &err),
                     QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "m/merges.txt: line 2"));
    assert_int_equal(qs_side_file_check("merges.txt", "m/merges.txt", "a b c\n", 6, &out, &n, &err), QS_ERR_INPUT);
    static const char js[] = "  {\"a\": [1, 2.5, \"\\u00e9\"]}\n";
    assert_int_equal(qs_side_file_check("vocab.json", "m/vocab.json", js, strlen(js), &out, &n, &err), QS_OK);
    assert_string_equal(out, "{\"a\":[1,2.5,\"\xc3\xa9\"]}\n"); /* re-serialized */
    free(out);
    assert_int_equal(qs_side_file_check("vocab.json", "m/vocab.json", "{\"a\":1}x", 8, &out, &n, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "m/vocab.json: bytes after the JSON value"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_continuation_line),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_long_lines_and_bytes),
        cmocka_unit_test(test_tokenizer_ids),
        cmocka_unit_test(test_side_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
