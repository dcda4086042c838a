/* test_run_options.c — job files (INI) and flags: precedence, relative paths, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/run_options.h"

static char dir[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_job_file_and_overrides(void **state)
{
    (void)state;
    char job[512];
    snprintf(job, sizeof job, "%s/job.ini", dir);
    write_file(job, "; a job file\n[model]\nmodel = models/tiny\n[calibration]\ncalib = /abs/calib.npy\n"
                    "[quantization]\nmethod = rtn\nbits = 3\ngroup_size = 64\nasym = true\nact-order = yes\n"
                    "[run]\nschedule = pipelined\nwork = work\nout = out\n[slurm]\nnodes = 8\ngpus-per-node = 8\n");
    qs_run_options o;
    qs_run_options_default(&o);
    qs_error err;
    char *argv[] = {"run", job, "--bits", "4", "--sym", "--out=/elsewhere", "--static-groups", "false", "--mse", NULL};
    assert_int_equal(qs_run_options_parse_argv(&o, 9, argv, &err), QS_OK);
    assert_false(o.static_groups); /* a switch followed by an explicit false */
    assert_true(o.mse);
    char want[600];
    snprintf(want, sizeof want, "%s/models/tiny", dir); /* relative to the job file */
    assert_string_equal(o.model, want);
    assert_string_equal(o.calib, "/abs/calib.npy");
    assert_string_equal(o.out, "/elsewhere"); /* flag overrides file */
    assert_int_equal(o.method, QS_METHOD_RTN);
    assert_int_equal(o.bits, 4);               /* flag overrides file */
    assert_int_equal(o.group_size, 64);
    assert_true(o.sym);                        /* --sym after asym=true in the file */
    assert_true(o.act_order);
    assert_int_equal(o.schedule, QS_SCHEDULE_PIPELINED);
    assert_int_equal(o.slurm.nodes, 8);
    assert_int_equal(o.slurm.gpus_per_node, 8);
    assert_int_equal(qs_run_options_validate(&o, &err), QS_OK);
}

/* OmniQuant's keys in a job file and as flags; the epochs' default depends on bits. */
static void test_omniquant_options(void **state)
{
    (void)state;
    char job[512];
    snprintf(job, sizeof job, "%s/omni.ini", dir);
    write_file(job, "[quantization]\nmethod = omniquant\nbits = 2\nasym = true\nlwc = false\nlet = true\n"
                    "let_lr = 0.02\nomni-batch = 2\n[run]\nmodel = m\ncalib = c\nwork = w\nout = o\n");
    qs_run_options o;
    qs_run_options_default(&o);
    qs_error err;
    assert_true(o.lwc && !o.let && o.lwc_lr == 5e-3 && o.let_lr == 1e-2 && o.omni_batch == 1);
    char *argv[] = {"run", job, "--lwc-lr", "1e-3", "--omni-seed", "7", NULL};
    assert_int_equal(qs_run_options_parse_argv(&o, 6, argv, &err), QS_OK);
    assert_int_equal(o.method, QS_METHOD_OMNIQUANT);
    assert_false(o.lwc);
    assert_true(o.let);
    assert_true(o.let_lr == 0.02 && o.lwc_lr == 1e-3);
    assert_int_equal(o.omni_batch, 2);
    assert_int_equal(o.omni_seed, 7);
    assert_int_equal(qs_run_options_epochs(&o), 40); /* 2 bits */
    o.bits = 3;
    assert_int_equal(qs_run_options_epochs(&o), 20);
    o.epochs = 5;
    assert_int_equal(qs_run_options_epochs(&o), 5);
    assert_int_equal(qs_run_options_validate(&o, &err), QS_OK);
    /* what is allowed, said in one line */
    qs_run_options bad = o;
    bad.let_lr = -0.5;
    assert_int_equal(qs_run_options_validate(&bad, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--let-lr"));
    bad = o;
    bad.let = false;
    assert_int_equal(qs_run_options_validate(&bad, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--lwc false needs --let"));
    char *argv0[] = {"run", "--epochs", "0", NULL};
    assert_int_equal(qs_run_options_parse_argv(&o, 3, argv0, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--epochs"));
    char *argvm[] = {"run", "--method", "omni", NULL};
    assert_int_equal(qs_run_options_parse_argv(&o, 3, argvm, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "omniquant"));
}

static void test_errors(void **state)
{
    (void)state;
    qs_run_options o;
    qs_error err;
    char job[512];
    snprintf(job, sizeof job, "%s/bad.ini", dir);
    write_file(job, "[quantization]\nbits = four\n");
    qs_run_options_default(&o);
    assert_int_equal(qs_run_options_load_job(&o, job, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "bad.ini"));
    assert_non_null(strstr(err.msg, "--bits"));

    write_file(job, "[x]\nno_such_key = 1\n");
    qs_run_options_default(&o);
    assert_int_equal(qs_run_options_load_job(&o, job, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "no_such_key"));

    qs_run_options_default(&o);
    char *argv[] = {"run", "--bits", NULL};
    assert_int_equal(qs_run_options_parse_argv(&o, 2, argv, &err), QS_ERR_INPUT);
    char *argv2[] = {"run", "--bits", "5", "--model", "m", "--calib", "c", "--work", "w", "--out", "o", NULL};
    qs_run_options_default(&o);
    assert_int_equal(qs_run_options_parse_argv(&o, 11, argv2, &err), QS_OK);
    assert_int_equal(qs_run_options_validate(&o, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--bits"));
    qs_run_options_default(&o);
    assert_int_equal(qs_run_options_validate(&o, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--model"));
    assert_int_equal(qs_run_options_load_job(&o, "/nonexistent/job.ini", &err), QS_ERR_INPUT);
}

/* --compute-dtype: auto by default, f32/bf16 from a job key or a flag, anything else refused by name. */
static void test_compute_dtype(void **state)
{
    (void)state;
    char job[512];
    snprintf(job, sizeof job, "%s/dtype.ini", dir);
    write_file(job, "[model]\nmodel = m\n[calibration]\ncalib = c.npy\n[run]\nwork = w\nout = o\n"
                    "compute-dtype = bf16\n");
    qs_run_options o;
    qs_run_options_default(&o);
    assert_string_equal(o.compute_dtype, "auto");
    qs_error err;
    assert_int_equal(qs_run_options_load_job(&o, job, &err), QS_OK);
    assert_string_equal(o.compute_dtype, "bf16");
    assert_int_equal(qs_run_options_validate(&o, &err), QS_OK);
    char *argv[] = {"run", job, "--compute-dtype", "f32", NULL};
    qs_run_options_default(&o);
    assert_int_equal(qs_run_options_parse_argv(&o, 4, argv, &err), QS_OK);
    assert_string_equal(o.compute_dtype, "f32"); /* the flag overrides the job key */
    assert_int_equal(qs_run_options_set(&o, "compute_dtype", "fp8", NULL, &err), QS_OK);
    assert_int_equal(qs_run_options_validate(&o, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--compute-dtype"));
    assert_non_null(strstr(err.msg, "fp8"));
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/qs-run-options-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_job_file_and_overrides),
                                       cmocka_unit_test(test_omniquant_options), cmocka_unit_test(test_errors),
                                       cmocka_unit_test(test_compute_dtype)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) rc = rc ? rc : 1;
    return rc;
}
