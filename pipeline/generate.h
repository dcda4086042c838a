/* generate.h — greedy decoding with a whole model in memory (checks and demos:
 * "does the model still write the story it wrote before quantization").
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

#endif
