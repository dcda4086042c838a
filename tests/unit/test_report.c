/* test_report.c — the report's pieces without a run: SVG escaping and scales,
 * the event stream's lines, the plain progress lines, and report.html made
 * from a hand-written work dir (a finished block, a block still running, a
 * torn last line, eval rows). The browser check of a real run's report is
 * tests/py/test_report_browser.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/events.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/progress.h"
#include "pipeline/report.h"
#include "pipeline/svg.h"

static char dir[256];

static char *slurp(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    qs_error err;
    assert_int_equal(qs_read_file(path, &data, &len, &err), QS_OK);
    char *copy = malloc(len + 1); /* a fresh block: GCC's dangling-pointer check does not follow out-parameters */
    assert_non_null(copy);
    memcpy(copy, data, len + 1);
    free(data);
    return copy;
}

static void test_escape(void **state)
{
    (void)state;
    qs_strbuf b = {0};
    qs_xml_escape(&b, "a<b>&\"c\" 'd'");
    assert_string_equal(b.p, "a&lt;b&gt;&amp;&quot;c&quot; &#39;d&#39;");
    qs_strbuf_free(&b);
    /* a mark with a title: the title is escaped, a zero-width mark is not written */
    qs_svg_rect(&b, 1, 2, 0, 4, "#fff", "mark", "x");
    assert_null(b.p);
    qs_svg_rect(&b, 1, 2, 3, 4, "#fff", "mark", "<x>");
    assert_non_null(strstr(b.p, "<title>&lt;x&gt;</title>"));
    assert_non_null(strstr(b.p, "width=\"3.00\""));
    qs_strbuf_free(&b);
}

static void test_scales(void **state)
{
    (void)state;
    qs_scale lin = {0, 7.3, 0, 100, false};
    qs_scale_nice(&lin);
    assert_true(lin.d0 == 0 && lin.d1 == 8); /* 1-2-5 steps: 2 */
    double t[32];
    int n = qs_scale_ticks(&lin, 4, t, 32);
    assert_int_equal(n, 5);
    assert_true(t[0] == 0 && t[1] == 2 && t[4] == 8);
    assert_true(fabs(qs_scale_map(&lin, 4) - 50) < 1e-9);
    assert_true(qs_scale_map(&lin, 100) == 100); /* clamped */
    qs_scale lg = {0.0031, 240, 200, 0, true};
    qs_scale_nice(&lg);
    assert_true(fabs(lg.d0 - 1e-3) < 1e-15 && fabs(lg.d1 - 1e3) < 1e-9);
    n = qs_scale_ticks(&lg, 6, t, 32);
    assert_int_equal(n, 7); /* 1e-3 .. 1e3 */
    assert_true(fabs(qs_scale_map(&lg, 1) - 100) < 1e-9); /* the middle decade */
    assert_true(qs_scale_map(&lg, 0) == 200);             /* log of 0: the bottom */
}

static void test_block_event_json(void **state)
{
    (void)state;
    qs_block_event e;
    memset(&e, 0, sizeof e);
    e.layer = 3;
    e.rank = 1;
    e.n_linears = 2;
    e.loss[0] = 1.5, e.loss[1] = 2.5;
    e.loss_rtn[0] = 3, e.loss_rtn[1] = NAN; /* one not measured: the block's RTN sum is unknown */
    e.timing.forward = 0.25;
    const char *names[] = {"a.q_proj.weight", "a.k_proj.weight"};
    cJSON *o = qs_block_event_json(&e, names);
    assert_int_equal((int)cJSON_GetObjectItem(o, "block")->valuedouble, 3);
    assert_true(cJSON_GetObjectItem(o, "loss")->valuedouble == 4.0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "loss_rtn")));
    cJSON *lins = cJSON_GetObjectItem(o, "linears");
    assert_int_equal(cJSON_GetArraySize(lins), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(lins, 1), "name")->valuestring, "a.k_proj.weight");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(lins, 1), "loss_rtn")));
    assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "phases"), "forward")->valuedouble == 0.25);
    cJSON_Delete(o);
}

/* The sinks: one line per event, "event" and "t" first, --log-json the same lines. */
static void test_event_sinks(void **state)
{
    (void)state;
    char work[300], log[300];
    snprintf(work, sizeof work, "%s/sinks", dir);
    snprintf(log, sizeof log, "%s/log.jsonl", dir);
    qs_error err;
    assert_int_equal(qs_mkdir_p(work, &err), QS_OK);
    qs_events *ev = NULL;
    assert_int_equal(qs_events_open(&ev, work, log, &err), QS_OK);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rank", 2);
    qs_events_emit(ev, "block_start", o);
    qs_events_emit(ev, "run_end", NULL);
    qs_events_close(ev);
    char path[400];
    snprintf(path, sizeof path, "%s/events.jsonl", work);
    char *a = slurp(path), *b = slurp(log);
    assert_string_equal(a, b);
    assert_int_equal(strncmp(a, "{\"event\":\"block_start\",\"t\":", 27), 0);
    assert_non_null(strstr(a, ",\"rank\":2}\n{\"event\":\"run_end\",\"t\":"));
    free(a);
    free(b);
    /* a --log-json that cannot be opened is an input error naming it */
    assert_int_equal(qs_events_open(&ev, work, "/nonexistent-dir/x.jsonl", &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.jsonl"));
}

/* Plain mode: one line per finished block with the rank, the count and an ETA. */
static void test_plain_progress(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/progress.txt", dir);
    FILE *f = fopen(path, "w+");
    assert_non_null(f);
    qs_stage_plan st[2] = {{.rank = 0, .first_block = 0, .end_block = 2}, {.rank = 1, .first_block = 2, .end_block = 3}};
    qs_progress p;
    qs_error err;
    assert_int_equal(qs_progress_init(&p, f, QS_PROGRESS_PLAIN, st, 2, 3, false, 1000, &err), QS_OK);
    qs_progress_message(&p, "hello");
    qs_progress_block_start(&p, 0, 0);
    qs_progress_block_done(&p, 0, 0, 2.0, false);
    qs_progress_block_start(&p, 1, 2);
    qs_progress_tick(&p);
    qs_progress_block_done(&p, 1, 2, 4.0, true);
    qs_progress_end(&p);
    qs_progress_free(&p);
    fclose(f);
    char *t = slurp(path);
    assert_non_null(strstr(t, "hello\nqshard run: block 1 of 3 quantized (rank 0, 2.00 s); 1/3 done after "));
    assert_non_null(strstr(t, "ETA 4 s\n")); /* two blocks left × 2 s */
    assert_non_null(strstr(t, "qshard run: block 3 of 3 resumed from its checkpoint (rank 1, 4.00 s); 2/3 done"));
    assert_null(strchr(t, '\r'));
    assert_null(strchr(t, '\033'));
    int lines = 0;
    for (char *c = t; *c; c++) lines += *c == '\n';
    assert_int_equal(lines, 3);
    free(t);
    /* quiet: nothing at all */
    f = fopen(path, "w+");
    assert_int_equal(qs_progress_init(&p, f, qs_progress_mode_for(f, "live", true), st, 2, 3, false, 1000, &err), QS_OK);
    qs_progress_message(&p, "hello");
    qs_progress_block_done(&p, 0, 0, 2.0, false);
    qs_progress_end(&p);
    qs_progress_free(&p);
    fclose(f);
    t = slurp(path);
    assert_string_equal(t, "");
    free(t);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A work dir by hand: run_start, block 0 done on rank 0, block 1 started on
 * rank 1 and not done, a stop, a torn line; two eval rows of which the second
 * replaces the first (same model and tokens). */
static void test_report_from_work_dir(void **state)
{
    (void)state;
    char work[300], out[300], path[400];
    snprintf(work, sizeof work, "%s/work", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    qs_error err;
    assert_int_equal(qs_mkdir_p(work, &err), QS_OK);
    assert_int_equal(qs_mkdir_p(out, &err), QS_OK);
    char ev[4096];
    snprintf(ev, sizeof ev,
             "{\"event\":\"run_start\",\"t\":1000,\"ranks\":2,\"blocks\":2,\"model\":\"/m/tiny<model>\",\"work\":\"%s\","
             "\"out\":\"%s\",\"method\":\"gptq\",\"bits\":4,\"group_size\":32,\"sym\":false,\"schedule\":\"exact\","
             "\"calib_rows\":8,\"calib_len\":16,\"fingerprint\":\"00ff00ff00ff00ff\",\"command\":\"qshard run --x 'a b'\","
             "\"options\":{\"bits\":\"4\",\"model-file\":\"\"},\"versions\":{\"qshard\":\"9.9\"},"
             "\"plan\":[{\"rank\":0,\"first_block\":0,\"end_block\":1,\"peak_host_bytes\":1000000,\"peak_device_bytes\":2000000},"
             "{\"rank\":1,\"first_block\":1,\"end_block\":2,\"peak_host_bytes\":1000000,\"peak_device_bytes\":2000000}]}\n"
             "{\"event\":\"block_start\",\"t\":1001,\"rank\":0,\"block\":0,\"t_start\":1001}\n"
             "{\"event\":\"block_done\",\"t\":1005,\"rank\":0,\"block\":0,\"resumed\":false,\"host\":\"node7\","
             "\"t_start\":1001,\"t_end\":1005,\"phases\":{\"forward\":1,\"hessian\":0.5,\"solve\":1,\"comm\":0,"
             "\"wait\":0,\"io\":0.5},\"peak_rss_bytes\":5000000,\"linears\":["
             "{\"name\":\"model.layers.0.self_attn.q_proj.weight\",\"loss\":0.5,\"loss_rtn\":2},"
             "{\"name\":\"model.layers.0.mlp.down_proj.weight\",\"loss\":40,\"loss_rtn\":80}]}\n"
             "{\"event\":\"block_start\",\"t\":1006,\"rank\":1,\"block\":1,\"t_start\":1006}\n"
             "{\"event\":\"stop_signal\",\"t\":1007}\n"
             "{\"event\":\"block_done\",\"t\":10",
             work, out);
    snprintf(path, sizeof path, "%s/events.jsonl", work);
    write_text(path, ev);
    snprintf(path, sizeof path, "%s/eval.jsonl", work);
    write_text(path, "{\"model\":\"o\",\"tokens\":\"e.npy\",\"rows\":2,\"seq_len\":8,\"tokens_scored\":14,\"nll\":9.0,\"ppl\":8103,\"ref\":\"/m\"}\n"
                     "{\"model\":\"o\",\"tokens\":\"e.npy\",\"rows\":2,\"seq_len\":8,\"tokens_scored\":14,\"nll\":3.25,"
                     "\"ppl\":25.79,\"kl_mean\":0.125,\"kl_p99\":0.5,\"top1\":0.75,\"ref\":\"/m\"}\n");
    char written[600];
    assert_int_equal(qs_report_generate(work, NULL, written, sizeof written, &err), QS_OK);
    snprintf(path, sizeof path, "%s/report.html", out);
    assert_string_equal(written, path); /* the run's --out dir */
    char *h = slurp(path);
    assert_non_null(strstr(h, "<svg id=\"chart-loss\""));
    assert_non_null(strstr(h, "<svg id=\"chart-timeline\""));
    assert_non_null(strstr(h, "<svg id=\"chart-memory\""));
    assert_non_null(strstr(h, "tiny&lt;model&gt;"));              /* escaped */
    assert_non_null(strstr(h, "stopping (a stop was requested)")); /* no run_end yet */
    assert_non_null(strstr(h, "class=\"mark running\""));          /* block 1 started, not finished */
    assert_non_null(strstr(h, "class=\"mark ph-solve\""));
    assert_non_null(strstr(h, "node7"));
    /* worst first: down_proj (40) before q_proj (0.5); the sums: 40.5 / 82 = 49% */
    char *down = strstr(h, "<td class=\"l\">model.layers.0.mlp.down_proj.weight</td>");
    char *q = strstr(h, "<td class=\"l\">model.layers.0.self_attn.q_proj.weight</td>");
    assert_true(down && q && down < q);
    assert_non_null(strstr(h, "loss is 49% of RTN"));
    /* eval: the newer row replaced the older one */
    assert_non_null(strstr(h, "<td>3.2500</td>"));
    assert_null(strstr(h, "<td>9.0000</td>"));
    /* plan memory of a rank: device + host = 2.9 MiB */
    assert_non_null(strstr(h, "plan 2.9 MiB"));
    assert_non_null(strstr(h, "qshard run --x &#39;a b&#39;"));
    assert_null(strstr(h, "<script"));
    assert_null(strstr(h, "http://"));
    assert_null(strstr(h, "https://"));
    free(h);
    /* --out elsewhere */
    snprintf(path, sizeof path, "%s/elsewhere.html", dir);
    assert_int_equal(qs_report_generate(work, path, NULL, 0, &err), QS_OK);
    assert_true(qs_path_exists(path));
    /* not a work dir */
    assert_int_equal(qs_report_generate(dir, NULL, NULL, 0, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "events.jsonl"));
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/qs-test-report-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),           cmocka_unit_test(test_scales),
        cmocka_unit_test(test_block_event_json), cmocka_unit_test(test_event_sinks),
        cmocka_unit_test(test_plain_progress),   cmocka_unit_test(test_report_from_work_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
