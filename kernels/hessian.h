/* hessian.h — GPTQ's Hessian statistics H = 2/n Σ x xᵀ, streamed.
 *
 * Samples (rows of X = [m, features], one token's input to a linear each)
 * arrive in chunks. H is kept as a running mean so its magnitude does not grow
 * with n:  H ← n/(n+m) · H + 2/(n+m) · XᵀX,  one syrk per chunk (alpha and
 * beta of the syrk do both steps). Accumulation is f32 or, optionally, f64
 * (the chunk is widened to double first). Only the UPPER triangle of the
 * row-major [features, features] buffer is maintained; qs_hessian_get_f32
 * returns the full symmetric matrix.
 *
 * In bf16 compute the samples are the bf16 activations the GEMMs read
 * (GPTQModel's Hessians have that precision too); the sums stay f32.
 *
 * Partial Hessians merge with their sample counts (for an MPI allreduce:
 * scale each by its count, sum, divide by the total):
 *   H = (n1·H1 + n2·H2) / (n1 + n2).
 *
 * On a device backend (qs_hessian_init_on with be->device, e.g. CUDA) the
 * matrix and the staging buffer live in the backend's memory, and every
 * pointer the functions below take (x, other, out) is backend memory too;
 * the syrk is the backend's, and widening and merging are its ops
 * (kernels/ops_table.h). qs_hessian_init is the host version of old.
 */
#ifndef QS_HESSIAN_H
#define QS_HESSIAN_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/status.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) calls these C functions */
#endif

typedef struct qs_hessian {
    int64_t n;       /* features (columns of X, in-features of the linear) */
    int64_t count;   /* samples accumulated so far */
    bool f64;        /* accumulate in double */
    float *h32;      /* [n, n] upper triangle, when !f64 */
    double *h64;     /* [n, n] upper triangle, when f64 */
    double *xbuf;    /* f64 staging for a chunk of X */
    int64_t xbuf_rows;
    const qs_backend_i *mem; /* NULL: host memory; else the device backend that owns h32/h64/xbuf */
    bool raw;        /* h32 holds Σ x xᵀ, not the mean (bf16 samples: one accumulating GEMM per chunk; host only) */
} qs_hessian;

qs_status qs_hessian_init(qs_hessian *h, int64_t n, bool f64, qs_error *err);
/* The same in be's memory when be->device (host memory otherwise). */
qs_status qs_hessian_init_on(qs_hessian *h, const qs_backend_i *be, int64_t n, bool f64, qs_error *err);
void qs_hessian_free(qs_hessian *h);

/* Resets to zero samples. */
void qs_hessian_reset(qs_hessian *h);

/* Adds m samples: x is [m, n] with leading dimension ldx (>= n). On a device
 * Hessian, be must be the backend it was made on. */
qs_status qs_hessian_add(qs_hessian *h, const qs_backend_i *be, const float *x, int64_t m, int64_t ldx,
                         qs_error *err);

/* The same from bf16 samples (the activations a bf16 forward multiplies):
 * XᵀX through be->gemm_bf16 (exact products, f32 sums) on the upper
 * triangle's column panels, added to a raw sum that the readers scale by
 * 2/n; f64 accumulation widens them first. */
qs_status qs_hessian_add_bf16(qs_hessian *h, const qs_backend_i *be, const uint16_t *x, int64_t m, int64_t ldx,
                              qs_error *err);

/* h ← merge(h, other): both must have the same n (dtypes may differ). */
qs_status qs_hessian_merge(qs_hessian *h, const qs_hessian *other, qs_error *err);

/* The same with a raw partial Hessian (upper triangle read) and its count,
 * e.g. one received from another rank. */
qs_status qs_hessian_merge_f32(qs_hessian *h, const float *other, int64_t other_count, qs_error *err);
qs_status qs_hessian_merge_f64(qs_hessian *h, const double *other, int64_t other_count, qs_error *err);

/* Writes the full symmetric [n, n] f32 matrix (both triangles) into out. */
void qs_hessian_get_f32(const qs_hessian *h, float *out);

#ifdef __cplusplus
}
#endif

#endif
