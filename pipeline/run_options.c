/* run_options.c — run options from flags and INI job files. */
#include "pipeline/run_options.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "kernels/device.h"
#include "pipeline/option_parse.h"

void qs_run_options_default(qs_run_options *o)
{
    memset(o, 0, sizeof *o);
    o->method = QS_METHOD_GPTQ;
    o->bits = 4;
    o->group_size = 128;
    o->sym = true;
    o->true_sequential = true;
    o->damp = 0.01;
    o->block_size = 128;
    strcpy(o->compute_dtype, "auto");
    strcpy(o->device, "cpu");
    strcpy(o->transport, "auto");
    o->schedule = QS_SCHEDULE_EXACT;
    o->micro_batch = 8;
    o->lwc = true;
    o->lwc_lr = 5e-3;
    o->let_lr = 1e-2;
    o->omni_batch = 1;
    o->omni_cosine = true;
    strcpy(o->progress, "auto");
    o->link_gbps = 100;
    o->intra_node_gbps = 1600;
    o->heartbeat_timeout = 30;
    strcpy(o->checkpoint_format, "gptq");
    o->max_shard_size = 4ull << 30;
    strcpy(o->formats, "gptq");
    strcpy(o->gguf_fallback, "none");
    o->slurm.nodes = 1;
    o->slurm.gpus_per_node = 0;
    o->slurm.cpus_per_task = 2;
    strcpy(o->slurm.time, "24:00:00");
    o->slurm.chain = 1;
    o->slurm.signal_grace_s = 120;
}

typedef enum { K_PATH, K_STR, K_INT, K_BOOL, K_DOUBLE, K_BYTES, K_SPECIAL } key_kind;

typedef struct key_def {
    const char *name;
    key_kind kind;
    size_t offset;
    size_t size;   /* buffer size for K_PATH/K_STR */
    long lo, hi;   /* K_INT range */
    const char *help;
} key_def;

#define F(field) offsetof(qs_run_options, field), sizeof(((qs_run_options *)0)->field)

static const key_def keys[] = {
    {"model", K_PATH, F(model), 0, 0, "DIR        HF model directory (config.json + safetensors)"},
    {"model-file", K_STR, F(model_file), 0, 0, "NAME  one .safetensors file inside the model dir"},
    {"calib", K_PATH, F(calib), 0, 0, "T.npy|T.h5 calibration token set [rows, L]"},
    {"calib-rows", K_INT, F(calib_rows), 0, 1 << 30, "N      use the first N rows (default all)"},
    {"work", K_PATH, F(work), 0, 0, "DIR         work dir: journal, checkpoints (resumes when it exists)"},
    {"out", K_PATH, F(out), 0, 0, "DIR          output directory"},
    {"method", K_SPECIAL, 0, 0, 0, 0, "rtn|gptq|omniquant (default gptq)"},
    {"bits", K_INT, F(bits), 2, 8, "B           2, 3, 4 or 8 (default 4)"},
    {"group-size", K_INT, F(group_size), -1, 1 << 20, "G     columns per group, -1 per channel (default 128)"},
    {"sym", K_SPECIAL, 0, 0, 0, 0, "            symmetric grid (default)"},
    {"asym", K_SPECIAL, 0, 0, 0, 0, "           asymmetric grid"},
    {"act-order", K_BOOL, F(act_order), 0, 0, "      columns by decreasing Hessian diagonal (desc_act)"},
    {"static-groups", K_BOOL, F(static_groups), 0, 0, "  group parameters from the original weights"},
    {"true-sequential", K_BOOL, F(true_sequential), 0, 0, "quantize q/k/v, o, up/gate, down in turn (default on)"},
    {"mse", K_BOOL, F(mse), 0, 0, "            MSE clipping search for the grid"},
    {"rtn-baseline", K_BOOL, F(rtn_baseline), 0, 0, "   report RTN's H-weighted loss per linear next to GPTQ's"},
    {"damp", K_DOUBLE, F(damp), 0, 0, "D           damping as a fraction of the mean Hessian diagonal (0.01)"},
    {"block-size", K_INT, F(block_size), 1, 1 << 16, "N     GPTQ lazy-batch block (128)"},
    {"compute-dtype", K_STR, F(compute_dtype), 0, 0, "D  forward GEMMs + Hessians: f32, or bf16 operands with f32 sums; auto (default):\n"
                                                     "                   bf16 when the CPU has bf16 instructions and the weights are bf16/fp16"},
    {"epochs", K_INT, F(epochs), 1, 1000000, "N          omniquant: epochs per block (default 20; 40 at 2 bits)"},
    {"lwc", K_BOOL, F(lwc), 0, 0, "            omniquant: learnable weight clipping (default on; --lwc false)"},
    {"let", K_BOOL, F(let), 0, 0, "            omniquant: learnable equivalent transformation (default off)"},
    {"lwc-lr", K_DOUBLE, F(lwc_lr), 0, 0, "LR         omniquant: AdamW learning rate of the clipping (5e-3)"},
    {"let-lr", K_DOUBLE, F(let_lr), 0, 0, "LR         omniquant: AdamW learning rate of LET (1e-2)"},
    {"omni-batch", K_INT, F(omni_batch), 1, 1 << 20, "N     omniquant: calibration rows per step (1)"},
    {"omni-seed", K_INT, F(omni_seed), 0, 0x7fffffff, "S      omniquant: seed of the row order (0)"},
    {"omni-cosine", K_BOOL, F(omni_cosine), 0, 0, "    omniquant: learning rates decay to 0 along a cosine over a block's steps (default on; false: constant)"},
    {"device", K_STR, F(device), 0, 0, "cpu|cuda|auto  where each rank computes: one GPU per rank (default cpu)"},
    {"transport", K_STR, F(transport), 0, 0, "auto|mpi|nccl  activations between GPUs: auto is NCCL when every rank has a GPU and NCCL loads, else MPI"},
    {"schedule", K_SPECIAL, 0, 0, 0, 0, "exact|pipelined (default exact)"},
    {"micro-batch", K_INT, F(micro_batch), 1, 1 << 20, "M    rows per activation hand-off (8)"},
    {"replicas", K_INT, F(replicas), 1, 1 << 20, "D       data-parallel replicas per stage: ranks = stages × D (1)"},
    {"link-gbps", K_DOUBLE, F(link_gbps), 0, 0, "X      planning: Gbit/s per rank between nodes (100)"},
    {"intra-node-gbps", K_DOUBLE, F(intra_node_gbps), 0, 0, "X planning: Gbit/s per rank within a node (1600)"},
    {"heartbeat-timeout", K_DOUBLE, F(heartbeat_timeout), 0, 0, "S a rank silent this long is lost: the others exit 3 (30; 0: off)"},
    {"json", K_BOOL, F(json), 0, 0, "           print a JSON summary"},
    {"force-resume", K_BOOL, F(force_resume), 0, 0, "   resume despite a fingerprint mismatch where safe"},
    {"quiet", K_BOOL, F(quiet), 0, 0, "          print nothing but warnings and errors"},
    {"progress", K_STR, F(progress), 0, 0, "auto|live|plain progress: a live line on a terminal, else a line per block"},
    {"log-json", K_PATH, F(log_json), 0, 0, "FILE    also write the run's events as JSON lines to FILE"},
    {"checkpoint-format", K_STR, F(checkpoint_format), 0, 0, "gptq|gptq_v2"},
    {"max-shard-size", K_BYTES, F(max_shard_size), 0, 0, "SIZE output shard size (4GiB)"},
    {"formats", K_STR, F(formats), 0, 0, "LIST      exports: gptq,gguf,hdf5 (default gptq)"},
    {"gguf-fallback", K_STR, F(gguf_fallback), 0, 0, "none|f16 gguf: linears GGUF cannot hold exactly as F16"},
    {"nodes", K_INT, F(slurm.nodes), 1, 1 << 20, "N          Slurm nodes"},
    {"gpus-per-node", K_INT, F(slurm.gpus_per_node), 0, 1024, "G  GPUs per node (one rank each)"},
    {"tasks-per-node", K_INT, F(slurm.tasks_per_node), 0, 1024, "T ranks per node without GPUs"},
    {"cpus-per-task", K_INT, F(slurm.cpus_per_task), 1, 1024, "C  CPU cores per rank"},
    {"time", K_STR, F(slurm.time), 0, 0, "HH:MM:SS       Slurm time limit per job"},
    {"partition", K_STR, F(slurm.partition), 0, 0, "P         Slurm partition"},
    {"account", K_STR, F(slurm.account), 0, 0, "A           Slurm account"},
    {"chain", K_INT, F(slurm.chain), 1, 1000, "K             jobs chained with --dependency=singleton"},
    {"signal-grace", K_INT, F(slurm.signal_grace_s), 10, 86400, "S signal USR1 this many seconds before the limit"},
    {NULL, 0, 0, 0, 0, 0, NULL},
};

static bool key_eq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a == '_' ? '-' : (char)tolower((unsigned char)*a);
        char y = *b == '_' ? '-' : (char)tolower((unsigned char)*b);
        if (x != y) return false;
    }
    return *a == *b;
}

static qs_status parse_bool(const char *key, const char *v, bool *out, qs_error *err)
{
    if (!v || !*v || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") || !strcasecmp(v, "on"))
        *out = true;
    else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0") || !strcasecmp(v, "off"))
        *out = false;
    else
        return qs_error_set(err, QS_ERR_INPUT, "%s: expected true or false, got '%s'", key, v);
    return QS_OK;
}

qs_status qs_run_options_set(qs_run_options *o, const char *key, const char *value, const char *base_dir,
                             qs_error *err)
{
    const key_def *k = NULL;
    for (const key_def *d = keys; d->name; d++)
        if (key_eq(key, d->name)) k = d;
    if (!k) return qs_error_set(err, QS_ERR_INPUT, "unknown option '%s'", key);
    char *field = (char *)o + k->offset;
    char opt[80];
    snprintf(opt, sizeof opt, "--%s", k->name);
    switch (k->kind) {
    case K_PATH:
        if (!value || !*value) return qs_error_set(err, QS_ERR_INPUT, "%s: expected a path", opt);
        if (base_dir && value[0] != '/') {
            int n = snprintf(field, k->size, "%s/%s", base_dir, value);
            if (n < 0 || (size_t)n >= k->size) return qs_error_set(err, QS_ERR_INPUT, "%s: path too long", opt);
        } else {
            if (strlen(value) >= k->size) return qs_error_set(err, QS_ERR_INPUT, "%s: path too long", opt);
            strcpy(field, value);
        }
        return QS_OK;
    case K_STR:
        if (!value) return qs_error_set(err, QS_ERR_INPUT, "%s: expected a value", opt);
        if (strlen(value) >= k->size) return qs_error_set(err, QS_ERR_INPUT, "%s: value too long", opt);
        strcpy(field, value);
        return QS_OK;
    case K_INT: {
        long v;
        QS_TRY(qs_parse_long(opt, value, k->lo, k->hi, &v, err));
        *(int *)field = (int)v;
        return QS_OK;
    }
    case K_BOOL: return parse_bool(opt, value, (bool *)field, err);
    case K_DOUBLE: return qs_parse_double(opt, value, (double *)field, err);
    case K_BYTES: return qs_parse_bytes(opt, value, (uint64_t *)field, err);
    case K_SPECIAL: break;
    }
    if (!strcmp(k->name, "method")) {
        if (value && !strcmp(value, "rtn")) o->method = QS_METHOD_RTN;
        else if (value && !strcmp(value, "gptq")) o->method = QS_METHOD_GPTQ;
        else if (value && !strcmp(value, "omniquant")) o->method = QS_METHOD_OMNIQUANT;
        else
            return qs_error_set(err, QS_ERR_INPUT, "--method: expected rtn, gptq or omniquant, got '%s'",
                                value ? value : "");
    } else if (!strcmp(k->name, "sym") || !strcmp(k->name, "asym")) {
        bool v;
        QS_TRY(parse_bool(opt, value, &v, err));
        o->sym = !strcmp(k->name, "sym") ? v : !v;
    } else if (!strcmp(k->name, "schedule")) {
        if (value && !strcmp(value, "exact")) o->schedule = QS_SCHEDULE_EXACT;
        else if (value && !strcmp(value, "pipelined")) o->schedule = QS_SCHEDULE_PIPELINED;
        else
            return qs_error_set(err, QS_ERR_INPUT, "--schedule: expected exact or pipelined, got '%s'",
                                value ? value : "");
    }
    return QS_OK;
}

/* ---- job files ------------------------------------------------------------------ */

/* Job files are small; a larger file is not one. */
#define JOB_FILE_MAX (1u << 20)

typedef struct ini_ctx {
    qs_run_options *o;
    const char *path;
    const char *base;
    qs_error *err;
    qs_status st;
    /* the text, read line by line through ini_parse_stream so that the
     * handler knows the line it is called for */
    const char *text, *end;
    int line;
    /* keys seen so far (canonical names) and their lines: a key given twice is an error */
    const char *seen[64];
    int seen_line[64];
    int n_seen;
} ini_ctx;

static char *ini_read_line(char *buf, int size, void *stream)
{
    ini_ctx *c = stream;
    if (c->text >= c->end || size < 2) return NULL;
    /* inih reads a line longer than its buffer in several calls: count lines, not calls */
    if (c->line == 0 || c->text[-1] == '\n') c->line++;
    int n = 0;
    while (c->text < c->end && n < size - 1) {
        char ch = *c->text++;
        buf[n++] = ch;
        if (ch == '\n') break;
    }
    buf[n] = '\0';
    return buf;
}

static int on_ini_key(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx *c = user;
    /* sections group keys for readers; names are unique across them */
    if (c->st != QS_OK) return 0;
    const key_def *k = NULL;
    for (const key_def *d = keys; d->name; d++)
        if (key_eq(name, d->name)) k = d;
    if (k) {
        for (int i = 0; i < c->n_seen; i++)
            if (c->seen[i] == k->name || (!strcmp(k->name, "sym") && !strcmp(c->seen[i], "asym")) ||
                (!strcmp(k->name, "asym") && !strcmp(c->seen[i], "sym"))) {
                c->st = qs_error_set(c->err, QS_ERR_INPUT, "%s:%d: [%s] %s: '%s' is already set on line %d", c->path,
                                     c->line, section, name, c->seen[i], c->seen_line[i]);
                return 0;
            }
        if (c->n_seen < (int)(sizeof c->seen / sizeof *c->seen)) {
            c->seen[c->n_seen] = k->name;
            c->seen_line[c->n_seen++] = c->line;
        }
    }
    c->st = qs_run_options_set(c->o, name, value, c->base, c->err);
    if (c->st != QS_OK) {
        qs_error_prefix(c->err, "%s:%d: [%s] %s", c->path, c->line, section, name);
        return 0;
    }
    return 1;
}

/* libinih's run-time settings for job files: no multi-line values (an
 * indented line would silently continue the previous value: `bits = 4`
 * then `  3` would run 3-bit), lines of any length (a long path must not be
 * cut into a second line), stop at the first error. */
static void ini_strict(void)
{
    ini_allow_multiline = false;
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = 1 << 20;
    ini_stop_on_first_error = true;
}

qs_status qs_run_options_parse_job(qs_run_options *o, const char *text, size_t len, const char *path,
                                   const char *base_dir, qs_error *err)
{
    if (memchr(text, '\0', len))
        return qs_error_set(err, QS_ERR_INPUT, "%s: holds a NUL byte: not a text (INI) job file", path);
    ini_strict();
    ini_ctx c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.path = path;
    c.base = base_dir;
    c.err = err;
    c.text = text;
    c.end = text + len;
    int rc = ini_parse_stream(ini_read_line, &c, on_ini_key, &c);
    if (c.st != QS_OK) return c.st;
    if (rc > 0)
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s:%d: not a valid INI line (expected [section], key = value or a comment; an indented "
                            "line does not continue a value)",
                            path, rc);
    if (rc != 0) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory parsing the job file", path);
    return QS_OK;
}

qs_status qs_run_options_load_job(qs_run_options *o, const char *path, qs_error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return qs_error_set(err, QS_ERR_INPUT, "%s: cannot open the job file: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return qs_error_set(err, QS_ERR_INPUT, "%s: is a directory, not a job file (give the model with --model)", path);
    if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > JOB_FILE_MAX)
        return qs_error_set(err, QS_ERR_INPUT, "%s: not a job file (a regular file of at most %u bytes)", path,
                            JOB_FILE_MAX);
    FILE *f = fopen(path, "rb");
    if (!f) return qs_error_set(err, QS_ERR_INPUT, "%s: cannot open the job file: %s", path, strerror(errno));
    char *text = malloc((size_t)sb.st_size + 1);
    size_t len = text ? fread(text, 1, (size_t)sb.st_size, f) : 0;
    fclose(f);
    if (!text) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", path);
    text[len] = '\0';
    char *copy = strdup(path);
    char base[QS_PATH_MAX];
    snprintf(base, sizeof base, "%s", copy ? dirname(copy) : ".");
    free(copy);
    qs_status st = qs_run_options_parse_job(o, text, len, path, base, err);
    free(text);
    if (st != QS_OK) return st;
    snprintf(o->job_file, sizeof o->job_file, "%s", path);
    return QS_OK;
}

qs_status qs_run_options_parse_argv(qs_run_options *o, int argc, char **argv, qs_error *err)
{
    int i = 1;
    if (i < argc && strncmp(argv[i], "--", 2) != 0) {
        QS_TRY(qs_run_options_load_job(o, argv[i], err));
        i++;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) return qs_error_set(err, QS_ERR_INPUT, "unexpected argument '%s'", a);
        const char *name = a + 2;
        char key[64];
        const char *eq = strchr(name, '=');
        const char *value = NULL;
        if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - name), name);
            value = eq + 1;
        } else {
            snprintf(key, sizeof key, "%s", name);
        }
        const key_def *k = NULL;
        for (const key_def *d = keys; d->name; d++)
            if (key_eq(key, d->name)) k = d;
        if (!k) return qs_error_set(err, QS_ERR_INPUT, "unknown option '--%s'", key);
        bool is_switch = k->kind == K_BOOL || !strcmp(k->name, "sym") || !strcmp(k->name, "asym");
        if (!value && is_switch && i + 1 < argc) {
            /* a switch may be followed by an explicit true/false ("--act-order false") */
            const char *n = argv[i + 1];
            static const char *words[] = {"true", "false", "yes", "no", "on", "off", "1", "0"};
            for (size_t w = 0; w < sizeof words / sizeof *words; w++)
                if (!strcasecmp(n, words[w])) value = argv[++i];
        }
        if (!value && !is_switch) {
            if (i + 1 >= argc) return qs_error_set(err, QS_ERR_INPUT, "--%s needs a value", k->name);
            value = argv[++i];
        }
        QS_TRY(qs_run_options_set(o, k->name, value, NULL, err));
    }
    return QS_OK;
}

int qs_run_options_epochs(const qs_run_options *o) { return o->epochs > 0 ? o->epochs : o->bits == 2 ? 40 : 20; }

qs_status qs_run_options_validate(const qs_run_options *o, qs_error *err)
{
    /* first: what the run cannot do yet is said before what is missing */
    if (o->replicas > 1 && o->method == QS_METHOD_OMNIQUANT)
        return qs_error_set(err, QS_ERR_INPUT,
                            "--replicas %d: OmniQuant trains each block on one rank (use --replicas 1)", o->replicas);
    if (!o->model[0]) return qs_error_set(err, QS_ERR_INPUT, "--model is required (a model directory)");
    if (!o->calib[0]) return qs_error_set(err, QS_ERR_INPUT, "--calib is required (a token set .npy or .h5)");
    if (!o->work[0]) return qs_error_set(err, QS_ERR_INPUT, "--work is required (the run's work directory)");
    if (!o->out[0]) return qs_error_set(err, QS_ERR_INPUT, "--out is required (the output directory)");
    if (o->bits != 2 && o->bits != 3 && o->bits != 4 && o->bits != 8)
        return qs_error_set(err, QS_ERR_INPUT, "--bits: expected 2, 3, 4 or 8, got %d", o->bits);
    if (o->group_size == 0 || o->group_size < -1)
        return qs_error_set(err, QS_ERR_INPUT, "--group-size: expected a positive size or -1, got %d", o->group_size);
    if (o->damp < 0 || o->damp > 1) return qs_error_set(err, QS_ERR_INPUT, "--damp: expected [0, 1], got %g", o->damp);
    if (strcmp(o->compute_dtype, "auto") && strcmp(o->compute_dtype, "f32") && strcmp(o->compute_dtype, "bf16"))
        return qs_error_set(err, QS_ERR_INPUT, "--compute-dtype: expected auto, f32 or bf16, got '%s'", o->compute_dtype);
    if (o->method == QS_METHOD_OMNIQUANT) {
        if (!(o->lwc_lr > 0))
            return qs_error_set(err, QS_ERR_INPUT, "--lwc-lr: expected a learning rate > 0, got %g", o->lwc_lr);
        if (!(o->let_lr > 0))
            return qs_error_set(err, QS_ERR_INPUT, "--let-lr: expected a learning rate > 0, got %g", o->let_lr);
        if (!o->lwc && !o->let)
            return qs_error_set(err, QS_ERR_INPUT, "--method omniquant: --lwc false needs --let (with neither, "
                                                   "nothing is trained: use --method rtn)");
        if (o->act_order || o->static_groups || o->mse)
            return qs_error_set(err, QS_ERR_INPUT, "--method omniquant: --act-order, --static-groups and --mse are "
                                                   "GPTQ/RTN options (OmniQuant learns its clipping)");
    }
    if (!(o->link_gbps > 0) || !(o->intra_node_gbps > 0) || o->link_gbps > 1e9 || o->intra_node_gbps > 1e9)
        return qs_error_set(err, QS_ERR_INPUT, "--link-gbps and --intra-node-gbps: expected (0, 1e9] Gbit/s");
    if (o->heartbeat_timeout != 0 && !(o->heartbeat_timeout >= 2 && o->heartbeat_timeout <= 86400))
        return qs_error_set(err, QS_ERR_INPUT, "--heartbeat-timeout: expected 0 (off) or [2, 86400] seconds, got %g",
                            o->heartbeat_timeout);
    qs_device_kind dk;
    QS_TRY(qs_device_parse(o->device, "--device", &dk, err));
    if (strcmp(o->transport, "auto") && strcmp(o->transport, "mpi") && strcmp(o->transport, "nccl"))
        return qs_error_set(err, QS_ERR_INPUT, "--transport: expected auto, mpi or nccl, got '%s'", o->transport);
    if (!strcmp(o->transport, "nccl") && dk == QS_DEVICE_CPU)
        return qs_error_set(err, QS_ERR_INPUT, "--transport nccl needs --device cuda");
    if (strcmp(o->gguf_fallback, "none") && strcmp(o->gguf_fallback, "f16"))
        return qs_error_set(err, QS_ERR_INPUT, "--gguf-fallback: expected none or f16, got '%s'", o->gguf_fallback);
    int n_formats = 0;
    char list[sizeof o->formats];
    snprintf(list, sizeof list, "%s", o->formats);
    for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save), n_formats++)
        if (strcmp(t, "gptq") && strcmp(t, "gguf") && strcmp(t, "hdf5"))
            return qs_error_set(err, QS_ERR_INPUT, "--formats: unknown format '%s' (expected gptq, gguf, hdf5)", t);
    if (n_formats == 0)
        return qs_error_set(err, QS_ERR_INPUT, "--formats: '%s' names no format (expected a list of gptq, gguf, hdf5)",
                            o->formats);
    if (strcmp(o->progress, "auto") && strcmp(o->progress, "live") && strcmp(o->progress, "plain"))
        return qs_error_set(err, QS_ERR_INPUT, "--progress: expected auto, live or plain, got '%s'", o->progress);
    if (strcmp(o->checkpoint_format, "gptq") && strcmp(o->checkpoint_format, "gptq_v2"))
        return qs_error_set(err, QS_ERR_INPUT, "--checkpoint-format: expected gptq or gptq_v2, got '%s'",
                            o->checkpoint_format);
    return QS_OK;
}

void qs_run_options_visit(const qs_run_options *o, void (*fn)(void *ctx, const char *key, const char *value),
                          void *ctx)
{
    char buf[64];
    for (const key_def *d = keys; d->name; d++) {
        const char *field = (const char *)o + d->offset;
        const char *v = buf;
        switch (d->kind) {
        case K_PATH:
        case K_STR: v = field; break;
        case K_INT: snprintf(buf, sizeof buf, "%d", *(const int *)field); break;
        case K_BOOL: v = *(const bool *)field ? "true" : "false"; break;
        case K_DOUBLE: snprintf(buf, sizeof buf, "%g", *(const double *)field); break;
        case K_BYTES: snprintf(buf, sizeof buf, "%llu", (unsigned long long)*(const uint64_t *)field); break;
        case K_SPECIAL:
            if (!strcmp(d->name, "method"))
                v = o->method == QS_METHOD_RTN ? "rtn" : o->method == QS_METHOD_GPTQ ? "gptq" : "?";
            else if (!strcmp(d->name, "sym")) v = o->sym ? "true" : "false";
            else if (!strcmp(d->name, "asym")) v = o->sym ? "false" : "true";
            else if (!strcmp(d->name, "schedule")) v = o->schedule == QS_SCHEDULE_EXACT ? "exact" : "pipelined";
            else continue;
            break;
        }
        fn(ctx, d->name, v);
    }
}

void qs_run_options_usage(FILE *f)
{
    for (const key_def *d = keys; d->name; d++) fprintf(f, "  --%s %s\n", d->name, d->help);
}

const char *qs_method_name(qs_method m)
{
    return m == QS_METHOD_GPTQ ? "gptq" : m == QS_METHOD_OMNIQUANT ? "omniquant" : "rtn";
}
