/* main.c — the qshard executable: everything is in libqshard. */
#include "pipeline/cli/cli.h"

int main(int argc, char **argv) { return qs_cli_main(argc, argv); }
