/* eval.h — model quality on a token set: perplexity, and against a reference
 * model KL divergence and top-1 agreement (`qshard eval`).
 *
 * Each row of the token set [rows, L] is an independent sequence; positions
 * 1..L−1 are scored (the logits at t−1 predict token t), so a run scores
 * rows·(L−1) tokens. With a reference model, per scored position:
 *   KL(ref ‖ model) = Σ_v p_ref(v) (log p_ref(v) − log p_model(v))  (nats)
 *   top-1 agreement = [argmax p_ref == argmax p_model]
 * reported as the mean KL, its 99th percentile (linear interpolation between
 * order statistics, as NumPy's default), and the agreement rate.
 */
#ifndef QS_EVAL_H
#define QS_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/status.h"
#include "kernels/tensor.h"

typedef struct qs_eval_opts {
    const char *model_dir;   /* HF model dir or qshard GPTQ export */
    const char *ref_dir;     /* NULL: no KL / top-1 */
    const char *tokens_path; /* .npy (int32/int64) or HDF5 `input_ids` [rows, L] */
    const char *file;        /* NULL, or the safetensors file of model_dir to use (e.g. model.f32.safetensors) */
    int64_t batch;           /* rows per forward (>= 1) */
    const char *dump_logits; /* NULL, or a .npy to write the model's logits [rows, L, vocab] to (tests) */
    const char *compute_dtype; /* "auto" (NULL), "f32" or "bf16": the forwards of the model and the reference
                                * (workers/model.h: qs_compute_dtype_resolve on the model) */
} qs_eval_opts;

typedef struct qs_eval_result {
    int64_t rows, seq_len;
    int64_t tokens; /* scored positions: rows · (L − 1) */
    double nll;     /* mean negative log-likelihood, nats/token */
    double ppl;     /* exp(nll) */
    bool has_ref;
    double kl_mean, kl_p99, top1;
    double seconds;      /* wall time of the model's forward passes */
    double tokens_per_s; /* forward tokens (rows · L) per second */
    qs_compute_dtype compute; /* what the forwards computed in */
} qs_eval_result;

/* Reads a token set into an I32 [rows, L] tensor (pipeline/formats/token_set.h: .npy
 * or HDF5 `input_ids`) and checks L >= 2. */
qs_status qs_eval_read_tokens(const char *path, qs_tensor *tokens, qs_error *err);

qs_status qs_eval_run(const qs_eval_opts *o, const qs_backend_i *be, qs_eval_result *r, qs_error *err);

/* q-th percentile (0..100) of v[0..n) with linear interpolation (NumPy's
 * default method); sorts v in place. n = 0 gives NaN. */
double qs_percentile(double *v, int64_t n, double q);

#endif
