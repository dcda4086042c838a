/* cmd_report.c — `qshard report WORKDIR [--out FILE]`: the run report
 * (report.html) of a work dir, finished or not (pipeline/report.h). */
#include <getopt.h>
#include <stdio.h>

#include "pipeline/cli/cli.h"
#include "pipeline/report.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: qshard report WORKDIR [--out FILE]\n\n"
               "Writes the run report of a work dir — finished, interrupted or still running — as one\n"
               "self-contained HTML file: per-layer loss against RTN, a timeline per rank, peak memory\n"
               "against the plan, the eval table (qshard eval --report), options, fingerprint, versions\n"
               "and the command line. A run writes it by itself at the end, to OUT/report.html.\n\n"
               "  --out FILE   where to write it (default: the run's --out dir/report.html,\n"
               "               or WORKDIR/report.html when that dir is gone)\n");
}

int qs_cmd_report(int argc, char **argv)
{
    if (qs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0}};
    const char *out = NULL;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case ':': return qs_cli_usage_error("report", "%s needs a value", argv[optind - 1]);
        default: return qs_cli_usage_error("report", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return qs_cli_usage_error("report", "WORKDIR is required");
    if (optind + 1 < argc) return qs_cli_usage_error("report", "unexpected argument '%s'", argv[optind + 1]);
    qs_error err;
    qs_error_clear(&err);
    char written[4200];
    if (qs_report_generate(argv[optind], out, written, sizeof written, &err) != QS_OK)
        return qs_cli_report("report", &err);
    printf("%s\n", written);
    return 0;
}
