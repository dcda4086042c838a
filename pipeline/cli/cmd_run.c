/* cmd_run.c — `qshard run`: quantize a model, layer-wise across MPI ranks. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <string.h>

#include "pipeline/cli/cli.h"
#include "pipeline/run.h"

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
    int code = 0;
    if (st != QS_OK) {
        /* every rank parsed the same argv: one message is enough */
        code = comm.rank == 0 ? qs_cli_report("run", &err) : qs_status_exit_code(st);
        qs_comm_mpi_finalize(&comm);
        return code;
    }
    /* Each rank's device; agreed by all ranks before anything is read. */
    qs_device_choice dev;
    code = qs_cli_device("run", o.device, &comm, false, &dev);
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
    st = qs_run(&o, &comm, &g_stop, &err);
    if (st == QS_ERR_INTERRUPTED) {
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
    }
    qs_comm_mpi_finalize(&comm);
    return code;
}
