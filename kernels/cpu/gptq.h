/* gptq.h — GPTQ of one linear on the CPU (the reference every backend is
 * compared with). The GEMMs go through the backend table. */
#ifndef QS_CPU_GPTQ_H
#define QS_CPU_GPTQ_H

#include "kernels/backend.h"
#include "kernels/quant_opts.h"

/* GPTQ. w is [rows, cols] (not modified). h is the [cols, cols] Hessian
 * (2/n Σ x xᵀ); only its UPPER triangle is read and the whole buffer is
 * overwritten (it becomes workspace — copy it first if you need it). Uses be
 * for the GEMMs; the CPU implementation factors with LAPACK directly and, on
 * more than one OpenMP thread, sets OpenBLAS to one thread for the duration
 * of the sweep (process-wide; restored after). Scratch: about 2·rows·cols
 * floats plus a row panel per thread. The result does not depend on the
 * thread count. QS_ERR_NUMERIC when the damped H is not positive definite
 * (raise damp). */
qs_status qs_quant_gptq(const qs_backend_i *be, const float *w, int64_t rows, int64_t cols, float *h,
                        const qs_quant_opts *o, qs_quant_result *res, qs_error *err);

#endif
