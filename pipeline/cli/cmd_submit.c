/* cmd_submit.c — `qshard submit JOB_FILE [...]`: the run as a Slurm job.
 *
 * Writes WORK/qshard.sbatch (from slurm/qshard.sbatch) durably, submits it
 * with sbatch once per job of --chain K (all linked by
 * --dependency=singleton under one job name), prints the job ids and records
 * them in WORK/slurm_submitted. --dry-run prints the script and touches
 * nothing. The batch script runs `qshard run` with the same job file and
 * flags, so the run sees exactly the options given here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/cli/cli.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/run_options.h"
#include "pipeline/submit.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard submit JOB_FILE [--nodes N] [--gpus-per-node G] [--tasks-per-node T]\n"
            "                     [--cpus-per-task C] [--time HH:MM:SS] [--partition P] [--account A]\n"
            "                     [--chain K] [--signal-grace S] [--dry-run] [--template FILE] [--flag value ...]\n\n"
            "Submits the run to Slurm: writes WORK/qshard.sbatch, calls sbatch and prints the job id.\n"
            "One rank per GPU (tasks-per-node ranks on CPU-only nodes). USR1 arrives S seconds before\n"
            "the time limit; the ranks stop at the next block boundary and the job requeues itself and\n"
            "resumes. --chain K submits K jobs run one after the other (--dependency=singleton) for\n"
            "clusters whose time limit is shorter than the run. Flags override the job file's keys\n"
            "(its [slurm] section for the Slurm ones) and are passed on to `qshard run`.\n\n"
            "  --dry-run        print the batch script; submit nothing, write nothing\n"
            "  --template FILE  the batch script template (default: slurm/qshard.sbatch next to the build)\n\n"
            "Environment: QS_SBATCH (the sbatch program), QS_SBATCH_TEMPLATE, QS_LAUNCHER in the job\n"
            "(srun-pmix|mpirun|srun-pmi2). See docs/slurm.md.\n\n"
            "run options:\n");
    qs_run_options_usage(f);
}

/* The work dir, absolute and (when it exists) canonical, so that every
 * spelling of one dir gives the same job name. A dir that is not there yet
 * (--dry-run) is resolved from its longest existing prefix, "." and ".."
 * applied to the rest (qs_path_resolve: no fixed-size table of components). */
static qs_status absolute_work(const qs_run_options *o, const char *cwd, char *out, size_t n, qs_error *err)
{
    char joined[QS_PATH_MAX * 2];
    if (o->work[0] == '/') snprintf(joined, sizeof joined, "%s", o->work);
    else snprintf(joined, sizeof joined, "%s/%s", cwd, o->work);
    if (qs_path_resolve(joined, out, n, err) != QS_OK)
        return qs_error_set(err, QS_ERR_INPUT, "--work: %.100s...: the absolute path is too long (at most %zu bytes)",
                            o->work, n - 1);
    return QS_OK;
}

/* Flags that only shape the Slurm job; `qshard run` does not need them. */
static bool slurm_only_flag(const char *arg, bool *takes_value)
{
    static const char *keys[] = {"nodes", "gpus-per-node", "tasks-per-node", "cpus-per-task", "time",
                                 "partition", "account", "chain", "signal-grace"};
    if (strncmp(arg, "--", 2) != 0) return false;
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strlen(keys[i]) != len) continue;
        bool same = true;
        for (size_t j = 0; j < len && same; j++) same = (name[j] == '_' ? '-' : name[j]) == keys[i][j];
        if (same) {
            *takes_value = eq == NULL;
            return true;
        }
    }
    return false;
}

int qs_cmd_submit(int argc, char **argv)
{
    if (qs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    qs_error err = {0};
    /* split off submit's own flags; the rest is what `qshard run` gets */
    bool dry_run = false;
    const char *template_path = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    char **run_args = calloc((size_t)argc + 1, sizeof *run_args);
    char *job_abs = NULL;
    char *script = NULL;
    char *tmpl = NULL;
    int code = 0;
    if (!rest || !run_args) {
        code = qs_cli_report("submit", &(qs_error){QS_ERR_NOMEM, "out of memory"});
        goto done;
    }
    int nrest = 0;
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dry-run")) {
            dry_run = true;
        } else if (!strcmp(argv[i], "--template")) {
            if (i + 1 >= argc) {
                code = qs_cli_usage_error("submit", "--template needs a file");
                goto done;
            }
            template_path = argv[++i];
        } else if (!strncmp(argv[i], "--template=", 11)) {
            template_path = argv[i] + 11;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    qs_run_options o;
    qs_run_options_default(&o);
    if (qs_run_options_parse_argv(&o, nrest, rest, &err) != QS_OK ||
        qs_run_options_validate(&o, &err) != QS_OK) {
        code = qs_cli_report("submit", &err);
        goto done;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) {
        qs_error_set(&err, QS_ERR_IO, "getcwd: %s", strerror(errno));
        code = qs_cli_report("submit", &err);
        goto done;
    }
    /* `qshard run` gets the job file by its absolute path and the same flags */
    int nrun = 0;
    int first_flag = 1;
    if (o.job_file[0]) {
        job_abs = realpath(o.job_file, NULL);
        if (!job_abs) {
            qs_error_set(&err, QS_ERR_INPUT, "%s: cannot resolve the job file: %s", o.job_file, strerror(errno));
            code = qs_cli_report("submit", &err);
            goto done;
        }
        run_args[nrun++] = job_abs;
        first_flag = 2;
    }
    for (int i = first_flag; i < nrest; i++) {
        bool takes_value = false;
        if (slurm_only_flag(rest[i], &takes_value)) {
            i += takes_value;
            continue;
        }
        run_args[nrun++] = rest[i];
    }

    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        qs_error_set(&err, QS_ERR_IO, "/proc/self/exe: %s", strerror(errno));
        code = qs_cli_report("submit", &err);
        goto done;
    }
    exe[len] = '\0';

    if (!dry_run) {
        /* the work dir must exist to hold the script and Slurm's logs */
        char work0[QS_PATH_MAX];
        if (absolute_work(&o, cwd, work0, sizeof work0, &err) != QS_OK || qs_mkdir_p(work0, &err) != QS_OK) {
            code = qs_cli_report("submit", &err);
            goto done;
        }
    }
    char work_abs[QS_PATH_MAX];
    if (absolute_work(&o, cwd, work_abs, sizeof work_abs, &err) != QS_OK) {
        code = qs_cli_report("submit", &err);
        goto done;
    }
    snprintf(o.work, sizeof o.work, "%s", work_abs);

    qs_sbatch_fields f;
    char tpath[PATH_MAX];
    size_t tlen = 0;
    if (qs_submit_fields_from_options(&o, exe, cwd, run_args, nrun, &f, &err) != QS_OK ||
        qs_submit_find_template(template_path, tpath, sizeof tpath, &err) != QS_OK ||
        qs_read_file(tpath, &tmpl, &tlen, &err) != QS_OK || qs_submit_render(tmpl, tpath, &f, &script, &err) != QS_OK) {
        code = qs_cli_report("submit", &err);
        goto done;
    }
    if (dry_run) {
        fputs(script, stdout);
        goto done;
    }

    char path[QS_PATH_MAX + 64];
    /* a finished earlier run of this work dir must not make the new jobs exit at once */
    snprintf(path, sizeof path, "%s/slurm_done", f.work);
    if (qs_path_exists(path) && (unlink(path) != 0 || qs_fsync_dir_of(path, &err) != QS_OK)) {
        if (!err.msg[0]) qs_error_set(&err, QS_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
        code = qs_cli_report("submit", &err);
        goto done;
    }
    char script_path[QS_PATH_MAX + 64];
    snprintf(script_path, sizeof script_path, "%s/qshard.sbatch", f.work);
    if (qs_write_file_durable(script_path, script, strlen(script), &err) != QS_OK) {
        code = qs_cli_report("submit", &err);
        goto done;
    }
    int chain = o.slurm.chain > 0 ? o.slurm.chain : 1;
    char ids[4096] = "";
    size_t ids_len = 0;
    for (int i = 1; i <= chain; i++) {
        char id[64];
        if (qs_submit_sbatch(script_path, i, chain, true, id, sizeof id, &err) != QS_OK) {
            if (i > 1) qs_error_prefix(&err, "job %d of the chain (jobs %.*s already submitted)", i,
                                       (int)(ids_len ? ids_len - 1 : 0), ids);
            code = qs_cli_report("submit", &err);
            break;
        }
        printf("%s\n", id);
        fflush(stdout);
        int w = snprintf(ids + ids_len, sizeof ids - ids_len, "%s\n", id);
        if (w > 0 && (size_t)w < sizeof ids - ids_len) ids_len += (size_t)w;
    }
    if (ids_len) {
        /* `qshard status` shows these until the job itself records its id */
        snprintf(path, sizeof path, "%s/slurm_submitted", f.work);
        qs_error werr = {0};
        if (qs_write_file_durable(path, ids, ids_len, &werr) != QS_OK && code == 0)
            code = qs_cli_report("submit", &werr);
    }

done:
    free(script);
    free(tmpl);
    free(job_abs);
    free(rest);
    free(run_args);
    return code;
}
