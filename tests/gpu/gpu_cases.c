/* gpu_cases.c — the GPTQ cases, their generated inputs, the fixture files and
 * the comparison of a result with a fixture (gpu_cases.h). Shared by the GPU
 * test binary and the fixture tool; needs libc only. */
#include "tests/gpu/gpu_cases.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the cases ------------------------------------------------------------------ */

/*  name                      rows cols samp bits  gs   B   sym    act    static mse    fp16   f64    damp  dead seed */
const qs_gptq_case qs_gptq_cases[] = {
    {"act_static", 96, 384, 512, 4, 128, 128, true, true, true, false, true, false, 0.01, 0, 11},
    {"act_dynamic", 96, 384, 512, 4, 96, 128, true, true, false, false, true, false, 0.01, 0, 12},
    {"perchannel_dead_asym3", 80, 320, 400, 3, -1, 128, false, false, false, false, true, false, 0.01, 5, 13},
    {"dynamic_mse_f64", 64, 256, 300, 2, 64, 48, true, false, false, true, true, true, 0.05, 0, 14},
    {"static_8bit_f32scales", 64, 256, 300, 8, 32, 128, false, false, true, false, false, false, 0.01, 0, 15},
    {"act_static_dead", 96, 256, 320, 4, 64, 128, true, true, true, false, true, false, 0.01, 4, 16},
};
const int qs_gptq_ncases = (int)(sizeof qs_gptq_cases / sizeof qs_gptq_cases[0]);

void qs_case_opts(const qs_gptq_case *c, qs_quant_opts *o)
{
    qs_quant_opts_default(o);
    o->method = QS_QUANT_METHOD_GPTQ;
    o->bits = c->bits;
    o->group_size = c->group_size;
    o->block_size = c->block_size;
    o->sym = c->sym;
    o->act_order = c->act_order;
    o->static_groups = c->static_groups;
    o->mse = c->mse;
    o->scales_fp16 = c->scales_fp16;
    o->factor_f64 = c->factor_f64;
    o->damp = c->damp;
    o->name = c->name;
}

/* ---- generated inputs: integer generator, exact arithmetic ------------------------ */

static uint64_t next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* uniform in [-1, 1) on a 2^-23 grid: exact in f32 */
static float uni(uint64_t *s) { return (float)(int32_t)(next(s) >> 40) * (1.0f / 8388608.0f) - 1.0f; }

/* roughly normal: the sum of four uniforms (Irwin-Hall), no libm */
static float bell(uint64_t *s) { return 0.5f * (uni(s) + uni(s) + uni(s) + uni(s)); }

void qs_case_inputs(const qs_gptq_case *c, float *w, float *h)
{
    const int64_t rows = c->rows, n = c->cols, m = c->samples;
    uint64_t s = 0x9E3779B97F4A7C15ull ^ (c->seed * 0x100000001B3ull);
    for (int i = 0; i < 8; i++) next(&s);
    for (int64_t i = 0; i < rows * n; i++) w[i] = 0.05f * bell(&s);
    for (int64_t i = 0; i < rows; i += 7) w[i * n + (i * 13) % n] *= 8.0f; /* a few large weights */

    /* X = Z·L + noise with 8 latent factors, channel scales from 0.25 to 4,
     * a few outlier channels ×10, and dead channels (always 0) */
    enum { F = 8 };
    float *L = malloc(sizeof(float) * F * (size_t)n), *x = malloc(sizeof(float) * (size_t)n), *cs = malloc(sizeof(float) * (size_t)n);
    double *acc = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < F * n; i++) L[i] = bell(&s);
    for (int64_t j = 0; j < n; j++) {
        cs[j] = 0.25f + 3.75f * (float)((j * 37) % n) / (float)n;
        if (j % 41 == 5) cs[j] *= 10.0f;
        if (c->dead && j % (n / c->dead) == 3) cs[j] = 0.0f;
    }
    for (int64_t r = 0; r < m; r++) {
        float z[F];
        for (int f = 0; f < F; f++) z[f] = bell(&s);
        for (int64_t j = 0; j < n; j++) {
            float v = 0.5f * bell(&s);
            for (int f = 0; f < F; f++) v += z[f] * L[f * n + j];
            x[j] = v * cs[j];
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i; j < n; j++) acc[i * n + j] += (double)x[i] * (double)x[j];
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            float v = (float)(2.0 * acc[i * n + j] / (double)m);
            h[i * n + j] = v;
            h[j * n + i] = v;
        }
    free(L);
    free(x);
    free(cs);
    free(acc);
}

uint64_t qs_case_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t x = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) x = (x ^ b[i]) * 0x100000001b3ull;
    return x;
}

double qs_case_hloss(const float *w, const float *q, const float *h, int64_t rows, int64_t cols)
{
    double *d = malloc(sizeof(double) * (size_t)cols);
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) d[c] = (double)w[r * cols + c] - (double)q[r * cols + c];
        for (int64_t i = 0; i < cols; i++) {
            double s = 0.0;
            for (int64_t j = 0; j < cols; j++) s += (double)h[i * cols + j] * d[j];
            total += d[i] * s;
        }
    }
    free(d);
    return total;
}

/* ---- fixture files ------------------------------------------------------------------ */

#define FIXTURE_MAGIC "QSGPTQF1"

typedef struct fixture_head {
    char magic[8];
    int64_t rows, cols, groups;
    int32_t bits, pad;
    uint64_t hash_w, hash_h;
    double est_loss, hloss;
} fixture_head;

static void path_of(char *buf, size_t cap, const char *dir, const qs_gptq_case *c)
{
    snprintf(buf, cap, "%s/gptq_%s.bin", dir, c->name);
}

int qs_fixture_write(const char *dir, const qs_gptq_case *c, const qs_quant_result *r, uint64_t hash_w,
                     uint64_t hash_h, double hloss, char *why, size_t cap)
{
    char path[4096];
    path_of(path, sizeof path, dir, c);
    fixture_head hd;
    memset(&hd, 0, sizeof hd);
    memcpy(hd.magic, FIXTURE_MAGIC, 8);
    hd.rows = r->rows, hd.cols = r->cols, hd.groups = r->groups, hd.bits = r->bits;
    hd.hash_w = hash_w, hd.hash_h = hash_h, hd.est_loss = r->est_loss, hd.hloss = hloss;
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(why, cap, "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    size_t ng = (size_t)(r->groups * r->rows);
    int ok = fwrite(&hd, sizeof hd, 1, f) == 1 && fwrite(r->codes, 1, (size_t)(r->rows * r->cols), f) == (size_t)(r->rows * r->cols) &&
             fwrite(r->scales, sizeof(float), ng, f) == ng && fwrite(r->zeros, sizeof(int32_t), ng, f) == ng &&
             fwrite(r->g_idx, sizeof(int32_t), (size_t)r->cols, f) == (size_t)r->cols;
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        snprintf(why, cap, "%s: write failed", path);
        return -1;
    }
    return 0;
}

int qs_fixture_read(const char *dir, const qs_gptq_case *c, qs_gptq_fixture *fx, char *why, size_t cap)
{
    memset(fx, 0, sizeof *fx);
    char path[4096];
    path_of(path, sizeof path, dir, c);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, cap, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    fixture_head hd;
    int ok = fread(&hd, sizeof hd, 1, f) == 1 && memcmp(hd.magic, FIXTURE_MAGIC, 8) == 0 && hd.rows == c->rows &&
             hd.cols == c->cols && hd.bits == c->bits;
    if (ok) {
        fx->rows = hd.rows, fx->cols = hd.cols, fx->groups = hd.groups, fx->bits = hd.bits;
        fx->hash_w = hd.hash_w, fx->hash_h = hd.hash_h, fx->est_loss = hd.est_loss, fx->hloss = hd.hloss;
        size_t n = (size_t)(hd.rows * hd.cols), ng = (size_t)(hd.groups * hd.rows);
        fx->codes = malloc(n);
        fx->scales = malloc(sizeof(float) * ng);
        fx->zeros = malloc(sizeof(int32_t) * ng);
        fx->g_idx = malloc(sizeof(int32_t) * (size_t)hd.cols);
        ok = fx->codes && fx->scales && fx->zeros && fx->g_idx && fread(fx->codes, 1, n, f) == n &&
             fread(fx->scales, sizeof(float), ng, f) == ng && fread(fx->zeros, sizeof(int32_t), ng, f) == ng &&
             fread(fx->g_idx, sizeof(int32_t), (size_t)hd.cols, f) == (size_t)hd.cols;
    }
    fclose(f);
    if (!ok) {
        snprintf(why, cap, "%s: not a fixture of case '%s' ([%lld,%lld], %d bits)", path, c->name, (long long)c->rows,
                 (long long)c->cols, c->bits);
        qs_fixture_free(fx);
        return -1;
    }
    return 0;
}

void qs_fixture_free(qs_gptq_fixture *f)
{
    free(f->codes);
    free(f->scales);
    free(f->zeros);
    free(f->g_idx);
    memset(f, 0, sizeof *f);
}

/* ---- comparison ------------------------------------------------------------------------- */

int qs_case_compare(const qs_gptq_case *c, const qs_gptq_fixture *ref, const qs_quant_result *got, const float *w,
                    const float *h, const char *who, FILE *log)
{
    const int64_t rows = c->rows, n = c->cols, groups = ref->groups;
    int bad = 0;
    if (got->rows != rows || got->cols != n || got->groups != groups) {
        fprintf(log, "%s %s: result is [%lld,%lld] with %lld groups, the fixture [%lld,%lld] with %lld\n", who, c->name,
                (long long)got->rows, (long long)got->cols, (long long)got->groups, (long long)rows, (long long)n,
                (long long)groups);
        return 1;
    }
    /* the inputs themselves */
    uint64_t hw = qs_case_hash(w, sizeof(float) * (size_t)(rows * n)), hh = qs_case_hash(h, sizeof(float) * (size_t)(n * n));
    if (hw != ref->hash_w || hh != ref->hash_h) {
        fprintf(log, "%s %s: the generated W/H differ from the fixture's (hash %016llx/%016llx, fixture %016llx/%016llx)\n",
                who, c->name, (unsigned long long)hw, (unsigned long long)hh, (unsigned long long)ref->hash_w,
                (unsigned long long)ref->hash_h);
        return 1;
    }
    /* g_idx: from the permutation alone */
    for (int64_t i = 0; i < n; i++)
        if (got->g_idx[i] != ref->g_idx[i]) {
            fprintf(log, "%s %s: g_idx[%lld] = %d, the CPU's %d\n", who, c->name, (long long)i, got->g_idx[i],
                    ref->g_idx[i]);
            bad = 1;
            break;
        }
    /* params: from W alone (per channel, static groups) must be equal; dynamic ones are counted */
    const bool params_fixed = c->group_size < 0 || c->static_groups;
    int64_t pdiff = 0;
    for (int64_t i = 0; i < groups * rows; i++)
        if (memcmp(&got->scales[i], &ref->scales[i], sizeof(float)) != 0 || got->zeros[i] != ref->zeros[i]) pdiff++;
    if (params_fixed && pdiff) {
        fprintf(log, "%s %s: %lld scale/zero pairs differ from the CPU's; they come from W alone and must be equal\n",
                who, c->name, (long long)pdiff);
        bad = 1;
    }
    /* Q is exactly the dequantized codes */
    for (int64_t r = 0; r < rows && !bad; r++)
        for (int64_t i = 0; i < n; i++) {
            size_t g = (size_t)got->g_idx[i] * (size_t)rows + (size_t)r;
            float v = qs_quant_dequant(got->codes[r * n + i], got->scales[g], (float)got->zeros[g]);
            if (memcmp(&v, &got->q[r * n + i], sizeof v) != 0) {
                fprintf(log, "%s %s: Q[%lld,%lld] = %.9g is not dequant(code) = %.9g\n", who, c->name, (long long)r,
                        (long long)i, (double)got->q[r * n + i], (double)v);
                bad = 1;
                break;
            }
        }
    /* codes: equal but near ties (and what the error feedback carries on from there) */
    int64_t cdiff = 0, rdiff = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++) k += got->codes[r * n + i] != ref->codes[r * n + i];
        cdiff += k;
        rdiff += k > 0;
    }
    const double frac = (double)cdiff / (double)(rows * n);
    /* the H-weighted losses of both results, on the same H */
    float *qref = malloc(sizeof(float) * (size_t)(rows * n));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++) {
            size_t g = (size_t)ref->g_idx[i] * (size_t)rows + (size_t)r;
            qref[r * n + i] = qs_quant_dequant(ref->codes[r * n + i], ref->scales[g], (float)ref->zeros[g]);
        }
    const double lref = qs_case_hloss(w, qref, h, rows, n), lgot = qs_case_hloss(w, got->q, h, rows, n);
    free(qref);
    const double lrel = fabs(lgot - lref) / (lref > 0 ? lref : 1.0);
    const double erel = fabs(got->est_loss - ref->est_loss) / (ref->est_loss > 0 ? ref->est_loss : 1.0);
    fprintf(log,
            "%s %-24s codes differing %lld of %lld (%.4f%%) in %lld of %lld rows; params differing %lld of %lld; "
            "H-loss %.6e vs CPU %.6e (rel %.2e); est. loss rel %.2e\n",
            who, c->name, (long long)cdiff, (long long)(rows * n), 100.0 * frac, (long long)rdiff, (long long)rows,
            (long long)pdiff, (long long)(groups * rows), lgot, lref, lrel, erel);
    if (frac > 0.01) {
        fprintf(log, "%s %s: %.4f%% of the codes differ from the CPU's, expected <= 1%%\n", who, c->name, 100.0 * frac);
        bad = 1;
    }
    if (lrel > 0.01 || erel > 0.01) {
        fprintf(log, "%s %s: the loss differs from the CPU's by more than 1%%\n", who, c->name);
        bad = 1;
    }
    return bad;
}
