/* cmd_run.c — `qshard run` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("run", "not implemented yet");
}
