/* manifest.c — a model directory: config.json, its safetensors file or the
 * shards named by model.safetensors.index.json, and a name → tensor map.
 *
 * Every file is opened (validated, mmapped) up front, so a bad shard is
 * reported before any work starts; tensor bytes are only touched when read.
 */
#include "pipeline/formats/manifest.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MANIFEST_MAX_INDEX (256u * 1024u * 1024u)

typedef struct man_entry {
    const char *name; /* the stored name, or the alias */
    const qs_st_info *info;
    const qs_st_file *file;
} man_entry;

struct qs_manifest {
    char *dir;
    qs_model_config cfg;
    qs_st_file **files;
    size_t n_files;
    man_entry *entries; /* stored tensors, sorted by name */
    size_t count;
    man_entry *aliases; /* tied names from "__metadata__", sorted by name */
    size_t n_aliases;
};

static char *m_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *join_path(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* ---- index.json ----------------------------------------------------------- */

void qs_st_index_free(qs_st_index *ix)
{
    if (!ix) return;
    for (size_t i = 0; i < ix->count; i++) free(ix->names[i]);
    for (size_t i = 0; i < ix->n_shards; i++) free(ix->shards[i]);
    free(ix->names);
    free(ix->shard);
    free(ix->shards);
    memset(ix, 0, sizeof *ix);
}

/* A shard must be a plain relative path that stays inside the model dir. */
static bool shard_name_ok(const char *s)
{
    if (!*s || s[0] == '/') return false;
    for (const char *p = s; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 2 && p[0] == '.' && p[1] == '.') || (n == 1 && p[0] == '.')) return false;
        p += n + (slash ? 1 : 0);
        if (slash && !*p) return false;
    }
    return true;
}

typedef struct name_shard {
    char *name;
    size_t shard;
} name_shard;

static int cmp_name_shard(const void *a, const void *b)
{
    return strcmp(((const name_shard *)a)->name, ((const name_shard *)b)->name);
}

static qs_status index_fill(const cJSON *root, const char *origin, qs_st_index *ix, qs_error *err)
{
    if (!cJSON_IsObject(root)) return qs_error_set(err, QS_ERR_INPUT, "%s: expected a JSON object", origin);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm))
        return qs_error_set(err, QS_ERR_INPUT, "%s: \"weight_map\" is %s, expected an object name → file", origin,
                            wm ? "not an object" : "missing");
    size_t n = (size_t)cJSON_GetArraySize(wm);
    if (n == 0) return qs_error_set(err, QS_ERR_INPUT, "%s: \"weight_map\" names no tensors", origin);
    name_shard *tmp = calloc(n, sizeof *tmp);
    ix->shards = calloc(n, sizeof *ix->shards);
    if (!tmp || !ix->shards) {
        free(tmp);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
    }
    qs_status s = QS_OK;
    size_t k = 0;
    const cJSON *e;
    char nb[QS_ST_SHOW_MAX], fb[QS_ST_SHOW_MAX];
    cJSON_ArrayForEach(e, wm)
    {
        if (!cJSON_IsString(e)) {
            s = qs_error_set(err, QS_ERR_INPUT, "%s: \"weight_map\" entry '%s' is not a file name string", origin,
                             qs_st_show_name(e->string, nb, sizeof nb));
            break;
        }
        if (!shard_name_ok(e->valuestring)) {
            s = qs_error_set(err, QS_ERR_INPUT,
                             "%s: tensor '%s' is mapped to '%s', expected a file name inside the model directory", origin,
                             qs_st_show_name(e->string, nb, sizeof nb), qs_st_show_name(e->valuestring, fb, sizeof fb));
            break;
        }
        size_t sh = 0;
        while (sh < ix->n_shards && strcmp(ix->shards[sh], e->valuestring) != 0) sh++;
        if (sh == ix->n_shards) {
            if (!(ix->shards[sh] = m_strdup(e->valuestring))) {
                s = qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
                break;
            }
            ix->n_shards++;
        }
        if (!(tmp[k].name = m_strdup(e->string))) {
            s = qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
            break;
        }
        tmp[k++].shard = sh;
    }
    if (s == QS_OK) {
        qsort(tmp, k, sizeof *tmp, cmp_name_shard);
        for (size_t i = 1; i < k && s == QS_OK; i++)
            if (strcmp(tmp[i - 1].name, tmp[i].name) == 0)
                s = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' appears twice in \"weight_map\"", origin,
                                 qs_st_show_name(tmp[i].name, nb, sizeof nb));
    }
    if (s == QS_OK) {
        ix->names = calloc(k, sizeof *ix->names);
        ix->shard = calloc(k, sizeof *ix->shard);
        if (!ix->names || !ix->shard) s = qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
    }
    if (s == QS_OK) {
        for (size_t i = 0; i < k; i++) {
            ix->names[i] = tmp[i].name;
            ix->shard[i] = tmp[i].shard;
        }
        ix->count = k;
    } else {
        for (size_t i = 0; i < k; i++) free(tmp[i].name);
    }
    free(tmp);
    return s;
}

qs_status qs_st_index_parse(const char *json, size_t len, const char *origin, qs_st_index *out, qs_error *err)
{
    memset(out, 0, sizeof *out);
    char *text = malloc(len + 1); /* NUL-terminated copy: cJSON never reads past it */
    if (!text) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
    memcpy(text, json, len);
    text[len] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    qs_status s;
    if (!root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        s = qs_error_set(err, QS_ERR_INPUT, "%s: not valid JSON (error at byte %zu of %zu)", origin, at, len);
    } else {
        s = index_fill(root, origin, out, err);
    }
    cJSON_Delete(root);
    free(text);
    if (s != QS_OK) qs_st_index_free(out);
    return s;
}

static qs_status read_small_file(const char *path, size_t limit, char **data, size_t *len, qs_error *err)
{
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return qs_error_set(err, errno == ENOENT ? QS_ERR_INPUT : QS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    qs_status s = QS_OK;
    if (fstat(fileno(f), &st) != 0) s = qs_error_set(err, QS_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if ((uint64_t)st.st_size > limit)
        s = qs_error_set(err, QS_ERR_INPUT, "%s: %lld bytes is larger than the %zu-byte limit", path,
                         (long long)st.st_size, limit);
    else if (!(*data = malloc((size_t)st.st_size + 1))) s = qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
    else if (fread(*data, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        s = qs_error_set(err, QS_ERR_IO, "%s: short read", path);
    fclose(f);
    if (s != QS_OK) {
        free(*data);
        *data = NULL;
        return s;
    }
    (*data)[st.st_size] = '\0';
    *len = (size_t)st.st_size;
    return QS_OK;
}

/* ---- the manifest --------------------------------------------------------- */

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const man_entry *)a)->name, ((const man_entry *)b)->name);
}

static const man_entry *search(const man_entry *e, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(e[mid].name, name);
        if (c == 0) return &e[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static qs_status add_file(qs_manifest *m, const char *name, qs_st_file **out, qs_error *err)
{
    char *path = join_path(m->dir, name);
    if (!path) return qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    qs_st_file **files = realloc(m->files, (m->n_files + 1) * sizeof *files);
    if (!files) {
        free(path);
        return qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    }
    m->files = files;
    qs_status s = qs_st_open(path, &m->files[m->n_files], err);
    free(path);
    if (s != QS_OK) return s;
    *out = m->files[m->n_files++];
    return QS_OK;
}

static qs_status open_single(qs_manifest *m, const char *name, qs_error *err)
{
    qs_st_file *f;
    QS_TRY(add_file(m, name, &f, err));
    size_t n = qs_st_count(f);
    m->entries = calloc(n ? n : 1, sizeof *m->entries);
    if (!m->entries) return qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const qs_st_info *t = qs_st_at(f, i);
        m->entries[i] = (man_entry){t->name, t, f};
    }
    m->count = n; /* already sorted by name */
    return QS_OK;
}

static qs_status open_index(qs_manifest *m, const char *name, qs_error *err)
{
    char *path = join_path(m->dir, name);
    if (!path) return qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    char *text = NULL;
    size_t len = 0;
    qs_st_index ix;
    memset(&ix, 0, sizeof ix);
    qs_status s = read_small_file(path, MANIFEST_MAX_INDEX, &text, &len, err);
    if (s == QS_OK) s = qs_st_index_parse(text, len, path, &ix, err);
    free(text);
    qs_st_file **shard_files = NULL;
    char nb[QS_ST_SHOW_MAX];
    if (s == QS_OK && !(shard_files = calloc(ix.n_shards, sizeof *shard_files)))
        s = qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; s == QS_OK && i < ix.n_shards; i++) {
        char *sp = join_path(m->dir, ix.shards[i]);
        if (!sp) s = qs_error_set(err, QS_ERR_NOMEM, "out of memory");
        else if (!is_file(sp))
            s = qs_error_set(err, QS_ERR_INPUT, "%s: names shard '%s', which does not exist in %s", path,
                             qs_st_show_name(ix.shards[i], nb, sizeof nb), m->dir);
        free(sp);
        if (s == QS_OK) s = add_file(m, ix.shards[i], &shard_files[i], err);
    }
    if (s == QS_OK && !(m->entries = calloc(ix.count, sizeof *m->entries)))
        s = qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; s == QS_OK && i < ix.count; i++) {
        const qs_st_file *f = shard_files[ix.shard[i]];
        const qs_st_info *t = qs_st_find(f, ix.names[i]);
        if (!t) {
            char fb[QS_ST_SHOW_MAX];
            s = qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' is mapped to '%s', but that file does not contain it",
                             path, qs_st_show_name(ix.names[i], nb, sizeof nb),
                             qs_st_show_name(ix.shards[ix.shard[i]], fb, sizeof fb));
            break;
        }
        m->entries[i] = (man_entry){t->name, t, f}; /* the shard's copy of the name outlives the index */
        m->count = i + 1;
    }
    free(shard_files);
    qs_st_index_free(&ix);
    free(path);
    return s;
}

/* "__metadata__" {"removed": "kept"} pairs where only "kept" is stored. */
static qs_status collect_aliases(qs_manifest *m, qs_error *err)
{
    size_t cap = 0;
    for (size_t i = 0; i < m->n_files; i++) cap += qs_st_metadata_count(m->files[i]);
    if (!cap) return QS_OK;
    m->aliases = calloc(cap, sizeof *m->aliases);
    if (!m->aliases) return qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < m->n_files; i++) {
        const qs_st_file *f = m->files[i];
        for (size_t k = 0; k < qs_st_metadata_count(f); k++) {
            const char *key = qs_st_metadata_key(f, k);
            const qs_st_info *kept = qs_st_find(f, qs_st_metadata(f, key));
            const man_entry *e = kept ? search(m->entries, m->count, kept->name) : NULL;
            if (!e || e->file != f || search(m->entries, m->count, key)) continue;
            bool dup = false;
            for (size_t j = 0; j < m->n_aliases; j++) dup |= strcmp(m->aliases[j].name, key) == 0;
            if (!dup) m->aliases[m->n_aliases++] = (man_entry){key, kept, f};
        }
    }
    qsort(m->aliases, m->n_aliases, sizeof *m->aliases, cmp_entry);
    return QS_OK;
}

/* ---- config.json against the tensors present ------------------------------ */

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* Whether any stored tensor name starts with prefix (binary search: names are sorted). */
static bool has_prefix(const qs_manifest *m, const char *prefix)
{
    size_t lo = 0, hi = m->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(m->entries[mid].name, prefix) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < m->count && starts_with(m->entries[lo].name, prefix);
}

static bool manifest_name_exists(const char *name, void *ctx) { return qs_manifest_find(ctx, name, NULL) != NULL; }

/* config.json's num_hidden_layers must be backed by tensors before anyone
 * sizes a table by it: the last block's tensors must be there. (Shapes and
 * dtypes of every tensor are checked by model_check.h.) A checkpoint whose
 * tensor names do not resolve is left to the caller, which reports it. */
static qs_status check_block_count(qs_manifest *m, qs_error *err)
{
    qs_model_names names;
    qs_error ignore;
    if (qs_model_names_init(&m->cfg, manifest_name_exists, m, &names, &ignore) != QS_OK) return QS_OK;
    char prefix[QS_BLOCK_PREFIX_MAX];
    qs_block_prefix(&m->cfg, &names, m->cfg.n_layers - 1, prefix);
    if (has_prefix(m, prefix)) return QS_OK;
    int present = 0; /* each block present holds distinct tensors: at most count of them */
    while ((size_t)present < m->count) {
        qs_block_prefix(&m->cfg, &names, present, prefix);
        if (!has_prefix(m, prefix)) break;
        present++;
    }
    qs_block_prefix(&m->cfg, &names, m->cfg.n_layers - 1, prefix);
    return qs_error_set(err, QS_ERR_INPUT,
                        "%s/config.json: field 'num_hidden_layers' (or 'n_layer') = %d, but the checkpoint has no "
                        "tensor '%s*' (it holds blocks 0..%d)",
                        m->dir, m->cfg.n_layers, prefix, present - 1);
}

/* Which weights file(s) to open when the caller did not say. */
static qs_status pick_default(const char *dir, char **name, qs_error *err)
{
    static const char *const preferred[] = {"model.safetensors.index.json", "model.safetensors"};
    for (size_t i = 0; i < 2; i++) {
        char *p = join_path(dir, preferred[i]);
        bool ok = p && is_file(p);
        free(p);
        if (ok) {
            *name = m_strdup(preferred[i]);
            return *name ? QS_OK : qs_error_set(err, QS_ERR_NOMEM, "out of memory");
        }
    }
    DIR *d = opendir(dir);
    if (!d) return qs_error_set(err, QS_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    char *found = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".safetensors") || e->d_name[0] == '.') continue;
        char *p = join_path(dir, e->d_name);
        bool ok = p && is_file(p);
        free(p);
        if (!ok) continue;
        if (n++ == 0) found = m_strdup(e->d_name);
    }
    closedir(d);
    if (n == 1 && found) {
        *name = found;
        return QS_OK;
    }
    free(found);
    if (n == 0)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: no model.safetensors, model.safetensors.index.json or other *.safetensors file", dir);
    return qs_error_set(err, QS_ERR_INPUT,
                        "%s: no model.safetensors or index, and %d *.safetensors files: name one (--file)", dir, n);
}

qs_status qs_manifest_open_file(const char *dir, const char *file, qs_manifest **out, qs_error *err)
{
    *out = NULL;
    struct stat st;
    if (stat(dir, &st) != 0)
        return qs_error_set(err, errno == ENOENT ? QS_ERR_INPUT : QS_ERR_IO, "%s: cannot open the model directory: %s",
                            dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return qs_error_set(err, QS_ERR_INPUT, "%s: not a directory (expected an HF model dir)", dir);
    qs_manifest *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = m_strdup(dir))) {
        free(m);
        return qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    }
    for (size_t n = strlen(m->dir); n > 1 && m->dir[n - 1] == '/'; n--) m->dir[n - 1] = '\0';
    qs_status s = QS_OK;
    char *cfg = join_path(m->dir, "config.json");
    if (!cfg) s = qs_error_set(err, QS_ERR_NOMEM, "out of memory");
    else if (!is_file(cfg))
        s = qs_error_set(err, QS_ERR_INPUT, "%s: missing (an HF model directory needs its config.json)", cfg);
    else s = qs_model_config_load(cfg, &m->cfg, err);
    free(cfg);
    char *name = NULL;
    if (s == QS_OK) {
        if (file) {
            if (strchr(file, '/')) s = qs_error_set(err, QS_ERR_INPUT, "%s: expected a file name inside %s", file, m->dir);
            else if (!(name = m_strdup(file))) s = qs_error_set(err, QS_ERR_NOMEM, "out of memory");
        } else {
            s = pick_default(m->dir, &name, err);
        }
    }
    if (s == QS_OK) s = ends_with(name, ".index.json") ? open_index(m, name, err) : open_single(m, name, err);
    free(name);
    if (s == QS_OK) s = collect_aliases(m, err);
    if (s == QS_OK) s = check_block_count(m, err);
    if (s != QS_OK) {
        qs_manifest_close(m);
        return s;
    }
    *out = m;
    return QS_OK;
}

qs_status qs_manifest_open(const char *dir, qs_manifest **out, qs_error *err)
{
    return qs_manifest_open_file(dir, NULL, out, err);
}

void qs_manifest_close(qs_manifest *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_files; i++) qs_st_close(m->files[i]);
    free(m->files);
    free(m->entries);
    free(m->aliases);
    free(m->dir);
    free(m);
}

const char *qs_manifest_dir(const qs_manifest *m) { return m->dir; }
const qs_model_config *qs_manifest_config(const qs_manifest *m) { return &m->cfg; }
size_t qs_manifest_count(const qs_manifest *m) { return m->count; }
size_t qs_manifest_file_count(const qs_manifest *m) { return m->n_files; }
const qs_st_file *qs_manifest_file(const qs_manifest *m, size_t i) { return i < m->n_files ? m->files[i] : NULL; }

const qs_st_info *qs_manifest_at(const qs_manifest *m, size_t i, const qs_st_file **file)
{
    if (i >= m->count) return NULL;
    if (file) *file = m->entries[i].file;
    return m->entries[i].info;
}

const qs_st_info *qs_manifest_find(const qs_manifest *m, const char *name, const qs_st_file **file)
{
    const man_entry *e = search(m->entries, m->count, name);
    if (!e) e = search(m->aliases, m->n_aliases, name);
    if (!e) return NULL;
    if (file) *file = e->file;
    return e->info;
}

qs_status qs_manifest_read_f32(const qs_manifest *m, const char *name, qs_tensor *out, bool check_finite,
                               qs_error *err)
{
    memset(out, 0, sizeof *out);
    const qs_st_file *f;
    const qs_st_info *t = qs_manifest_find(m, name, &f);
    char nb[QS_ST_SHOW_MAX];
    if (!t)
        return qs_error_set(err, QS_ERR_INPUT, "%s: tensor '%s' is not in the checkpoint", m->dir,
                            qs_st_show_name(name, nb, sizeof nb));
    QS_TRY(qs_tensor_init(out, QS_DTYPE_F32, t->ndim, t->shape, err));
    qs_status s = qs_st_read_f32(f, t, out->data, check_finite, err);
    if (s != QS_OK) qs_tensor_free(out);
    return s;
}
