/* test_npy.c — the .npy reader/writer: round trips, header parsing, and the
 * errors for what it refuses (Fortran order, big-endian, unknown dtypes,
 * truncated data). Byte-exactness against numpy.save is checked in
 * tests/py/test_io_npy.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/formats/npy.h"

static char tmpdir_path[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir_path, sizeof tmpdir_path, "/tmp/qs-test-npy-XXXXXX");
    return mkdtemp(tmpdir_path) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir_path);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", tmpdir_path, name); }

/* Writes a file from a header dict (padded the numpy way) plus data bytes. */
static void write_npy(const char *path, int major, const char *dict, const void *data, size_t nbytes)
{
    size_t lenfield = major == 1 ? 2 : 4;
    size_t dl = strlen(dict);
    size_t pad = 64 - (6 + 2 + lenfield + dl + 1) % 64;
    size_t hl = dl + pad + 1;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
    for (size_t i = 0; i < lenfield; i++) pre[8 + i] = (unsigned char)(hl >> (8 * i));
    fwrite(pre, 1, 8 + lenfield, f);
    fputs(dict, f);
    for (size_t i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    if (nbytes) fwrite(data, 1, nbytes, f);
    fclose(f);
}

static void test_roundtrip(void **state)
{
    (void)state;
    char p[320];
    path_of(p, sizeof p, "a.npy");
    qs_error err = {0};
    qs_dtype dts[] = {QS_DTYPE_F32, QS_DTYPE_F16, QS_DTYPE_I32, QS_DTYPE_I64, QS_DTYPE_F64};
    for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
        int64_t shape[3] = {2, 3, 5};
        qs_tensor t, r;
        assert_int_equal(qs_tensor_init(&t, dts[k], 3, shape, &err), QS_OK);
        unsigned char *b = t.data;
        for (size_t i = 0; i < qs_tensor_nbytes(&t); i++) b[i] = (unsigned char)(i * 37 + k);
        assert_int_equal(qs_npy_write(p, &t, &err), QS_OK);
        assert_int_equal(qs_npy_read(p, &r, &err), QS_OK);
        assert_int_equal(r.dtype, dts[k]);
        assert_int_equal(r.ndim, 3);
        assert_int_equal(r.shape[2], 5);
        assert_memory_equal(r.data, t.data, qs_tensor_nbytes(&t));
        qs_tensor_free(&t);
        qs_tensor_free(&r);
    }
    /* 0-d and empty */
    qs_tensor t, r;
    assert_int_equal(qs_tensor_init(&t, QS_DTYPE_I64, 0, NULL, &err), QS_OK);
    *(int64_t *)t.data = -42;
    assert_int_equal(qs_npy_write(p, &t, &err), QS_OK);
    assert_int_equal(qs_npy_read(p, &r, &err), QS_OK);
    assert_int_equal(r.ndim, 0);
    assert_int_equal(*(int64_t *)r.data, -42);
    qs_tensor_free(&t);
    qs_tensor_free(&r);
    int64_t es[2] = {0, 9};
    assert_int_equal(qs_tensor_init(&t, QS_DTYPE_F32, 2, es, &err), QS_OK);
    assert_int_equal(qs_npy_write(p, &t, &err), QS_OK);
    assert_int_equal(qs_npy_read(p, &r, &err), QS_OK);
    assert_int_equal(r.shape[0], 0);
    assert_int_equal(r.shape[1], 9);
    qs_tensor_free(&t);
    qs_tensor_free(&r);
    /* no temp file left behind */
    char tmpname[400];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", p, (long)getpid());
    assert_int_not_equal(access(tmpname, F_OK), 0);
}

static void test_header_layout(void **state)
{
    (void)state;
    /* What numpy.save writes for float32 (3, 4), checked by hand against the
     * format spec: 10-byte prefix, dict, 20 growth spaces, pad to 128, '\n'. */
    char p[320];
    path_of(p, sizeof p, "layout.npy");
    qs_error err = {0};
    int64_t shape[2] = {3, 4};
    qs_tensor t;
    assert_int_equal(qs_tensor_init(&t, QS_DTYPE_F32, 2, shape, &err), QS_OK);
    assert_int_equal(qs_npy_write(p, &t, &err), QS_OK);
    qs_tensor_free(&t);
    unsigned char buf[256];
    FILE *f = fopen(p, "rb");
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(n, 128 + 48);
    assert_memory_equal(buf, "\x93NUMPY\x01\x00\x76\x00", 10);
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
    assert_memory_equal(buf + 10, dict, strlen(dict));
    for (size_t i = 10 + strlen(dict); i < 127; i++) assert_int_equal(buf[i], ' ');
    assert_int_equal(buf[127], '\n');
}

static void test_read_variants(void **state)
{
    (void)state;
    char p[320];
    path_of(p, sizeof p, "v.npy");
    qs_error err = {0};
    qs_tensor r;
    /* format 2.0, double quotes, keys in another order, Python 2 long suffix */
    float v[3] = {1.5f, -2.0f, 0.25f};
    write_npy(p, 2, "{\"shape\": (3L,), \"fortran_order\": False, \"descr\": \"<f4\"}", v, sizeof v);
    assert_int_equal(qs_npy_read(p, &r, &err), QS_OK);
    assert_int_equal(r.ndim, 1);
    assert_int_equal(r.shape[0], 3);
    assert_memory_equal(r.data, v, sizeof v);
    qs_tensor_free(&r);
    /* version 3.0 header, f64 read as f32 */
    double d[2] = {0.1, -3.0};
    write_npy(p, 3, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", d, sizeof d);
    assert_int_equal(qs_npy_read_f32(p, &r, &err), QS_OK);
    assert_int_equal(r.dtype, QS_DTYPE_F32);
    assert_true(((float *)r.data)[0] == (float)0.1);
    assert_true(((float *)r.data)[1] == -3.0f);
    qs_tensor_free(&r);
    /* f16 read as f32: 0x3c00 = 1.0, 0xc000 = -2.0, 0x3555 = 0.333251953125 */
    uint16_t h[3] = {0x3c00, 0xc000, 0x3555};
    write_npy(p, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 3), }", h, sizeof h);
    assert_int_equal(qs_npy_read_f32(p, &r, &err), QS_OK);
    assert_true(((float *)r.data)[0] == 1.0f);
    assert_true(((float *)r.data)[1] == -2.0f);
    assert_true(((float *)r.data)[2] == 0.333251953125f);
    qs_tensor_free(&r);
    /* int64 token ids to int32, and out of range */
    int64_t ids[3] = {0, 2047, -7};
    write_npy(p, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", ids, sizeof ids);
    assert_int_equal(qs_npy_read_i32(p, &r, &err), QS_OK);
    assert_int_equal(r.dtype, QS_DTYPE_I32);
    assert_int_equal(((int32_t *)r.data)[1], 2047);
    assert_int_equal(((int32_t *)r.data)[2], -7);
    qs_tensor_free(&r);
    ids[2] = (int64_t)1 << 33;
    write_npy(p, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", ids, sizeof ids);
    assert_int_equal(qs_npy_read_i32(p, &r, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "element 2"));
    assert_non_null(strstr(err.msg, "v.npy"));
    /* float array as token ids is an error, ids as floats too */
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", v, sizeof v);
    assert_int_equal(qs_npy_read_i32(p, &r, &err), QS_ERR_INPUT);
    write_npy(p, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", ids, sizeof ids);
    assert_int_equal(qs_npy_read_f32(p, &r, &err), QS_ERR_INPUT);
}

/* Each malformed file gives an input error (exit code 2) naming the file and the problem. */
static void expect_bad(const char *path, const char *needle)
{
    qs_error err = {0};
    qs_tensor r;
    qs_status s = qs_npy_read(path, &r, &err);
    assert_int_not_equal(s, QS_OK);
    assert_int_equal(qs_status_exit_code(s), 2);
    if (!strstr(err.msg, needle) || !strstr(err.msg, path)) fail_msg("message '%s' lacks '%s' or the path", err.msg, needle);
    assert_null(strchr(err.msg, '\n'));
}

static void test_errors(void **state)
{
    (void)state;
    char p[320];
    path_of(p, sizeof p, "bad.npy");
    float v[12] = {0};
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }", v, sizeof v);
    expect_bad(p, "Fortran");
    write_npy(p, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4), }", v, sizeof v);
    expect_bad(p, "big-endian");
    write_npy(p, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4), }", v, 12);
    expect_bad(p, "unsupported dtype '|u1'");
    write_npy(p, 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", v, 24);
    expect_bad(p, "unsupported dtype");
    write_npy(p, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", v, 12);
    expect_bad(p, "structured");
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", v, sizeof v - 4);
    expect_bad(p, "truncated");
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }", v, sizeof v);
    expect_bad(p, "trailing");
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False}", v, 4);
    expect_bad(p, "lacks 'shape'");
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -4), }", v, 4);
    expect_bad(p, "malformed");
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'x': 1}", v, sizeof v);
    expect_bad(p, "unexpected");
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)", v, sizeof v);
    expect_bad(p, "malformed");
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }",
              v, 4);
    expect_bad(p, "overflows");
    FILE *f = fopen(p, "wb");
    fputs("PK\x03\x04 not numpy at all", f);
    fclose(f);
    expect_bad(p, "not a .npy file");
    f = fopen(p, "wb");
    fwrite("\x93NUMPY\x01\x00\xff\x7f{'descr'", 1, 17, f);
    fclose(f);
    expect_bad(p, "longer than the file");
    f = fopen(p, "wb");
    fwrite("\x93NUMPY\x09\x00\x10\x00", 1, 10, f);
    fclose(f);
    expect_bad(p, "version 9.0");
    path_of(p, sizeof p, "missing.npy");
    expect_bad(p, "cannot open");
}

/* The memory parser rejects a header cut short anywhere. */
static void test_parse_truncations(void **state)
{
    (void)state;
    const char *dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }";
    unsigned char buf[128];
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    size_t dl = strlen(dict), hl = 128 - 10;
    buf[8] = (unsigned char)hl;
    buf[9] = 0;
    memcpy(buf + 10, dict, dl);
    memset(buf + 10 + dl, ' ', hl - dl - 1);
    buf[127] = '\n';
    qs_npy_header h;
    qs_error err = {0};
    assert_int_equal(qs_npy_parse_header(buf, sizeof buf, "mem", &h, &err), QS_OK);
    assert_int_equal(h.dtype, QS_DTYPE_I32);
    assert_int_equal(h.ndim, 2);
    assert_int_equal(h.data_offset, 128);
    assert_int_equal(h.nbytes, 16);
    for (size_t len = 0; len < sizeof buf; len++)
        assert_int_equal(qs_npy_parse_header(buf, len, "mem", &h, &err), QS_ERR_INPUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),          cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_read_variants),      cmocka_unit_test(test_errors),
        cmocka_unit_test(test_parse_truncations),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
