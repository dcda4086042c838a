/* quant.h — weight quantization of one linear layer: the dispatch.
 *
 * The distributed pipeline calls this once per linear of a block, after the
 * block's Hessians are collected (kernels/hessian.h). The options and the
 * result's layout are kernels/quant_opts.h; the algorithms live with their
 * backend (kernels/cpu/rtn.h, kernels/cpu/gptq.h) and never include this
 * header. Callers include this one header and get all of them.
 *
 * The algorithm details (dynamic and static groups, act-order, the Cholesky
 * factor of H^-1) are in docs/quantization.md and kernels/cpu/gptq.c. A CUDA
 * backend implements GPTQ with the same options and the same result layout;
 * the CPU implementation is the reference the GPU tests compare with.
 */
#ifndef QS_QUANT_H
#define QS_QUANT_H

#include "kernels/backend.h"
#include "kernels/cpu/gptq.h"
#include "kernels/cpu/rtn.h"
#include "kernels/quant_opts.h"
#include "kernels/status.h"

/* Dispatch on o->method (h may be NULL for RTN; it is overwritten for GPTQ):
 * be->gptq / be->rtn when the backend has them (CUDA: w and h may then be
 * host or device memory), else the CPU implementations with be's BLAS. */
qs_status qs_quant_run(const qs_backend_i *be, const float *w, int64_t rows, int64_t cols, float *h,
                       const qs_quant_opts *o, qs_quant_result *res, qs_error *err);

/* The H-weighted error tr((W - Q) H (W - Q)ᵀ) with H [cols, cols] symmetric
 * and full (both triangles). Uses be->sgemm; accumulates in double. w and q
 * are host memory, h is be's memory (a device backend gets D's row panels
 * copied over and D·H back). */
qs_status qs_quant_hloss(const qs_backend_i *be, const float *w, const float *q, int64_t rows, int64_t cols,
                         const float *h, double *loss, qs_error *err);

#endif
