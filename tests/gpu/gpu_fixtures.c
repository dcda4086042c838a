/* gpu_fixtures.c — the CPU backend's GPTQ results on the gpu tests' cases:
 *
 *   qs_gpu_fixtures write DIR   (re)make DIR/gptq_<case>.bin (tests/gpu/fixtures)
 *   qs_gpu_fixtures check DIR   recompute here and compare with DIR's files
 *
 * `check` is the ctest gpu_fixtures_current (label unit): the fixtures the
 * GPU compares with must be what the CPU backend computes today, under the
 * same comparison the GPU result gets (bit-for-bit where the libraries'
 * rounding cannot enter; the codes within 1% — OpenBLAS itself may round
 * differently on another CPU). Built only with libqshard (OpenBLAS).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/gptq.h"
#include "kernels/tensor.h"
#include "tests/gpu/gpu_cases.h"

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "write") && strcmp(argv[1], "check"))) {
        fprintf(stderr, "usage: qs_gpu_fixtures write|check DIR\n");
        return 2;
    }
    const bool write = !strcmp(argv[1], "write");
    const char *dir = argv[2];
    int bad = 0;
    for (int k = 0; k < qs_gptq_ncases; k++) {
        const qs_gptq_case *c = &qs_gptq_cases[k];
        qs_quant_opts o;
        qs_case_opts(c, &o);
        float *w = malloc(sizeof(float) * (size_t)(c->rows * c->cols));
        float *h = malloc(sizeof(float) * (size_t)(c->cols * c->cols));
        float *hw = malloc(sizeof(float) * (size_t)(c->cols * c->cols));
        qs_case_inputs(c, w, h);
        memcpy(hw, h, sizeof(float) * (size_t)(c->cols * c->cols));
        qs_quant_result r;
        qs_error err;
        if (qs_quant_result_init(&r, c->rows, c->cols, &o, &err) != QS_OK ||
            qs_quant_gptq(qs_backend_cpu(), w, c->rows, c->cols, hw, &o, &r, &err) != QS_OK) {
            fprintf(stderr, "%s: %s\n", c->name, err.msg);
            return 1;
        }
        char why[4200];
        if (write) {
            double hl = qs_case_hloss(w, r.q, h, c->rows, c->cols);
            if (qs_fixture_write(dir, c, &r, qs_case_hash(w, sizeof(float) * (size_t)(c->rows * c->cols)),
                                 qs_case_hash(h, sizeof(float) * (size_t)(c->cols * c->cols)), hl, why,
                                 sizeof why) != 0) {
                fprintf(stderr, "%s\n", why);
                return 1;
            }
            printf("wrote %s/gptq_%s.bin (H-loss %.6e, %lld dead columns)\n", dir, c->name, hl,
                   (long long)r.dead_columns);
        } else {
            qs_gptq_fixture f;
            if (qs_fixture_read(dir, c, &f, why, sizeof why) != 0) {
                fprintf(stderr, "%s\n", why);
                return 1;
            }
            bad |= qs_case_compare(c, &f, &r, w, h, "cpu", stdout);
            qs_fixture_free(&f);
        }
        qs_quant_result_free(&r);
        free(w);
        free(h);
        free(hw);
    }
    if (!write) printf(bad ? "FAIL: the fixtures are not what the CPU backend computes (remake them: "
                             "qs_gpu_fixtures write tests/gpu/fixtures)\n"
                           : "the fixtures are current\n");
    return bad;
}
