/* cmd_inspect.c — `qshard inspect` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_inspect(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("inspect", "not implemented yet");
}
