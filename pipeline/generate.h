/* generate.h — decoding with a whole model in memory: greedy (checks and
 * demos: "does the model still write the story it wrote before
 * quantization") and sampling with a temperature (data-free calibration:
 * stories the model writes itself, as LLM-QAT does).
 *
 * No KV cache: every step runs the blocks over the whole sequence so far and
 * the head over its last position, which is plenty for the short continuations
 * the tests ask for.
 */
#ifndef QS_GENERATE_H
#define QS_GENERATE_H

#include <stdint.h>

#include "kernels/backend.h"
#include "workers/model.h"

/* out[0..n_prompt) = prompt, then up to n_new greedy tokens (argmax, first
 * index on ties); stops after emitting stop_id (>= 0) or at the model's
 * position limit. *n_out = tokens written (prompt included). */
qs_status qs_generate_greedy(const qs_model *model, const qs_backend_i *be, const int32_t *prompt, int64_t n_prompt,
                             int64_t n_new, int32_t stop_id, int32_t *out, int64_t *n_out, qs_error *err);

/* Sampling options. temperature 0 is greedy (argmax, first index on ties). */
typedef struct qs_sample_opts {
    double temperature;
    uint64_t seed;   /* row r draws from its own stream (seed, r): a row does not depend on the batch */
    int32_t stop_id; /* >= 0: a row ends after emitting it */
    int64_t batch;   /* rows decoded together (>= 1) */
} qs_sample_opts;

/* rows sequences that all begin with prompt, each extended by up to n_new
 * tokens sampled from softmax(logits / temperature). out is [rows, n_prompt
 * + n_new] (row-major; positions at and past lens[r] are filler); lens[r] =
 * tokens in row r (prompt included). The model's position limit (learned positions) caps
 * n_new. */
qs_status qs_generate_sample(const qs_model *model, const qs_backend_i *be, const int32_t *prompt, int64_t n_prompt,
                             int64_t rows, int64_t n_new, const qs_sample_opts *so, int32_t *out, int64_t *lens,
                             qs_error *err);

#endif
