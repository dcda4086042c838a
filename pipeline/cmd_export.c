/* cmd_export.c — `qshard export` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_export(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("export", "not implemented yet");
}
