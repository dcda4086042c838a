/* rtn.h — round-to-nearest quantization of one linear on the CPU. */
#ifndef QS_CPU_RTN_H
#define QS_CPU_RTN_H

#include "kernels/quant_opts.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) calls these C functions */
#endif

/* Round-to-nearest: per (row, group) find_params on W as given. */
qs_status qs_quant_rtn(const float *w, int64_t rows, int64_t cols, const qs_quant_opts *o, qs_quant_result *res,
                       qs_error *err);

#ifdef __cplusplus
}
#endif

#endif
