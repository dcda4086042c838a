/* submit.c — Slurm submission: render slurm/qshard.sbatch, find it, call sbatch. */
#define _GNU_SOURCE
#include "pipeline/submit.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/strbuf.h"

extern char **environ;

/* ---- fields ------------------------------------------------------------------ */

/* What may stand in an #SBATCH line unquoted: sbatch splits them on blanks,
 * and %-sequences in --output are expanded (%j, %u ...). */
static bool sbatch_safe(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s) || *s == '"' || *s == '\'' || *s == '\\' || *s == '%' || *s == '`' ||
            *s == '$')
            return false;
    return true;
}

static bool time_ok(const char *t)
{
    if (!strcasecmp(t, "UNLIMITED") || !strcasecmp(t, "infinite")) return true;
    if (!*t || !isdigit((unsigned char)t[0])) return false;
    for (; *t; t++)
        if (!isdigit((unsigned char)*t) && *t != ':' && *t != '-') return false;
    return true;
}

void qs_submit_job_name(const char *work_abs, char *out, size_t n)
{
    const char *slash = strrchr(work_abs, '/');
    const char *base = slash && slash[1] ? slash + 1 : work_abs;
    char clean[64];
    size_t k = 0;
    for (const char *p = base; *p && k + 1 < sizeof clean; p++)
        clean[k++] = isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.' ? *p : '_';
    clean[k] = '\0';
    unsigned h = (unsigned)(XXH64(work_abs, strlen(work_abs), 0) & 0xffffffffu);
    snprintf(out, n, "qshard-%s-%08x", clean, h);
}

qs_status qs_submit_fields_from_options(const qs_run_options *o, const char *qshard, const char *submit_dir,
                                        char *const *run_args, int n_run_args, qs_sbatch_fields *f,
                                        qs_error *err)
{
    memset(f, 0, sizeof *f);
    const qs_slurm_options *s = &o->slurm;
    if (!o->work[0]) return qs_error_set(err, QS_ERR_INPUT, "--work is required (the run's work directory)");
    int n;
    if (o->work[0] == '/') n = snprintf(f->work, sizeof f->work, "%s", o->work);
    else n = snprintf(f->work, sizeof f->work, "%s/%s", submit_dir, o->work);
    if (n < 0 || (size_t)n >= sizeof f->work) return qs_error_set(err, QS_ERR_INPUT, "--work: path too long");
    /* "a/b/" and "a/b" are the same work dir (and the same job name) */
    for (size_t len = strlen(f->work); len > 1 && f->work[len - 1] == '/'; len--) f->work[len - 1] = '\0';
    if (!sbatch_safe(f->work))
        return qs_error_set(err, QS_ERR_INPUT,
                            "--work '%s': the work dir goes into #SBATCH --output; use a path without blanks, "
                            "quotes, '$', '%%' or '\\'",
                            f->work);
    if (!time_ok(s->time))
        return qs_error_set(err, QS_ERR_INPUT, "--time: expected [D-]HH:MM:SS, MM or UNLIMITED, got '%s'", s->time);
    if (!sbatch_safe(s->partition))
        return qs_error_set(err, QS_ERR_INPUT, "--partition: '%s' has blanks or quotes", s->partition);
    if (!sbatch_safe(s->account))
        return qs_error_set(err, QS_ERR_INPUT, "--account: '%s' has blanks or quotes", s->account);
    if (strchr(s->extra, '\n'))
        return qs_error_set(err, QS_ERR_INPUT, "[slurm] extra: one line, options separated by ';'");
    if (s->nodes < 1) return qs_error_set(err, QS_ERR_INPUT, "--nodes: expected at least 1, got %d", s->nodes);
    if (s->cpus_per_task < 1)
        return qs_error_set(err, QS_ERR_INPUT, "--cpus-per-task: expected at least 1, got %d", s->cpus_per_task);
    qs_submit_job_name(f->work, f->job_name, sizeof f->job_name);
    f->nodes = s->nodes;
    f->gpus_per_node = s->gpus_per_node;
    /* one rank per GPU; CPU-only nodes: tasks-per-node ranks (default 1) */
    f->tasks_per_node = s->tasks_per_node > 0 ? s->tasks_per_node : (s->gpus_per_node > 0 ? s->gpus_per_node : 1);
    f->cpus_per_task = s->cpus_per_task;
    f->grace_s = s->signal_grace_s;
    snprintf(f->time, sizeof f->time, "%s", s->time);
    snprintf(f->partition, sizeof f->partition, "%s", s->partition);
    snprintf(f->account, sizeof f->account, "%s", s->account);
    snprintf(f->extra, sizeof f->extra, "%s", s->extra);
    if (snprintf(f->qshard, sizeof f->qshard, "%s", qshard) >= (int)sizeof f->qshard ||
        snprintf(f->submit_dir, sizeof f->submit_dir, "%s", submit_dir) >= (int)sizeof f->submit_dir)
        return qs_error_set(err, QS_ERR_INPUT, "path too long");
    f->run_args = run_args;
    f->n_run_args = n_run_args;
    return QS_OK;
}

char *qs_submit_shell_quote(const char *s)
{
    qs_strbuf b = {0};
    qs_strbuf_str(&b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'') qs_strbuf_str(&b, "'\\''");
        else qs_strbuf_put(&b, p, 1);
    }
    qs_strbuf_str(&b, "'");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static bool sb_quoted(qs_strbuf *b, const char *s)
{
    char *q = qs_submit_shell_quote(s);
    if (!q) return false;
    qs_strbuf_str(b, q);
    free(q);
    return true;
}

static void optional_lines(qs_strbuf *b, const qs_sbatch_fields *f)
{
    if (f->gpus_per_node > 0)
        qs_strbuf_fmt(b, "#SBATCH --gpus-per-node=%d\n#   (one rank per GPU: the ranks pick their GPU by local rank)",
               f->gpus_per_node);
    else
        qs_strbuf_str(b, "#   (no --gpus-per-node: CPU ranks)");
    if (f->partition[0]) qs_strbuf_fmt(b, "\n#SBATCH --partition=%s", f->partition);
    else qs_strbuf_str(b, "\n#   (no --partition: the cluster's default)");
    if (f->account[0]) qs_strbuf_fmt(b, "\n#SBATCH --account=%s", f->account);
    else qs_strbuf_str(b, "\n#   (no --account: your default)");
    /* [slurm] extra = "--constraint=h100; --qos=high" */
    const char *p = f->extra;
    while (*p) {
        while (*p == ';' || isspace((unsigned char)*p)) p++;
        const char *e = p;
        while (*e && *e != ';') e++;
        const char *t = e;
        while (t > p && isspace((unsigned char)t[-1])) t--;
        if (t > p) {
            qs_strbuf_str(b, "\n#SBATCH ");
            qs_strbuf_put(b, p, (size_t)(t - p));
        }
        p = e;
    }
}

static bool render_field(qs_strbuf *b, const char *name, size_t len, const qs_sbatch_fields *f)
{
#define IS(x) (len == strlen(x) && !strncmp(name, x, len))
    if (IS("JOB_NAME")) qs_strbuf_str(b, f->job_name);
    else if (IS("NODES")) qs_strbuf_fmt(b, "%d", f->nodes);
    else if (IS("TASKS_PER_NODE")) qs_strbuf_fmt(b, "%d", f->tasks_per_node);
    else if (IS("CPUS_PER_TASK")) qs_strbuf_fmt(b, "%d", f->cpus_per_task);
    else if (IS("GPUS_PER_NODE")) qs_strbuf_fmt(b, "%d", f->gpus_per_node);
    else if (IS("TIME")) qs_strbuf_str(b, f->time);
    else if (IS("GRACE")) qs_strbuf_fmt(b, "%d", f->grace_s);
    else if (IS("WORK")) qs_strbuf_str(b, f->work);
    else if (IS("SBATCH_OPTIONAL")) optional_lines(b, f);
    else if (IS("QSHARD_Q")) return sb_quoted(b, f->qshard);
    else if (IS("SUBMIT_DIR_Q")) return sb_quoted(b, f->submit_dir);
    else if (IS("WORK_Q")) return sb_quoted(b, f->work);
    else if (IS("RUN_ARGS_Q")) {
        for (int i = 0; i < f->n_run_args; i++) {
            if (i) qs_strbuf_str(b, " ");
            if (!sb_quoted(b, f->run_args[i])) return false;
        }
    } else
        return false;
    return true;
#undef IS
}

qs_status qs_submit_render(const char *tmpl, const char *template_name, const qs_sbatch_fields *f,
                           char **script, qs_error *err)
{
    *script = NULL;
    qs_strbuf b = {0};
    const char *p = tmpl;
    int line = 1;
    for (;;) {
        const char *open = strstr(p, "{{");
        if (!open) {
            qs_strbuf_str(&b, p);
            break;
        }
        for (const char *q = p; q < open; q++) line += *q == '\n';
        qs_strbuf_put(&b, p, (size_t)(open - p));
        const char *name = open + 2;
        const char *close = strstr(name, "}}");
        const char *nl = strchr(name, '\n');
        if (!close || (nl && nl < close)) {
            free(b.p);
            return qs_error_set(err, QS_ERR_INPUT, "%s:%d: '{{' without '}}' on the same line", template_name, line);
        }
        size_t len = (size_t)(close - name);
        if (!render_field(&b, name, len, f)) {
            free(b.p);
            if (b.oom) return qs_error_set(err, QS_ERR_NOMEM, "%s: rendering the batch script", template_name);
            return qs_error_set(err, QS_ERR_INPUT, "%s:%d: unknown field {{%.*s}}", template_name, line, (int)len,
                                name);
        }
        p = close + 2;
    }
    if (b.oom || !b.p) {
        free(b.p);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: rendering the batch script", template_name);
    }
    *script = b.p;
    return QS_OK;
}

/* ---- finding the template ---------------------------------------------------- */

qs_status qs_submit_find_template(const char *explicit_path, char *out, size_t n, qs_error *err)
{
    if (explicit_path && *explicit_path) {
        if (!qs_path_exists(explicit_path))
            return qs_error_set(err, QS_ERR_INPUT, "--template %s: no such file", explicit_path);
        snprintf(out, n, "%s", explicit_path);
        return QS_OK;
    }
    const char *env = getenv("QS_SBATCH_TEMPLATE");
    if (env && *env) {
        if (!qs_path_exists(env)) return qs_error_set(err, QS_ERR_INPUT, "QS_SBATCH_TEMPLATE=%s: no such file", env);
        snprintf(out, n, "%s", env);
        return QS_OK;
    }
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return qs_error_set(err, QS_ERR_IO, "/proc/self/exe: cannot find the qshard binary: %s", strerror(errno));
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    /* a build dir inside the source tree, an install prefix, next to the binary */
    const char *rel[] = {"../slurm/qshard.sbatch", "../share/qshard/qshard.sbatch", "qshard.sbatch"};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        char cand[PATH_MAX + 64];
        snprintf(cand, sizeof cand, "%s/%s", exe, rel[i]);
        if (qs_path_exists(cand)) {
            snprintf(out, n, "%s", cand);
            return QS_OK;
        }
    }
    return qs_error_set(err, QS_ERR_INPUT,
                        "cannot find the batch script template (looked for %s/../slurm/qshard.sbatch and "
                        "%s/../share/qshard/qshard.sbatch); pass --template slurm/qshard.sbatch or set QS_SBATCH_TEMPLATE",
                        exe, exe);
}

/* ---- sbatch -------------------------------------------------------------------- */

/* Reads both pipes to EOF (poll: neither can fill up while we wait on the other). */
static void drain(int out_fd, int err_fd, qs_strbuf *out, qs_strbuf *errb)
{
    struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
    int open_n = 2;
    while (open_n > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r > 0) {
                qs_strbuf_put(i == 0 ? out : errb, buf, (size_t)r);
            } else if (r == 0 || errno != EINTR) {
                fds[i].fd = -1;
                open_n--;
            }
        }
    }
}

/* sbatch's stderr as one line: newlines become "; ", blanks trimmed. */
static void one_line(char *s)
{
    if (!s) return;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1])) s[--len] = '\0';
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ';';
}

qs_status qs_submit_sbatch(const char *script_path, int chain_index, int chain_total, bool singleton,
                           char *job_id, size_t n, qs_error *err)
{
    const char *prog = getenv("QS_SBATCH");
    if (!prog || !*prog) prog = "sbatch";
    char idx[16], total[16];
    snprintf(idx, sizeof idx, "%d", chain_index);
    snprintf(total, sizeof total, "%d", chain_total);
    char *argv[8];
    int a = 0;
    argv[a++] = (char *)prog;
    argv[a++] = "--parsable";
    if (singleton) argv[a++] = "--dependency=singleton";
    argv[a++] = (char *)script_path;
    argv[a++] = idx;
    argv[a++] = total;
    argv[a] = NULL;

    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0) return qs_error_set(err, QS_ERR_IO, "pipe: %s", strerror(errno));
    if (pipe2(pe, O_CLOEXEC) != 0) {
        close(po[0]);
        close(po[1]);
        return qs_error_set(err, QS_ERR_IO, "pipe: %s", strerror(errno));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        if (rc == ENOENT)
            return qs_error_set(err, QS_ERR_INPUT,
                                "%s: not found: Slurm's sbatch is needed to submit (install Slurm's client "
                                "commands, or set QS_SBATCH to sbatch's path)",
                                prog);
        return qs_error_set(err, QS_ERR_INPUT, "%s: cannot run it: %s", prog, strerror(rc));
    }
    qs_strbuf out = {0}, errb = {0};
    drain(po[0], pe[0], &out, &errb);
    close(po[0]);
    close(pe[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    qs_status st = QS_OK;
    one_line(errb.p);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFEXITED(status))
            st = qs_error_set(err, QS_ERR_INPUT, "%s %s failed (exit %d): %s", prog, script_path, WEXITSTATUS(status),
                              errb.p && *errb.p ? errb.p : "(no message)");
        else
            st = qs_error_set(err, QS_ERR_INPUT, "%s %s was killed by signal %d: %s", prog, script_path,
                              WTERMSIG(status), errb.p && *errb.p ? errb.p : "(no message)");
    } else {
        /* --parsable: "JOBID" or "JOBID;CLUSTER" */
        const char *s = out.p ? out.p : "";
        while (isspace((unsigned char)*s)) s++;
        size_t k = 0;
        while (isdigit((unsigned char)s[k])) k++;
        if (k == 0 || k >= n || (s[k] && s[k] != ';' && !isspace((unsigned char)s[k]))) {
            char *o = out.p;
            one_line(o);
            st = qs_error_set(err, QS_ERR_INPUT, "%s %s: expected a job id from --parsable, got '%s' %s", prog,
                              script_path, o ? o : "", errb.p ? errb.p : "");
        } else {
            memcpy(job_id, s, k);
            job_id[k] = '\0';
        }
    }
    free(out.p);
    free(errb.p);
    return st;
}
