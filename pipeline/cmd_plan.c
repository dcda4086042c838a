/* cmd_plan.c — `qshard plan` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_plan(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("plan", "not implemented yet");
}
