/* submit.h — Slurm submission: the batch script from slurm/qshard.sbatch and sbatch.
 *
 * `qshard submit` fills the template's {{FIELD}} placeholders from a run's
 * options (the job file's [slurm] section, overridden by flags), writes the
 * script into the work dir and calls `sbatch --parsable` once per job of the
 * chain. The script's signal/requeue protocol is described in the template
 * and in docs/slurm.md.
 */
#ifndef QS_SUBMIT_H
#define QS_SUBMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "kernels/status.h"
#include "pipeline/run_options.h"

/* Everything the template needs, already checked. */
typedef struct qs_sbatch_fields {
    char job_name[160];
    int nodes;
    int tasks_per_node;
    int cpus_per_task;
    int gpus_per_node;
    int grace_s;
    char time[32];
    char partition[128];
    char account[128];
    char extra[512];               /* ';'-separated sbatch options, each becomes an #SBATCH line */
    char work[QS_PATH_MAX];        /* absolute */
    char qshard[QS_PATH_MAX];      /* absolute path of the qshard binary */
    char submit_dir[QS_PATH_MAX];  /* absolute; the job cds here */
    char *const *run_args;         /* `qshard run` arguments (borrowed) */
    int n_run_args;
} qs_sbatch_fields;

/* Fills f from o (work made absolute against submit_dir) and checks what
 * goes into #SBATCH lines: no whitespace or quotes in the work path,
 * partition or account, a time like [D-]HH:MM:SS or minutes. */
qs_status qs_submit_fields_from_options(const qs_run_options *o, const char *qshard, const char *submit_dir,
                                        char *const *run_args, int n_run_args, qs_sbatch_fields *f,
                                        qs_error *err);

/* "qshard-<work dir name>-<8 hex of a hash of the absolute work path>":
 * unique per work dir, so --dependency=singleton chains exactly one run. */
void qs_submit_job_name(const char *work_abs, char *out, size_t n);

/* Single-quotes s for bash ('it'\''s'). Returns malloc'd text (NULL: no memory). */
char *qs_submit_shell_quote(const char *s);

/* Replaces every {{FIELD}} of tmpl; an unknown or unclosed placeholder is an
 * error naming template_name. *script is malloc'd. */
qs_status qs_submit_render(const char *tmpl, const char *template_name, const qs_sbatch_fields *f,
                           char **script, qs_error *err);

/* The template: explicit (if non-NULL), else $QS_SBATCH_TEMPLATE, else
 * <dir of the binary>/../slurm/qshard.sbatch, <dir>/../share/qshard/qshard.sbatch,
 * <dir>/qshard.sbatch. */
qs_status qs_submit_find_template(const char *explicit_path, char *out, size_t n, qs_error *err);

/* Runs `sbatch --parsable [--dependency=singleton] SCRIPT CHAIN_INDEX CHAIN_TOTAL`
 * (the program is $QS_SBATCH when set, else sbatch from PATH) and returns the
 * job id. A missing sbatch or a failing one is QS_ERR_INPUT with sbatch's
 * stderr in the message. */
qs_status qs_submit_sbatch(const char *script_path, int chain_index, int chain_total, bool singleton,
                           char *job_id, size_t n, qs_error *err);

#endif
