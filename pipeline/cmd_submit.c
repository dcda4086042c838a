/* cmd_submit.c — `qshard submit` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_submit(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("submit", "not implemented yet");
}
