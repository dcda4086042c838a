/* test_device.c — the device layer without a GPU: `--device` values, the
 * choice of a GPU per node-local rank, the memory fit check against a real
 * plan (BLOOM-176B's config), the dispatch to a backend's own GPTQ/RTN, the
 * device code path of the Hessian (on a backend that says `device` but keeps
 * host memory, so it runs here) against the host path, bit for bit, and what
 * the CUDA probe says on a machine without one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/device.h"
#include "kernels/hessian.h"
#include "kernels/ops_table.h"
#include "kernels/quant.h"
#include "kernels/tensor.h"
#include "pipeline/formats/model_config.h"
#include "schedulers/partition.h"
#include "workers/device_select.h"

/* ---- --device values and the choice of a GPU -------------------------------------- */

static void test_parse(void **state)
{
    (void)state;
    qs_device_kind k;
    qs_error err;
    assert_int_equal(qs_device_parse("cpu", "--device", &k, &err), QS_OK);
    assert_int_equal(k, QS_DEVICE_CPU);
    assert_int_equal(qs_device_parse("cuda", "--device", &k, &err), QS_OK);
    assert_int_equal(k, QS_DEVICE_CUDA);
    assert_int_equal(qs_device_parse("auto", "--device", &k, &err), QS_OK);
    assert_int_equal(k, QS_DEVICE_AUTO);
    assert_int_equal(qs_device_parse("gpu", "--device", &k, &err), QS_ERR_INPUT);
    assert_string_equal(err.msg, "--device: expected cpu, cuda or auto, got 'gpu'");
    assert_int_equal(qs_device_parse(NULL, "device", &k, &err), QS_ERR_INPUT);
    assert_string_equal(qs_device_kind_name(QS_DEVICE_AUTO), "auto");
}

static void test_pick(void **state)
{
    (void)state;
    qs_device_kind k;
    int idx;
    qs_error err;
    /* cpu is the CPU whatever the node has */
    assert_int_equal(qs_device_pick(QS_DEVICE_CPU, 0, 1, 8, "", &k, &idx, &err), QS_OK);
    assert_true(k == QS_DEVICE_CPU && idx == -1);
    /* no GPU: cuda is bad input naming why, auto is the CPU */
    assert_int_equal(qs_device_pick(QS_DEVICE_CUDA, 0, 1, 0, "no driver", &k, &idx, &err), QS_ERR_INPUT);
    assert_string_equal(err.msg, "--device cuda: no CUDA device was found (no driver)");
    assert_int_equal(qs_device_pick(QS_DEVICE_AUTO, 0, 1, 0, "no driver", &k, &idx, &err), QS_OK);
    assert_true(k == QS_DEVICE_CPU && idx == -1);
    /* one GPU per rank by node-local rank */
    for (int r = 0; r < 4; r++) {
        assert_int_equal(qs_device_pick(QS_DEVICE_CUDA, r, 4, 4, "", &k, &idx, &err), QS_OK);
        assert_true(k == QS_DEVICE_CUDA && idx == r);
        assert_int_equal(qs_device_pick(QS_DEVICE_AUTO, r, 4, 8, "", &k, &idx, &err), QS_OK);
        assert_true(k == QS_DEVICE_CUDA && idx == r);
    }
    /* more ranks on the node than GPUs: cuda refuses, auto takes the CPU */
    assert_int_equal(qs_device_pick(QS_DEVICE_CUDA, 4, 5, 4, "", &k, &idx, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "5 ranks on this node but 4 CUDA devices"));
    assert_int_equal(qs_device_pick(QS_DEVICE_AUTO, 4, 5, 4, "", &k, &idx, &err), QS_OK);
    assert_true(k == QS_DEVICE_CPU && idx == -1);
    /* a nonsense local rank is a bug, not bad input */
    assert_int_equal(qs_device_pick(QS_DEVICE_CUDA, 3, 2, 4, "", &k, &idx, &err), QS_ERR_INTERNAL);
}

/* ---- memory fit ------------------------------------------------------------------------- */

static void test_fit_check(void **state)
{
    (void)state;
    const uint64_t G = 1ull << 30;
    qs_error err;
    assert_int_equal(qs_device_fit_check(10 * G, 80 * G, 80 * G, "cuda:0 (X)", "rank 0", &err), QS_OK);
    /* 5% of the device stays free: 76 GiB of an empty 80 GiB device is the most */
    assert_int_equal(qs_device_fit_check(76 * G, 80 * G, 80 * G, "cuda:0 (X)", "rank 0", &err), QS_OK);
    assert_int_equal(qs_device_fit_check(76 * G + 1, 80 * G, 80 * G, "cuda:0 (X)", "rank 0", &err), QS_ERR_INPUT);
    assert_int_equal(qs_device_fit_check(30 * G, 20 * G, 80 * G, "cuda:1 (NVIDIA A100)", "rank 5 (blocks 3..4)", &err),
                     QS_ERR_INPUT);
    assert_string_equal(err.msg, "rank 5 (blocks 3..4): needs 30.00 GiB of device memory but cuda:1 (NVIDIA A100) "
                                 "has 20.00 GiB free of 80.00 GiB (4.00 GiB kept for cuBLAS/cuSOLVER workspaces): "
                                 "use more ranks (qshard plan --gpu-mem), fewer calibration rows or a smaller "
                                 "--micro-batch");
    assert_null(strchr(err.msg, '\n'));
    /* a small device keeps at least 256 MiB: 768 MiB of an empty 1 GiB */
    assert_int_equal(qs_device_fit_check(768ull << 20, 1 * G, 1 * G, "d", "w", &err), QS_OK);
    assert_int_equal(qs_device_fit_check((768ull << 20) + 1, 1 * G, 1 * G, "d", "w", &err), QS_ERR_INPUT);
}

/* The plan's device bytes of BLOOM-176B on 64 ranks against an H200 and a
 * device with 16 GiB free. */
static void test_plan_check(void **state)
{
    (void)state;
    char path[4096];
    const char *src = getenv("QS_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/jobs/configs/bloom-176b.json", src ? src : ".");
    qs_model_config cfg;
    qs_error err;
    assert_int_equal(qs_model_config_load(path, &cfg, &err), QS_OK);
    qs_cost_params p;
    qs_cost_params_default(&p);
    qs_plan plan;
    assert_int_equal(qs_plan_make(&cfg, &p, 64, 1, 0, 0, &plan, &err), QS_OK);
    const uint64_t G = 1ull << 30;
    qs_device_info h200 = {.index = 0, .free_bytes = 140 * G, .total_bytes = 141 * G};
    strcpy(h200.name, "NVIDIA H200");
    for (int r = 0; r < 64; r++) {
        assert_true(plan.stages[r].peak_device > 1 * G); /* a BLOOM block is many GiB */
        assert_int_equal(qs_device_check_plan(&plan, r, &h200, &err), QS_OK);
    }
    qs_device_info small = h200;
    small.free_bytes = 16 * G;
    assert_int_equal(qs_device_check_plan(&plan, 3, &small, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "rank 3 (blocks "));
    assert_non_null(strstr(err.msg, "cuda:0 (NVIDIA H200) has 16.00 GiB free"));
    assert_int_equal(qs_device_check_plan(&plan, 64, &h200, &err), QS_ERR_INTERNAL);
    qs_plan_free(&plan);
    /* 16 stages × 4 replicas: rank 37 is replica 1 of stage 9 and holds stage 9's blocks */
    assert_int_equal(qs_plan_make(&cfg, &p, 64, 4, 0, 0, &plan, &err), QS_OK);
    assert_int_equal(plan.n_stages, 16);
    assert_int_equal(qs_device_check_plan(&plan, 37, &small, &err), QS_ERR_INPUT);
    char want[96];
    snprintf(want, sizeof want, "rank 37 (stage 9, replica 1: blocks %d..%d)", plan.stages[9].first_block,
             plan.stages[9].end_block - 1);
    assert_non_null(strstr(err.msg, want));
    for (int r = 0; r < 64; r++) assert_int_equal(qs_device_check_plan(&plan, r, &h200, &err), QS_OK);
    assert_int_equal(qs_device_check_plan(&plan, 64, &h200, &err), QS_ERR_INTERNAL);
    qs_plan_free(&plan);
}

/* ---- the dispatch picks a backend's own quantizers ---------------------------------- */

static int g_gptq_calls, g_rtn_calls;

static qs_status fake_gptq(void *ctx, const float *w, int64_t rows, int64_t cols, float *h, const qs_quant_opts *o,
                           qs_quant_result *res, qs_error *err)
{
    g_gptq_calls++;
    return qs_error_set(err, QS_ERR_UNSUPPORTED, "fake gptq %lldx%lld", (long long)rows, (long long)cols);
}

static qs_status fake_rtn(void *ctx, const float *w, int64_t rows, int64_t cols, const qs_quant_opts *o,
                          qs_quant_result *res, qs_error *err)
{
    g_rtn_calls++;
    return qs_error_set(err, QS_ERR_UNSUPPORTED, "fake rtn");
}

static void test_dispatch(void **state)
{
    (void)state;
    const int64_t rows = 16, cols = 64;
    float w[16 * 64], h[64 * 64], h2[64 * 64];
    for (int i = 0; i < rows * cols; i++) w[i] = sinf(0.37f * (float)i);
    for (int i = 0; i < cols; i++)
        for (int j = 0; j < cols; j++) h[i * cols + j] = (i == j ? 2.0f : 0.0f) + 0.01f * cosf((float)(i + j));
    qs_quant_opts o;
    qs_quant_opts_default(&o);
    o.group_size = 32;
    qs_quant_result a, b;
    qs_error err;
    assert_int_equal(qs_quant_result_init(&a, rows, cols, &o, &err), QS_OK);
    assert_int_equal(qs_quant_result_init(&b, rows, cols, &o, &err), QS_OK);
    /* the CPU table has no quantizers of its own: the dispatch runs kernels/cpu */
    const qs_backend_i *cpu = qs_backend_cpu();
    assert_null(cpu->gptq);
    assert_null(cpu->rtn);
    memcpy(h2, h, sizeof h);
    assert_int_equal(qs_quant_run(cpu, w, rows, cols, h2, &o, &a, &err), QS_OK);
    memcpy(h2, h, sizeof h);
    assert_int_equal(qs_quant_gptq(cpu, w, rows, cols, h2, &o, &b, &err), QS_OK);
    assert_memory_equal(a.codes, b.codes, (size_t)(rows * cols));
    /* a backend with its own: the dispatch calls them, not the CPU's */
    qs_backend_i fake = *cpu;
    fake.gptq = fake_gptq;
    fake.rtn = fake_rtn;
    memcpy(h2, h, sizeof h);
    assert_int_equal(qs_quant_run(&fake, w, rows, cols, h2, &o, &a, &err), QS_ERR_UNSUPPORTED);
    assert_string_equal(err.msg, "fake gptq 16x64");
    o.method = QS_QUANT_METHOD_RTN;
    assert_int_equal(qs_quant_run(&fake, w, rows, cols, NULL, &o, &a, &err), QS_ERR_UNSUPPORTED);
    assert_int_equal(g_gptq_calls, 1);
    assert_int_equal(g_rtn_calls, 1);
    qs_quant_result_free(&a);
    qs_quant_result_free(&b);
}

/* ---- the Hessian's device path, on host memory ------------------------------------------- */

static int g_allocs;

static void *fake_alloc(void *ctx, size_t bytes)
{
    g_allocs++;
    return qs_malloc(bytes);
}

static void fake_free(void *ctx, void *p)
{
    if (p) g_allocs--;
    qs_free(p);
}

/* A "device" backend that is the CPU backend with host memory: the device
 * branches of kernels/hessian.c (alloc/zero, ops->widen_f64, hessian_merge,
 * hessian_full) run here and must give the host path's bits. */
static void test_hessian_device_path(void **state)
{
    (void)state;
    qs_backend_i dev = *qs_backend_cpu();
    dev.name = "fake-device";
    dev.device = true;
    dev.alloc = fake_alloc;
    dev.free = fake_free;
    const int64_t n = 40, m = 1500, ld = 45;
    float *x = malloc(sizeof(float) * (size_t)(m * ld));
    for (int64_t i = 0; i < m * ld; i++) x[i] = (float)((i * 7919) % 1000) / 250.0f - 2.0f;
    float *out_host = malloc(sizeof(float) * (size_t)(n * n)), *out_dev = malloc(sizeof(float) * (size_t)(n * n));
    float *part = calloc((size_t)(n * n), sizeof(float));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) part[i * n + j] = 0.001f * (float)(i + 2 * j);
    for (int f64 = 0; f64 < 2; f64++) {
        qs_hessian hh, hd;
        qs_error err;
        assert_int_equal(qs_hessian_init(&hh, n, f64, &err), QS_OK);
        assert_int_equal(qs_hessian_init_on(&hd, &dev, n, f64, &err), QS_OK);
        assert_ptr_equal(hd.mem, &dev);
        for (int k = 0; k < 2; k++) {
            qs_hessian *h = k ? &hd : &hh;
            const qs_backend_i *be = k ? &dev : qs_backend_cpu();
            assert_int_equal(qs_hessian_add(h, be, x, 1100, ld, &err), QS_OK); /* f64: two widened pieces */
            assert_int_equal(qs_hessian_add(h, be, x + 1100 * ld, 400, ld, &err), QS_OK);
            assert_int_equal(qs_hessian_merge_f32(h, part, 77, &err), QS_OK);
        }
        assert_int_equal(hh.count, hd.count);
        qs_hessian_get_f32(&hh, out_host);
        qs_hessian_get_f32(&hd, out_dev);
        assert_memory_equal(out_host, out_dev, sizeof(float) * (size_t)(n * n));
        /* the host syrk path must not take a device Hessian */
        assert_int_equal(qs_hessian_add(&hd, qs_backend_cpu(), x, 10, ld, &err), QS_ERR_INTERNAL);
        /* nor merge it with a host one */
        assert_int_equal(qs_hessian_merge(&hd, &hh, &err), QS_ERR_INPUT);
        qs_hessian_free(&hh);
        qs_hessian_free(&hd);
    }
    assert_int_equal(g_allocs, 0); /* every device buffer went back */
    free(x), free(out_host), free(out_dev), free(part);
}

/* ---- the CPU table's memory calls and ops ------------------------------------------------ */

static void test_cpu_table(void **state)
{
    (void)state;
    const qs_backend_i *be = qs_backend_cpu();
    assert_false(be->device);
    const qs_ops_i *ops = be->ops;
    assert_non_null(ops);
    /* every slot of the table is filled */
    void (*const *slot)(void) = (void (*const *)(void))ops;
    for (size_t i = 0; i < sizeof *ops / sizeof(void (*)(void)); i++) assert_non_null(slot[i]);
    qs_error err;
    float *p = be->alloc(be->ctx, 64);
    float src[16];
    for (int i = 0; i < 16; i++) src[i] = (float)i;
    assert_int_equal(be->copy(be->ctx, p, src, sizeof src, &err), QS_OK);
    assert_memory_equal(p, src, sizeof src);
    assert_int_equal(be->zero(be->ctx, p, sizeof src, &err), QS_OK);
    assert_true(p[0] == 0.0f && p[15] == 0.0f);
    assert_int_equal(be->sync(be->ctx, &err), QS_OK);
    be->free(be->ctx, p);
}

/* ---- what the CUDA probe says where there is no GPU ------------------------------------ */

static void test_no_gpu_here(void **state)
{
    (void)state;
    char why[512] = "";
    int n = qs_cuda_device_count(why, sizeof why);
    if (n > 0) skip(); /* a GPU machine: the gpu tests cover it */
    assert_true(why[0] != '\0'); /* always a reason: no driver, no device, or a build without CUDA */
    qs_backend_i be;
    qs_error err;
    qs_status st = qs_backend_cuda_init(&be, 0, NULL, &err);
    assert_true(st == QS_ERR_INPUT || st == QS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "cuda:0"));
    qs_backend_cuda_free(&be);
    qs_device_choice c;
    assert_int_equal(qs_device_select(QS_DEVICE_CUDA, NULL, &c, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "no CUDA device was found"));
    assert_int_equal(qs_device_select(QS_DEVICE_AUTO, NULL, &c, &err), QS_OK);
    assert_int_equal(c.kind, QS_DEVICE_CPU);
    assert_non_null(strstr(c.why_cpu, "no CUDA device"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),       cmocka_unit_test(test_pick),
        cmocka_unit_test(test_fit_check),   cmocka_unit_test(test_plan_check),
        cmocka_unit_test(test_dispatch),    cmocka_unit_test(test_hessian_device_path),
        cmocka_unit_test(test_cpu_table),   cmocka_unit_test(test_no_gpu_here),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
