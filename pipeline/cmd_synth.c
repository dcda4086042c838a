/* cmd_synth.c — `qshard synth` (not implemented yet; see the open issues). */
#include "pipeline/cli.h"

int qs_cmd_synth(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return qs_cli_usage_error("synth", "not implemented yet");
}
