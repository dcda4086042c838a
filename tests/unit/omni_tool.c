/* omni_tool.c — test-only: OmniQuant on a whole model in one process, the
 * plain way (no ranks, no stage, no files in between), then the in-memory
 * quantized model's logits and NLL on a token set.
 *
 *   omni_tool MODEL_DIR CALIB.npy EVAL.npy LOGITS_OUT.npy BITS GROUP LET(0|1) EPOCHS MICRO_BATCH
 *
 * Per block: the FP block's output on the FP stream is the target and the
 * next FP input; the block is trained, folded and quantized
 * (qs_omni_quantize_block) and its quantized output is the next quantized
 * input. Eval runs 4 rows per forward, as `qshard eval` does by default, and
 * sums the NLL in the same order. tests/py/test_omniquant_run.py compares
 * this with `qshard run` + `qshard eval` of the export: logits and NLL must
 * be identical (the export holds exactly the in-memory model).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/quant_opts.h"
#include "pipeline/formats/npy.h"
#include "pipeline/formats/token_set.h"
#include "workers/model.h"
#include "workers/omniquant.h"

static int fail(const qs_error *e)
{
    fprintf(stderr, "omni_tool: %s\n", e->msg);
    return 1;
}

/* in → out through blk, `mb` rows at a time (as the stage forwards micro-batches). */
static qs_status forward_rows(const qs_block *blk, const float *in, float *out, int64_t rows, int64_t seq,
                              int64_t hidden, int64_t mb, qs_error *err)
{
    for (int64_t r0 = 0; r0 < rows; r0 += mb) {
        int64_t n = rows - r0 < mb ? rows - r0 : mb;
        QS_TRY(qs_block_forward(blk, qs_backend_cpu(), in + r0 * seq * hidden, n, seq, out + r0 * seq * hidden, NULL,
                                err));
    }
    return QS_OK;
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: omni_tool MODEL CALIB EVAL LOGITS_OUT BITS GROUP LET EPOCHS MICRO_BATCH\n");
        return 2;
    }
    qs_error err;
    qs_model model;
    if (qs_model_load(&model, argv[1], &err) != QS_OK) return fail(&err);
    qs_tensor calib, ev;
    if (qs_token_set_read(argv[2], &calib, &err) != QS_OK || qs_token_set_read(argv[3], &ev, &err) != QS_OK)
        return fail(&err);
    qs_quant_opts o;
    qs_quant_opts_default(&o);
    o.method = QS_QUANT_METHOD_OMNIQUANT;
    o.bits = atoi(argv[5]);
    o.group_size = atoi(argv[6]);
    o.sym = false;
    o.omni.let = atoi(argv[7]) != 0;
    o.omni.epochs = atoi(argv[8]);
    int64_t mb = atoi(argv[9]);
    const int64_t rows = calib.shape[0], seq = calib.shape[1], H = model.cfg.hidden, n = rows * seq * H;
    float *xq = malloc(sizeof(float) * (size_t)n), *xf = malloc(sizeof(float) * (size_t)n);
    float *yf = malloc(sizeof(float) * (size_t)n), *tmp = malloc(sizeof(float) * (size_t)n);
    for (int64_t r0 = 0; r0 < rows; r0 += mb) {
        int64_t k = rows - r0 < mb ? rows - r0 : mb;
        if (qs_embed_stage_forward(&model.embed, (const int32_t *)calib.data + r0 * seq, k, seq, xq + r0 * seq * H,
                                   &err) != QS_OK)
            return fail(&err);
    }
    memcpy(xf, xq, sizeof(float) * (size_t)n);
    for (int l = 0; l < model.cfg.n_layers; l++) {
        qs_block *blk = &model.blocks[l];
        if (forward_rows(blk, xf, yf, rows, seq, H, mb, &err) != QS_OK) return fail(&err);
        qs_quant_result res[QS_MAX_BLOCK_LINEARS];
        memset(res, 0, sizeof res);
        qs_omni_record rec;
        if (qs_omni_quantize_block(blk, qs_backend_cpu(), &o, model.manifest, &model.names, xq, xf, yf, rows, seq, res,
                                   &rec, NULL, &err) != QS_OK)
            return fail(&err);
        if (forward_rows(blk, xq, tmp, rows, seq, H, mb, &err) != QS_OK) return fail(&err);
        memcpy(xq, tmp, sizeof(float) * (size_t)n);
        memcpy(xf, yf, sizeof(float) * (size_t)n);
        printf("block %d: loss %.6g -> %.6g\n", l, rec.loss[0], rec.loss[rec.epochs - 1]);
        for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) qs_quant_result_free(&res[i]);
        qs_omni_record_free(&rec);
    }
    /* eval as pipeline/eval.c does it: 4 rows per forward, NLL summed in order */
    const int64_t er = ev.shape[0], L = ev.shape[1], V = model.cfg.vocab, batch = 4;
    qs_tensor logits;
    int64_t shape[3] = {er, L, V};
    if (qs_tensor_init(&logits, QS_DTYPE_F32, 3, shape, &err) != QS_OK) return fail(&err);
    double *nll = malloc(sizeof(double) * (size_t)(er * (L - 1)));
    const int32_t *ids = ev.data;
    for (int64_t r0 = 0; r0 < er; r0 += batch) {
        int64_t nb = er - r0 < batch ? er - r0 : batch;
        float *lg = (float *)logits.data + r0 * L * V;
        if (qs_model_forward(&model, qs_backend_cpu(), ids + r0 * L, nb, L, lg, &err) != QS_OK) return fail(&err);
        for (int64_t b = 0; b < nb; b++)
            qs_cpu_nll_rows(lg + b * L * V, L - 1, V, ids + (r0 + b) * L + 1, nll + (r0 + b) * (L - 1));
    }
    double sum = 0.0;
    for (int64_t i = 0; i < er * (L - 1); i++) sum += nll[i];
    if (qs_npy_write(argv[4], &logits, &err) != QS_OK) return fail(&err);
    printf("nll %.17g\n", sum / (double)(er * (L - 1)));
    free(xq), free(xf), free(yf), free(tmp), free(nll);
    qs_tensor_free(&logits);
    qs_tensor_free(&calib);
    qs_tensor_free(&ev);
    qs_model_free(&model);
    return 0;
}
