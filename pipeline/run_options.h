/* run_options.h — everything that defines a quantization run, from flags
 * and/or a job file.
 *
 * Job files are INI (libinih). Keys are the long flag names (with '-' or '_'),
 * e.g. `bits = 4`, `group-size = 128`, `act-order = true`; sections group
 * keys for readers ([model], [calibration], [quantization], [run], [output])
 * and do not change meaning, except [slurm], which holds `qshard submit`'s
 * options. Relative paths in a job file are relative to the job file's
 * directory. Flags given on the command line override the file.
 */
#ifndef QS_RUN_OPTIONS_H
#define QS_RUN_OPTIONS_H

#include <limits.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernels/status.h"
#include "schedulers/cost_model.h"

#define QS_PATH_MAX 4096

typedef enum qs_method { QS_METHOD_RTN = 0, QS_METHOD_GPTQ, QS_METHOD_OMNIQUANT } qs_method;
/* The method's name as the command line and the job file spell it ("rtn", "gptq", "omniquant"). */
const char *qs_method_name(qs_method m);

typedef struct qs_slurm_options {
    int nodes;
    int gpus_per_node;
    int cpus_per_task;
    int tasks_per_node;     /* 0: gpus_per_node (one rank per GPU), 1 on CPU-only nodes */
    char time[32];
    char partition[128];
    char account[128];
    int chain;
    int signal_grace_s;     /* --signal=B:USR1@grace */
    char extra[512];        /* extra #SBATCH lines, ';'-separated */
} qs_slurm_options;

typedef struct qs_run_options {
    char job_file[QS_PATH_MAX];
    char model[QS_PATH_MAX];
    char model_file[256];   /* a single .safetensors inside model (default: model.safetensors / index) */
    char calib[QS_PATH_MAX];
    char work[QS_PATH_MAX];
    char out[QS_PATH_MAX];
    /* quantization (every field here changes the numbers: all go into the fingerprint) */
    qs_method method;
    int bits;
    int group_size;         /* -1: per output channel */
    bool sym;
    bool act_order;
    bool static_groups;
    bool true_sequential;
    bool mse;
    bool rtn_baseline;      /* report RTN's loss next to GPTQ's (does not change the numbers) */
    double damp;
    int block_size;
    int calib_rows;         /* use the first N rows of the calibration set (0: all) */
    char compute_dtype[8];  /* "auto", "f32" or "bf16": the forwards' GEMMs and Hessians (the solve is f32) */
    /* OmniQuant (docs/omniquant.md) */
    int epochs;             /* 0: the default, 20 (40 at 2 bits) */
    bool lwc;               /* learnable weight clipping (default on) */
    bool let;               /* learnable equivalent transformation (default off) */
    double lwc_lr, let_lr;  /* 5e-3, 1e-2 */
    int omni_batch;         /* calibration rows per step (1) */
    int omni_seed;          /* row order per block and epoch (0) */
    bool omni_cosine;       /* cosine learning-rate decay over each block's steps (default on) */
    /* run */
    char device[8];         /* "cpu", "cuda" or "auto" (kernels/device.h; docs/gpu.md) */
    char transport[8];      /* "auto", "mpi" or "nccl": how activations move between GPUs (docs/gpu.md) */
    qs_schedule_kind schedule;
    int micro_batch;
    int replicas;           /* data-parallel replicas per stage; 0: not given (the plan chooses; run: 1) */
    double link_gbps;       /* planning: Gbit/s per rank between nodes (qshard plan JOB_FILE) */
    double intra_node_gbps; /* planning: Gbit/s per rank within a node */
    double heartbeat_timeout; /* seconds of silence after which a peer rank is lost (0: no heartbeat) */
    bool json;
    bool force_resume;
    bool quiet;             /* print nothing but warnings and errors */
    char progress[8];       /* "auto", "live" or "plain" (pipeline/progress.h) */
    char log_json[QS_PATH_MAX]; /* also write the event stream (JSON lines) here; "" none */
    /* output */
    char checkpoint_format[16]; /* "gptq" (v1) or "gptq_v2" */
    uint64_t max_shard_size;
    char formats[64];       /* comma list: gptq,gguf,hdf5 */
    char gguf_fallback[8];  /* "none" or "f16" */
    qs_slurm_options slurm;
    /* not an option: the command line that started the run, for the report (owned by the caller; may be NULL) */
    const char *command_line;
} qs_run_options;

void qs_run_options_default(qs_run_options *o);

/* Sets one option by its long name ("group-size" or "group_size"), value as
 * text ("true"/"false" for switches). base_dir resolves relative paths (NULL:
 * as given). */
qs_status qs_run_options_set(qs_run_options *o, const char *key, const char *value, const char *base_dir,
                             qs_error *err);

/* Reads a job file (INI): a regular text file of at most 1 MiB; every line a
 * [section], a `key = value` or a comment. An indented line never continues
 * the previous value, a key given twice (sym/asym count as one) and a line
 * that is none of these are errors naming the file and the line. */
qs_status qs_run_options_load_job(qs_run_options *o, const char *path, qs_error *err);
/* The same from memory (len bytes; the fuzz target calls it): path names the
 * file in messages, base_dir resolves relative paths (NULL: as given). */
qs_status qs_run_options_parse_job(qs_run_options *o, const char *text, size_t len, const char *path,
                                   const char *base_dir, qs_error *err);

/* `qshard run|submit [JOB_FILE] [--flag value ...]`: argv[0] is the command.
 * A positional JOB_FILE is loaded first, then flags override it. */
qs_status qs_run_options_parse_argv(qs_run_options *o, int argc, char **argv, qs_error *err);

/* The epochs an OmniQuant run trains per block (the default depends on bits). */
int qs_run_options_epochs(const qs_run_options *o);

/* Checks required fields and consistency (bits, group size, paths). */
qs_status qs_run_options_validate(const qs_run_options *o, qs_error *err);

/* Calls fn with every option's long name and its value as text (the run
 * report lists them); switches give "true"/"false". */
void qs_run_options_visit(const qs_run_options *o, void (*fn)(void *ctx, const char *key, const char *value),
                          void *ctx);

/* The flags, for --help. */
void qs_run_options_usage(FILE *f);

#endif
