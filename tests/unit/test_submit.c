/* test_submit.c — the pieces of `qshard submit`: shell quoting (checked by
 * running bash on it), the template's fields, options → fields, job names,
 * and the sbatch call against fake sbatch programs. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/formats/fsutil.h"
#include "pipeline/run_options.h"
#include "pipeline/submit.h"

static char tmp_dir[256];

static int make_tmp(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/qs-test-submit-XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_tmp(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* What bash makes of `printf %s QUOTED`: must be the original string. */
static void check_quote_with_bash(const char *s)
{
    char *q = qs_submit_shell_quote(s);
    assert_non_null(q);
    char script[512];
    snprintf(script, sizeof script, "%s/q.sh", tmp_dir);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fprintf(f, "printf %%s %s\n", q);
    fclose(f);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "bash '%s'", script);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[512] = {0};
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_string_equal(out, s);
    free(q);
}

static void test_shell_quote(void **state)
{
    (void)state;
    check_quote_with_bash("plain");
    check_quote_with_bash("with space");
    check_quote_with_bash("it's");
    check_quote_with_bash("'''");
    check_quote_with_bash("$HOME `id` $(id) \"x\" \\n *");
    check_quote_with_bash("");
    char *q = qs_submit_shell_quote("a'b");
    assert_string_equal(q, "'a'\\''b'");
    free(q);
}

static void default_opts(qs_run_options *o)
{
    qs_run_options_default(o);
    strcpy(o->model, "/m");
    strcpy(o->calib, "/c.npy");
    strcpy(o->work, "rel/work");
    strcpy(o->out, "/out");
}

static void test_fields_from_options(void **state)
{
    (void)state;
    qs_run_options o;
    default_opts(&o);
    char *args[] = {"/jobs/a.ini", "--bits", "3"};
    qs_sbatch_fields f;
    qs_error err = {0};
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_OK);
    assert_string_equal(f.work, "/home/u/rel/work");
    assert_int_equal(f.tasks_per_node, 1); /* CPU-only, no tasks-per-node: one rank a node */
    assert_int_equal(f.nodes, 1);
    assert_int_equal(f.grace_s, 120);
    assert_string_equal(f.time, "24:00:00");

    o.slurm.gpus_per_node = 4; /* one rank per GPU */
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_OK);
    assert_int_equal(f.tasks_per_node, 4);
    o.slurm.tasks_per_node = 2; /* explicit wins */
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_OK);
    assert_int_equal(f.tasks_per_node, 2);

    strcpy(o.work, "/abs/work/");
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_OK);
    assert_string_equal(f.work, "/abs/work");

    strcpy(o.work, "/a b/work");
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "/a b/work"));
    strcpy(o.work, "/a%j/work");
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_ERR_INPUT);

    strcpy(o.work, "/w");
    strcpy(o.slurm.time, "1 hour");
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--time"));
    strcpy(o.slurm.time, "2-00:00:00");
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_OK);
    strcpy(o.slurm.partition, "gpu x");
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 3, &f, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "--partition"));
}

static void test_job_name(void **state)
{
    (void)state;
    char a[160], b[160], c[160];
    qs_submit_job_name("/scratch/runs/bloom 176b", a, sizeof a);
    qs_submit_job_name("/scratch/runs/bloom 176b", b, sizeof b);
    qs_submit_job_name("/other/runs/bloom 176b", c, sizeof c);
    assert_string_equal(a, b);            /* one work dir, one name: singleton chains it */
    assert_string_not_equal(a, c);        /* same basename elsewhere: another run */
    assert_int_equal(strncmp(a, "qshard-bloom_176b-", 18), 0);
    assert_int_equal(strlen(a), 18 + 8);
    for (const char *p = a; *p; p++) assert_true(*p != ' ' && *p != '/');
}

static void test_render(void **state)
{
    (void)state;
    qs_run_options o;
    default_opts(&o);
    strcpy(o.work, "/w/run1");
    o.slurm.gpus_per_node = 8;
    o.slurm.nodes = 3;
    strcpy(o.slurm.partition, "gpu");
    strcpy(o.slurm.extra, " --qos=high ;--constraint=h100;");
    char *args[] = {"/jobs/a b.ini", "--calib", "it's.npy"};
    qs_sbatch_fields f;
    qs_error err = {0};
    assert_int_equal(qs_submit_fields_from_options(&o, "/opt/q shard/qshard", "/home/u", args, 3, &f, &err), QS_OK);
    const char *tmpl = "#SBATCH --nodes={{NODES}} -n {{TASKS_PER_NODE}} -c {{CPUS_PER_TASK}} g{{GPUS_PER_NODE}}\n"
                       "#SBATCH --signal=B:USR1@{{GRACE}} --time={{TIME}} --job-name={{JOB_NAME}}\n"
                       "#SBATCH --output={{WORK}}/slurm-%j.out\n"
                       "{{SBATCH_OPTIONAL}}\n"
                       "Q={{QSHARD_Q}} D={{SUBMIT_DIR_Q}} W={{WORK_Q}}\n"
                       "A=({{RUN_ARGS_Q}})\n";
    char *s = NULL;
    assert_int_equal(qs_submit_render(tmpl, "t.sbatch", &f, &s, &err), QS_OK);
    char want_name[160];
    qs_submit_job_name("/w/run1", want_name, sizeof want_name);
    char line2[400];
    snprintf(line2, sizeof line2, "#SBATCH --signal=B:USR1@120 --time=24:00:00 --job-name=%s\n", want_name);
    assert_non_null(strstr(s, "#SBATCH --nodes=3 -n 8 -c 2 g8\n"));
    assert_non_null(strstr(s, line2));
    assert_non_null(strstr(s, "#SBATCH --output=/w/run1/slurm-%j.out\n"));
    assert_non_null(strstr(s, "#SBATCH --gpus-per-node=8\n"));
    assert_non_null(strstr(s, "#SBATCH --partition=gpu\n"));
    assert_non_null(strstr(s, "#SBATCH --qos=high\n#SBATCH --constraint=h100\n"));
    assert_null(strstr(s, "--account="));
    assert_non_null(strstr(s, "Q='/opt/q shard/qshard' D='/home/u' W='/w/run1'\n"));
    assert_non_null(strstr(s, "A=('/jobs/a b.ini' '--calib' 'it'\\''s.npy')\n"));
    assert_null(strstr(s, "{{"));
    free(s);

    assert_int_equal(qs_submit_render("a\nb {{NOPE}}\n", "t.sbatch", &f, &s, &err), QS_ERR_INPUT);
    assert_null(s);
    assert_non_null(strstr(err.msg, "t.sbatch:2"));
    assert_non_null(strstr(err.msg, "NOPE"));
    assert_int_equal(qs_submit_render("x {{NODES\n}}", "t.sbatch", &f, &s, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "t.sbatch:1"));
}

/* the real template renders completely and bash accepts it */
static void test_real_template(void **state)
{
    (void)state;
    const char *src = getenv("QS_SOURCE_DIR");
    if (!src) skip();
    char path[1024];
    snprintf(path, sizeof path, "%s/slurm/qshard.sbatch", src);
    char *tmpl = NULL;
    size_t len = 0;
    qs_error err = {0};
    assert_int_equal(qs_read_file(path, &tmpl, &len, &err), QS_OK);
    qs_run_options o;
    default_opts(&o);
    char *args[] = {"/jobs/a.ini"};
    qs_sbatch_fields f;
    assert_int_equal(qs_submit_fields_from_options(&o, "/bin/qshard", "/home/u", args, 1, &f, &err), QS_OK);
    char *s = NULL;
    assert_int_equal(qs_submit_render(tmpl, path, &f, &s, &err), QS_OK);
    assert_null(strstr(s, "{{"));
    assert_non_null(strstr(s, "#SBATCH --requeue\n"));
    assert_non_null(strstr(s, "#SBATCH --signal=B:USR1@120\n"));
    assert_non_null(strstr(s, "#SBATCH --open-mode=append\n"));
    char script[512];
    snprintf(script, sizeof script, "%s/real.sbatch", tmp_dir);
    assert_int_equal(qs_write_file_durable(script, s, strlen(s), &err), QS_OK);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "bash -n '%s'", script);
    assert_int_equal(system(cmd), 0);
    free(s);
    free(tmpl);
}

static void write_exec(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, 0755), 0);
}

static void test_sbatch_calls(void **state)
{
    (void)state;
    char fake[512], argsf[512], script[512];
    snprintf(argsf, sizeof argsf, "%s/args.txt", tmp_dir);
    snprintf(script, sizeof script, "%s/job.sbatch", tmp_dir);
    snprintf(fake, sizeof fake, "%s/fake_sbatch_ok", tmp_dir);
    char text[1024];
    snprintf(text, sizeof text, "#!/bin/sh\nprintf '%%s\\n' \"$@\" > '%s'\necho '4242;cluster'\n", argsf);
    write_exec(fake, text);
    setenv("QS_SBATCH", fake, 1);
    char id[64];
    qs_error err = {0};
    assert_int_equal(qs_submit_sbatch(script, 2, 3, true, id, sizeof id, &err), QS_OK);
    assert_string_equal(id, "4242");
    char *got = NULL;
    size_t len = 0;
    assert_int_equal(qs_read_file(argsf, &got, &len, &err), QS_OK);
    char want[1024];
    snprintf(want, sizeof want, "--parsable\n--dependency=singleton\n%s\n2\n3\n", script);
    assert_string_equal(got, want);
    free(got);

    /* sbatch fails: its stderr ends up in the one-line message */
    snprintf(fake, sizeof fake, "%s/fake_sbatch_fail", tmp_dir);
    write_exec(fake, "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2\n"
                     "echo 'second line' >&2\nexit 1\n");
    setenv("QS_SBATCH", fake, 1);
    assert_int_equal(qs_submit_sbatch(script, 1, 1, true, id, sizeof id, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "Invalid partition name specified"));
    assert_non_null(strstr(err.msg, "exit 1"));
    assert_null(strchr(err.msg, '\n'));

    /* not a job id */
    snprintf(fake, sizeof fake, "%s/fake_sbatch_junk", tmp_dir);
    write_exec(fake, "#!/bin/sh\necho 'Submitted batch job 12'\n");
    setenv("QS_SBATCH", fake, 1);
    assert_int_equal(qs_submit_sbatch(script, 1, 1, true, id, sizeof id, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "job id"));

    /* no sbatch at all */
    setenv("QS_SBATCH", "/nonexistent/dir/sbatch", 1);
    assert_int_equal(qs_submit_sbatch(script, 1, 1, true, id, sizeof id, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "not found"));
    unsetenv("QS_SBATCH");
}

static void test_find_template(void **state)
{
    (void)state;
    char out[1024];
    qs_error err = {0};
    assert_int_equal(qs_submit_find_template("/nonexistent.sbatch", out, sizeof out, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "/nonexistent.sbatch"));
    char p[512];
    snprintf(p, sizeof p, "%s/t.sbatch", tmp_dir);
    write_exec(p, "#!/bin/bash\n");
    setenv("QS_SBATCH_TEMPLATE", p, 1);
    assert_int_equal(qs_submit_find_template(NULL, out, sizeof out, &err), QS_OK);
    assert_string_equal(out, p);
    unsetenv("QS_SBATCH_TEMPLATE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shell_quote),
        cmocka_unit_test(test_fields_from_options),
        cmocka_unit_test(test_job_name),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_real_template),
        cmocka_unit_test(test_sbatch_calls),
        cmocka_unit_test(test_find_template),
    };
    return cmocka_run_group_tests(tests, make_tmp, remove_tmp);
}
