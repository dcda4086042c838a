/* model_config.c — HF config.json → qs_model_config, config.json back out,
 * and the tensor names of each architecture (llama/mistral/qwen2, opt, bloom).
 *
 * Parsing follows what transformers does for each model_type: the same field
 * names (with BLOOM's historical aliases n_layer/n_embed/n_head), the same
 * defaults when a field is absent, so a config that transformers loads gives
 * the same architecture here. Anything we would compute differently from
 * transformers (post-LN BLOOM, OPT's project_in/out, dynamic/yarn RoPE) is
 * refused as QS_ERR_UNSUPPORTED rather than silently misread.
 */
#include "pipeline/formats/model_config.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ==== small JSON field readers ============================================= */

/* One parse in progress: the file name for messages and the root object. */
typedef struct cfg_src {
    const char *origin;
    const cJSON *root;
    qs_error *err;
} cfg_src;

static const cJSON *field(const cfg_src *s, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s->root, name);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

/* First present name of a NULL-terminated alias list. */
static const cJSON *field_any(const cfg_src *s, const char *const *names, const char **used)
{
    for (int i = 0; names[i]; i++) {
        const cJSON *v = field(s, names[i]);
        if (v) {
            if (used) *used = names[i];
            return v;
        }
    }
    return NULL;
}

/* Plausible upper bounds of the sizes. Every model there is sits far below
 * them (405B: hidden 16384, ffn 53248, 126 layers, 128 heads, vocab 128256);
 * above them a hostile or broken config.json would make the sizes derived
 * from it (4·hidden, heads·head_dim, hidden·ffn, layers × block bytes)
 * overflow or ask for terabytes before a tensor is looked at. */
static double int_field_max(const char *name)
{
    static const struct { const char *name; double max; } limits[] = {
        {"hidden_size", 1 << 20},          {"n_embed", 1 << 20},
        {"intermediate_size", 1 << 22},    {"ffn_dim", 1 << 22},
        {"word_embed_proj_dim", 1 << 20},  {"num_hidden_layers", 1 << 20},
        {"n_layer", 1 << 20},              {"num_attention_heads", 1 << 16},
        {"n_head", 1 << 16},               {"num_key_value_heads", 1 << 16},
        {"head_dim", 1 << 16},             {"vocab_size", 1 << 24},
        {"max_position_embeddings", 1 << 28},
    };
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++)
        if (strcmp(name, limits[i].name) == 0) return limits[i].max;
    return 1e9;
}

/* A positive integer field (JSON numbers are doubles: 4096.0 is fine, 4096.5 is not). */
static qs_status get_int_from(const cfg_src *s, const char *name, const cJSON *v, int lo, int *out)
{
    double hi = int_field_max(name);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo)
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field '%s': expected an integer >= %d, got %s", s->origin,
                            name, lo, cJSON_IsNumber(v) ? "a number out of range" : "a non-number");
    if (v->valuedouble > hi)
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field '%s': %.17g is above %.0f, more than any model has",
                            s->origin, name, v->valuedouble, hi);
    *out = (int)v->valuedouble;
    return QS_OK;
}

static qs_status req_int(const cfg_src *s, const char *const *names, int lo, int *out)
{
    const char *used = names[0];
    const cJSON *v = field_any(s, names, &used);
    if (!v) {
        char alts[256] = "";
        for (int i = 1; names[i]; i++) {
            size_t n = strlen(alts);
            snprintf(alts + n, sizeof alts - n, "%s'%s'", i > 1 ? ", " : " (or ", names[i]);
        }
        if (alts[0]) strncat(alts, ")", sizeof alts - strlen(alts) - 1);
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field '%s'%s is missing (model_type %s needs it)", s->origin,
                            names[0], alts, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s->root, "model_type")));
    }
    return get_int_from(s, used, v, lo, out);
}

static qs_status opt_int(const cfg_src *s, const char *name, int lo, int *out)
{
    const cJSON *v = field(s, name);
    return v ? get_int_from(s, name, v, lo, out) : QS_OK;
}

static qs_status opt_double(const cfg_src *s, const cJSON *obj, const char *name, bool positive, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v)) return QS_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || (positive && !(v->valuedouble > 0)))
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field '%s': expected a %snumber", s->origin, name,
                            positive ? "positive " : "");
    *out = v->valuedouble;
    return QS_OK;
}

static qs_status opt_bool(const cfg_src *s, const char *name, bool *out)
{
    const cJSON *v = field(s, name);
    if (!v) return QS_OK;
    if (!cJSON_IsBool(v))
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field '%s': expected true or false", s->origin, name);
    *out = cJSON_IsTrue(v);
    return QS_OK;
}

/* bos/eos: an integer, a list of integers (llama 3.1 lists several eos ids:
 * the first is kept), or absent/null (-1). */
static qs_status opt_token_id(const cfg_src *s, const char *name, int *out)
{
    const cJSON *v = field(s, name);
    *out = -1;
    if (!v) return QS_OK;
    if (cJSON_IsArray(v)) {
        v = cJSON_GetArrayItem(v, 0);
        if (!v) return QS_OK;
    }
    return get_int_from(s, name, v, 0, out);
}

static qs_status parse_torch_dtype(const cfg_src *s, qs_dtype *out)
{
    static const char *const names[] = {"torch_dtype", "dtype", NULL};
    const char *used = names[0];
    const cJSON *v = field_any(s, names, &used);
    *out = QS_DTYPE_F32;
    if (!v) return QS_OK;
    const char *t = cJSON_GetStringValue(v);
    if (!t) return qs_error_set(s->err, QS_ERR_INPUT, "%s: field '%s': expected a string", s->origin, used);
    if (strcmp(t, "float32") == 0 || strcmp(t, "float") == 0) *out = QS_DTYPE_F32;
    else if (strcmp(t, "float16") == 0 || strcmp(t, "half") == 0) *out = QS_DTYPE_F16;
    else if (strcmp(t, "bfloat16") == 0) *out = QS_DTYPE_BF16;
    else
        return qs_error_set(s->err, QS_ERR_UNSUPPORTED,
                            "%s: field '%s': '%s' is not one of float32, float16, bfloat16", s->origin, used, t);
    return QS_OK;
}

/* ==== per-architecture parsing ============================================== */

const char *qs_arch_name(qs_arch a)
{
    switch (a) {
    case QS_ARCH_LLAMA: return "llama";
    case QS_ARCH_OPT: return "opt";
    case QS_ARCH_BLOOM: return "bloom";
    }
    return "?";
}

bool qs_arch_parse(const char *name, qs_arch *out)
{
    for (int a = QS_ARCH_LLAMA; a <= QS_ARCH_BLOOM; a++) {
        if (name && strcmp(name, qs_arch_name((qs_arch)a)) == 0) {
            *out = (qs_arch)a;
            return true;
        }
    }
    return false;
}

void qs_model_config_defaults(qs_model_config *cfg, qs_arch arch)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = arch;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", qs_arch_name(arch));
    cfg->bos_id = cfg->eos_id = -1;
    cfg->torch_dtype = QS_DTYPE_F32;
    cfg->rope_scaling = QS_ROPE_SCALING_NONE;
    switch (arch) {
    case QS_ARCH_LLAMA:
        /* transformers' LlamaConfig defaults */
        cfg->norm = QS_NORM_RMS;
        cfg->act = QS_ACT_SILU;
        cfg->pos = QS_POS_ROPE;
        cfg->norm_eps = 1e-6;
        cfg->rope_theta = 10000.0;
        cfg->max_positions = 2048;
        cfg->tie_embeddings = false;
        cfg->do_layer_norm_before = true;
        break;
    case QS_ARCH_OPT:
        cfg->norm = QS_NORM_LAYER;
        cfg->act = QS_ACT_RELU;
        cfg->pos = QS_POS_LEARNED;
        cfg->norm_eps = 1e-5; /* OPT's nn.LayerNorm default; not in config.json */
        cfg->max_positions = 2048;
        cfg->pos_offset = 2;
        cfg->qkv_bias = cfg->o_bias = cfg->mlp_bias = true;
        cfg->tie_embeddings = true;
        cfg->do_layer_norm_before = true;
        break;
    case QS_ARCH_BLOOM:
        cfg->norm = QS_NORM_LAYER;
        cfg->act = QS_ACT_GELU_TANH;
        cfg->pos = QS_POS_ALIBI;
        cfg->norm_eps = 1e-5;
        cfg->max_positions = 0;
        cfg->qkv_bias = cfg->o_bias = cfg->mlp_bias = true;
        cfg->tie_embeddings = true;
        cfg->embed_layernorm = true;
        cfg->do_layer_norm_before = true;
        break;
    }
}

static qs_status parse_rope_scaling(const cfg_src *s, qs_model_config *cfg)
{
    const cJSON *rs = field(s, "rope_scaling");
    if (!rs) return QS_OK;
    if (!cJSON_IsObject(rs))
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field 'rope_scaling': expected an object or null", s->origin);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!t || cJSON_IsNull(t)) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *type = cJSON_GetStringValue(t);
    if (!type)
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field 'rope_scaling': needs a string 'rope_type' (or 'type')",
                            s->origin);
    if (strcmp(type, "default") == 0) return QS_OK;
    if (strcmp(type, "linear") == 0) cfg->rope_scaling = QS_ROPE_SCALING_LINEAR;
    else if (strcmp(type, "llama3") == 0) cfg->rope_scaling = QS_ROPE_SCALING_LLAMA3;
    else
        return qs_error_set(s->err, QS_ERR_UNSUPPORTED,
                            "%s: field 'rope_scaling': rope_type '%s' is not supported (supported: linear, llama3)",
                            s->origin, type);
    cfg->rope_factor = 0;
    QS_TRY(opt_double(s, rs, "factor", true, &cfg->rope_factor));
    if (!(cfg->rope_factor > 0))
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field 'rope_scaling.factor': missing (rope_type %s needs it)",
                            s->origin, type);
    if (cfg->rope_scaling == QS_ROPE_SCALING_LLAMA3) {
        static const char *const need[] = {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
        for (int i = 0; i < 3; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(rs, need[i]);
            if (!v || !cJSON_IsNumber(v) || !(v->valuedouble > 0))
                return qs_error_set(s->err, QS_ERR_INPUT,
                                    "%s: field 'rope_scaling.%s': expected a positive number (rope_type llama3 needs it)",
                                    s->origin, need[i]);
        }
        cfg->rope_low_freq_factor = cJSON_GetObjectItemCaseSensitive(rs, need[0])->valuedouble;
        cfg->rope_high_freq_factor = cJSON_GetObjectItemCaseSensitive(rs, need[1])->valuedouble;
        double orig = cJSON_GetObjectItemCaseSensitive(rs, need[2])->valuedouble;
        if (orig != floor(orig) || orig > 1e9)
            return qs_error_set(s->err, QS_ERR_INPUT,
                                "%s: field 'rope_scaling.original_max_position_embeddings': expected an integer",
                                s->origin);
        cfg->rope_original_max_positions = (int)orig;
        if (!(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
            return qs_error_set(s->err, QS_ERR_INPUT,
                                "%s: field 'rope_scaling': high_freq_factor %g must exceed low_freq_factor %g",
                                s->origin, cfg->rope_high_freq_factor, cfg->rope_low_freq_factor);
    }
    return QS_OK;
}

static qs_status parse_llama(const cfg_src *s, qs_model_config *cfg)
{
    static const char *const n_hidden[] = {"hidden_size", NULL}, *const n_layers[] = {"num_hidden_layers", NULL},
                             *const n_heads[] = {"num_attention_heads", NULL},
                             *const n_ffn[] = {"intermediate_size", NULL}, *const n_vocab[] = {"vocab_size", NULL};
    QS_TRY(req_int(s, n_hidden, 1, &cfg->hidden));
    QS_TRY(req_int(s, n_layers, 1, &cfg->n_layers));
    QS_TRY(req_int(s, n_heads, 1, &cfg->n_heads));
    QS_TRY(req_int(s, n_ffn, 1, &cfg->ffn));
    QS_TRY(req_int(s, n_vocab, 1, &cfg->vocab));
    cfg->n_kv_heads = cfg->n_heads;
    QS_TRY(opt_int(s, "num_key_value_heads", 1, &cfg->n_kv_heads));
    QS_TRY(opt_int(s, "max_position_embeddings", 1, &cfg->max_positions));
    QS_TRY(opt_double(s, s->root, "rms_norm_eps", true, &cfg->norm_eps));
    QS_TRY(opt_double(s, s->root, "rope_theta", true, &cfg->rope_theta));
    QS_TRY(opt_bool(s, "tie_word_embeddings", &cfg->tie_embeddings));
    cfg->head_dim = 0;
    QS_TRY(opt_int(s, "head_dim", 1, &cfg->head_dim));
    bool attention_bias = false;
    QS_TRY(opt_bool(s, "attention_bias", &attention_bias));
    cfg->qkv_bias = cfg->o_bias = attention_bias;
    QS_TRY(opt_bool(s, "mlp_bias", &cfg->mlp_bias));
    if (strcmp(cfg->model_type, "qwen2") == 0) {
        /* Qwen2 always has q/k/v biases and no o_proj bias, whatever the config says. */
        cfg->qkv_bias = true;
        cfg->o_bias = false;
    }
    const cJSON *act = field(s, "hidden_act");
    if (act) {
        const char *a = cJSON_GetStringValue(act);
        if (!a || (strcmp(a, "silu") != 0 && strcmp(a, "swish") != 0))
            return qs_error_set(s->err, QS_ERR_UNSUPPORTED, "%s: field 'hidden_act': '%s' is not supported (only silu)",
                                s->origin, a ? a : "(not a string)");
    }
    const cJSON *tp = field(s, "pretraining_tp");
    if (tp && cJSON_IsNumber(tp) && tp->valuedouble != 1)
        return qs_error_set(s->err, QS_ERR_UNSUPPORTED, "%s: field 'pretraining_tp': %g is not supported (only 1)",
                            s->origin, tp->valuedouble);
    QS_TRY(parse_rope_scaling(s, cfg));
    return QS_OK;
}

static qs_status parse_opt(const cfg_src *s, qs_model_config *cfg)
{
    static const char *const n_hidden[] = {"hidden_size", NULL}, *const n_layers[] = {"num_hidden_layers", NULL},
                             *const n_heads[] = {"num_attention_heads", NULL}, *const n_ffn[] = {"ffn_dim", NULL},
                             *const n_vocab[] = {"vocab_size", NULL},
                             *const n_pos[] = {"max_position_embeddings", NULL};
    QS_TRY(req_int(s, n_hidden, 1, &cfg->hidden));
    QS_TRY(req_int(s, n_layers, 1, &cfg->n_layers));
    QS_TRY(req_int(s, n_heads, 1, &cfg->n_heads));
    QS_TRY(req_int(s, n_ffn, 1, &cfg->ffn));
    QS_TRY(req_int(s, n_vocab, 1, &cfg->vocab));
    QS_TRY(req_int(s, n_pos, 1, &cfg->max_positions));
    cfg->n_kv_heads = cfg->n_heads;
    QS_TRY(opt_bool(s, "do_layer_norm_before", &cfg->do_layer_norm_before));
    bool bias = true;
    QS_TRY(opt_bool(s, "enable_bias", &bias));
    cfg->qkv_bias = cfg->o_bias = cfg->mlp_bias = bias;
    QS_TRY(opt_bool(s, "tie_word_embeddings", &cfg->tie_embeddings));
    bool affine = true;
    QS_TRY(opt_bool(s, "layer_norm_elementwise_affine", &affine));
    if (!affine)
        return qs_error_set(s->err, QS_ERR_UNSUPPORTED,
                            "%s: field 'layer_norm_elementwise_affine': false is not supported", s->origin);
    int proj = cfg->hidden;
    QS_TRY(opt_int(s, "word_embed_proj_dim", 1, &proj));
    if (proj != cfg->hidden)
        return qs_error_set(s->err, QS_ERR_UNSUPPORTED,
                            "%s: field 'word_embed_proj_dim': %d differs from hidden_size %d (OPT's project_in/"
                            "project_out, as in opt-350m, is not supported)",
                            s->origin, proj, cfg->hidden);
    const cJSON *act = field(s, "activation_function");
    if (act) {
        const char *a = cJSON_GetStringValue(act);
        if (!a || strcmp(a, "relu") != 0)
            return qs_error_set(s->err, QS_ERR_UNSUPPORTED,
                                "%s: field 'activation_function': '%s' is not supported (only relu)", s->origin,
                                a ? a : "(not a string)");
    }
    return QS_OK;
}

static qs_status parse_bloom(const cfg_src *s, qs_model_config *cfg)
{
    static const char *const n_hidden[] = {"hidden_size", "n_embed", NULL},
                             *const n_layers[] = {"n_layer", "num_hidden_layers", NULL},
                             *const n_heads[] = {"n_head", "num_attention_heads", NULL},
                             *const n_vocab[] = {"vocab_size", NULL};
    QS_TRY(req_int(s, n_hidden, 1, &cfg->hidden));
    QS_TRY(req_int(s, n_layers, 1, &cfg->n_layers));
    QS_TRY(req_int(s, n_heads, 1, &cfg->n_heads));
    QS_TRY(req_int(s, n_vocab, 1, &cfg->vocab));
    cfg->n_kv_heads = cfg->n_heads;
    /* checked in 64 bits: a hostile n_embed must not overflow the int width */
    if ((int64_t)cfg->hidden * 4 > INT_MAX)
        return qs_error_set(s->err, QS_ERR_INPUT, "%s: field 'n_embed' (or 'hidden_size'): %d makes the MLP width 4·hidden %lld, above %d",
                            s->origin, cfg->hidden, (long long)cfg->hidden * 4, INT_MAX);
    cfg->ffn = 4 * cfg->hidden;
    QS_TRY(opt_double(s, s->root, "layer_norm_epsilon", true, &cfg->norm_eps));
    QS_TRY(opt_bool(s, "tie_word_embeddings", &cfg->tie_embeddings));
    bool post_ln = false;
    QS_TRY(opt_bool(s, "apply_residual_connection_post_layernorm", &post_ln));
    if (post_ln)
        return qs_error_set(s->err, QS_ERR_UNSUPPORTED,
                            "%s: field 'apply_residual_connection_post_layernorm': true is not supported", s->origin);
    return QS_OK;
}

qs_status qs_model_config_parse(const char *json, const char *origin, qs_model_config *cfg, qs_error *err)
{
    if (!origin) origin = "config.json";
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        return qs_error_set(err, QS_ERR_INPUT, "%s: not valid JSON (near byte %td)", origin,
                            at && at >= json ? at - json : (ptrdiff_t)0);
    }
    cfg_src s = {origin, root, err};
    qs_status st = QS_OK;
    if (!cJSON_IsObject(root)) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: expected a JSON object", origin);
        goto done;
    }
    const char *mt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "model_type"));
    if (!mt) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: field 'model_type' is missing or not a string", origin);
        goto done;
    }
    qs_arch arch;
    if (strcmp(mt, "llama") == 0 || strcmp(mt, "mistral") == 0 || strcmp(mt, "qwen2") == 0) arch = QS_ARCH_LLAMA;
    else if (strcmp(mt, "opt") == 0) arch = QS_ARCH_OPT;
    else if (strcmp(mt, "bloom") == 0) arch = QS_ARCH_BLOOM;
    else {
        st = qs_error_set(err, QS_ERR_UNSUPPORTED,
                          "%s: field 'model_type': '%s' is not supported (supported: llama, mistral, qwen2, opt, bloom)",
                          origin, mt);
        goto done;
    }
    qs_model_config_defaults(cfg, arch);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);
    switch (arch) {
    case QS_ARCH_LLAMA: st = parse_llama(&s, cfg); break;
    case QS_ARCH_OPT: st = parse_opt(&s, cfg); break;
    case QS_ARCH_BLOOM: st = parse_bloom(&s, cfg); break;
    }
    if (st != QS_OK) goto done;
    if ((st = opt_token_id(&s, "bos_token_id", &cfg->bos_id)) != QS_OK) goto done;
    if ((st = opt_token_id(&s, "eos_token_id", &cfg->eos_id)) != QS_OK) goto done;
    if ((st = parse_torch_dtype(&s, &cfg->torch_dtype)) != QS_OK) goto done;

    /* consistency of the sizes */
    if (cfg->head_dim == 0) {
        if (cfg->hidden % cfg->n_heads != 0) {
            st = qs_error_set(err, QS_ERR_INPUT,
                              "%s: hidden size %d is not a multiple of the number of attention heads %d", origin,
                              cfg->hidden, cfg->n_heads);
            goto done;
        }
        cfg->head_dim = cfg->hidden / cfg->n_heads;
    }
    if ((int64_t)cfg->n_heads * cfg->head_dim > (1 << 22)) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: %d heads of head_dim %d: attention width %lld is above %d", origin,
                          cfg->n_heads, cfg->head_dim, (long long)cfg->n_heads * cfg->head_dim, 1 << 22);
        goto done;
    }
    if (cfg->n_heads % cfg->n_kv_heads != 0) {
        st = qs_error_set(err, QS_ERR_INPUT,
                          "%s: field 'num_key_value_heads': %d does not divide num_attention_heads %d", origin,
                          cfg->n_kv_heads, cfg->n_heads);
        goto done;
    }
    if (cfg->pos == QS_POS_ROPE && cfg->head_dim % 2 != 0) {
        st = qs_error_set(err, QS_ERR_INPUT, "%s: head_dim %d is odd; RoPE rotates pairs", origin, cfg->head_dim);
        goto done;
    }
done:
    cJSON_Delete(root);
    return st;
}

qs_status qs_model_config_load(const char *path, qs_model_config *cfg, qs_error *err)
{
    char file[4096];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(file, sizeof file, "%s/config.json", path);
    else snprintf(file, sizeof file, "%s", path);
    FILE *f = fopen(file, "rb");
    if (!f) return qs_error_set(err, QS_ERR_INPUT, "%s: cannot open: %s", file, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot seek: %s", file, strerror(errno));
    }
    long n = ftell(f);
    if (n < 0 || n > 64L * 1024 * 1024) {
        fclose(f);
        return qs_error_set(err, QS_ERR_INPUT, "%s: size %ld is not that of a config.json (at most 64 MiB)", file, n);
    }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: cannot allocate %ld bytes", file, n);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return qs_error_set(err, QS_ERR_IO, "%s: short read (%zu of %ld bytes)", file, got, n);
    }
    buf[n] = '\0';
    qs_status st = qs_model_config_parse(buf, file, cfg, err);
    free(buf);
    return st;
}

/* ==== config.json out ======================================================= */

static const char *torch_dtype_name(qs_dtype dt)
{
    switch (dt) {
    case QS_DTYPE_F16: return "float16";
    case QS_DTYPE_BF16: return "bfloat16";
    default: return "float32";
    }
}

/* Adds an integer as a JSON number (cJSON keeps doubles; integers print exactly). */
static void add_int(cJSON *o, const char *k, long long v) { cJSON_AddNumberToObject(o, k, (double)v); }

static void add_token_ids(cJSON *o, const qs_model_config *cfg)
{
    if (cfg->bos_id >= 0) add_int(o, "bos_token_id", cfg->bos_id);
    if (cfg->eos_id >= 0) add_int(o, "eos_token_id", cfg->eos_id);
}

qs_status qs_model_config_to_json(const qs_model_config *cfg, char **json, qs_error *err)
{
    *json = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) return qs_error_set(err, QS_ERR_NOMEM, "config.json: out of memory");
    cJSON *archs = cJSON_AddArrayToObject(o, "architectures");
    switch (cfg->arch) {
    case QS_ARCH_LLAMA: {
        const char *cls = strcmp(cfg->model_type, "mistral") == 0 ? "MistralForCausalLM"
                          : strcmp(cfg->model_type, "qwen2") == 0 ? "Qwen2ForCausalLM"
                                                                   : "LlamaForCausalLM";
        cJSON_AddItemToArray(archs, cJSON_CreateString(cls));
        cJSON_AddStringToObject(o, "model_type", cfg->model_type);
        if (strcmp(cfg->model_type, "qwen2") != 0) cJSON_AddBoolToObject(o, "attention_bias", cfg->qkv_bias);
        cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
        add_token_ids(o, cfg);
        if (cfg->head_dim * cfg->n_heads != cfg->hidden || strcmp(cfg->model_type, "llama") == 0)
            add_int(o, "head_dim", cfg->head_dim);
        cJSON_AddStringToObject(o, "hidden_act", "silu");
        add_int(o, "hidden_size", cfg->hidden);
        cJSON_AddNumberToObject(o, "initializer_range", 0.02);
        add_int(o, "intermediate_size", cfg->ffn);
        add_int(o, "max_position_embeddings", cfg->max_positions);
        if (strcmp(cfg->model_type, "llama") == 0) cJSON_AddBoolToObject(o, "mlp_bias", cfg->mlp_bias);
        add_int(o, "num_attention_heads", cfg->n_heads);
        add_int(o, "num_hidden_layers", cfg->n_layers);
        add_int(o, "num_key_value_heads", cfg->n_kv_heads);
        if (strcmp(cfg->model_type, "llama") == 0) add_int(o, "pretraining_tp", 1);
        cJSON_AddNumberToObject(o, "rms_norm_eps", cfg->norm_eps);
        if (cfg->rope_scaling == QS_ROPE_SCALING_NONE) {
            cJSON_AddNullToObject(o, "rope_scaling");
        } else {
            cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
            cJSON_AddNumberToObject(rs, "factor", cfg->rope_factor);
            if (cfg->rope_scaling == QS_ROPE_SCALING_LLAMA3) {
                cJSON_AddNumberToObject(rs, "high_freq_factor", cfg->rope_high_freq_factor);
                cJSON_AddNumberToObject(rs, "low_freq_factor", cfg->rope_low_freq_factor);
                add_int(rs, "original_max_position_embeddings", cfg->rope_original_max_positions);
            }
            cJSON_AddStringToObject(rs, "rope_type",
                                    cfg->rope_scaling == QS_ROPE_SCALING_LLAMA3 ? "llama3" : "linear");
        }
        cJSON_AddNumberToObject(o, "rope_theta", cfg->rope_theta);
        cJSON_AddBoolToObject(o, "tie_word_embeddings", cfg->tie_embeddings);
        break;
    }
    case QS_ARCH_OPT:
        cJSON_AddItemToArray(archs, cJSON_CreateString("OPTForCausalLM"));
        cJSON_AddStringToObject(o, "model_type", "opt");
        cJSON_AddStringToObject(o, "activation_function", "relu");
        cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
        add_token_ids(o, cfg);
        cJSON_AddBoolToObject(o, "do_layer_norm_before", cfg->do_layer_norm_before);
        cJSON_AddNumberToObject(o, "dropout", 0.0);
        cJSON_AddBoolToObject(o, "enable_bias", cfg->qkv_bias);
        add_int(o, "ffn_dim", cfg->ffn);
        add_int(o, "hidden_size", cfg->hidden);
        cJSON_AddNumberToObject(o, "init_std", 0.02);
        cJSON_AddNumberToObject(o, "layerdrop", 0.0);
        cJSON_AddBoolToObject(o, "layer_norm_elementwise_affine", true);
        add_int(o, "max_position_embeddings", cfg->max_positions);
        add_int(o, "num_attention_heads", cfg->n_heads);
        add_int(o, "num_hidden_layers", cfg->n_layers);
        cJSON_AddBoolToObject(o, "tie_word_embeddings", cfg->tie_embeddings);
        add_int(o, "word_embed_proj_dim", cfg->hidden);
        break;
    case QS_ARCH_BLOOM:
        cJSON_AddItemToArray(archs, cJSON_CreateString("BloomForCausalLM"));
        cJSON_AddStringToObject(o, "model_type", "bloom");
        cJSON_AddBoolToObject(o, "apply_residual_connection_post_layernorm", false);
        cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
        add_token_ids(o, cfg);
        cJSON_AddNumberToObject(o, "hidden_dropout", 0.0);
        add_int(o, "hidden_size", cfg->hidden);
        cJSON_AddNumberToObject(o, "initializer_range", 0.02);
        cJSON_AddNumberToObject(o, "layer_norm_epsilon", cfg->norm_eps);
        add_int(o, "n_head", cfg->n_heads);
        add_int(o, "n_layer", cfg->n_layers);
        add_int(o, "pretraining_tp", 1);
        cJSON_AddBoolToObject(o, "slow_but_exact", false);
        cJSON_AddBoolToObject(o, "tie_word_embeddings", cfg->tie_embeddings);
        break;
    }
    cJSON_AddStringToObject(o, "torch_dtype", torch_dtype_name(cfg->torch_dtype));
    cJSON_AddBoolToObject(o, "use_cache", true);
    add_int(o, "vocab_size", cfg->vocab);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return qs_error_set(err, QS_ERR_NOMEM, "config.json: out of memory");
    /* cJSON_Print allocates with cJSON's allocator (malloc by default); copy with a
     * trailing newline so the caller owns a plain malloc'd string. */
    size_t n = strlen(text);
    char *out = malloc(n + 2);
    if (!out) {
        cJSON_free(text);
        return qs_error_set(err, QS_ERR_NOMEM, "config.json: out of memory");
    }
    memcpy(out, text, n);
    out[n] = '\n';
    out[n + 1] = '\0';
    cJSON_free(text);
    *json = out;
    return QS_OK;
}

/* ==== tensor names ========================================================== */

static bool has(qs_name_exists_fn exists, void *ctx, const char *name) { return exists && exists(name, ctx); }

static void join(char out[QS_NAME_MAX], const char *a, const char *b)
{
    snprintf(out, QS_NAME_MAX, "%s%s", a, b);
}

/* Picks the first prefix under which `probe` exists; with no callback the
 * first (canonical) one. */
static bool pick_prefix(qs_name_exists_fn exists, void *ctx, const char *const *prefixes, const char *probe,
                        char out[64])
{
    for (int i = 0; prefixes[i]; i++) {
        char name[QS_NAME_MAX];
        join(name, prefixes[i], probe);
        if (!exists || exists(name, ctx)) {
            snprintf(out, 64, "%s", prefixes[i]);
            return true;
        }
    }
    return false;
}

/* The embedding / lm_head pair. A tied checkpoint may hold the shared matrix
 * under either name (transformers saves the embedding; some exporters, like
 * the tinystories f32 file, save lm_head.weight instead): each name resolves
 * to whichever tensor exists. */
static qs_status resolve_embed_head(const qs_model_config *cfg, qs_name_exists_fn exists, void *ctx,
                                    const char *embed_name, qs_model_names *n, qs_error *err)
{
    static const char *const head = "lm_head.weight";
    if (!exists) {
        snprintf(n->embed, QS_NAME_MAX, "%s", embed_name);
        snprintf(n->lm_head, QS_NAME_MAX, "%s", cfg->tie_embeddings ? embed_name : head);
        return QS_OK;
    }
    bool has_embed = has(exists, ctx, embed_name), has_head = has(exists, ctx, head);
    if (has_embed) snprintf(n->embed, QS_NAME_MAX, "%s", embed_name);
    else if (has_head && cfg->tie_embeddings) snprintf(n->embed, QS_NAME_MAX, "%s", head);
    else
        return qs_error_set(err, QS_ERR_INPUT, "tensor '%s' (the token embedding) is missing%s", embed_name,
                            has_head ? " and tie_word_embeddings is false, so lm_head.weight cannot stand in" : "");
    if (has_head) snprintf(n->lm_head, QS_NAME_MAX, "%s", head);
    else if (cfg->tie_embeddings) snprintf(n->lm_head, QS_NAME_MAX, "%s", n->embed);
    else
        return qs_error_set(err, QS_ERR_INPUT,
                            "tensor '%s' is missing and tie_word_embeddings is false (an untied model needs it)", head);
    return QS_OK;
}

qs_status qs_model_names_init(const qs_model_config *cfg, qs_name_exists_fn exists, void *ctx, qs_model_names *names,
                              qs_error *err)
{
    memset(names, 0, sizeof *names);
    char embed[QS_NAME_MAX];
    switch (cfg->arch) {
    case QS_ARCH_LLAMA: {
        /* The final norm and the first block are always present, whichever
         * name the (possibly tied) embedding went under. */
        static const char *const prefixes[] = {"model.", "", NULL};
        if (!pick_prefix(exists, ctx, prefixes, "norm.weight", names->prefix) &&
            !pick_prefix(exists, ctx, prefixes, "layers.0.input_layernorm.weight", names->prefix))
            return qs_error_set(err, QS_ERR_INPUT,
                                "no tensor 'model.norm.weight' or 'norm.weight': not a %s checkpoint?",
                                cfg->model_type);
        join(embed, names->prefix, "embed_tokens.weight");
        QS_TRY(resolve_embed_head(cfg, exists, ctx, embed, names, err));
        join(names->final_norm_w, names->prefix, "norm.weight");
        break;
    }
    case QS_ARCH_OPT: {
        static const char *const prefixes[] = {"model.decoder.", "decoder.", NULL};
        if (!pick_prefix(exists, ctx, prefixes, "embed_positions.weight", names->prefix))
            return qs_error_set(err, QS_ERR_INPUT,
                                "no tensor 'model.decoder.embed_positions.weight' or "
                                "'decoder.embed_positions.weight': not an opt checkpoint?");
        join(embed, names->prefix, "embed_tokens.weight");
        QS_TRY(resolve_embed_head(cfg, exists, ctx, embed, names, err));
        join(names->pos_embed, names->prefix, "embed_positions.weight");
        /* transformers builds final_layer_norm only for pre-LN OPT */
        if (cfg->do_layer_norm_before) {
            join(names->final_norm_w, names->prefix, "final_layer_norm.weight");
            join(names->final_norm_b, names->prefix, "final_layer_norm.bias");
        }
        break;
    }
    case QS_ARCH_BLOOM: {
        static const char *const prefixes[] = {"transformer.", "", NULL};
        if (!pick_prefix(exists, ctx, prefixes, "word_embeddings_layernorm.weight", names->prefix))
            return qs_error_set(err, QS_ERR_INPUT,
                                "no tensor 'transformer.word_embeddings_layernorm.weight' or "
                                "'word_embeddings_layernorm.weight': not a bloom checkpoint?");
        join(embed, names->prefix, "word_embeddings.weight");
        QS_TRY(resolve_embed_head(cfg, exists, ctx, embed, names, err));
        join(names->embed_norm_w, names->prefix, "word_embeddings_layernorm.weight");
        join(names->embed_norm_b, names->prefix, "word_embeddings_layernorm.bias");
        join(names->final_norm_w, names->prefix, "ln_f.weight");
        join(names->final_norm_b, names->prefix, "ln_f.bias");
        break;
    }
    }
    return QS_OK;
}

/* "<prefix>layers.N." (llama, opt) or "<prefix>h.N." (bloom). */
void qs_block_prefix(const qs_model_config *cfg, const qs_model_names *names, int layer,
                     char out[QS_BLOCK_PREFIX_MAX])
{
    snprintf(out, QS_BLOCK_PREFIX_MAX, "%s%s%d.", names->prefix, cfg->arch == QS_ARCH_BLOOM ? "h." : "layers.", layer);
}

static void set_linear(qs_block_linear *l, const char *bp, qs_linear_role role, const char *short_name, int64_t out,
                       int64_t in, int stage, bool bias)
{
    memset(l, 0, sizeof *l);
    l->role = role;
    l->short_name = short_name;
    snprintf(l->weight, QS_NAME_MAX, "%s%s.weight", bp, short_name);
    if (bias) snprintf(l->bias, QS_NAME_MAX, "%s%s.bias", bp, short_name);
    l->out = out;
    l->in = in;
    l->stage = stage;
}

int qs_block_linears(const qs_model_config *cfg, const qs_model_names *names, int layer,
                     qs_block_linear out[QS_MAX_BLOCK_LINEARS])
{
    char bp[QS_BLOCK_PREFIX_MAX];
    qs_block_prefix(cfg, names, layer, bp);
    const int64_t h = cfg->hidden, f = cfg->ffn;
    switch (cfg->arch) {
    case QS_ARCH_LLAMA: {
        const int64_t q = (int64_t)cfg->n_heads * cfg->head_dim, kv = (int64_t)cfg->n_kv_heads * cfg->head_dim;
        set_linear(&out[0], bp, QS_LIN_Q, "self_attn.q_proj", q, h, 0, cfg->qkv_bias);
        set_linear(&out[1], bp, QS_LIN_K, "self_attn.k_proj", kv, h, 0, cfg->qkv_bias);
        set_linear(&out[2], bp, QS_LIN_V, "self_attn.v_proj", kv, h, 0, cfg->qkv_bias);
        set_linear(&out[3], bp, QS_LIN_O, "self_attn.o_proj", h, q, 1, cfg->o_bias);
        set_linear(&out[4], bp, QS_LIN_GATE, "mlp.gate_proj", f, h, 2, cfg->mlp_bias);
        set_linear(&out[5], bp, QS_LIN_UP, "mlp.up_proj", f, h, 2, cfg->mlp_bias);
        set_linear(&out[6], bp, QS_LIN_DOWN, "mlp.down_proj", h, f, 3, cfg->mlp_bias);
        return 7;
    }
    case QS_ARCH_OPT:
        set_linear(&out[0], bp, QS_LIN_Q, "self_attn.q_proj", h, h, 0, cfg->qkv_bias);
        set_linear(&out[1], bp, QS_LIN_K, "self_attn.k_proj", h, h, 0, cfg->qkv_bias);
        set_linear(&out[2], bp, QS_LIN_V, "self_attn.v_proj", h, h, 0, cfg->qkv_bias);
        set_linear(&out[3], bp, QS_LIN_O, "self_attn.out_proj", h, h, 1, cfg->o_bias);
        set_linear(&out[4], bp, QS_LIN_FC1, "fc1", f, h, 2, cfg->mlp_bias);
        set_linear(&out[5], bp, QS_LIN_FC2, "fc2", h, f, 3, cfg->mlp_bias);
        return 6;
    case QS_ARCH_BLOOM:
        set_linear(&out[0], bp, QS_LIN_QKV, "self_attention.query_key_value", 3 * h, h, 0, cfg->qkv_bias);
        set_linear(&out[1], bp, QS_LIN_O, "self_attention.dense", h, h, 1, cfg->o_bias);
        set_linear(&out[2], bp, QS_LIN_FC1, "mlp.dense_h_to_4h", f, h, 2, cfg->mlp_bias);
        set_linear(&out[3], bp, QS_LIN_FC2, "mlp.dense_4h_to_h", h, f, 3, cfg->mlp_bias);
        return 4;
    }
    return 0;
}

void qs_block_norm_names(const qs_model_config *cfg, const qs_model_names *names, int layer,
                         char attn_norm_w[QS_NAME_MAX], char attn_norm_b[QS_NAME_MAX], char mlp_norm_w[QS_NAME_MAX],
                         char mlp_norm_b[QS_NAME_MAX])
{
    char bp[QS_BLOCK_PREFIX_MAX];
    qs_block_prefix(cfg, names, layer, bp);
    const char *attn = "input_layernorm", *mlp = "post_attention_layernorm";
    if (cfg->arch == QS_ARCH_OPT) {
        attn = "self_attn_layer_norm";
        mlp = "final_layer_norm";
    }
    snprintf(attn_norm_w, QS_NAME_MAX, "%s%s.weight", bp, attn);
    snprintf(mlp_norm_w, QS_NAME_MAX, "%s%s.weight", bp, mlp);
    if (cfg->norm == QS_NORM_LAYER) {
        snprintf(attn_norm_b, QS_NAME_MAX, "%s%s.bias", bp, attn);
        snprintf(mlp_norm_b, QS_NAME_MAX, "%s%s.bias", bp, mlp);
    } else {
        attn_norm_b[0] = mlp_norm_b[0] = '\0';
    }
}

int64_t qs_block_param_count(const qs_model_config *cfg)
{
    qs_model_names names;
    memset(&names, 0, sizeof names);
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
    int n = qs_block_linears(cfg, &names, 0, lin);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += lin[i].out * lin[i].in + (lin[i].bias[0] ? lin[i].out : 0);
    /* two norms per block, each with a weight (and a bias for LayerNorm) */
    total += 2 * (int64_t)cfg->hidden * (cfg->norm == QS_NORM_LAYER ? 2 : 1);
    return total;
}
