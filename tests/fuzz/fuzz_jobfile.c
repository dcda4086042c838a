/* fuzz_jobfile.c — libFuzzer target for INI job files
 * (pipeline/run_options.c, through libinih): the input is a job file's text.
 * A file that parses is then validated and its string options must be
 * NUL-terminated inside their buffers; the parser must return an error
 * value, never crash, read out of bounds or leak. The first byte chooses
 * between the job file and a command line (the rest split at NUL bytes into
 * argv), which goes through the same option table.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/run_options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_strings(const qs_run_options *o)
{
    if (!memchr(o->model, 0, sizeof o->model) || !memchr(o->calib, 0, sizeof o->calib) ||
        !memchr(o->work, 0, sizeof o->work) || !memchr(o->out, 0, sizeof o->out) ||
        !memchr(o->formats, 0, sizeof o->formats) || !memchr(o->checkpoint_format, 0, sizeof o->checkpoint_format) ||
        !memchr(o->slurm.time, 0, sizeof o->slurm.time) || !memchr(o->slurm.extra, 0, sizeof o->slurm.extra))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    qs_run_options o;
    qs_run_options_default(&o);
    qs_error err;
    if (data[0] & 1) {
        if (qs_run_options_parse_job(&o, (const char *)data + 1, size - 1, "fuzz.ini", "/base", &err) == QS_OK) {
            check_strings(&o);
            (void)qs_run_options_validate(&o, &err);
        }
        return 0;
    }
    /* argv: "run" then the NUL-separated pieces (a job file name would be opened: skip a leading non-flag) */
    char *copy = malloc(size);
    if (!copy) return 0;
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    char *argv[64];
    int argc = 0;
    argv[argc++] = "run";
    for (char *p = copy; p < copy + size - 1 && argc < 63; p += strlen(p) + 1)
        if (argc > 1 || strncmp(p, "--", 2) == 0) argv[argc++] = p;
    argv[argc] = NULL;
    if (qs_run_options_parse_argv(&o, argc, argv, &err) == QS_OK) {
        check_strings(&o);
        (void)qs_run_options_validate(&o, &err);
    }
    free(copy);
    return 0;
}
