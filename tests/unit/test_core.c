/* test_core.c — status codes, dtype conversion, option parsing, CPU backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/half.h"
#include "kernels/tensor.h"
#include "pipeline/cli/cli.h"

static void test_exit_codes(void **state)
{
    (void)state;
    assert_int_equal(qs_status_exit_code(QS_OK), 0);
    assert_int_equal(qs_status_exit_code(QS_ERR_INPUT), 2);
    assert_int_equal(qs_status_exit_code(QS_ERR_INTERRUPTED), 3);
    assert_int_equal(qs_status_exit_code(QS_ERR_IO), 1);
    qs_error err;
    qs_error_clear(&err);
    assert_int_equal(qs_error_set(&err, QS_ERR_INPUT, "%s: tensor '%s'", "a.safetensors", "w"), QS_ERR_INPUT);
    qs_error_prefix(&err, "rank %d", 3);
    assert_string_equal(err.msg, "rank 3: a.safetensors: tensor 'w'");
}

/* Every finite f16 survives f16 -> f32 -> f16, and the f32 value is exact:
 * checked against the definition value = (-1)^s * 2^(e-15) * (1 + m/1024). */
static void test_f16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t e = (h >> 10) & 31, m = h & 1023;
        float f = qs_f16_to_f32((uint16_t)h);
        if (e == 31) {
            if (m) assert_true(isnan(f));
            else assert_true(isinf(f));
            continue;
        }
        double ref = e ? ldexp(1.0 + m / 1024.0, (int)e - 15) : ldexp(m / 1024.0, -14);
        if (h & 0x8000) ref = -ref;
        assert_true((double)f == ref);
        assert_int_equal(qs_f32_to_f16(f), h);
    }
}

/* Round-to-nearest-even on f32 -> f16 checked against a double-precision
 * reference that picks the nearer neighbour, ties to the even one. */
static void test_f16_rounding(void **state)
{
    (void)state;
    uint32_t seed = 12345;
    for (int i = 0; i < 200000; i++) {
        seed = seed * 1664525u + 1013904223u;
        float x = qs_bits_f32((seed & 0x8fffffffu) | 0x30000000u); /* magnitudes ~1e-9 .. 1e5 */
        if (!isfinite(x) || fabsf(x) >= 65504.0f) continue;
        uint16_t h = qs_f32_to_f16(x);
        double v = qs_f16_to_f32(h);
        /* neighbours */
        uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
        double vu = qs_f16_to_f32(up), vd = (h & 0x7fff) ? qs_f16_to_f32(dn) : -v;
        double d = fabs(v - x);
        assert_true(d <= fabs(vu - x) + 1e-30);
        assert_true(d <= fabs(vd - x) + 1e-30);
        if (d == fabs(vu - x) || d == fabs(vd - x)) assert_int_equal(h & 1, 0);
    }
    assert_int_equal(qs_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(qs_f32_to_f16(65504.0f), 0x7bff);
    assert_true(isnan(qs_f16_to_f32(qs_f32_to_f16(NAN))));
}

static void test_bf16(void **state)
{
    (void)state;
    /* 1 + 2^-8 is a tie between 1 and 1 + 2^-7: goes to even (1.0). */
    assert_int_equal(qs_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
    /* 1 + 3*2^-8 is a tie between 1+2^-7 (odd) and 1+2^-6 (even). */
    assert_int_equal(qs_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
    assert_true(qs_bf16_to_f32(0x3f81) == 1.0f + 1.0f / 128);
    assert_true(isnan(qs_bf16_to_f32(qs_f32_to_bf16(NAN))));
}

static void test_tensor(void **state)
{
    (void)state;
    qs_tensor t;
    qs_error err;
    int64_t shape[3] = {2, 3, 4};
    assert_int_equal(qs_tensor_init(&t, QS_DTYPE_BF16, 3, shape, &err), QS_OK);
    assert_int_equal(qs_tensor_numel(&t), 24);
    assert_int_equal(qs_tensor_nbytes(&t), 48);
    assert_int_equal(((uintptr_t)t.data) % 64, 0);
    char buf[64];
    assert_string_equal(qs_shape_str(3, shape, buf, sizeof buf), "[2,3,4]");
    qs_tensor_free(&t);
    qs_dtype dt;
    assert_true(qs_dtype_parse("BF16", &dt));
    assert_int_equal(dt, QS_DTYPE_BF16);
    assert_false(qs_dtype_parse("F8_E4M3X", &dt));
}

static void test_parse(void **state)
{
    (void)state;
    qs_error err;
    long v;
    uint64_t b;
    double d;
    assert_int_equal(qs_parse_long("--bits", "4", 2, 8, &v, &err), QS_OK);
    assert_int_equal(v, 4);
    assert_int_equal(qs_parse_long("--bits", "9", 2, 8, &v, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--bits"));
    assert_int_equal(qs_parse_long("--bits", "4x", 2, 8, &v, &err), QS_ERR_INPUT);
    assert_int_equal(qs_parse_bytes("--gpu-mem", "80GiB", &b, &err), QS_OK);
    assert_true(b == 80ull << 30);
    assert_int_equal(qs_parse_bytes("--gpu-mem", "512M", &b, &err), QS_OK);
    assert_true(b == 512ull << 20);
    assert_int_equal(qs_parse_bytes("--gpu-mem", "12parsecs", &b, &err), QS_ERR_INPUT);
    assert_int_equal(qs_parse_double("--damp", "0.01", &d, &err), QS_OK);
    assert_true(d == 0.01);
    assert_int_equal(qs_parse_double("--damp", "nan", &d, &err), QS_ERR_INPUT);
}

/* The CPU backend against plain loops. */
static void test_backend_cpu(void **state)
{
    (void)state;
    const qs_backend_i *be = qs_backend_cpu();
    enum { M = 5, N = 7, K = 6 };
    float a[K * M], b[K * N], c[M * N], ref[M * N];
    for (int i = 0; i < K * M; i++) a[i] = (float)((i * 37) % 11) - 5.0f;
    for (int i = 0; i < K * N; i++) b[i] = (float)((i * 13) % 7) - 3.0f;
    /* C = Aᵀ B with A stored [K,M] */
    be->sgemm(be->ctx, true, false, M, N, K, 1.0f, a, M, b, N, 0.0f, c, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0;
            for (int k = 0; k < K; k++) s += a[k * M + i] * b[k * N + j];
            ref[i * N + j] = s;
        }
    for (int i = 0; i < M * N; i++) assert_true(c[i] == ref[i]);
    /* syrk: H = Bᵀ B (upper) then Cholesky/inverse of H + 10 I, checked by H · H⁻¹ = I */
    float h[N * N] = {0}, hi[N * N];
    be->ssyrk_t(be->ctx, N, K, 1.0f, b, N, 0.0f, h, N);
    for (int i = 0; i < N; i++) {
        h[i * N + i] += 10.0f;
        for (int j = 0; j < i; j++) h[i * N + j] = h[j * N + i];
    }
    memcpy(hi, h, sizeof h);
    assert_int_equal(be->spotrf(be->ctx, true, N, hi, N), QS_OK);
    assert_int_equal(be->spotri(be->ctx, true, N, hi, N), QS_OK);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < i; j++) hi[i * N + j] = hi[j * N + i];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < N; k++) s += (double)h[i * N + k] * hi[k * N + j];
            assert_true(fabs(s - (i == j)) < 1e-4);
        }
    float notpd[4] = {1, 2, 2, 1};
    assert_int_equal(be->spotrf(be->ctx, true, 2, notpd, 2), QS_ERR_NUMERIC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_codes), cmocka_unit_test(test_f16_exhaustive), cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bf16),       cmocka_unit_test(test_tensor),         cmocka_unit_test(test_parse),
        cmocka_unit_test(test_backend_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
