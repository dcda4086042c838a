/* cmd_status.c — `qshard status` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_status(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("status", "not implemented yet");
}
