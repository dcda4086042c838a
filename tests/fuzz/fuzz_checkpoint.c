/* fuzz_checkpoint.c — libFuzzer target for the checkpoint validation layer
 * (pipeline/checkpoint_check.h): every field a block checkpoint or the
 * archive can hold — bits, the shapes of codes/scales/zeros/g_idx, every
 * code, zero, scale and g_idx value, the statistics — comes from the fuzz
 * input and goes through the checks a checkpoint read goes through, against
 * an expectation (the model's [out, in], the run's bits, group size and
 * order) that is itself fuzzed or matching. Whatever the checks accept must
 * then be safe for every consumer, which runs on it under ASan + UBSan:
 * dequantization, the GPTQ qweight and qzeros packers (pack → unpack must
 * give the same integers back), fp16 scales (exact), finite dequantized
 * weights. A property that fails aborts. With mode bit 0x04 an OmniQuant
 * record comes too (loss curve, learned parameters, folded FP tensors with
 * fuzzed names, lengths and values): what is accepted must name the
 * block's own norms or biases at the model's length, with finite values.
 *
 * Why fuzzed field values rather than HDF5 files built from fuzz bytes: a
 * file's bytes mostly exercise libhdf5's own parser (not ours, and slow per
 * input); what qshard adds — and what crashed — is trusting the values. The
 * read path itself (shapes checked before anything is allocated, then the
 * same checks) is covered by tests/unit/test_checkpoint.c on real files.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gptq_pack.h"
#include "kernels/half.h"
#include "pipeline/checkpoint_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct src {
    const uint8_t *p;
    size_t n;
} src;

static uint8_t u8(src *s)
{
    if (!s->n) return 0;
    s->n--;
    return *s->p++;
}

static void bytes(src *s, void *dst, size_t k)
{
    size_t m = k < s->n ? k : s->n;
    memcpy(dst, s->p, m);
    memset((uint8_t *)dst + m, 0, k - m);
    s->p += m;
    s->n -= m;
}

static int32_t i32(src *s)
{
    int32_t v;
    bytes(s, &v, sizeof v);
    return v;
}

static int64_t i64(src *s)
{
    int64_t v;
    bytes(s, &v, sizeof v);
    return v;
}

/* A small dimension most of the time, anything sometimes. */
static int64_t dim(src *s, int64_t small_max)
{
    uint8_t k = u8(s);
    if (k == 0xff) return i64(s);
    return 1 + k % small_max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    src s = {data, size};
    static const int bit_choices[] = {2, 3, 4, 8};
    uint8_t mode = u8(&s);
    qs_linear_dims d;
    memset(&d, 0, sizeof d);
    d.bits = mode & 0x80 ? (int8_t)u8(&s) : bit_choices[u8(&s) % 4];
    int64_t rows = dim(&s, 64), cols = dim(&s, 256), groups = dim(&s, 16);
    d.codes_ndim = 2, d.scales_ndim = 2, d.zeros_ndim = 2, d.g_idx_ndim = 1;
    d.codes[0] = rows, d.codes[1] = cols;
    d.scales[0] = groups, d.scales[1] = rows;
    d.zeros[0] = groups, d.zeros[1] = rows;
    d.g_idx = cols;
    if (mode & 0x40) { /* shapes that disagree with each other */
        d.scales[1] = dim(&s, 64);
        d.zeros[0] = dim(&s, 16);
        d.g_idx = dim(&s, 256);
        d.codes_ndim = u8(&s) % 4;
    }
    /* the expectation: the model's linear and the run's options */
    qs_block_expect x;
    memset(&x, 0, sizeof x);
    x.n_linears = 1;
    snprintf(x.lin[0].weight, sizeof x.lin[0].weight, "w");
    x.lin[0].out = mode & 0x20 ? dim(&s, 64) : rows;
    x.lin[0].in = mode & 0x20 ? dim(&s, 256) : cols;
    qs_quant_opts_default(&x.quant);
    x.quant.bits = mode & 0x10 ? bit_choices[u8(&s) % 4] : d.bits;
    uint8_t g = u8(&s);
    /* (the expectation comes from validated options: a group size of -1 or >= 1) */
    int64_t per = groups > 0 && cols > 0 ? cols / groups : 0;
    x.quant.group_size = g == 0 || per < 1 || per > (1 << 24) ? -1 : g == 1 ? (int)per : (int)(g % 64 + 1);
    x.quant.act_order = u8(&s) & 1;
    x.quant.static_groups = u8(&s) & 1;
    const qs_block_expect *xp = mode & 0x08 ? NULL : &x;
    qs_error err;
    if (qs_checkpoint_check_dims("fuzz.h5", 0, "w", &d, xp, &err) != QS_OK) return 0;
    if (d.codes[0] * d.codes[1] > (1 << 16)) return 0; /* accepted, but too big to allocate per input */

    /* the stored values */
    qs_quant_opts ro;
    qs_quant_opts_default(&ro);
    ro.bits = d.bits;
    ro.group_size = d.scales[0] == 1 ? -1 : (int)(d.codes[1] / d.scales[0]);
    qs_quant_result r;
    if (qs_quant_result_init(&r, d.codes[0], d.codes[1], &ro, &err) != QS_OK) return 0;
    if (r.groups != d.scales[0]) abort(); /* the dims check promised cols % groups == 0 */
    int64_t n = r.rows * r.cols, ng = r.groups * r.rows;
    uint8_t fill = u8(&s);
    int maxq = (1 << d.bits) - 1; /* bits is 2, 3, 4 or 8 here */
    for (int64_t i = 0; i < n; i++) r.codes[i] = fill & 1 ? u8(&s) : (uint8_t)(u8(&s) & maxq);
    for (int64_t i = 0; i < ng; i++) {
        if (fill & 2) {
            bytes(&s, &r.scales[i], sizeof(float));
        } else {
            r.scales[i] = qs_f16_to_f32((uint16_t)(i32(&s) & 0x7bff)); /* finite fp16 values */
        }
        r.zeros[i] = fill & 4 ? i32(&s) : (int32_t)(u8(&s) % (maxq + 1));
    }
    for (int64_t c = 0; c < r.cols; c++) {
        int gs = ro.group_size > 0 ? ro.group_size : (int)r.cols;
        r.g_idx[c] = fill & 8 ? i32(&s) : fill & 16 ? (int32_t)(u8(&s) % r.groups) : (int32_t)(c / gs);
    }
    qs_linear_stats st;
    memset(&st, 0, sizeof st);
    bytes(&s, &st.h_trace, sizeof st.h_trace);
    bytes(&s, &st.loss, sizeof st.loss);
    bytes(&s, &st.loss_rtn, sizeof st.loss_rtn);
    st.samples = i64(&s);
    char names[1][QS_NAME_MAX] = {"w"};
    /* OmniQuant's record (mode bit 0x04): the block's norms "n.attn" and
     * "n.mlp" of length hidden and the linear's bias "b" of length out may
     * be replaced by folded tensors; names, lengths and values fuzzed */
    qs_omni_record om, *omp = NULL;
    memset(&om, 0, sizeof om);
    if (mode & 0x04) {
        static const char *fp_names[] = {"n.attn", "n.mlp", "b", "n.other"};
        x.quant.method = QS_QUANT_METHOD_OMNIQUANT;
        snprintf(x.norm[0], sizeof x.norm[0], "n.attn");
        snprintf(x.norm[2], sizeof x.norm[2], "n.mlp");
        snprintf(x.lin[0].bias, sizeof x.lin[0].bias, "b");
        x.hidden = 1 + u8(&s) % 32;
        om.epochs = 1 + u8(&s) % 4;
        om.steps = i64(&s);
        om.loss = calloc((size_t)om.epochs, sizeof(double));
        if (!om.loss) abort();
        for (int e = 0; e < om.epochs; e++) om.loss[e] = u8(&s) & 1 ? (double)i32(&s) : (bytes(&s, &om.loss[e], 8), om.loss[e]);
        int nfp = u8(&s) % 4, np = u8(&s) % 3;
        for (int k = 0; k < nfp + np; k++) {
            uint8_t pick = u8(&s);
            int64_t shape[2] = {1 + u8(&s) % 40, 1 + u8(&s) % 4};
            int ndim = k < nfp ? (pick & 0x10 ? 2 : 1) : 1 + (pick & 1);
            float vals[160];
            for (int v = 0; v < 160; v++) vals[v] = pick & 0x20 ? (bytes(&s, &vals[v], 4), vals[v]) : (float)(int8_t)u8(&s);
            if (qs_omni_record_add(&om, k < nfp, k < nfp ? fp_names[pick % 4] : "p", ndim, shape, vals, &err) != QS_OK)
                abort();
        }
        omp = &om;
    }
    if (qs_block_results_check("fuzz.h5", 1, names, &r, &st, omp, xp, &err) != QS_OK) {
        qs_omni_record_free(&om);
        qs_quant_result_free(&r);
        return 0;
    }
    /* an accepted record: every folded tensor is one the block has, of its
     * length, and finite (what the exports and a resumed block rely on) */
    for (int k = 0; omp && xp && k < om.n_fp; k++) {
        const qs_omni_tensor *t = &om.fp[k];
        int64_t want = !strcmp(t->name, "b") ? x.lin[0].out : x.hidden;
        if (t->ndim != 1 || t->shape[0] != want || !strcmp(t->name, "n.other")) abort();
        for (int64_t v = 0; v < t->shape[0]; v++)
            if (!isfinite(t->data[v])) abort();
    }
    for (int e = 0; omp && e < om.epochs; e++)
        if (!isfinite(om.loss[e])) abort();
    qs_omni_record_free(&om);

    /* accepted: every consumer must be safe on it */
    qs_quant_dequantize(&r, r.q);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(r.q[i])) abort();
    for (int64_t i = 0; i < ng; i++)
        if (qs_f16_to_f32(qs_f32_to_f16(r.scales[i])) != r.scales[i] || r.scales[i] >= QS_FP16_MAX) abort();
    if ((r.cols * r.bits) % 32 == 0) {
        int32_t *qw = malloc(sizeof(int32_t) * (size_t)(r.cols * r.bits / 32 * r.rows));
        uint8_t *back = malloc((size_t)n);
        if (!qw || !back) abort();
        qs_gptq_pack_qweight(r.codes, r.rows, r.cols, r.bits, qw);
        qs_gptq_unpack_qweight(qw, r.rows, r.cols, r.bits, back);
        if (memcmp(back, r.codes, (size_t)n)) abort();
        free(qw);
        free(back);
    }
    if ((r.rows * r.bits) % 32 == 0) {
        int32_t *qz = malloc(sizeof(int32_t) * (size_t)(r.groups * r.rows * r.bits / 32));
        int32_t *back = malloc(sizeof(int32_t) * (size_t)ng);
        if (!qz || !back) abort();
        if (qs_gptq_pack_qzeros(r.zeros, r.groups, r.rows, r.bits, false, qz, &err) != QS_OK) abort(); /* v2 holds [0, maxq] */
        qs_gptq_unpack_qzeros(qz, r.groups, r.rows, r.bits, false, back);
        if (memcmp(back, r.zeros, sizeof(int32_t) * (size_t)ng)) abort();
        free(qz);
        free(back);
    }
    qs_quant_result_free(&r);
    return 0;
}
