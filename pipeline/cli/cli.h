/* cli.h — the `qshard` command table and helpers every subcommand shares.
 *
 * Each subcommand lives in pipeline/cmd_<name>.c and exports
 *   int qs_cmd_<name>(int argc, char **argv);   (argv[0] is the command name)
 * returning the process exit code (0 ok, 2 bad input, 3 interrupted, 1 other).
 * Subcommands parse options with getopt_long and report errors through
 * qs_cli_report(), which prints exactly one line on stderr.
 */
#ifndef QS_CLI_H
#define QS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/status.h"
#include "pipeline/option_parse.h"
#include "workers/device_select.h"

typedef int (*qs_cmd_fn)(int argc, char **argv);

typedef struct qs_command {
    const char *name;
    qs_cmd_fn fn;
    const char *summary;
} qs_command;

/* The table (NULL-terminated), used by main and `qshard --help`. */
extern const qs_command qs_commands[];

int qs_cli_main(int argc, char **argv);

/* Prints "qshard CMD: error: MSG" and returns the exit code for err->code. */
int qs_cli_report(const char *cmd, const qs_error *err);

/* Prints "qshard CMD: error: <formatted>" and returns 2 (usage / bad input). */
int qs_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when argv has -h/--help; callers then print their usage and return 0. */
bool qs_cli_wants_help(int argc, char **argv);

/* Resolves `--device VALUE` of cmd for this rank (comm NULL: one process):
 * one GPU per rank by node-local rank (workers/device_select.h). gpu_ready
 * says whether cmd computes on a GPU yet: when not, `cuda` is refused once a
 * GPU is found and `auto` takes the CPU (docs/gpu.md). Without any GPU,
 * `cuda` is bad input (exit 2: "no CUDA device was found"). Returns -1 with
 * *out filled, or the exit code after one line on stderr (from one rank). */
int qs_cli_device(const char *cmd, const char *value, const qs_comm_i *comm, bool gpu_ready, qs_device_choice *out);

/* The subcommands. */
int qs_cmd_inspect(int argc, char **argv);
int qs_cmd_synth(int argc, char **argv);
int qs_cmd_convert(int argc, char **argv);
int qs_cmd_layer(int argc, char **argv);
int qs_cmd_tokenize(int argc, char **argv);
int qs_cmd_eval(int argc, char **argv);
int qs_cmd_generate(int argc, char **argv);
int qs_cmd_run(int argc, char **argv);
int qs_cmd_plan(int argc, char **argv);
int qs_cmd_export(int argc, char **argv);
int qs_cmd_submit(int argc, char **argv);
int qs_cmd_status(int argc, char **argv);
int qs_cmd_report(int argc, char **argv);

#endif
