/* model_check.h — a model directory's tensors against its config.json, with
 * the rules `qshard run` applies, so that `qshard inspect` (and --check) and
 * the run accept and refuse the same checkpoints.
 *
 * Every tensor a run reads or exports as part of the model is checked: per
 * block the linears (a weight [out, in], or a GPTQ export's qweight, which
 * the loader checks when it dequantizes), their biases [out] where the
 * config has them, the two norms [hidden] (and biases for LayerNorm);
 * outside the blocks the token embedding [vocab, hidden] (so vocab_size
 * must match the embedding), OPT's learned positions [> 2, hidden], BLOOM's
 * embedding LayerNorm, the final norm [hidden] and the LM head [vocab,
 * hidden]. Each must exist, have a float dtype (F32, F16, BF16, F64) and
 * exactly that shape. With values, each is read and must be finite.
 *
 * Failures are QS_ERR_INPUT with one line naming the model dir, the tensor
 * and what config.json implies.
 */
#ifndef QS_MODEL_CHECK_H
#define QS_MODEL_CHECK_H

#include <stddef.h>

#include "pipeline/formats/manifest.h"

typedef enum qs_model_check_level {
    QS_MODEL_CHECK_SHAPES = 0,         /* names, dtypes, shapes: the header only */
    QS_MODEL_CHECK_VALUES_OUTSIDE = 1, /* + finite values of the tensors outside the blocks */
    QS_MODEL_CHECK_VALUES = 2,         /* + finite values of every tensor checked */
} qs_model_check_level;

/* n_read (may be NULL): how many tensors were read for their values. */
qs_status qs_model_check(const qs_manifest *m, const qs_model_names *names, qs_model_check_level level, size_t *n_read,
                         qs_error *err);

#endif
