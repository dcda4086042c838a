/* block.c — a transformer block's weights (loaded per layer from a model dir)
 * and its forward for llama / opt / bloom with capture-and-stop hooks for
 * true-sequential GPTQ. Every op of the forward goes through the backend:
 * GEMMs through be->sgemm, norms, RoPE, attention, activations and
 * residuals through be->ops (kernels/ops_table.h; on the CPU the loops of
 * kernels/cpu/ops.c), buffers through be->alloc — so the same code runs on
 * host memory and, with the block's tensors copied by qs_block_to_device,
 * on a device backend's memory (docs/gpu.md). */
#include "workers/block.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cJSON.h>
#include <stdlib.h>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/gptq_pack.h"
#include "kernels/ops.h"
#include "kernels/ops_table.h"

/* ============================================================ loading ==== */

static qs_status check_shape(const qs_manifest *m, const char *name, const qs_tensor *t, int ndim, int64_t d0,
                             int64_t d1, qs_error *err)
{
    bool ok = t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1);
    if (ok) return QS_OK;
    char got[96], want[96];
    int64_t ws[2] = {d0, d1};
    return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': shape %s, expected %s", qs_manifest_dir(m), name,
                        qs_shape_str(t->ndim, t->shape, got, sizeof got), qs_shape_str(ndim, ws, want, sizeof want));
}

/* True when config.json's quantization_config says checkpoint_format
 * "gptq_v2" (zeros stored as is); "gptq" (v1, zero − 1) is the default. */
static bool gptq_is_v2(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char *text = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n > 0 && n < (64L << 20) && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)n + 1))) {
        if (fread(text, 1, (size_t)n, f) == (size_t)n) text[n] = '\0';
        else free(text), text = NULL;
    }
    fclose(f);
    if (!text) return false;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(qc, "checkpoint_format");
    bool v2 = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "gptq_v2") == 0;
    cJSON_Delete(root);
    return v2;
}

/* Reads an I32 tensor's data (borrowed from the mapping) after checking dtype. */
static qs_status find_i32(const qs_manifest *m, const char *name, const qs_st_info **info, const int32_t **data,
                          qs_error *err)
{
    const qs_st_file *f = NULL;
    *info = qs_manifest_find(m, name, &f);
    if (!*info) return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' is missing", qs_manifest_dir(m), name);
    if ((*info)->dtype != QS_DTYPE_I32)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': dtype %s, expected I32", qs_manifest_dir(m), name,
                            qs_dtype_name((*info)->dtype));
    *data = qs_st_data(f, *info);
    return QS_OK;
}

static qs_status gptq_dequant(const qs_manifest *m, const char *prefix, int64_t out, int64_t in, qs_tensor *w,
                              qs_error *err)
{
    const char *dir = qs_manifest_dir(m);
    char name[QS_NAME_MAX + 16];
    const qs_st_info *qi, *zi, *gi = NULL;
    const int32_t *qw, *qz, *gidx = NULL;
    qs_tensor scales = {0};
    uint8_t *codes = NULL;
    int32_t *zeros = NULL;
    qs_status s;

    snprintf(name, sizeof name, "%s.qweight", prefix);
    QS_TRY(find_i32(m, name, &qi, &qw, err));
    if (qi->ndim != 2 || qi->shape[1] != out || (qi->shape[0] * 32) % in != 0)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': expected [in·bits/32, %lld] with in = %lld",
                            dir, name, (long long)out, (long long)in);
    int bits = (int)(qi->shape[0] * 32 / in);
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: tensor '%s': %d-bit packing, expected 2, 3, 4 or 8 bits",
                            dir, name, bits);

    snprintf(name, sizeof name, "%s.scales", prefix);
    QS_TRY(qs_manifest_read_f32(m, name, &scales, true, err));
    if (scales.ndim != 2 || scales.shape[1] != out || scales.shape[0] < 1) {
        s = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': expected [groups, %lld]", dir, name, (long long)out);
        goto done;
    }
    int64_t groups = scales.shape[0];

    snprintf(name, sizeof name, "%s.qzeros", prefix);
    if ((s = find_i32(m, name, &zi, &qz, err)) != QS_OK) goto done;
    if (zi->ndim != 2 || zi->shape[0] != groups || zi->shape[1] * 32 != out * bits) {
        s = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': expected [%lld, %lld·%d/32]", dir, name,
                         (long long)groups, (long long)out, bits);
        goto done;
    }

    snprintf(name, sizeof name, "%s.g_idx", prefix);
    const qs_st_file *gf = NULL;
    if (qs_manifest_find(m, name, &gf)) {
        if ((s = find_i32(m, name, &gi, &gidx, err)) != QS_OK) goto done;
        if (gi->ndim != 1 || gi->shape[0] != in) {
            s = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': expected [%lld]", dir, name, (long long)in);
            goto done;
        }
        for (int64_t i = 0; i < in; i++)
            if (gidx[i] < 0 || gidx[i] >= groups) {
                s = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s': element %lld is %d, outside [0, %lld)", dir,
                                 name, (long long)i, gidx[i], (long long)groups);
                goto done;
            }
    } else if (in % groups != 0) {
        s = qs_error_set(err, QS_ERR_INPUT, "%s: '%s' is missing and %lld inputs do not split into %lld groups", dir,
                         name, (long long)in, (long long)groups);
        goto done;
    }

    if (in % 32 != 0) {
        s = qs_error_set(err, QS_ERR_UNSUPPORTED, "%s: '%s.qweight': %lld inputs, expected a multiple of 32", dir,
                         prefix, (long long)in);
        goto done;
    }
    codes = malloc((size_t)(out * in));
    zeros = malloc(sizeof(int32_t) * (size_t)(groups * out));
    int64_t shape[2] = {out, in};
    if (!codes || !zeros) {
        s = qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory dequantizing '%s'", dir, prefix);
        goto done;
    }
    if ((s = qs_tensor_init(w, QS_DTYPE_F32, 2, shape, err)) != QS_OK) goto done;
    qs_gptq_unpack_qweight(qw, out, in, bits, codes);
    qs_gptq_unpack_qzeros(qz, groups, out, bits, !gptq_is_v2(dir), zeros);
    float *wd = w->data;
    const float *sc = scales.data;
    const int64_t group_size = in / groups;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            int64_t g = gidx ? gidx[i] : i / group_size;
            wd[o * in + i] = sc[g * out + o] * (float)((int32_t)codes[o * in + i] - zeros[g * out + o]);
        }
    s = QS_OK;
done:
    qs_tensor_free(&scales);
    free(codes);
    free(zeros);
    return s;
}

qs_status qs_linear_load(const qs_manifest *m, const char *weight_name, int64_t out, int64_t in, qs_tensor *w,
                         qs_error *err)
{
    const qs_st_file *f = NULL;
    if (qs_manifest_find(m, weight_name, &f)) {
        QS_TRY(qs_manifest_read_f32(m, weight_name, w, true, err));
        qs_status s = check_shape(m, weight_name, w, 2, out, in, err);
        if (s != QS_OK) qs_tensor_free(w);
        return s;
    }
    char prefix[QS_NAME_MAX];
    size_t n = strlen(weight_name);
    const char *suffix = ".weight";
    if (n > strlen(suffix) && strcmp(weight_name + n - strlen(suffix), suffix) == 0 && n < sizeof prefix) {
        memcpy(prefix, weight_name, n - strlen(suffix));
        prefix[n - strlen(suffix)] = '\0';
        char qname[QS_NAME_MAX + 16];
        snprintf(qname, sizeof qname, "%s.qweight", prefix);
        if (qs_manifest_find(m, qname, &f)) return gptq_dequant(m, prefix, out, in, w, err);
    }
    return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' is missing (and no GPTQ '.qweight' for it)",
                        qs_manifest_dir(m), weight_name);
}

static qs_status load_vec(const qs_manifest *m, const char *name, int64_t n, qs_tensor *t, qs_error *err)
{
    QS_TRY(qs_manifest_read_f32(m, name, t, true, err));
    qs_status s = check_shape(m, name, t, 1, n, 0, err);
    if (s != QS_OK) qs_tensor_free(t);
    return s;
}

/* Sets up lin[] and checks that the roles the forward needs are there. */
static qs_status block_layout(qs_block *blk, const qs_model_config *cfg, const qs_model_names *names, int layer,
                              qs_error *err)
{
    memset(blk, 0, sizeof *blk);
    blk->cfg = *cfg;
    blk->layer = layer;
    blk->n_linears = qs_block_linears(cfg, names, layer, blk->lin);
    static const qs_linear_role llama[] = {QS_LIN_Q, QS_LIN_K, QS_LIN_V, QS_LIN_O, QS_LIN_GATE, QS_LIN_UP, QS_LIN_DOWN};
    static const qs_linear_role opt[] = {QS_LIN_Q, QS_LIN_K, QS_LIN_V, QS_LIN_O, QS_LIN_FC1, QS_LIN_FC2};
    static const qs_linear_role bloom[] = {QS_LIN_QKV, QS_LIN_O, QS_LIN_FC1, QS_LIN_FC2};
    const qs_linear_role *need = cfg->arch == QS_ARCH_LLAMA ? llama : cfg->arch == QS_ARCH_OPT ? opt : bloom;
    int n_need = cfg->arch == QS_ARCH_LLAMA ? 7 : cfg->arch == QS_ARCH_OPT ? 6 : 4;
    for (int i = 0; i < n_need; i++)
        if (qs_block_find(blk, need[i]) < 0)
            return qs_error_set(err, QS_ERR_INTERNAL, "block %d (%s): no linear with role %d", layer,
                                qs_arch_name(cfg->arch), (int)need[i]);
    if (cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 || cfg->n_heads % cfg->n_kv_heads != 0 || cfg->head_dim <= 0 ||
        (cfg->pos == QS_POS_ROPE && cfg->head_dim % 2 != 0))
        return qs_error_set(err, QS_ERR_INPUT, "block %d: %d heads, %d kv heads, head_dim %d are inconsistent",
                            layer, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
    return QS_OK;
}

qs_status qs_block_load(qs_block *blk, const qs_manifest *m, const qs_model_names *names, int layer, qs_error *err)
{
    const qs_model_config *cfg = qs_manifest_config(m);
    qs_status s = block_layout(blk, cfg, names, layer, err);
    if (s != QS_OK) return s;
    for (int i = 0; i < blk->n_linears && s == QS_OK; i++) {
        const qs_block_linear *l = &blk->lin[i];
        s = qs_linear_load(m, l->weight, l->out, l->in, &blk->weight[i], err);
        if (s == QS_OK && l->bias[0]) s = load_vec(m, l->bias, l->out, &blk->bias[i], err);
    }
    char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
    qs_block_norm_names(cfg, names, layer, aw, ab, mw, mb);
    if (s == QS_OK) s = load_vec(m, aw, cfg->hidden, &blk->attn_norm_w, err);
    if (s == QS_OK && ab[0]) s = load_vec(m, ab, cfg->hidden, &blk->attn_norm_b, err);
    if (s == QS_OK) s = load_vec(m, mw, cfg->hidden, &blk->mlp_norm_w, err);
    if (s == QS_OK && mb[0]) s = load_vec(m, mb, cfg->hidden, &blk->mlp_norm_b, err);
    if (s == QS_OK && cfg->norm == QS_NORM_LAYER && (!blk->attn_norm_b.data || !blk->mlp_norm_b.data))
        s = qs_error_set(err, QS_ERR_INPUT, "%s: block %d: LayerNorm without a bias tensor", qs_manifest_dir(m),
                         layer);
    if (s != QS_OK) qs_block_free(blk);
    return s;
}

qs_status qs_block_init(qs_block *blk, const qs_model_config *cfg, const qs_model_names *names, int layer,
                        qs_error *err)
{
    qs_status s = block_layout(blk, cfg, names, layer, err);
    if (s != QS_OK) return s;
    for (int i = 0; i < blk->n_linears && s == QS_OK; i++) {
        int64_t shape[2] = {blk->lin[i].out, blk->lin[i].in};
        s = qs_tensor_init(&blk->weight[i], QS_DTYPE_F32, 2, shape, err);
        if (s == QS_OK && blk->lin[i].bias[0]) s = qs_tensor_init(&blk->bias[i], QS_DTYPE_F32, 1, shape, err);
    }
    int64_t h = cfg->hidden;
    if (s == QS_OK) s = qs_tensor_init(&blk->attn_norm_w, QS_DTYPE_F32, 1, &h, err);
    if (s == QS_OK) s = qs_tensor_init(&blk->mlp_norm_w, QS_DTYPE_F32, 1, &h, err);
    if (s == QS_OK && cfg->norm == QS_NORM_LAYER) s = qs_tensor_init(&blk->attn_norm_b, QS_DTYPE_F32, 1, &h, err);
    if (s == QS_OK && cfg->norm == QS_NORM_LAYER) s = qs_tensor_init(&blk->mlp_norm_b, QS_DTYPE_F32, 1, &h, err);
    if (s != QS_OK) qs_block_free(blk);
    return s;
}

static void device_free(qs_block *blk);

void qs_block_free(qs_block *blk)
{
    if (!blk) return;
    device_free(blk);
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) {
        qs_tensor_free(&blk->weight[i]);
        qs_tensor_free(&blk->bias[i]);
    }
    qs_tensor_free(&blk->attn_norm_w);
    qs_tensor_free(&blk->attn_norm_b);
    qs_tensor_free(&blk->mlp_norm_w);
    qs_tensor_free(&blk->mlp_norm_b);
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) {
        qs_free(blk->weight_bf16[i]);
        blk->weight_bf16[i] = NULL;
    }
    blk->n_linears = 0;
}

int qs_block_find(const qs_block *blk, qs_linear_role role)
{
    for (int i = 0; i < blk->n_linears; i++)
        if (blk->lin[i].role == role) return i;
    return -1;
}

qs_tensor *qs_block_linear_weight(qs_block *blk, int idx)
{
    return idx >= 0 && idx < blk->n_linears ? &blk->weight[idx] : NULL;
}

/* ============================================================ forward ==== */

qs_status qs_block_set_compute(qs_block *blk, qs_compute_dtype dt, qs_error *err)
{
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) {
        qs_free(blk->weight_bf16[i]);
        blk->weight_bf16[i] = NULL;
    }
    blk->compute = dt;
    if (dt != QS_COMPUTE_BF16) return QS_OK;
    if (blk->dev)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "block %d: bf16 compute on %s (no bf16 GEMM there)", blk->layer,
                            blk->dev->name);
    for (int i = 0; i < blk->n_linears; i++) {
        blk->weight_bf16[i] = qs_malloc(sizeof(uint16_t) * (size_t)(blk->lin[i].out * blk->lin[i].in));
        if (!blk->weight_bf16[i]) {
            qs_block_set_compute(blk, QS_COMPUTE_F32, err);
            return qs_error_set(err, QS_ERR_NOMEM, "block %d: bf16 copy of %s", blk->layer, blk->lin[i].weight);
        }
        qs_cpu_to_bf16(blk->weight[i].data, blk->weight_bf16[i], blk->lin[i].out * blk->lin[i].in);
    }
    return QS_OK;
}

qs_status qs_block_linear_sync(qs_block *blk, int idx, qs_error *err)
{
    if (idx < 0 || idx >= blk->n_linears) return QS_OK;
    const int64_t n = blk->lin[idx].out * blk->lin[idx].in;
    if (blk->weight_bf16[idx]) qs_cpu_to_bf16(blk->weight[idx].data, blk->weight_bf16[idx], n);
    if (blk->dev && blk->d_weight[idx]) {
        qs_status s = blk->dev->copy(blk->dev->ctx, blk->d_weight[idx], blk->weight[idx].data,
                                     sizeof(float) * (size_t)n, err);
        if (s != QS_OK) return qs_error_prefix(err, "block %d: %s to %s", blk->layer, blk->lin[idx].weight,
                                               blk->dev->name);
    }
    return QS_OK;
}

/* ============================================================ device ===== */

/* One host tensor's copy in the device backend's memory (NULL for a tensor
 * without data). */
static qs_status upload(const qs_backend_i *be, const qs_tensor *t, float **out, const char *what, int layer,
                        qs_error *err)
{
    *out = NULL;
    if (!t->data) return QS_OK;
    size_t bytes = sizeof(float) * (size_t)qs_tensor_numel(t);
    *out = be->alloc(be->ctx, bytes);
    if (!*out)
        return qs_error_set(err, QS_ERR_NOMEM, "block %d: %s (%zu bytes) does not fit in %s's memory", layer, what,
                            bytes, be->name);
    return be->copy(be->ctx, *out, t->data, bytes, err);
}

static void device_free(qs_block *blk)
{
    const qs_backend_i *be = blk->dev;
    if (!be) return;
    for (int i = 0; i < QS_MAX_BLOCK_LINEARS; i++) {
        if (blk->d_weight[i]) be->free(be->ctx, blk->d_weight[i]);
        if (blk->d_bias[i]) be->free(be->ctx, blk->d_bias[i]);
        blk->d_weight[i] = blk->d_bias[i] = NULL;
    }
    float **v[4] = {&blk->d_attn_norm_w, &blk->d_attn_norm_b, &blk->d_mlp_norm_w, &blk->d_mlp_norm_b};
    for (int i = 0; i < 4; i++) {
        if (*v[i]) be->free(be->ctx, *v[i]);
        *v[i] = NULL;
    }
    blk->dev = NULL;
}

qs_status qs_block_to_device(qs_block *blk, const qs_backend_i *be, qs_error *err)
{
    if (!be || !be->device || blk->dev == be) return QS_OK;
    if (blk->compute == QS_COMPUTE_BF16)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "block %d: bf16 compute on %s (no bf16 GEMM there)", blk->layer,
                            be->name);
    device_free(blk);
    blk->dev = be;
    qs_status s = QS_OK;
    for (int i = 0; i < blk->n_linears && s == QS_OK; i++) {
        s = upload(be, &blk->weight[i], &blk->d_weight[i], blk->lin[i].weight, blk->layer, err);
        if (s == QS_OK) s = upload(be, &blk->bias[i], &blk->d_bias[i], blk->lin[i].bias, blk->layer, err);
    }
    if (s == QS_OK) s = upload(be, &blk->attn_norm_w, &blk->d_attn_norm_w, "attention norm", blk->layer, err);
    if (s == QS_OK) s = upload(be, &blk->attn_norm_b, &blk->d_attn_norm_b, "attention norm bias", blk->layer, err);
    if (s == QS_OK) s = upload(be, &blk->mlp_norm_w, &blk->d_mlp_norm_w, "MLP norm", blk->layer, err);
    if (s == QS_OK) s = upload(be, &blk->mlp_norm_b, &blk->d_mlp_norm_b, "MLP norm bias", blk->layer, err);
    if (s != QS_OK) device_free(blk);
    return s;
}

int64_t qs_block_carry_cols(const qs_block *blk, int boundary)
{
    const qs_model_config *c = &blk->cfg;
    if (boundary == 1) return (int64_t)c->n_heads * c->head_dim;
    if (boundary == 3) return blk->lin[qs_block_find(blk, c->arch == QS_ARCH_LLAMA ? QS_LIN_DOWN : QS_LIN_FC2)].in;
    return 0;
}

double qs_block_forward_flops(const qs_block *blk, int64_t batch, int64_t seq)
{
    double f = 0, R = (double)batch * (double)seq;
    for (int i = 0; i < blk->n_linears; i++) f += 2.0 * R * (double)blk->lin[i].out * (double)blk->lin[i].in;
    return f + 2.0 * (double)batch * (double)seq * (double)(seq + 1) * (double)blk->cfg.n_heads *
                   (double)blk->cfg.head_dim;
}

/* ============================================================ forward ==== */

/* What one forward computes with: the backend, its ops table and the block's
 * tensors in the backend's memory (the host tensors on the CPU, the device
 * copies of qs_block_to_device on a device backend). */
typedef struct fwd {
    const qs_backend_i *be;
    const qs_ops_i *ops;
    const qs_block *blk;
    const float *w[QS_MAX_BLOCK_LINEARS], *b[QS_MAX_BLOCK_LINEARS];
    const float *anw, *anb, *mnw, *mnb;
} fwd;

static float *falloc(const fwd *f, int64_t n)
{
    return f->be->alloc ? f->be->alloc(f->be->ctx, sizeof(float) * (size_t)n) : qs_malloc(sizeof(float) * (size_t)n);
}

static void ffree(const fwd *f, void *p)
{
    if (!p) return;
    if (f->be->free) f->be->free(f->be->ctx, p);
    else qs_free(p);
}

static qs_status fcopy(const fwd *f, void *dst, const void *src, size_t bytes, qs_error *err)
{
    if (f->be->copy) return f->be->copy(f->be->ctx, dst, src, bytes, err);
    if (bytes) memmove(dst, src, bytes);
    return QS_OK;
}

static qs_status fwd_init(fwd *f, const qs_block *blk, const qs_backend_i *be, qs_error *err)
{
    memset(f, 0, sizeof *f);
    f->be = be;
    f->blk = blk;
    f->ops = be->ops ? be->ops : &qs_ops_cpu_table;
    if (be->device) {
        if (blk->dev != be)
            return qs_error_set(err, QS_ERR_INTERNAL, "block %d: its weights are not on %s (qs_block_to_device)",
                                blk->layer, be->name);
        if (blk->compute == QS_COMPUTE_BF16)
            return qs_error_set(err, QS_ERR_UNSUPPORTED, "block %d: bf16 compute on %s (no bf16 GEMM there)",
                                blk->layer, be->name);
        for (int i = 0; i < blk->n_linears; i++) f->w[i] = blk->d_weight[i], f->b[i] = blk->d_bias[i];
        f->anw = blk->d_attn_norm_w, f->anb = blk->d_attn_norm_b;
        f->mnw = blk->d_mlp_norm_w, f->mnb = blk->d_mlp_norm_b;
    } else {
        for (int i = 0; i < blk->n_linears; i++) f->w[i] = blk->weight[i].data, f->b[i] = blk->bias[i].data;
        f->anw = blk->attn_norm_w.data, f->anb = blk->attn_norm_b.data;
        f->mnw = blk->mlp_norm_w.data, f->mnb = blk->mlp_norm_b.data;
    }
    return QS_OK;
}

/* The input of one stage's linears: f32, and its bf16 rounding in bf16 compute
 * (made once, read by every linear of the stage and by the capture). */
typedef struct stage_in {
    const float *x;
    const uint16_t *xb;
    int64_t cols;
} stage_in;

/* y[rows, out] = x · Wᵀ + b */
static qs_status linear(const fwd *f, int idx, const stage_in *in, int64_t rows, float *y, double *flops,
                        qs_error *err)
{
    const qs_backend_i *be = f->be;
    const qs_block *blk = f->blk;
    const qs_block_linear *l = &blk->lin[idx];
    if (blk->compute == QS_COMPUTE_BF16) {
        qs_status s = be->gemm_bf16(be->ctx, false, true, rows, l->out, l->in, 1.0f, in->xb, l->in,
                                    blk->weight_bf16[idx], l->in, 0.0f, y, l->out, err);
        if (s != QS_OK) return qs_error_prefix(err, "block %d: %s", blk->layer, l->weight);
    } else {
        be->sgemm(be->ctx, false, true, rows, l->out, l->in, 1.0f, in->x, l->in, f->w[idx], l->in, 0.0f, y, l->out);
    }
    if (f->b[idx]) QS_TRY(f->ops->add_bias(be->ctx, y, f->b[idx], rows, l->out, err));
    *flops += 2.0 * (double)rows * (double)l->out * (double)l->in;
    return QS_OK;
}

static qs_status norm(const fwd *f, const float *w, const float *b, const float *x, float *y, int64_t rows,
                      qs_error *err)
{
    const qs_model_config *c = &f->blk->cfg;
    if (c->norm == QS_NORM_RMS) return f->ops->rmsnorm(f->be->ctx, x, w, y, rows, c->hidden, (float)c->norm_eps, err);
    return f->ops->layernorm(f->be->ctx, x, w, b, y, rows, c->hidden, (float)c->norm_eps, err);
}

/* Makes stage s's input: x [rows, cols] plus, in bf16 compute, its rounding
 * into xb_buf (host only); then runs the capture hook on it. */
static qs_status stage(const qs_block *blk, const qs_block_hooks *hk, int s, const float *x, int64_t rows,
                       int64_t cols, uint16_t *xb_buf, stage_in *in, qs_error *err)
{
    in->x = x;
    in->cols = cols;
    in->xb = NULL;
    if (blk->compute == QS_COMPUTE_BF16) {
        qs_cpu_to_bf16(x, xb_buf, rows * cols);
        in->xb = xb_buf;
    }
    if (hk && hk->capture && (hk->capture_stage < 0 || hk->capture_stage == s))
        for (int i = 0; i < blk->n_linears; i++)
            if (blk->lin[i].stage == s) QS_TRY(hk->capture(hk->ctx, blk, i, in->x, in->xb, rows, cols, err));
    return QS_OK;
}

qs_status qs_block_forward(const qs_block *blk, const qs_backend_i *be, const float *x, int64_t batch, int64_t seq,
                           float *out, const qs_block_hooks *hooks, qs_error *err)
{
    bool stop = hooks && hooks->stop_after_stage >= 0;
    qs_block_span sp = {.from = 0, .to = stop ? hooks->stop_after_stage : QS_BLOCK_END, .res_in = x,
                        .res_out = stop ? NULL : out};
    return qs_block_forward_span(blk, be, batch, seq, &sp, hooks, err);
}

qs_status qs_block_forward_span_on(const qs_block *blk, const qs_backend_i *be, int64_t batch, int64_t seq,
                                   qs_block_span *sp, const qs_block_hooks *hooks, qs_error *err)
{
    const qs_model_config *c = &blk->cfg;
    const int64_t R = batch * seq, H = c->hidden;
    const int nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    const int64_t qd = (int64_t)nh * hd, kvd = (int64_t)nkv * hd;
    const bool bloom = c->arch == QS_ARCH_BLOOM;
    const bool post_ln = c->arch == QS_ARCH_OPT && !c->do_layer_norm_before;
    const bool bf16 = blk->compute == QS_COMPUTE_BF16;
    const int i_o = qs_block_find(blk, QS_LIN_O);
    const int64_t ffn = qs_block_carry_cols(blk, 3);
    const int from = sp->from, to = sp->to;
    if (from < 0 || to > QS_BLOCK_END || from > to)
        return qs_error_set(err, QS_ERR_INTERNAL, "block %d: span from boundary %d to %d", blk->layer, from, to);
    if ((from == 1 || from == 3) && !sp->x_in)
        return qs_error_set(err, QS_ERR_INTERNAL, "block %d: a span from boundary %d needs its stage input",
                            blk->layer, from);
    if (R <= 0) return QS_OK;
    fwd F;
    QS_TRY(fwd_init(&F, blk, be, err));
    const fwd *f = &F;
    const qs_ops_i *ops = f->ops;
    void *ctx = be->ctx;

    /* what this span needs: q/k/v only when it runs attention (0 → 1), the
     * MLP's hidden only when it runs gate/up (2 → 3) */
    const bool run_attn = from == 0 && to >= 1, run_up = from <= 2 && to >= 3;
    const int64_t widest = ffn > qd ? (ffn > H ? ffn : H) : (qd > H ? qd : H);
    float *res = falloc(f, R * H);
    float *nrm = falloc(f, R * H);
    const bool own_att = run_attn && !(to == 1 && sp->x_out), own_f1 = run_up && !(to == 3 && sp->x_out);
    float *att = own_att ? falloc(f, R * qd) : NULL;
    /* q/k/v: bloom's fused [R, 3·qd], else q [R, qd] then k, v [R, kvd] in one buffer */
    float *qkv = run_attn ? falloc(f, R * (bloom ? 3 * qd : qd + 2 * kvd)) : NULL;
    float *f1 = own_f1 ? falloc(f, R * ffn) : NULL;
    float *f2 = run_up && c->arch == QS_ARCH_LLAMA ? falloc(f, R * ffn) : NULL;
    uint16_t *xb = bf16 ? qs_malloc(sizeof(uint16_t) * (size_t)(R * widest)) : NULL;
    float *cs = NULL, *sn = NULL, *d_cs = NULL, *d_sn = NULL;
    double *inv = NULL;
    float *slopes = NULL, *d_slopes = NULL;
    qs_status s = QS_OK;
    stage_in in;
    if (!res || !nrm || (own_att && !att) || (run_attn && !qkv) || (own_f1 && !f1) ||
        (run_up && c->arch == QS_ARCH_LLAMA && !f2) || (bf16 && !xb)) {
        s = qs_error_set(err, QS_ERR_NOMEM, "block %d: out of %s memory for activations of %lld tokens", blk->layer,
                         be->device ? be->name : "host", (long long)R);
        goto done;
    }
    if ((s = fcopy(f, res, sp->res_in, sizeof(float) * (size_t)(R * H), err)) != QS_OK) goto done;
    if (from == QS_BLOCK_END) goto done;
    /* where the attention output and the MLP hidden live in this span */
    if (to == 1 && sp->x_out) att = sp->x_out;
    if (to == 3 && sp->x_out) f1 = sp->x_out;
    const float *att_in = from == 1 ? sp->x_in : att;
    const float *f1_in = from == 3 ? sp->x_in : f1;

    /* ---- boundary 0 → 1: attention ---- */
    if (from == 0) {
        const float *a_in = res;
        if (!post_ln) {
            if ((s = norm(f, f->anw, f->anb, res, nrm, R, err)) != QS_OK) goto done;
            a_in = nrm;
        }
        if ((s = stage(blk, hooks, 0, a_in, R, H, xb, &in, err)) != QS_OK || to == 0) goto done;

        qs_attn_args aa = {.batch = batch, .seq_q = seq, .seq_k = seq, .n_heads = nh, .n_kv_heads = nkv,
                           .head_dim = hd, .scale = (float)(1.0 / sqrt((double)hd)), .causal = true,
                           .out = att, .o_tok = qd, .o_head = hd};
        if (bloom) {
            if ((s = linear(f, qs_block_find(blk, QS_LIN_QKV), &in, R, qkv, &sp->flops, err)) != QS_OK) goto done;
            /* fused rows are [heads, 3, head_dim]: head h's q, k, v are consecutive */
            aa.q = qkv, aa.k = qkv + hd, aa.v = qkv + 2 * hd;
            aa.q_tok = aa.k_tok = aa.v_tok = 3 * qd;
            aa.q_head = aa.k_head = aa.v_head = 3 * hd;
        } else {
            float *q = qkv, *k = qkv + R * qd, *v = k + R * kvd;
            if ((s = linear(f, qs_block_find(blk, QS_LIN_Q), &in, R, q, &sp->flops, err)) != QS_OK ||
                (s = linear(f, qs_block_find(blk, QS_LIN_K), &in, R, k, &sp->flops, err)) != QS_OK ||
                (s = linear(f, qs_block_find(blk, QS_LIN_V), &in, R, v, &sp->flops, err)) != QS_OK)
                goto done;
            aa.q = q, aa.k = k, aa.v = v;
            aa.q_tok = qd, aa.k_tok = aa.v_tok = kvd;
            aa.q_head = aa.k_head = aa.v_head = hd;
        }
        if (c->pos == QS_POS_ROPE) {
            /* the tables are made on the host and copied to backend memory */
            int h2 = hd / 2;
            inv = qs_malloc(sizeof(double) * (size_t)h2);
            cs = qs_malloc(sizeof(float) * (size_t)(seq * h2));
            sn = qs_malloc(sizeof(float) * (size_t)(seq * h2));
            d_cs = be->device ? falloc(f, seq * h2) : cs;
            d_sn = be->device ? falloc(f, seq * h2) : sn;
            if (!inv || !cs || !sn || !d_cs || !d_sn) {
                s = qs_error_set(err, QS_ERR_NOMEM, "block %d: out of memory for RoPE tables", blk->layer);
                goto done;
            }
            qs_cpu_rope_inv_freq(hd, c->rope_theta, (int)c->rope_scaling, c->rope_factor, c->rope_low_freq_factor,
                                 c->rope_high_freq_factor, (double)c->rope_original_max_positions, inv);
            qs_cpu_rope_tables(inv, hd, 0, seq, cs, sn);
            if (be->device && ((s = fcopy(f, d_cs, cs, sizeof(float) * (size_t)(seq * h2), err)) != QS_OK ||
                               (s = fcopy(f, d_sn, sn, sizeof(float) * (size_t)(seq * h2), err)) != QS_OK))
                goto done;
            if ((s = ops->rope(ctx, (float *)aa.q, batch, seq, nh, hd, aa.q_tok, aa.q_head, d_cs, d_sn, err)) !=
                    QS_OK ||
                (s = ops->rope(ctx, (float *)aa.k, batch, seq, nkv, hd, aa.k_tok, aa.k_head, d_cs, d_sn, err)) !=
                    QS_OK)
                goto done;
        } else if (c->pos == QS_POS_ALIBI) {
            slopes = qs_malloc(sizeof(float) * (size_t)nh);
            d_slopes = be->device ? falloc(f, nh) : slopes;
            if (!slopes || !d_slopes) {
                s = qs_error_set(err, QS_ERR_NOMEM, "block %d: out of memory", blk->layer);
                goto done;
            }
            for (int h = 0; h < nh; h++) slopes[h] = (float)qs_op_alibi_slope(h, nh);
            if (be->device && (s = fcopy(f, d_slopes, slopes, sizeof(float) * (size_t)nh, err)) != QS_OK) goto done;
            aa.alibi = d_slopes;
        }
        if ((s = ops->attention(ctx, &aa, err)) != QS_OK) goto done;
        /* QKᵀ and AV over the causal half of the seq × seq square (as qs_block_forward_flops) */
        sp->flops += 2.0 * (double)batch * (double)seq * (double)(seq + 1) * (double)nh * (double)hd;
    }

    /* ---- boundary 1 → 2: o, residual ---- */
    if (from <= 1) {
        if ((s = stage(blk, hooks, 1, att_in, R, qd, xb, &in, err)) != QS_OK || to == 1) goto done;
        if ((s = linear(f, i_o, &in, R, nrm, &sp->flops, err)) != QS_OK) goto done;
        if ((s = ops->add(ctx, res, nrm, R * H, err)) != QS_OK) goto done;
        if (post_ln && (s = norm(f, f->anw, f->anb, res, res, R, err)) != QS_OK) goto done;
    }

    /* ---- boundary 2 → 3: the MLP up to its activated hidden ---- */
    if (from <= 2) {
        const float *m_in = res;
        if (!post_ln) {
            if ((s = norm(f, f->mnw, f->mnb, res, nrm, R, err)) != QS_OK) goto done;
            m_in = nrm;
        }
        if ((s = stage(blk, hooks, 2, m_in, R, H, xb, &in, err)) != QS_OK || to == 2) goto done;
        if (c->arch == QS_ARCH_LLAMA) {
            if ((s = linear(f, qs_block_find(blk, QS_LIN_GATE), &in, R, f1, &sp->flops, err)) != QS_OK ||
                (s = linear(f, qs_block_find(blk, QS_LIN_UP), &in, R, f2, &sp->flops, err)) != QS_OK ||
                (s = ops->silu_mul(ctx, f1, f2, R * ffn, err)) != QS_OK)
                goto done;
        } else {
            if ((s = linear(f, qs_block_find(blk, QS_LIN_FC1), &in, R, f1, &sp->flops, err)) != QS_OK) goto done;
            if (c->act == QS_ACT_RELU) s = ops->relu(ctx, f1, R * ffn, err);
            else if (c->act == QS_ACT_GELU_TANH) s = ops->gelu_tanh(ctx, f1, R * ffn, err);
            else
                s = qs_error_set(err, QS_ERR_UNSUPPORTED, "block %d: activation %d for %s", blk->layer, (int)c->act,
                                 qs_arch_name(c->arch));
            if (s != QS_OK) goto done;
        }
    }

    /* ---- boundary 3 → 4: down, residual ---- */
    if ((s = stage(blk, hooks, 3, f1_in, R, ffn, xb, &in, err)) != QS_OK || to == 3) goto done;
    if ((s = linear(f, qs_block_find(blk, c->arch == QS_ARCH_LLAMA ? QS_LIN_DOWN : QS_LIN_FC2), &in, R, nrm,
                    &sp->flops, err)) != QS_OK)
        goto done;
    if ((s = ops->add(ctx, res, nrm, R * H, err)) != QS_OK) goto done;
    if (post_ln && (s = norm(f, f->mnw, f->mnb, res, res, R, err)) != QS_OK) goto done;

done:
    if (s == QS_OK && sp->res_out) s = fcopy(f, sp->res_out, res, sizeof(float) * (size_t)(R * H), err);
    /* a device's queued work fails late: the span reports it (buffers are freed only after it is done) */
    if (be->device && be->sync) {
        qs_error serr;
        qs_status ss = be->sync(ctx, &serr);
        if (s == QS_OK && ss != QS_OK) {
            if (err) *err = serr;
            s = qs_error_prefix(err, "block %d", blk->layer);
        }
    }
    ffree(f, res);
    ffree(f, nrm);
    if (own_att) ffree(f, att);
    ffree(f, qkv);
    if (own_f1) ffree(f, f1);
    ffree(f, f2);
    qs_free(xb);
    if (be->device) {
        ffree(f, d_cs);
        ffree(f, d_sn);
        ffree(f, d_slopes);
    }
    qs_free(cs);
    qs_free(sn);
    qs_free(inv);
    qs_free(slopes);
    return s;
}

/* ---- host activations on a device backend: staged through device buffers -- */

qs_status qs_block_forward_span(const qs_block *blk, const qs_backend_i *be, int64_t batch, int64_t seq,
                                qs_block_span *sp, const qs_block_hooks *hooks, qs_error *err)
{
    if (!be->device) return qs_block_forward_span_on(blk, be, batch, seq, sp, hooks, err);
    /* the span's inputs and outputs are host memory: one copy each way */
    const int64_t R = batch * seq, H = blk->cfg.hidden;
    if (R <= 0) return QS_OK;
    const int64_t cin = sp->x_in ? qs_block_carry_cols(blk, sp->from) : 0;
    const int64_t cout = sp->x_out ? qs_block_carry_cols(blk, sp->to) : 0;
    fwd F;
    QS_TRY(fwd_init(&F, blk, be, err));
    float *d_in = falloc(&F, R * H), *d_out = sp->res_out ? falloc(&F, R * H) : NULL;
    float *d_xin = cin ? falloc(&F, R * cin) : NULL, *d_xout = cout ? falloc(&F, R * cout) : NULL;
    qs_status s = QS_OK;
    if (!d_in || (sp->res_out && !d_out) || (cin && !d_xin) || (cout && !d_xout))
        s = qs_error_set(err, QS_ERR_NOMEM, "block %d: out of %s memory for activations of %lld tokens", blk->layer,
                         be->name, (long long)R);
    if (s == QS_OK) s = fcopy(&F, d_in, sp->res_in, sizeof(float) * (size_t)(R * H), err);
    if (s == QS_OK && cin) s = fcopy(&F, d_xin, sp->x_in, sizeof(float) * (size_t)(R * cin), err);
    qs_block_span dsp = *sp;
    dsp.res_in = d_in, dsp.res_out = d_out, dsp.x_in = d_xin, dsp.x_out = d_xout;
    if (s == QS_OK) s = qs_block_forward_span_on(blk, be, batch, seq, &dsp, hooks, err);
    sp->flops = dsp.flops;
    if (s == QS_OK && d_out) s = fcopy(&F, sp->res_out, d_out, sizeof(float) * (size_t)(R * H), err);
    if (s == QS_OK && cout) s = fcopy(&F, sp->x_out, d_xout, sizeof(float) * (size_t)(R * cout), err);
    ffree(&F, d_in);
    ffree(&F, d_out);
    ffree(&F, d_xin);
    ffree(&F, d_xout);
    return s;
}
