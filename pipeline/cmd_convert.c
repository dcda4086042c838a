/* cmd_convert.c — `qshard convert` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_convert(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("convert", "not implemented yet");
}
