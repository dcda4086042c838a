/* gpu_cases.h — the GPTQ cases the gpu tests run on the GPU and compare with
 * the CPU backend's results, which tests/gpu/gpu_fixtures.c made here (where
 * OpenBLAS is) and keeps in tests/gpu/fixtures/ (the GPU machine has no BLAS).
 *
 * Inputs are generated, not stored: W and X from a fixed integer generator,
 * H = 2/m Σ x xᵀ summed in double by a plain loop, all in arithmetic that
 * gives the same bits on any IEEE machine (built with -ffp-contract=off, no
 * libm), and each fixture keeps a hash of W and H to prove it.
 *
 * Comparison (qs_case_compare): what does not depend on the libraries'
 * rounding must be equal bit for bit (g_idx; per-channel and static group
 * params; Q = dequant(codes) exactly); the codes may differ where an element
 * sat within rounding noise of a tie, and the error feedback then carries the
 * difference along its row: at most 1% of the codes may differ, and the
 * H-weighted loss must agree within 1%. The fractions are printed.
 */
#ifndef QS_GPU_CASES_H
#define QS_GPU_CASES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/quant_opts.h"

typedef struct qs_gptq_case {
    const char *name;
    int64_t rows, cols, samples;
    int bits, group_size, block_size;
    bool sym, act_order, static_groups, mse, scales_fp16, factor_f64;
    double damp;
    int dead;        /* input columns that never see a nonzero input (H_cc = 0) */
    uint64_t seed;
} qs_gptq_case;

extern const qs_gptq_case qs_gptq_cases[];
extern const int qs_gptq_ncases;

/* The case's options (name set to the case's name). */
void qs_case_opts(const qs_gptq_case *c, qs_quant_opts *o);

/* W [rows, cols] and the full symmetric H [cols, cols]. */
void qs_case_inputs(const qs_gptq_case *c, float *w, float *h);

/* FNV-1a over bytes: the fixtures' proof of identical inputs. */
uint64_t qs_case_hash(const void *p, size_t n);

/* tr((W − Q) H (W − Q)ᵀ) in double, plainly. */
double qs_case_hloss(const float *w, const float *q, const float *h, int64_t rows, int64_t cols);

/* ---- fixture files ------------------------------------------------------------ */

typedef struct qs_gptq_fixture {
    int64_t rows, cols, groups;
    int32_t bits;
    uint64_t hash_w, hash_h;
    double est_loss, hloss;
    uint8_t *codes;  /* [rows, cols] */
    float *scales;   /* [groups, rows] */
    int32_t *zeros;  /* [groups, rows] */
    int32_t *g_idx;  /* [cols] */
} qs_gptq_fixture;

/* <dir>/gptq_<case>.bin. 0 on success; else -1 with why filled. */
int qs_fixture_write(const char *dir, const qs_gptq_case *c, const qs_quant_result *r, uint64_t hash_w,
                     uint64_t hash_h, double hloss, char *why, size_t cap);
int qs_fixture_read(const char *dir, const qs_gptq_case *c, qs_gptq_fixture *f, char *why, size_t cap);
void qs_fixture_free(qs_gptq_fixture *f);

/* got (a result of the same case) against the fixture: 0 when it holds, 1
 * with the reasons on log; one summary line either way, prefixed by who. */
int qs_case_compare(const qs_gptq_case *c, const qs_gptq_fixture *ref, const qs_quant_result *got, const float *w,
                    const float *h, const char *who, FILE *log);

#endif
