/* cmd_tokenize.c — `qshard tokenize` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("tokenize", "not implemented yet");
}
