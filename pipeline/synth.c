/* synth.c — deterministic synthetic checkpoints, streamed to safetensors.
 *
 * ---- What the numbers look like, and why ------------------------------------
 *
 * The point of a synthetic model here is to quantize it, so it imitates the
 * statistics of trained LLMs that make quantization hard, not random noise:
 *
 * - Linear weights [out, in]: w = sigma * r_row * g * t with sigma = 1/sqrt(in)
 *   (0.016 at in = 4096, the scale of trained LLMs), r_row a per-output-row
 *   scale uniform in [0.6, 1.4] (rows of real matrices differ in norm), g a
 *   unit-variance bell curve and t a heavy tail: one element in 32 is 4x
 *   larger (kurtosis ~9 instead of 3). The tail stretches min-max grids, which
 *   is what round-to-nearest suffers from and GPTQ's error feedback repairs.
 *   The product is divided by sqrt(E[t^2]) so the variance stays ~1/in.
 *
 * - Outlier features (LLM.int8(), Dettmers et al. 2022): a few hidden channels
 *   (hidden/128, clamped to 1..6) carry activations ~20x the median channel in
 *   every input of q/k/v/gate/up/fc1/qkv. Made of two factors of sqrt(20):
 *     * the residual stream carries them: the embedding's (and OPT's position
 *       embedding's) outlier columns and the outlier rows of every linear that
 *       writes the residual (o_proj/dense, down_proj/fc2, and their biases) are
 *       sqrt(20)x, so the ratio holds at every depth, not just after the embedding;
 *     * the norm in front of each block (input/post-attention norms, OPT's two
 *       LayerNorms) has gain ~sqrt(20) on those channels, as trained models' norm
 *       weights do.
 *   So norm(residual) at an outlier channel is ~20x the median channel.
 *   "The model still behaves": the input columns of those channels in every
 *   reading linear are 1/sqrt(20) of normal, so each outlier channel adds only
 *   sqrt(20)x a normal channel's share to q/k/v/MLP pre-activations. For a tied
 *   lm_head the final norm's gain is 1/sqrt(20) on the outlier channels (the
 *   embedding columns are already sqrt(20)x); an untied lm_head is a reading
 *   linear behind a block-style final norm. BLOOM's word_embeddings_layernorm
 *   has plain gains: it passes the embedding's outlier through unchanged.
 *
 * - Correlated activations: token embeddings are not isotropic. Each row is
 *   sqrt(1/4)·g + sqrt(3/4)·Σ_k z_k f_k / sqrt(16) over 16 directions f_k shared
 *   by all tokens (z_k per token), times 1/sqrt(hidden): 3/4 of the variance
 *   lies in a 16-dimensional subspace, as activations of trained models
 *   concentrate in few directions. A diagonal Hessian would make GPTQ no better
 *   than round-to-nearest; with this one GPTQ's error feedback has correlations
 *   to exploit (held-out output error ~3x lower at 4 bits, group 128, in a
 *   NumPy check; tests/py/test_model_synth.py asserts > 1.5x).
 *
 * - Norm weights 1 + 0.05 g, LayerNorm and linear biases 0.02 g, position
 *   embeddings g / (2 sqrt(hidden)).
 *
 * ---- Randomness -------------------------------------------------------------
 *
 * Counter-based: key = splitmix64(seed ^ xxh64(tensor name)); element i uses
 * the SplitMix64 outputs number 2i+1 and 2i+2 of the stream starting at key,
 * i.e. mix(key + (2i+1)·γ), mix(key + (2i+2)·γ). No state is carried between
 * elements, so chunks, threads and shard layouts cannot change a value. The
 * bell curve is the sum of four 16-bit uniforms of the first output
 * (Irwin-Hall, scaled to unit variance): integer arithmetic plus two exact
 * float operations, no libm, so the bytes do not depend on the math library.
 */
#include "pipeline/synth.h"
#include "pipeline/formats/fsutil.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "pipeline/formats/safetensors.h"

#define SQRT20 4.47213595499958f
#define GAMMA UINT64_C(0x9e3779b97f4a7c15)
/* Elements per generated chunk: 1 Mi floats = 4 MiB (+ 2-4 MiB converted). */
#define CHUNK_ELEMS ((int64_t)1 << 20)

/* ==== randomness =============================================================== */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t tensor_key(uint64_t seed, const char *name)
{
    return mix64(seed ^ XXH64(name, strlen(name), 0) ^ GAMMA);
}

/* Unit-variance bell curve from 64 random bits: four 16-bit uniforms
 * u_k = (piece_k + 1/2) / 2^16, sum - 2 has variance 4/12, times sqrt(3). */
static inline float bell(uint64_t r)
{
    uint32_t s = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) + (uint32_t)((r >> 32) & 0xffff) +
                 (uint32_t)(r >> 48);
    return ((float)(s + 2) * (1.0f / 65536.0f) - 2.0f) * 1.7320508075688772f;
}

/* The heavy tail: 4x with probability 1/32, normalized by sqrt(E[t^2]) = sqrt(47/32). */
static inline float tail(uint64_t r)
{
    const float norm = 0.8251369970070460f; /* 1/sqrt(47/32) */
    return ((r >> 59) == 0 ? 4.0f : 1.0f) * norm;
}

/* Per-row scale in [0.6, 1.4). */
static inline float row_scale(uint64_t key, int64_t row)
{
    uint64_t r = mix64((key ^ UINT64_C(0x6a09e667f3bcc908)) + (uint64_t)row * GAMMA);
    return 0.6f + 0.8f * (float)(r >> 40) * (1.0f / 16777216.0f);
}

_Static_assert(QS_SYNTH_EMBED_RANK == 16, "embed_coords scales by sqrt(3/4)/sqrt(16)");

/* A token's coordinates in the shared embedding directions, times sqrt(3/4)/sqrt(K). */
static void embed_coords(uint64_t zkey, int64_t row, float z[QS_SYNTH_EMBED_RANK])
{
    const float c = 0.21650635094610965f; /* sqrt(3/4) / sqrt(16) */
    for (int k = 0; k < QS_SYNTH_EMBED_RANK; k++)
        z[k] = c * bell(mix64(zkey + ((uint64_t)row * QS_SYNTH_EMBED_RANK + (uint64_t)k + 1) * GAMMA));
}

/* ==== tensor layout ============================================================= */

typedef struct list_builder {
    qs_synth_tensor *v;
    size_t n, cap;
    qs_error *err;
} list_builder;

static qs_status add(list_builder *b, const char *name, qs_synth_kind kind, int ndim, int64_t d0, int64_t d1)
{
    if (!name || !name[0]) return QS_OK; /* e.g. a LayerNorm bias name of an RMSNorm model */
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        qs_synth_tensor *v = realloc(b->v, cap * sizeof *v);
        if (!v) return qs_error_set(b->err, QS_ERR_NOMEM, "synth: out of memory for the tensor list");
        b->v = v;
        b->cap = cap;
    }
    qs_synth_tensor *t = &b->v[b->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = kind;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim > 1 ? d1 : 1;
    return QS_OK;
}

static bool is_reading(qs_linear_role r) { return r != QS_LIN_O && r != QS_LIN_DOWN && r != QS_LIN_FC2; }

static qs_status build_list(qs_synth_model *m, list_builder *b)
{
    const qs_model_config *c = &m->opts.cfg;
    const qs_model_names *n = &m->names;
    const int64_t D = c->hidden;
    const bool layer_norm = c->norm == QS_NORM_LAYER;
    QS_TRY(add(b, n->embed, QS_SYNTH_EMBED, 2, c->vocab, D));
    if (n->pos_embed[0]) QS_TRY(add(b, n->pos_embed, QS_SYNTH_POS_EMBED, 2, (int64_t)c->max_positions + c->pos_offset, D));
    if (n->embed_norm_w[0]) {
        QS_TRY(add(b, n->embed_norm_w, QS_SYNTH_EMBED_NORM_W, 1, D, 0));
        QS_TRY(add(b, n->embed_norm_b, QS_SYNTH_NORM_B, 1, D, 0));
    }
    for (int l = 0; l < c->n_layers; l++) {
        char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
        qs_block_norm_names(c, n, l, aw, ab, mw, mb);
        qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
        int nl = qs_block_linears(c, n, l, lin);
        QS_TRY(add(b, aw, QS_SYNTH_BLOCK_NORM_W, 1, D, 0));
        if (layer_norm) QS_TRY(add(b, ab, QS_SYNTH_NORM_B, 1, D, 0));
        for (int i = 0; i < nl; i++) {
            if (lin[i].stage == 2 && (i == 0 || lin[i - 1].stage != 2)) {
                /* the MLP norm sits in front of the first stage-2 linear */
                QS_TRY(add(b, mw, QS_SYNTH_BLOCK_NORM_W, 1, D, 0));
                if (layer_norm) QS_TRY(add(b, mb, QS_SYNTH_NORM_B, 1, D, 0));
            }
            bool rd = is_reading(lin[i].role);
            QS_TRY(add(b, lin[i].weight, rd ? QS_SYNTH_LIN_READ : QS_SYNTH_LIN_WRITE, 2, lin[i].out, lin[i].in));
            QS_TRY(add(b, lin[i].bias, rd ? QS_SYNTH_BIAS_MID : QS_SYNTH_BIAS_WRITE, 1, lin[i].out, 0));
        }
    }
    bool untied = strcmp(n->lm_head, n->embed) != 0;
    if (n->final_norm_w[0]) {
        QS_TRY(add(b, n->final_norm_w, untied ? QS_SYNTH_BLOCK_NORM_W : QS_SYNTH_FINAL_NORM_W, 1, D, 0));
        QS_TRY(add(b, n->final_norm_b, QS_SYNTH_NORM_B, 1, D, 0));
    }
    if (untied) QS_TRY(add(b, n->lm_head, QS_SYNTH_LIN_READ, 2, c->vocab, D));
    return QS_OK;
}

/* Outlier channels: distinct, drawn from the seed alone (not the tensor). */
static void pick_outliers(qs_synth_model *m)
{
    const int D = m->opts.cfg.hidden;
    int k = m->opts.n_outliers;
    if (k < 0) {
        k = D / 128;
        if (k < 1) k = 1;
        if (k > 6) k = 6;
    }
    if (k > D) k = D;
    if (k > QS_SYNTH_MAX_OUTLIERS) k = QS_SYNTH_MAX_OUTLIERS;
    uint64_t key = tensor_key(m->opts.seed, "outlier channels");
    int got = 0;
    for (uint64_t i = 1; got < k; i++) {
        int ch = (int)(mix64(key + i * GAMMA) % (uint64_t)D);
        if (m->is_outlier[ch]) continue;
        m->is_outlier[ch] = 1;
        got++;
    }
    m->n_outliers = 0;
    for (int ch = 0; ch < D; ch++)
        if (m->is_outlier[ch]) m->outliers[m->n_outliers++] = ch;
}

static qs_status check_opts(const qs_synth_opts *o, qs_error *err)
{
    const qs_model_config *c = &o->cfg;
    if (c->n_layers < 1 || c->hidden < 1 || c->vocab < 1 || c->ffn < 1 || c->n_heads < 1 || c->n_kv_heads < 1)
        return qs_error_set(err, QS_ERR_INPUT,
                            "synth: layers %d, hidden %d, ffn %d, vocab %d, heads %d, kv heads %d must all be >= 1",
                            c->n_layers, c->hidden, c->ffn, c->vocab, c->n_heads, c->n_kv_heads);
    if (c->head_dim * c->n_heads != c->hidden)
        return qs_error_set(err, QS_ERR_INPUT, "synth: hidden %d is not heads %d x head_dim %d", c->hidden,
                            c->n_heads, c->head_dim);
    if (c->n_heads % c->n_kv_heads != 0)
        return qs_error_set(err, QS_ERR_INPUT, "synth: kv heads %d do not divide heads %d", c->n_kv_heads,
                            c->n_heads);
    if (c->arch == QS_ARCH_LLAMA && c->head_dim % 2 != 0)
        return qs_error_set(err, QS_ERR_INPUT, "synth: head_dim %d is odd; RoPE rotates pairs", c->head_dim);
    if (c->arch == QS_ARCH_OPT && c->max_positions < 1)
        return qs_error_set(err, QS_ERR_INPUT, "synth: opt needs max positions >= 1");
    if (c->torch_dtype != QS_DTYPE_F32 && c->torch_dtype != QS_DTYPE_F16 && c->torch_dtype != QS_DTYPE_BF16)
        return qs_error_set(err, QS_ERR_INPUT, "synth: dtype %s is not F32, F16 or BF16",
                            qs_dtype_name(c->torch_dtype));
    if (o->n_outliers > QS_SYNTH_MAX_OUTLIERS)
        return qs_error_set(err, QS_ERR_INPUT, "synth: at most %d outlier channels, got %d", QS_SYNTH_MAX_OUTLIERS,
                            o->n_outliers);
    /* every tensor's element count must fit comfortably in int64 */
    const double big = 4e18;
    if ((double)c->vocab * c->hidden > big || (double)c->ffn * c->hidden > big ||
        (double)c->hidden * c->hidden * 3 > big)
        return qs_error_set(err, QS_ERR_INPUT, "synth: sizes overflow");
    return QS_OK;
}

qs_status qs_synth_model_init(qs_synth_model *m, const qs_synth_opts *opts, qs_error *err)
{
    memset(m, 0, sizeof *m);
    QS_TRY(check_opts(opts, err));
    m->opts = *opts;
    if (m->opts.max_shard_bytes == 0) m->opts.max_shard_bytes = UINT64_C(2) << 30;
    QS_TRY(qs_model_names_init(&m->opts.cfg, NULL, NULL, &m->names, err));
    m->is_outlier = calloc((size_t)m->opts.cfg.hidden, 1);
    if (!m->is_outlier) return qs_error_set(err, QS_ERR_NOMEM, "synth: out of memory");
    pick_outliers(m);
    const size_t nf = (size_t)QS_SYNTH_EMBED_RANK * (size_t)m->opts.cfg.hidden;
    m->embed_factors = malloc(nf * sizeof(float));
    if (!m->embed_factors) {
        qs_synth_model_free(m);
        return qs_error_set(err, QS_ERR_NOMEM, "synth: out of memory");
    }
    const uint64_t fkey = tensor_key(m->opts.seed, "embedding directions");
    for (size_t i = 0; i < nf; i++) m->embed_factors[i] = bell(mix64(fkey + (i + 1) * GAMMA));
    list_builder b = {NULL, 0, 0, err};
    qs_status st = build_list(m, &b);
    m->tensors = b.v;
    m->count = b.n;
    if (st != QS_OK) {
        qs_synth_model_free(m);
        return st;
    }
    /* Shards: greedy in forward order, as transformers' save_pretrained does. */
    const size_t esz = qs_dtype_size(m->opts.cfg.torch_dtype);
    uint64_t in_shard = 0;
    int shard = 0;
    for (size_t i = 0; i < m->count; i++) {
        qs_synth_tensor *t = &m->tensors[i];
        uint64_t bytes = (uint64_t)(t->shape[0] * t->shape[1]) * esz;
        if (in_shard > 0 && in_shard + bytes > m->opts.max_shard_bytes) {
            shard++;
            in_shard = 0;
        }
        t->shard = shard;
        in_shard += bytes;
        m->total_bytes += bytes;
    }
    m->n_shards = shard + 1;
    return QS_OK;
}

void qs_synth_model_free(qs_synth_model *m)
{
    if (!m) return;
    free(m->embed_factors);
    free(m->tensors);
    free(m->is_outlier);
    memset(m, 0, sizeof *m);
}

const qs_synth_tensor *qs_synth_find(const qs_synth_model *m, const char *name)
{
    for (size_t i = 0; i < m->count; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

/* ==== generation ================================================================ */

/* Elements [start, start+n) of t; rows/cols advance incrementally (no division per element). */
static void fill_range(const qs_synth_model *m, const qs_synth_tensor *t, uint64_t key, int64_t start, int64_t n,
                       float *dst)
{
    const int64_t cols = t->shape[1];
    int64_t row = start / cols, col = start % cols;
    const unsigned char *out_ch = m->is_outlier;
    const float hidden_sigma = 1.0f / sqrtf((float)m->opts.cfg.hidden);
    const float lin_sigma = 1.0f / sqrtf((float)cols);
    float rs = (t->kind == QS_SYNTH_LIN_READ || t->kind == QS_SYNTH_LIN_WRITE) ? row_scale(key, row) : 1.0f;
    /* embedding: the row's coordinates in the shared directions, pre-scaled by sqrt(3/4)/sqrt(K) */
    float z[QS_SYNTH_EMBED_RANK];
    const uint64_t zkey = key ^ UINT64_C(0xbb67ae8584caa73b);
    const int64_t D = m->opts.cfg.hidden;
    if (t->kind == QS_SYNTH_EMBED) embed_coords(zkey, row, z);
    for (int64_t j = 0; j < n; j++) {
        const uint64_t i = (uint64_t)(start + j);
        const float g = bell(mix64(key + (2 * i + 1) * GAMMA));
        float v;
        switch (t->kind) {
        case QS_SYNTH_EMBED: {
            float shared = 0;
            for (int k = 0; k < QS_SYNTH_EMBED_RANK; k++) shared += z[k] * m->embed_factors[k * D + col];
            v = hidden_sigma * (0.5f * g + shared) * (out_ch[col] ? SQRT20 : 1.0f);
            break;
        }
        case QS_SYNTH_POS_EMBED: v = 0.5f * hidden_sigma * g * (out_ch[col] ? SQRT20 : 1.0f); break;
        case QS_SYNTH_EMBED_NORM_W: v = 1.0f + 0.05f * g; break;
        case QS_SYNTH_BLOCK_NORM_W: v = (1.0f + 0.05f * g) * (out_ch[row] ? SQRT20 : 1.0f); break;
        case QS_SYNTH_FINAL_NORM_W: v = (1.0f + 0.05f * g) * (out_ch[row] ? 1.0f / SQRT20 : 1.0f); break;
        case QS_SYNTH_NORM_B:
        case QS_SYNTH_BIAS_MID: v = 0.02f * g; break;
        case QS_SYNTH_BIAS_WRITE: v = 0.02f * g * (out_ch[row] ? SQRT20 : 1.0f); break;
        case QS_SYNTH_LIN_READ:
            v = lin_sigma * rs * g * tail(mix64(key + (2 * i + 2) * GAMMA)) * (out_ch[col] ? 1.0f / SQRT20 : 1.0f);
            break;
        case QS_SYNTH_LIN_WRITE:
            v = lin_sigma * rs * g * tail(mix64(key + (2 * i + 2) * GAMMA)) * (out_ch[row] ? SQRT20 : 1.0f);
            break;
        default: v = 0; break;
        }
        dst[j] = v;
        if (++col == cols) {
            col = 0;
            row++;
            if (t->kind == QS_SYNTH_LIN_READ || t->kind == QS_SYNTH_LIN_WRITE) rs = row_scale(key, row);
            if (t->kind == QS_SYNTH_EMBED) embed_coords(zkey, row, z);
        }
    }
}

void qs_synth_fill(const qs_synth_model *m, const qs_synth_tensor *t, int64_t start, int64_t n, float *dst)
{
    const uint64_t key = tensor_key(m->opts.seed, t->name);
    if (n < 65536) {
        fill_range(m, t, key, start, n, dst);
        return;
    }
    /* Threads take contiguous slices; values do not depend on the split. */
#pragma omp parallel
    {
        int nt = 1, id = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        id = omp_get_thread_num();
#endif
        int64_t per = (n + nt - 1) / nt, b = (int64_t)id * per, e = b + per < n ? b + per : n;
        if (b < e) fill_range(m, t, key, start + b, e - b, dst + b);
    }
}

/* ==== files ===================================================================== */

static void shard_name(const qs_synth_model *m, int s, char *out, size_t cap)
{
    if (m->n_shards == 1) snprintf(out, cap, "model.safetensors");
    else snprintf(out, cap, "model-%05d-of-%05d.safetensors", s + 1, m->n_shards);
}

static qs_status write_shard(const qs_synth_model *m, const char *dir, int s, float *fbuf, void *obuf, qs_error *err)
{
    char fname[64], path[4200], outl[16 * 8] = "";
    shard_name(m, s, fname, sizeof fname);
    snprintf(path, sizeof path, "%s/%s", dir, fname);
    const qs_dtype dt = m->opts.cfg.torch_dtype;
    const size_t esz = qs_dtype_size(dt);
    for (int i = 0; i < m->n_outliers; i++) {
        size_t l = strlen(outl);
        snprintf(outl + l, sizeof outl - l, "%s%d", i ? "," : "", m->outliers[i]);
    }
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)m->opts.seed);

    qs_st_writer *w = NULL;
    QS_TRY(qs_st_writer_open(path, &w, err));
    qs_status st = qs_st_writer_metadata(w, "format", "pt", err);
    if (st == QS_OK) st = qs_st_writer_metadata(w, "qshard.synth.seed", seed, err);
    if (st == QS_OK) st = qs_st_writer_metadata(w, "qshard.synth.outlier_channels", outl, err);
    size_t n_in = 0;
    for (size_t i = 0; st == QS_OK && i < m->count; i++) {
        const qs_synth_tensor *t = &m->tensors[i];
        if (t->shard != s) continue;
        st = qs_st_writer_declare(w, t->name, dt, t->ndim, t->shape, err);
        n_in++;
    }
    if (st == QS_OK) st = qs_st_writer_begin(w, err);
    for (size_t k = 0; st == QS_OK && k < n_in; k++) {
        const char *name = qs_st_writer_order(w, k);
        const qs_synth_tensor *t = name ? qs_synth_find(m, name) : NULL;
        if (!t) {
            st = qs_error_set(err, QS_ERR_INTERNAL, "%s: writer asked for unknown tensor '%s'", path,
                              name ? name : "(null)");
            break;
        }
        const int64_t numel = t->shape[0] * t->shape[1];
        for (int64_t off = 0; st == QS_OK && off < numel; off += CHUNK_ELEMS) {
            int64_t n = numel - off < CHUNK_ELEMS ? numel - off : CHUNK_ELEMS;
            qs_synth_fill(m, t, off, n, fbuf);
            st = qs_convert_from_f32(fbuf, (size_t)n, dt, obuf, err);
            if (st == QS_OK) st = qs_st_writer_tensor(w, t->name, obuf, (uint64_t)n * esz, err);
        }
    }
    if (st == QS_OK) st = qs_st_writer_finish(w, err);
    if (st != QS_OK) qs_st_writer_abort(w);
    return st;
}

static qs_status write_index(const qs_synth_model *m, const char *dir, qs_error *err)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)m->total_bytes);
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    /* sorted by tensor name, as transformers writes it */
    size_t *idx = malloc(m->count * sizeof *idx);
    if (!root || !meta || !map || !idx) {
        cJSON_Delete(root);
        free(idx);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory for the index", dir);
    }
    for (size_t i = 0; i < m->count; i++) idx[i] = i;
    for (size_t i = 1; i < m->count; i++) { /* insertion sort: a few thousand names at most */
        size_t v = idx[i], j = i;
        while (j > 0 && strcmp(m->tensors[idx[j - 1]].name, m->tensors[v].name) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
    for (size_t i = 0; i < m->count; i++) {
        char fname[64];
        shard_name(m, m->tensors[idx[i]].shard, fname, sizeof fname);
        cJSON_AddStringToObject(map, m->tensors[idx[i]].name, fname);
    }
    free(idx);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory for the index", dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    qs_status st = qs_write_file_durable(path, text, strlen(text), err);
    cJSON_free(text);
    return st;
}

qs_status qs_synth_write(const qs_synth_model *m, const char *dir, qs_error *err)
{
    QS_TRY(qs_mkdir_p(dir, err));
    char path[4200];
    char *json = NULL;
    QS_TRY(qs_model_config_to_json(&m->opts.cfg, &json, err));
    snprintf(path, sizeof path, "%s/config.json", dir);
    qs_status st = qs_write_file_durable(path, json, strlen(json), err);
    free(json);
    if (st != QS_OK) return st;

    float *fbuf = qs_malloc((size_t)CHUNK_ELEMS * sizeof(float));
    void *obuf = qs_malloc((size_t)CHUNK_ELEMS * sizeof(float));
    if (!fbuf || !obuf) {
        qs_free(fbuf);
        qs_free(obuf);
        return qs_error_set(err, QS_ERR_NOMEM, "synth: cannot allocate chunk buffers");
    }
    for (int s = 0; st == QS_OK && s < m->n_shards; s++) st = write_shard(m, dir, s, fbuf, obuf, err);
    qs_free(fbuf);
    qs_free(obuf);
    if (st != QS_OK) return st;

    /* A layout left by an earlier run in the same directory (single file vs
     * shards + index) would contradict this one for loaders that prefer it. */
    if (m->n_shards > 1) {
        QS_TRY(write_index(m, dir, err));
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    }
    if (unlink(path) != 0 && errno != ENOENT)
        return qs_error_set(err, QS_ERR_IO, "%s: cannot remove the stale file: %s", path, strerror(errno));
    return QS_OK;
}
