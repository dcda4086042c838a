/* cmd_layer.c — `qshard layer`: quantize one weight matrix from .npy files.
 *
 * The debugging tool for one linear and the parity harness for the
 * quantization core (kernels/quant.h): W [out, in] and either the Hessian
 * H [in, in] or the layer's inputs X [..., in] (H = 2/n Σ x xᵀ is then
 * accumulated here), RTN or GPTQ with every option, the dequantized Q and
 * optionally the export-layout codes/scales/zeros/g_idx. It prints the
 * H-weighted error tr((W - Q) H (W - Q)ᵀ), RTN's for comparison, and the time.
 * With --device cuda the Hessian and GPTQ (or RTN) run on the GPU (the
 * reported losses are computed on the CPU, the same way for both devices).
 */
#include <getopt.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/device.h"
#include "kernels/hessian.h"
#include "kernels/quant.h"
#include "kernels/tensor.h"
#include "pipeline/checkpoint_check.h"
#include "pipeline/cli/cli.h"
#include "pipeline/formats/npy.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard layer --weight W.npy (--hessian H.npy | --inputs X.npy) --out Q.npy\n"
            "                    [--method rtn|gptq] [--bits B] [--group-size G] [--sym|--asym]\n"
            "                    [--act-order] [--static-groups] [--damp D] [--block-size N] [--mse]\n"
            "                    [--no-fp16-scales] [--factor-f64] [--hessian-f64] [--device cpu|cuda|auto] [--tf32]\n"
            "                    [--codes C.npy] [--scales S.npy] [--zeros Z.npy] [--g-idx I.npy] [--json]\n\n"
            "  --weight PATH       W [out, in], float32 or float16\n"
            "  --hessian PATH      H [in, in], float32 or float64, symmetric (2/n sum x x^T)\n"
            "  --inputs PATH       X [samples, in] (or [..., in]): H is accumulated from it\n"
            "  --method M          rtn or gptq (default gptq; rtn needs no H, but then prints no loss)\n"
            "  --bits B            2, 3, 4 or 8 (default 4)\n"
            "  --group-size G      -1 (one group per output row) or a divisor of in (default 128)\n"
            "  --sym / --asym      symmetric (default) or asymmetric grid\n"
            "  --act-order         GPTQ columns by decreasing H_ii (desc_act)\n"
            "  --static-groups     group params from the original W, before any update\n"
            "  --damp D            damp_percent: H_ii += D * mean(diag H) (default 0.01)\n"
            "  --block-size N      GPTQ lazy-update block (default 128)\n"
            "  --mse               clipping search for the grid (norm 2.4, grid 100, maxshrink 0.8)\n"
            "  --no-fp16-scales    keep f32 scales (default: rounded to fp16, as exported)\n"
            "  --factor-f64        factor H^-1 in double precision\n"
            "  --hessian-f64       accumulate H from --inputs in double precision\n"
            "  --device D          cpu (default), cuda (the Hessian and the quantizer on the GPU; exit 2\n"
            "                      when there is none) or auto (cuda when a GPU is found, else cpu)\n"
            "  --tf32              with cuda: let cuBLAS use TF32 tensor cores in f32 GEMMs (faster,\n"
            "                      ~1e-3 relative products; default off)\n"
            "  --out PATH          Q, the dequantized weight [out, in] float32\n"
            "  --codes PATH        codes [out, in] int32 in [0, 2^B - 1], original column order\n"
            "  --scales PATH       scales [groups, out] float32\n"
            "  --zeros PATH        zero points [groups, out] int32\n"
            "  --g-idx PATH        group of each input column [in] int32\n"
            "  --json              one JSON object on stdout (loss, rtn_loss, seconds, ...)\n\n"
            "Q[o, i] = scales[g_idx[i], o] * (codes[o, i] - zeros[g_idx[i], o]) exactly.\n"
            "See docs/quantization.md for the grid and the GPTQ variant.\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static qs_status check_finite(const char *path, const char *what, const float *v, int64_t n, int64_t cols,
                              qs_error *err)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': element [%lld,%lld] is %g, expected finite", path,
                                what, (long long)(i / cols), (long long)(i % cols), (double)v[i]);
    return QS_OK;
}

/* Symmetric up to float noise: |H_ij - H_ji| <= 1e-5·max|H| + 1e-4·max(|H_ij|, |H_ji|). */
static qs_status check_symmetric(const char *path, const float *h, int64_t n, qs_error *err)
{
    float mx = 0.0f;
    for (int64_t i = 0; i < n * n; i++) mx = fmaxf(mx, fabsf(h[i]));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) {
            float a = h[i * n + j], b = h[j * n + i];
            if (fabsf(a - b) > 1e-5f * mx + 1e-4f * fmaxf(fabsf(a), fabsf(b)))
                return qs_error_set(err, QS_ERR_INPUT,
                                    "%s: tensor 'hessian': not symmetric: H[%lld,%lld] = %g but H[%lld,%lld] = %g",
                                    path, (long long)i, (long long)j, (double)a, (long long)j, (long long)i,
                                    (double)b);
        }
    return QS_OK;
}

static qs_status write_f32(const char *path, const float *v, int ndim, const int64_t *shape, qs_error *err)
{
    qs_tensor t = {.dtype = QS_DTYPE_F32, .ndim = ndim, .data = (void *)v, .borrowed = true};
    memcpy(t.shape, shape, sizeof(int64_t) * (size_t)ndim);
    return qs_npy_write(path, &t, err);
}

static qs_status write_i32(const char *path, const int32_t *v, int ndim, const int64_t *shape, qs_error *err)
{
    qs_tensor t = {.dtype = QS_DTYPE_I32, .ndim = ndim, .data = (void *)v, .borrowed = true};
    memcpy(t.shape, shape, sizeof(int64_t) * (size_t)ndim);
    return qs_npy_write(path, &t, err);
}

typedef struct layer_args {
    const char *weight, *hessian, *inputs, *out, *codes, *scales, *zeros, *g_idx, *device;
    bool json, hessian_f64, tf32;
    qs_quant_opts o;
} layer_args;

/* Accumulates H from x [m, in] on be (a device backend: the rows go up in
 * chunks, H comes back down) into the host [in, in] out. */
static qs_status accumulate(const layer_args *a, const qs_backend_i *be, const float *x, int64_t m, int64_t in,
                            float *out, qs_error *err)
{
    const int64_t chunk = 4096; /* streamed, as a run would */
    qs_hessian hs;
    QS_TRY(qs_hessian_init_on(&hs, be, in, a->hessian_f64, err));
    float *dx = NULL, *dh = NULL;
    qs_status st = QS_OK;
    if (be->device) {
        dx = be->alloc(be->ctx, (size_t)chunk * (size_t)in * sizeof(float));
        dh = be->alloc(be->ctx, (size_t)in * (size_t)in * sizeof(float));
        if (!dx || !dh)
            st = qs_error_set(err, QS_ERR_NOMEM, "%s: cannot allocate the inputs and H [%lld,%lld] on %s", a->inputs,
                              (long long)in, (long long)in, be->name);
    }
    for (int64_t r0 = 0; r0 < m && st == QS_OK; r0 += chunk) {
        int64_t k = m - r0 < chunk ? m - r0 : chunk;
        const float *src = x + r0 * in;
        if (be->device) {
            st = be->copy(be->ctx, dx, src, (size_t)(k * in) * sizeof(float), err);
            src = dx;
        }
        if (st == QS_OK) st = qs_hessian_add(&hs, be, src, k, in, err);
    }
    if (st == QS_OK && be->device) {
        qs_hessian_get_f32(&hs, dh);
        st = be->sync(be->ctx, err);
        if (st == QS_OK) st = be->copy(be->ctx, out, dh, (size_t)(in * in) * sizeof(float), err);
    } else if (st == QS_OK) {
        qs_hessian_get_f32(&hs, out);
    }
    if (dx) be->free(be->ctx, dx);
    if (dh) be->free(be->ctx, dh);
    qs_hessian_free(&hs);
    return st;
}

/* The H [in, in] from --hessian or --inputs (accumulated on be), full and
 * symmetric, in *h. */
static qs_status load_hessian(const layer_args *a, const qs_backend_i *be, int64_t in, float **h, int64_t *samples,
                              qs_error *err)
{
    qs_tensor t;
    const char *path = a->hessian ? a->hessian : a->inputs;
    QS_TRY(qs_npy_read_f32(path, &t, err));
    qs_status st = QS_OK;
    char sh[128];
    qs_shape_str(t.ndim, t.shape, sh, sizeof sh);
    if (a->hessian) {
        if (t.ndim != 2 || t.shape[0] != t.shape[1]) {
            st = qs_error_set(err, QS_ERR_INPUT, "%s: tensor 'hessian': shape %s, expected a square [%lld,%lld]", path,
                              sh, (long long)in, (long long)in);
        } else if (t.shape[0] != in) {
            st = qs_error_set(err, QS_ERR_INPUT,
                              "%s: tensor 'hessian': shape %s does not match the weight's %lld input columns, "
                              "expected [%lld,%lld]",
                              path, sh, (long long)in, (long long)in, (long long)in);
        }
        if (st == QS_OK) st = check_finite(path, "hessian", t.data, in * in, in, err);
        if (st == QS_OK) st = check_symmetric(path, t.data, in, err);
        if (st != QS_OK) {
            qs_tensor_free(&t);
            return st;
        }
        *h = t.data; /* take ownership */
        t.data = NULL;
        *samples = 0;
        return QS_OK;
    }
    if (t.ndim < 2 || t.shape[t.ndim - 1] != in) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: tensor 'inputs': shape %s, expected [samples,%lld] (the weight's in)",
                          path, sh, (long long)in);
        qs_tensor_free(&t);
        return st;
    }
    int64_t m = qs_tensor_numel(&t) / in;
    st = check_finite(path, "inputs", t.data, m * in, in, err);
    if (st == QS_OK) {
        *h = qs_malloc((size_t)in * (size_t)in * sizeof(float));
        if (!*h) st = qs_error_set(err, QS_ERR_NOMEM, "%s: cannot allocate H [%lld,%lld]", path, (long long)in, (long long)in);
    }
    if (st == QS_OK) st = accumulate(a, be, t.data, m, in, *h, err);
    qs_tensor_free(&t);
    *samples = m;
    return st;
}

static qs_status write_outputs(const layer_args *a, const qs_quant_result *res, qs_error *err)
{
    int64_t rows = res->rows, cols = res->cols;
    int64_t wshape[2] = {rows, cols}, gshape[2] = {res->groups, rows}, ishape[1] = {cols};
    QS_TRY(write_f32(a->out, res->q, 2, wshape, err));
    if (a->codes) {
        int32_t *c = qs_malloc((size_t)(rows * cols) * sizeof(int32_t));
        if (!c) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", a->codes);
        for (int64_t i = 0; i < rows * cols; i++) c[i] = res->codes[i];
        qs_status st = write_i32(a->codes, c, 2, wshape, err);
        qs_free(c);
        QS_TRY(st);
    }
    if (a->scales) QS_TRY(write_f32(a->scales, res->scales, 2, gshape, err));
    if (a->zeros) QS_TRY(write_i32(a->zeros, res->zeros, 2, gshape, err));
    if (a->g_idx) QS_TRY(write_i32(a->g_idx, res->g_idx, 1, ishape, err));
    return QS_OK;
}

static void report(const layer_args *a, const qs_backend_i *be, const qs_device_choice *dev,
                   const qs_quant_result *res, bool have_h, double loss, double rtn_loss, double seconds,
                   int64_t samples)
{
    const qs_quant_opts *o = &a->o;
    const char *method = o->method == QS_QUANT_METHOD_GPTQ ? "gptq" : "rtn";
    if (a->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "method", method);
        cJSON_AddStringToObject(j, "device", be->name);
        if (be->device) cJSON_AddStringToObject(j, "device_name", dev->info.name);
        cJSON_AddNumberToObject(j, "rows", (double)res->rows);
        cJSON_AddNumberToObject(j, "cols", (double)res->cols);
        cJSON_AddNumberToObject(j, "bits", o->bits);
        cJSON_AddNumberToObject(j, "group_size", o->group_size);
        cJSON_AddNumberToObject(j, "groups", (double)res->groups);
        cJSON_AddBoolToObject(j, "sym", o->sym);
        cJSON_AddBoolToObject(j, "act_order", o->act_order);
        cJSON_AddBoolToObject(j, "static_groups", o->static_groups);
        cJSON_AddBoolToObject(j, "mse", o->mse);
        cJSON_AddBoolToObject(j, "scales_fp16", o->scales_fp16);
        cJSON_AddNumberToObject(j, "damp", o->damp);
        cJSON_AddNumberToObject(j, "block_size", o->block_size);
        if (have_h) {
            cJSON_AddNumberToObject(j, "loss", loss);
            cJSON_AddNumberToObject(j, "rtn_loss", rtn_loss);
        } else {
            cJSON_AddNullToObject(j, "loss");
            cJSON_AddNullToObject(j, "rtn_loss");
        }
        if (o->method == QS_QUANT_METHOD_GPTQ) {
            cJSON_AddNumberToObject(j, "est_loss", res->est_loss);
            cJSON_AddNumberToObject(j, "dead_columns", (double)res->dead_columns);
            cJSON_AddNumberToObject(j, "damp_abs", res->damp_abs);
        }
        if (samples) cJSON_AddNumberToObject(j, "samples", (double)samples);
        cJSON_AddNumberToObject(j, "seconds", seconds);
        char *s = cJSON_PrintUnformatted(j);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
        return;
    }
    printf("%s %d-bit %s, group %d%s%s: W [%lld,%lld], %lld group(s)\n", method, o->bits, o->sym ? "sym" : "asym",
           o->group_size, o->act_order ? ", act-order" : "", o->static_groups ? ", static groups" : "",
           (long long)res->rows, (long long)res->cols, (long long)res->groups);
    if (have_h) {
        printf("loss %.6e   (tr((W-Q) H (W-Q)^T))\n", loss);
        printf("rtn  %.6e   (the same for round-to-nearest%s)\n", rtn_loss,
               rtn_loss > 0 ? "" : "; 0: W is on the grid");
        if (rtn_loss > 0) printf("ratio %.4f\n", loss / rtn_loss);
    } else {
        printf("loss n/a (no --hessian or --inputs)\n");
    }
    if (o->method == QS_QUANT_METHOD_GPTQ && res->dead_columns)
        printf("dead columns %lld (H_ii = 0)\n", (long long)res->dead_columns);
    if (be->device) printf("device %s (%s)%s\n", be->name, dev->info.name, a->tf32 ? ", TF32 GEMMs" : "");
    printf("seconds %.3f\n", seconds);
}

int qs_cmd_layer(int argc, char **argv)
{
    static const struct option opts[] = {
        {"weight", required_argument, 0, 'w'},  {"hessian", required_argument, 0, 'H'},
        {"inputs", required_argument, 0, 'x'},  {"method", required_argument, 0, 'm'},
        {"bits", required_argument, 0, 'b'},    {"group-size", required_argument, 0, 'g'},
        {"sym", no_argument, 0, 's'},           {"asym", no_argument, 0, 'a'},
        {"act-order", no_argument, 0, 'A'},     {"static-groups", no_argument, 0, 'S'},
        {"damp", required_argument, 0, 'd'},    {"block-size", required_argument, 0, 'B'},
        {"mse", no_argument, 0, 'M'},           {"no-fp16-scales", no_argument, 0, 'F'},
        {"factor-f64", no_argument, 0, '6'},    {"hessian-f64", no_argument, 0, '7'},
        {"out", required_argument, 0, 'o'},     {"codes", required_argument, 0, 'c'},
        {"scales", required_argument, 0, 'k'},  {"zeros", required_argument, 0, 'z'},
        {"g-idx", required_argument, 0, 'i'},   {"json", no_argument, 0, 'j'},
        {"device", required_argument, 0, 'D'},  {"tf32", no_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    if (qs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    layer_args a;
    memset(&a, 0, sizeof a);
    qs_quant_opts_default(&a.o);
    a.o.name = "weight";
    a.device = "cpu";
    qs_error err = {0};
    long v;
    double dv;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'w': a.weight = optarg; break;
        case 'H': a.hessian = optarg; break;
        case 'x': a.inputs = optarg; break;
        case 'm':
            if (strcmp(optarg, "rtn") == 0) a.o.method = QS_QUANT_METHOD_RTN;
            else if (strcmp(optarg, "gptq") == 0) a.o.method = QS_QUANT_METHOD_GPTQ;
            else return qs_cli_usage_error("layer", "--method: '%s', expected rtn or gptq", optarg);
            break;
        case 'b':
            if (qs_parse_long("--bits", optarg, 1, 64, &v, &err) != QS_OK) return qs_cli_report("layer", &err);
            a.o.bits = (int)v;
            break;
        case 'g':
            if (qs_parse_long("--group-size", optarg, -1, 1L << 30, &v, &err) != QS_OK)
                return qs_cli_report("layer", &err);
            a.o.group_size = (int)v;
            break;
        case 's': a.o.sym = true; break;
        case 'a': a.o.sym = false; break;
        case 'A': a.o.act_order = true; break;
        case 'S': a.o.static_groups = true; break;
        case 'd':
            if (qs_parse_double("--damp", optarg, &dv, &err) != QS_OK) return qs_cli_report("layer", &err);
            a.o.damp = dv;
            break;
        case 'B':
            if (qs_parse_long("--block-size", optarg, 1, 1L << 30, &v, &err) != QS_OK)
                return qs_cli_report("layer", &err);
            a.o.block_size = (int)v;
            break;
        case 'M': a.o.mse = true; break;
        case 'F': a.o.scales_fp16 = false; break;
        case '6': a.o.factor_f64 = true; break;
        case '7': a.hessian_f64 = true; break;
        case 'o': a.out = optarg; break;
        case 'c': a.codes = optarg; break;
        case 'k': a.scales = optarg; break;
        case 'z': a.zeros = optarg; break;
        case 'i': a.g_idx = optarg; break;
        case 'j': a.json = true; break;
        case 'D': a.device = optarg; break;
        case 'T': a.tf32 = true; break;
        default: return qs_cli_usage_error("layer", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return qs_cli_usage_error("layer", "unexpected argument '%s'", argv[optind]);
    if (!a.weight) return qs_cli_usage_error("layer", "--weight is required");
    if (!a.out) return qs_cli_usage_error("layer", "--out is required");
    if (a.hessian && a.inputs) return qs_cli_usage_error("layer", "give --hessian or --inputs, not both");
    bool have_h = a.hessian || a.inputs;
    if (a.o.method == QS_QUANT_METHOD_GPTQ && !have_h)
        return qs_cli_usage_error("layer", "gptq needs --hessian H.npy or --inputs X.npy");

    /* The device: the CPU backend, or one GPU (exit 2 when there is none). */
    qs_device_choice dev;
    int dcode = qs_cli_device("layer", a.device, NULL, true, &dev);
    if (dcode >= 0) return dcode;
    const qs_backend_i *cpu = qs_backend_cpu();
    qs_backend_i cuda_be;
    memset(&cuda_be, 0, sizeof cuda_be);
    if (dev.kind == QS_DEVICE_CUDA) {
        qs_cuda_opts co = {.tf32 = a.tf32};
        if (qs_backend_cuda_init(&cuda_be, dev.index, &co, &err) != QS_OK) return qs_cli_report("layer", &err);
    }
    const qs_backend_i *be = dev.kind == QS_DEVICE_CUDA ? &cuda_be : cpu;

    /* W */
    qs_tensor wt;
    if (qs_npy_read_f32(a.weight, &wt, &err) != QS_OK) return qs_cli_report("layer", &err);
    char sh[128];
    qs_shape_str(wt.ndim, wt.shape, sh, sizeof sh);
    int rc = 0;
    float *h = NULL, *hq = NULL;
    int64_t samples = 0;
    qs_quant_result res = {0}, rtn = {0};
    if (wt.ndim != 2 || wt.shape[0] <= 0 || wt.shape[1] <= 0) {
        qs_error_set(&err, QS_ERR_INPUT, "%s: tensor 'weight': shape %s, expected 2-D [out,in]", a.weight, sh);
        rc = qs_cli_report("layer", &err);
        goto out;
    }
    const int64_t rows = wt.shape[0], cols = wt.shape[1];
    const float *w = wt.data;
    if (check_finite(a.weight, "weight", w, rows * cols, cols, &err) != QS_OK ||
        qs_quant_opts_check(&a.o, rows, cols, &err) != QS_OK) {
        if (err.code == QS_ERR_INPUT && strncmp(err.msg, "tensor", 6) == 0) qs_error_prefix(&err, "%s", a.weight);
        rc = qs_cli_report("layer", &err);
        goto out;
    }
    if (have_h && load_hessian(&a, be, cols, &h, &samples, &err) != QS_OK) {
        rc = qs_cli_report("layer", &err);
        goto out;
    }

    /* Quantize (on be). GPTQ consumes its H: give it a copy, the loss needs the original. */
    if (qs_quant_result_init(&res, rows, cols, &a.o, &err) != QS_OK) {
        rc = qs_cli_report("layer", &err);
        goto out;
    }
    if (a.o.method == QS_QUANT_METHOD_GPTQ) {
        hq = qs_malloc((size_t)(cols * cols) * sizeof(float));
        if (!hq) {
            qs_error_set(&err, QS_ERR_NOMEM, "cannot allocate H [%lld,%lld]", (long long)cols, (long long)cols);
            rc = qs_cli_report("layer", &err);
            goto out;
        }
        memcpy(hq, h, (size_t)(cols * cols) * sizeof(float));
    }
    double t0 = now_s();
    qs_status st = qs_quant_run(be, w, rows, cols, hq, &a.o, &res, &err);
    double seconds = now_s() - t0;
    if (st != QS_OK) {
        qs_error_prefix(&err, "%s", a.weight);
        rc = qs_cli_report("layer", &err);
        goto out;
    }
    /* the result passes the checks a run's checkpoint passes: with fp16
     * scales, a scale the grid had to clamp at 65504 is an error naming the row */
    if (qs_quant_result_check(a.weight, "weight", &res, a.o.scales_fp16, &a.o, &err) != QS_OK) {
        rc = qs_cli_report("layer", &err);
        goto out;
    }

    double loss = 0.0, rtn_loss = 0.0;
    if (have_h) {
        qs_quant_opts ro = a.o;
        ro.method = QS_QUANT_METHOD_RTN;
        /* both losses on the CPU, whatever quantized: comparable across devices */
        if (qs_quant_hloss(cpu, w, res.q, rows, cols, h, &loss, &err) != QS_OK ||
            qs_quant_result_init(&rtn, rows, cols, &ro, &err) != QS_OK ||
            qs_quant_rtn(w, rows, cols, &ro, &rtn, &err) != QS_OK ||
            qs_quant_hloss(cpu, w, rtn.q, rows, cols, h, &rtn_loss, &err) != QS_OK) {
            rc = qs_cli_report("layer", &err);
            goto out;
        }
        /* a loss that is not a number is never a success */
        if (!isfinite(loss) || !isfinite(rtn_loss)) {
            qs_error_set(&err, QS_ERR_INPUT,
                         "%s: tensor 'weight': the loss is %g (RTN's %g), not finite: W or H is too large for f32 "
                         "arithmetic",
                         a.weight, loss, rtn_loss);
            rc = qs_cli_report("layer", &err);
            goto out;
        }
    }
    if (write_outputs(&a, &res, &err) != QS_OK) {
        rc = qs_cli_report("layer", &err);
        goto out;
    }
    report(&a, be, &dev, &res, have_h, loss, rtn_loss, seconds, samples);

out:
    qs_quant_result_free(&res);
    qs_quant_result_free(&rtn);
    qs_free(h);
    qs_free(hq);
    qs_tensor_free(&wt);
    qs_backend_cuda_free(&cuda_be);
    return rc;
}
