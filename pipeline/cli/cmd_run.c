/* cmd_run.c — `qshard run`: quantize a model, layer-wise across MPI ranks. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>

#include "pipeline/formats/strbuf.h"
#include "pipeline/cli/cli.h"
#include "pipeline/run.h"
#include "workers/heartbeat.h"

/* SIGTERM/SIGUSR1: stop at the next block boundary (exit 3, resumable).
 * A second signal exits at once: every write in the work dir is atomic
 * (temp + rename), so what is there stays consistent. */
static volatile int g_stop;
static volatile sig_atomic_t g_signals;

static void on_signal(int sig)
{
    (void)sig;
    if (++g_signals >= 2) _exit(3);
    g_stop = 1;
}

/* The command line as a shell would take it back (for the report): words
 * with anything but safe characters in single quotes. */
static char *command_line(int argc, char **argv)
{
    qs_strbuf b = {0};
    qs_strbuf_str(&b, "qshard");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool plain = *a != '\0';
        for (const char *p = a; *p; p++)
            plain &= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                     strchr("-_./=:,+@%", *p) != NULL;
        qs_strbuf_str(&b, " ");
        if (plain) {
            qs_strbuf_str(&b, a);
            continue;
        }
        qs_strbuf_str(&b, "'");
        for (const char *p = a; *p; p++) {
            if (*p == '\'') qs_strbuf_str(&b, "'\\''");
            else qs_strbuf_put(&b, p, 1);
        }
        qs_strbuf_str(&b, "'");
    }
    if (b.oom) {
        qs_strbuf_free(&b);
        return NULL;
    }
    return b.p;
}

/* A peer rank is lost (its host died or is unreachable): from the heartbeat
 * thread, wherever the main thread is. One line, then exit 3 at once: every
 * write in the work dir is atomic, so the same command resumes. */
static int g_rank;
static char g_work[QS_PATH_MAX];

static void on_peer_lost(int lost_rank, const char *what, void *ctx)
{
    (void)lost_rank;
    (void)ctx;
    char line[QS_PATH_MAX + 512];
    int n = snprintf(line, sizeof line,
                     "qshard run: error: rank %d lost %s; finished blocks are checkpointed in %s: run the same "
                     "command again to resume\n",
                     g_rank, what, g_work);
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    /* The main thread may be inside MPI, whose transport is failing too and
     * prints its own complaints: silence stdout/stderr first, so that this
     * line is the last one the operator sees from this rank. */
    int keep = dup(STDERR_FILENO);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
    }
    if (write(keep >= 0 ? keep : STDERR_FILENO, line, (size_t)n) < 0) { /* nothing left to tell */
    }
    _exit(3);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: [mpirun -np P] qshard run [JOB_FILE] [--flag value ...]\n\n"
               "Quantizes --model with --calib tokens into --out (a GPTQ safetensors directory),\n"
               "keeping its state in --work. Flags override the job file's keys.\n\n");
    qs_run_options_usage(f);
}

int qs_cmd_run(int argc, char **argv)
{
    if (qs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    qs_comm_i comm;
    qs_error err = {0};
    if (qs_comm_mpi_init(&argc, &argv, &comm, &err) != QS_OK) return qs_cli_report("run", &err);
    qs_run_options o;
    qs_run_options_default(&o);
    qs_status st = qs_run_options_parse_argv(&o, argc, argv, &err);
    char *cmdline = command_line(argc, argv);
    o.command_line = cmdline;
    int code = 0;
    if (st != QS_OK) {
        /* every rank parsed the same argv: one message is enough */
        code = comm.rank == 0 ? qs_cli_report("run", &err) : qs_status_exit_code(st);
        free(cmdline);
        qs_comm_mpi_finalize(&comm);
        return code;
    }
    /* Each rank's device; agreed by all ranks before anything is read. */
    qs_device_choice dev;
    code = qs_cli_device("run", o.device, &comm, true, &dev);
    if (code >= 0) {
        qs_comm_mpi_finalize(&comm);
        return code;
    }
    code = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    if (comm.size > 1 && o.heartbeat_timeout > 0) {
        g_rank = comm.rank;
        snprintf(g_work, sizeof g_work, "%s", o.work[0] ? o.work : "the work dir");
        qs_heartbeat_opts ho;
        qs_heartbeat_opts_default(&ho);
        ho.timeout_s = o.heartbeat_timeout;
        if (qs_heartbeat_start(&comm, &ho, on_peer_lost, NULL, &err) != QS_OK) {
            code = comm.rank == 0 ? qs_cli_report("run", &err) : qs_status_exit_code(err.code);
            qs_comm_mpi_finalize(&comm);
            return code ? code : 1;
        }
    }
    bool nofit = false;
    /* --device cpu: the run as it always was (no device agreement, no CUDA module) */
    st = qs_run_on(&o, &comm, strcmp(o.device, "cpu") ? &dev : NULL, &g_stop, &nofit, &err);
    if (st == QS_ERR_INTERRUPTED) {
        qs_heartbeat_stop(0);
        /* cancelled transfers may keep MPI_Finalize waiting: leave now, state is durable */
        fflush(stdout);
        fflush(stderr);
        _exit(3);
    }
    if (st != QS_OK) {
        if (comm.size > 1 && !strstr(err.msg, "failed during set-up")) qs_error_prefix(&err, "rank %d", comm.rank);
        /* every rank knows set-up failed; the rank that failed says why */
        if (strstr(err.msg, "failed during set-up") == NULL || comm.size == 1) code = qs_cli_report("run", &err);
        else code = qs_status_exit_code(st) ? qs_status_exit_code(st) : 1;
        if (nofit) code = 4; /* the plan does not fit the GPU's memory (as qshard plan says it) */
    }
    free(cmdline);
    qs_heartbeat_stop(0);
    qs_comm_mpi_finalize(&comm);
    return code;
}
