/* cmd_eval.c — `qshard eval` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("eval", "not implemented yet");
}
