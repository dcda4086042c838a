/* act_order.h — GPTQ's act-order permutation, one definition for every
 * backend: the columns by decreasing Hessian diagonal, ties in their original
 * order. The CPU and CUDA sweeps must process columns in the same order for
 * their codes to agree, so neither keeps its own sort. Header-only (C and
 * CUDA host code; the CUDA module is a separate shared object). */
#ifndef QS_ACT_ORDER_H
#define QS_ACT_ORDER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/status.h"

typedef struct qs_diag_key {
    float d;
    int64_t i;
} qs_diag_key;

static inline int qs_diag_key_desc(const void *a, const void *b)
{
    const qs_diag_key *x = (const qs_diag_key *)a, *y = (const qs_diag_key *)b;
    if (x->d > y->d) return -1;
    if (x->d < y->d) return 1;
    return x->i < y->i ? -1 : x->i > y->i; /* stable: ties keep original order */
}

/* perm[k] = the column processed k-th: by decreasing diag[c · stride] when
 * act_order, else the identity. QS_ERR_NOMEM when the sort's keys cannot be
 * allocated. */
static inline qs_status qs_act_order_perm(const float *diag, int64_t stride, int64_t n, bool act_order, int64_t *perm)
{
    if (!act_order) {
        for (int64_t k = 0; k < n; k++) perm[k] = k;
        return QS_OK;
    }
    qs_diag_key *keys = (qs_diag_key *)malloc((size_t)(n ? n : 1) * sizeof *keys);
    if (!keys) return QS_ERR_NOMEM;
    for (int64_t c = 0; c < n; c++) {
        keys[c].d = diag[c * stride];
        keys[c].i = c;
    }
    qsort(keys, (size_t)n, sizeof *keys, qs_diag_key_desc);
    for (int64_t k = 0; k < n; k++) perm[k] = keys[k].i;
    free(keys);
    return QS_OK;
}

#endif
