/* cmd_layer.c — `qshard layer` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_layer(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("layer", "not implemented yet");
}
