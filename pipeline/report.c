/* report.c — report.html from a work dir (see report.h).
 *
 * Two halves: loading (the event stream into per-block records, the eval
 * rows) and the page (sections written into one qs_strbuf, charts through
 * pipeline/svg.h). Everything shown comes from the files; the report never
 * recomputes a number the run measured.
 */
#include "pipeline/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pipeline/events.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/strbuf.h"
#include "pipeline/svg.h"
#include "schedulers/cost_model.h"

/* ---- small helpers ------------------------------------------------------------------------------ */

static double num(const cJSON *o, const char *k, double dflt)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static const char *str(const cJSON *o, const char *k, const char *dflt)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : dflt;
}

static bool flag(const cJSON *o, const char *k)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsTrue(v);
}

/* "1.23e-04"-style numbers for losses; a dash for unknown. */
static const char *fmt_g(double v, char *buf, size_t cap)
{
    if (!isfinite(v)) snprintf(buf, cap, "–");
    else snprintf(buf, cap, "%.3g", v);
    return buf;
}

static const char *fmt_s(double s, char *buf, size_t cap)
{
    if (!isfinite(s)) snprintf(buf, cap, "–");
    else if (s < 10) snprintf(buf, cap, "%.2f s", s);
    else if (s < 120) snprintf(buf, cap, "%.1f s", s);
    else if (s < 7200) snprintf(buf, cap, "%.1f min", s / 60);
    else snprintf(buf, cap, "%.2f h", s / 3600);
    return buf;
}

static const char *fmt_bytes(double b, char *buf, size_t cap)
{
    if (!isfinite(b) || b < 0) snprintf(buf, cap, "–");
    else if (b == 0) snprintf(buf, cap, "0");
    else qs_fmt_bytes((uint64_t)b, buf, (int)cap);
    return buf;
}

/* "q_proj" from "model.layers.3.self_attn.q_proj.weight". */
static void short_name(const char *full, char *buf, size_t cap)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", full ? full : "?");
    size_t n = strlen(tmp);
    if (n > 7 && !strcmp(tmp + n - 7, ".weight")) tmp[n - 7] = '\0';
    const char *dot = strrchr(tmp, '.');
    snprintf(buf, cap, "%s", dot ? dot + 1 : tmp);
}

static void put_esc(qs_strbuf *b, const char *s) { qs_xml_escape(b, s); }

static void put_escf(qs_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put_escf(qs_strbuf *b, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    qs_xml_escape(b, tmp);
}

/* ---- the data ----------------------------------------------------------------------------------- */

enum { PH_IO, PH_WAIT, PH_COMM, PH_FORWARD, PH_HESSIAN, PH_SOLVE, PH_N };
static const char *const ph_key[PH_N] = {"io", "wait", "comm", "forward", "hessian", "solve"};
static const char *const ph_label[PH_N] = {"I/O", "waiting for the previous rank", "communication", "forward",
                                           "Hessians", "solve"};
static const char *const ph_color[PH_N] = {"#59a0a8", "#cfcfcf", "#e8912d", "#3f6fb0", "#4f9a4a", "#c8423f"};
#define IDLE_COLOR "#e4e4e4"
#define RESUMED_COLOR "#b39ddb"
#define METHOD_COLOR "#24518f"
#define RTN_COLOR "#f2b134"
#define MEM_PEAK_COLOR "#7b4ea3"
#define MEM_PLAN_COLOR "#9fd3a4"

typedef struct rp_block {
    cJSON *done;    /* the latest block_done of this block (owned), or NULL */
    bool in_last;   /* done in the last run attempt */
    double started; /* block_start in the last attempt without a block_done yet: its time; 0 none */
    int started_rank;
} rp_block;

typedef struct rp_data {
    const char *work;
    cJSON *run_start;   /* the last one (owned) */
    cJSON *run_end;     /* after it, or NULL (owned) */
    cJSON *evals;       /* array of eval rows (owned) */
    cJSON *legacy;      /* qshard_report.json when there is no event stream (owned) */
    int attempts;
    double t0, t_last;  /* the last run_start's time; the last event's */
    double t_stop;      /* stop_signal in the last attempt, or 0 */
    int n_blocks, n_ranks;
    rp_block *blocks;
    char exports[256];
} rp_data;

static void rp_free(rp_data *d)
{
    for (int b = 0; d->blocks && b < d->n_blocks; b++) cJSON_Delete(d->blocks[b].done);
    free(d->blocks);
    cJSON_Delete(d->run_start);
    cJSON_Delete(d->run_end);
    cJSON_Delete(d->evals);
    cJSON_Delete(d->legacy);
    memset(d, 0, sizeof *d);
}

static qs_status grow_blocks(rp_data *d, int n, qs_error *err)
{
    if (n <= d->n_blocks) return QS_OK;
    if (n > (1 << 20)) return qs_error_set(err, QS_ERR_INPUT, "%s: %d blocks is not plausible", d->work, n);
    rp_block *nb = realloc(d->blocks, sizeof *nb * (size_t)n);
    if (!nb) return qs_error_set(err, QS_ERR_NOMEM, "report: %d blocks", n);
    memset(nb + d->n_blocks, 0, sizeof *nb * (size_t)(n - d->n_blocks));
    d->blocks = nb;
    d->n_blocks = n;
    return QS_OK;
}

/* Calls fn on every JSON object line of path; lines that do not parse are skipped. */
static qs_status each_line(const char *path, qs_status (*fn)(rp_data *, cJSON *, qs_error *), rp_data *d,
                           qs_error *err)
{
    char *data = NULL;
    QS_TRY(qs_read_file(path, &data, NULL, err));
    qs_status st = QS_OK;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line && st == QS_OK; line = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(line);
        if (cJSON_IsObject(o)) st = fn(d, o, err);
        cJSON_Delete(o);
    }
    free(data);
    return st;
}

static qs_status on_event(rp_data *d, cJSON *o, qs_error *err)
{
    const char *ev = str(o, "event", "");
    double t = num(o, "t", 0);
    if (t > d->t_last) d->t_last = t;
    if (!strcmp(ev, "run_start")) {
        cJSON_Delete(d->run_start);
        cJSON_Delete(d->run_end);
        d->run_start = cJSON_Duplicate(o, 1);
        d->run_end = NULL;
        d->attempts++;
        d->t0 = t;
        d->t_stop = 0;
        d->exports[0] = '\0';
        d->n_ranks = (int)num(o, "ranks", 1);
        QS_TRY(grow_blocks(d, (int)num(o, "blocks", 0), err));
        for (int b = 0; b < d->n_blocks; b++) d->blocks[b].in_last = false, d->blocks[b].started = 0;
    } else if (!strcmp(ev, "block_start") || !strcmp(ev, "block_done")) {
        int b = (int)num(o, "block", -1);
        if (b < 0) return QS_OK;
        QS_TRY(grow_blocks(d, b + 1, err));
        rp_block *x = &d->blocks[b];
        if (ev[6] == 's') {
            x->started = num(o, "t_start", t);
            x->started_rank = (int)num(o, "rank", 0);
        } else {
            cJSON_Delete(x->done);
            x->done = cJSON_Duplicate(o, 1);
            x->in_last = true;
            x->started = 0;
        }
    } else if (!strcmp(ev, "stop_signal")) {
        if (!d->t_stop) d->t_stop = t;
    } else if (!strcmp(ev, "export")) {
        size_t n = strlen(d->exports);
        snprintf(d->exports + n, sizeof d->exports - n, "%s%s", n ? ", " : "", str(o, "format", "?"));
    } else if (!strcmp(ev, "run_end")) {
        cJSON_Delete(d->run_end);
        d->run_end = cJSON_Duplicate(o, 1);
    }
    return QS_OK;
}

static qs_status on_eval_row(rp_data *d, cJSON *o, qs_error *err)
{
    (void)err;
    /* the same model, file, tokens and reference again: the newer row replaces the older */
    cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, d->evals)
    {
        bool same = true;
        static const char *const keys[] = {"model", "file", "tokens", "ref"};
        for (size_t k = 0; k < 4; k++) same &= !strcmp(str(e, keys[k], ""), str(o, keys[k], ""));
        if (same) {
            cJSON_ReplaceItemInArray(d->evals, i, cJSON_Duplicate(o, 1));
            return QS_OK;
        }
        i++;
    }
    cJSON_AddItemToArray(d->evals, cJSON_Duplicate(o, 1));
    return QS_OK;
}

/* A work dir from before the event stream: the per-layer losses of qshard_report.json. */
static qs_status load_legacy(rp_data *d, const char *path, qs_error *err)
{
    char *data = NULL;
    QS_TRY(qs_read_file(path, &data, NULL, err));
    d->legacy = cJSON_Parse(data);
    free(data);
    if (!cJSON_IsObject(d->legacy)) return qs_error_set(err, QS_ERR_INPUT, "%s: not a JSON object", path);
    d->n_ranks = (int)num(d->legacy, "ranks", 1);
    QS_TRY(grow_blocks(d, (int)num(d->legacy, "blocks", 0), err));
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d->legacy, "layers"))
    {
        int b = (int)num(e, "block", -1);
        if (b < 0) continue;
        QS_TRY(grow_blocks(d, b + 1, err));
        rp_block *x = &d->blocks[b];
        if (!x->done) {
            x->done = cJSON_CreateObject();
            cJSON_AddNumberToObject(x->done, "block", b);
            cJSON_AddArrayToObject(x->done, "linears");
        }
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "name", str(e, "name", "?"));
        cJSON_AddNumberToObject(l, "loss", num(e, "loss", NAN));
        double rtn = num(e, "loss_rtn", NAN);
        if (isfinite(rtn)) cJSON_AddNumberToObject(l, "loss_rtn", rtn);
        cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(x->done, "linears"), l);
    }
    return QS_OK;
}

static qs_status rp_load(const char *work, rp_data *d, qs_error *err)
{
    memset(d, 0, sizeof *d);
    d->work = work;
    d->evals = cJSON_CreateArray();
    char path[4200];
    snprintf(path, sizeof path, "%s/events.jsonl", work);
    if (qs_path_exists(path)) {
        QS_TRY(each_line(path, on_event, d, err));
    } else {
        snprintf(path, sizeof path, "%s/qshard_report.json", work);
        if (!qs_path_exists(path))
            return qs_error_set(err, QS_ERR_INPUT, "%s: no events.jsonl or qshard_report.json: not the work dir of a "
                                "qshard run, or the run has not started", work);
        QS_TRY(load_legacy(d, path, err));
    }
    snprintf(path, sizeof path, "%s/eval.jsonl", work);
    if (qs_path_exists(path)) QS_TRY(each_line(path, on_eval_row, d, err));
    return QS_OK;
}

/* ---- page: head and summary -------------------------------------------------------------------- */

static const char css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;"
    "color:#1d2330;background:#f6f7f9;margin:0}\n"
    "main{max-width:1120px;margin:0 auto;padding:20px 24px 40px}\n"
    "h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #d8dce3;"
    "padding-bottom:4px}\n"
    ".sub{color:#586174;margin:0 0 14px}.note{color:#586174;font-size:13px;margin:4px 0}\n"
    ".cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #dde1e8;border-radius:6px;"
    "padding:8px 12px;min-width:120px}.card b{display:block;font-size:18px}.card span{color:#586174;font-size:12px}\n"
    ".status-done{color:#1f7a38}.status-interrupted{color:#a05a00}.status-unfinished{color:#a01d1d}\n"
    ".box{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:10px 12px;overflow-x:auto}\n"
    "table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{padding:3px 9px;text-align:right;"
    "border-bottom:1px solid #eceef2;white-space:nowrap}th{background:#eef1f5;font-weight:600}\n"
    "td.l,th.l{text-align:left}tr:nth-child(even) td{background:#fafbfc}\n"
    "pre{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:8px 10px;overflow-x:auto;"
    "font-size:12px;white-space:pre-wrap;word-break:break-all}\n"
    "svg.chart text{font:11px system-ui,Arial,sans-serif;fill:#333}svg.chart text.axis{fill:#586174}"
    "svg.chart text.title{font-weight:600}svg.chart text.bar{fill:#fff;font-size:10px}\n"
    ".legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:#333;margin:4px 0}"
    ".legend i{display:inline-block;width:10px;height:10px;margin-right:5px;vertical-align:-1px;"
    "border-radius:2px}\n"
    "footer{color:#7a8294;font-size:12px;margin-top:30px}details summary{cursor:pointer;color:#24518f}\n";

static void legend_item(qs_strbuf *b, const char *color, const char *label)
{
    qs_strbuf_fmt(b, "<span><i style=\"background:%s\"></i>", color);
    put_esc(b, label);
    qs_strbuf_str(b, "</span>");
}

static const char *method_name(const rp_data *d)
{
    const char *m = str(d->run_start, "method", "gptq");
    return !strcmp(m, "gptq") ? "GPTQ" : !strcmp(m, "rtn") ? "RTN" : !strcmp(m, "omniquant") ? "OmniQuant" : m;
}

static int blocks_done(const rp_data *d)
{
    int n = 0;
    for (int b = 0; b < d->n_blocks; b++) n += d->blocks[b].done != NULL;
    return n;
}

static void status_of(const rp_data *d, const char **text, const char **cls)
{
    const char *st = str(d->run_end, "status", NULL);
    if (d->legacy) *text = "finished", *cls = "status-done";
    else if (st && !strcmp(st, "done")) *text = "finished", *cls = "status-done";
    else if (st) *text = "interrupted (resumable)", *cls = "status-interrupted";
    else if (d->t_stop) *text = "stopping (a stop was requested)", *cls = "status-interrupted";
    else *text = "unfinished: running, or ended without a trace", *cls = "status-unfinished";
}

static void card(qs_strbuf *b, const char *cls, const char *value, const char *label)
{
    qs_strbuf_str(b, "<div class=\"card\"><b");
    if (cls) qs_strbuf_fmt(b, " class=\"%s\"", cls);
    qs_strbuf_str(b, ">");
    put_esc(b, value);
    qs_strbuf_str(b, "</b><span>");
    put_esc(b, label);
    qs_strbuf_str(b, "</span></div>");
}

/* Sum of the method's and RTN's losses over linears where both are known. */
static void loss_sums(const rp_data *d, double *m, double *r, int *n_both, int *n_all)
{
    *m = *r = 0;
    *n_both = *n_all = 0;
    for (int b = 0; b < d->n_blocks; b++) {
        cJSON *l;
        cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(d->blocks[b].done, "linears"))
        {
            double lm = num(l, "loss", NAN), lr = num(l, "loss_rtn", NAN);
            (*n_all)++;
            if (isfinite(lm) && isfinite(lr)) *m += lm, *r += lr, (*n_both)++;
        }
    }
}

static double rank_peak(const rp_data *d, int r)
{
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d->run_end, "per_rank")) if ((int)num(e, "rank", -1) == r)
        return num(e, "peak_rss_bytes", NAN);
    double best = NAN;
    for (int b = 0; b < d->n_blocks; b++) {
        const cJSON *x = d->blocks[b].done;
        if (x && d->blocks[b].in_last && (int)num(x, "rank", -1) == r) {
            double v = num(x, "peak_rss_bytes", NAN);
            if (!(best >= v)) best = v;
        }
    }
    return best;
}

static void section_summary(qs_strbuf *b, const rp_data *d)
{
    const cJSON *rs = d->run_start;
    const char *model = str(rs, "model", d->work);
    const char *base = strrchr(model, '/');
    qs_strbuf_str(b, "<h1>qshard run report: ");
    put_esc(b, base && base[1] ? base + 1 : model);
    qs_strbuf_str(b, "</h1>\n<p class=\"sub\">");
    if (rs) {
        double g = num(rs, "group_size", 0);
        char grp[32];
        if (g > 0) snprintf(grp, sizeof grp, "g%.0f", g);
        else snprintf(grp, sizeof grp, "per channel");
        put_escf(b, "%s %.0f-bit %s %s · %s on %d rank(s) · %s schedule · %.0f × %.0f calibration tokens",
                 method_name(d), num(rs, "bits", 0), grp, flag(rs, "sym") ? "symmetric" : "asymmetric",
                 str(rs, "arch", "?"), d->n_ranks, str(rs, "schedule", "?"), num(rs, "calib_rows", 0),
                 num(rs, "calib_len", 0));
    } else {
        put_escf(b, "%d blocks on %d rank(s) (a work dir without an event stream: losses only)", d->n_blocks,
                 d->n_ranks);
    }
    qs_strbuf_str(b, "</p>\n<div class=\"cards\">");
    const char *stext, *scls;
    status_of(d, &stext, &scls);
    card(b, scls, stext, "status");
    char v[64], w[64];
    snprintf(v, sizeof v, "%d / %d", blocks_done(d), d->n_blocks);
    card(b, NULL, v, "blocks done");
    if (rs) {
        double secs = d->run_end ? num(d->run_end, "seconds", d->t_last - d->t0) : d->t_last - d->t0;
        card(b, NULL, fmt_s(secs, v, sizeof v), d->attempts > 1 ? "wall time (last attempt)" : "wall time");
    }
    if (d->attempts > 1) {
        snprintf(v, sizeof v, "%d", d->attempts);
        card(b, NULL, v, "attempts (resumed)");
    }
    double m, r;
    int nb, na;
    loss_sums(d, &m, &r, &nb, &na);
    if (nb > 0 && r > 0) {
        snprintf(v, sizeof v, "%.0f%%", 100 * m / r);
        snprintf(w, sizeof w, "%s loss / RTN loss", method_name(d));
        card(b, NULL, v, w);
    }
    double peak = NAN;
    for (int k = 0; k < d->n_ranks; k++) {
        double p = rank_peak(d, k);
        if (isfinite(p) && !(peak >= p)) peak = p;
    }
    if (isfinite(peak)) card(b, NULL, fmt_bytes(peak, v, sizeof v), "largest peak memory of a rank");
    if (cJSON_GetArraySize(d->evals) > 0) {
        snprintf(v, sizeof v, "%d", cJSON_GetArraySize(d->evals));
        card(b, NULL, v, "eval rows");
    }
    if (rs) card(b, NULL, str(rs, "fingerprint", "?"), "fingerprint");
    qs_strbuf_str(b, "</div>\n");
}

/* ---- page: per-layer loss ------------------------------------------------------------------------- */

typedef struct lin_row {
    int block;
    const char *name;
    double loss, rtn;
} lin_row;

static int cmp_worst(const void *a, const void *b)
{
    const lin_row *x = a, *y = b;
    return (y->loss > x->loss) - (y->loss < x->loss);
}

static void superscript_decade(double v, char *buf, size_t cap)
{
    /* 10 with a superscript exponent: "10⁻³" */
    static const char *const sup[] = {"⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"};
    int e = (int)lround(log10(v));
    size_t n = (size_t)snprintf(buf, cap, "10");
    if (e < 0 && n < cap) n += (size_t)snprintf(buf + n, cap - n, "⁻");
    char digits[16];
    snprintf(digits, sizeof digits, "%d", abs(e));
    for (const char *p = digits; *p && n < cap; p++) n += (size_t)snprintf(buf + n, cap - n, "%s", sup[*p - '0']);
}

static void section_loss(qs_strbuf *b, const rp_data *d)
{
    qs_strbuf_str(b, "<h2 id=\"loss\">Quantization loss per layer</h2>\n");
    qs_strbuf_fmt(b, "<p class=\"note\">The H-weighted loss tr((W−Q) H (W−Q)ᵀ) of every quantized linear "
                     "(H: the Hessian of its calibration inputs), %s against round-to-nearest on the same grid, "
                     "log scale, blocks in order. Lower is better.</p>\n",
                  method_name(d));
    int n = 0;
    for (int k = 0; k < d->n_blocks; k++) n += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d->blocks[k].done, "linears"));
    lin_row *rows = n ? calloc((size_t)n, sizeof *rows) : NULL;
    int m = 0, have_rtn = 0, positive = 0;
    double lo = INFINITY, hi = 0;
    for (int k = 0; k < d->n_blocks && rows; k++) {
        cJSON *l;
        cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(d->blocks[k].done, "linears"))
        {
            lin_row *r = &rows[m++];
            r->block = k;
            r->name = str(l, "name", "?");
            r->loss = num(l, "loss", NAN);
            r->rtn = num(l, "loss_rtn", NAN);
            have_rtn += isfinite(r->rtn);
            double vs[2] = {r->loss, r->rtn};
            for (int j = 0; j < 2; j++)
                if (isfinite(vs[j]) && vs[j] > 0) {
                    positive++;
                    if (vs[j] < lo) lo = vs[j];
                    if (vs[j] > hi) hi = vs[j];
                }
        }
    }
    if (m == 0) {
        qs_strbuf_str(b, "<p class=\"note\">No block has finished yet.</p>\n");
        free(rows);
        return;
    }
    if (!positive || !strcmp(str(d->run_start, "method", ""), "rtn")) {
        qs_strbuf_str(b, "<p class=\"note\">No loss to show: RTN runs collect no Hessians, so there is no "
                         "H-weighted loss.</p>\n");
        free(rows);
        return;
    }
    /* geometry: one slot per linear, a gap between blocks */
    double slot = 900.0 / m;
    if (slot > 44) slot = 44;
    if (slot < 5) slot = 5;
    double gap = slot >= 10 ? 6 : 3, left = 62, top = 30, ph = 230;
    int nblk = 0;
    for (int k = 0; k < m; k++) nblk += k == 0 || rows[k].block != rows[k - 1].block;
    double pw = m * slot + (nblk - 1) * gap;
    bool names_fit = slot >= 14;
    double bottom = names_fit ? 78 : 36;
    double width = left + pw + 20, height = top + ph + bottom;
    qs_scale ys = {lo, hi, top + ph, top, true};
    qs_scale_nice(&ys);
    qs_strbuf_str(b, "<div class=\"box\">\n");
    char label[160];
    snprintf(label, sizeof label, "Bar chart: loss of %s and RTN per linear, log scale", method_name(d));
    qs_svg_begin(b, "chart-loss", width, height, label);
    double ticks[32];
    int nt = qs_scale_ticks(&ys, 6, ticks, 32);
    char buf[256], b1[32], b2[32];
    for (int t = 0; t < nt; t++) {
        double y = qs_scale_map(&ys, ticks[t]);
        qs_svg_line(b, left, y, left + pw, y, "#e3e6eb", 1, NULL);
        superscript_decade(ticks[t], buf, sizeof buf);
        qs_svg_text(b, left - 6, y + 4, "end", "axis", 0, buf);
    }
    qs_svg_text(b, 14, top + ph / 2, "middle", "axis", -90, "loss (log)");
    double x = left;
    int blk_start = 0;
    for (int k = 0; k < m; k++) {
        if (k > 0 && rows[k].block != rows[k - 1].block) x += gap;
        const lin_row *r = &rows[k];
        char sn[64];
        short_name(r->name, sn, sizeof sn);
        if (isfinite(r->rtn) && isfinite(r->loss) && r->rtn > 0)
            snprintf(buf, sizeof buf, "block %d %s: %s %s, RTN %s (%.0f%%)", r->block, sn, method_name(d),
                     fmt_g(r->loss, b1, sizeof b1), fmt_g(r->rtn, b2, sizeof b2), 100 * r->loss / r->rtn);
        else
            snprintf(buf, sizeof buf, "block %d %s: %s %s", r->block, sn, method_name(d), fmt_g(r->loss, b1, sizeof b1));
        double y0 = top + ph;
        if (isfinite(r->rtn) && r->rtn > 0) {
            double y = qs_scale_map(&ys, r->rtn);
            qs_svg_rect(b, x + 0.5, y, slot - 1, y0 - y, RTN_COLOR, "mark rtn", buf);
        }
        if (isfinite(r->loss) && r->loss > 0) {
            double y = qs_scale_map(&ys, r->loss), bw = (slot - 1) * 0.6;
            qs_svg_rect(b, x + 0.5 + (slot - 1 - bw) / 2, y, bw, y0 - y, METHOD_COLOR, "mark method", buf);
        }
        if (names_fit) qs_svg_text(b, x + slot / 2 + 3, top + ph + 8, "end", "axis", -55, sn);
        x += slot;
        bool last_of_block = k == m - 1 || rows[k + 1].block != r->block;
        if (last_of_block) {
            double x0 = left + blk_start * slot, x1 = x;
            /* the x of the block's first slot: count the gaps before it */
            int gaps = 0;
            for (int j = 1; j <= blk_start; j++) gaps += rows[j].block != rows[j - 1].block;
            x0 += gaps * gap;
            int every = (int)ceil(nblk * 40.0 / pw);
            if (every < 1) every = 1;
            if (r->block % every == 0) {
                snprintf(buf, sizeof buf, every == 1 && x1 - x0 >= 40 ? "block %d" : "%d", r->block);
                qs_svg_text(b, (x0 + x1) / 2, height - 8, "middle", "axis", 0, buf);
            }
            blk_start = k + 1;
        }
    }
    qs_svg_line(b, left, top + ph, left + pw, top + ph, "#888", 1, NULL);
    qs_svg_end(b);
    qs_strbuf_str(b, "<div class=\"legend\">");
    legend_item(b, METHOD_COLOR, method_name(d));
    if (have_rtn) legend_item(b, RTN_COLOR, "RTN, same grid");
    qs_strbuf_str(b, "</div>\n</div>\n");
    double sm, sr;
    int nb, na;
    loss_sums(d, &sm, &sr, &nb, &na);
    if (nb > 0 && sr > 0)
        qs_strbuf_fmt(b, "<p class=\"note\">Summed over the %d linears where both are known: %s %s, RTN %s — "
                         "%s's loss is %.0f%% of RTN's.</p>\n",
                      nb, method_name(d), fmt_g(sm, b1, sizeof b1), fmt_g(sr, b2, sizeof b2), method_name(d),
                      100 * sm / sr);
    if (have_rtn < m)
        qs_strbuf_str(b, "<p class=\"note\">RTN's loss is shown where it was measured: <code>qshard run "
                         "--rtn-baseline</code> measures it for every linear (one more quantization and GEMM "
                         "each).</p>\n");
    /* the ten worst */
    qsort(rows, (size_t)m, sizeof *rows, cmp_worst);
    qs_strbuf_fmt(b, "<h3>The %d layers with the largest loss</h3>\n<table id=\"worst\"><tr><th>#</th>"
                     "<th class=\"l\">linear</th><th>block</th><th>%s loss</th><th>RTN loss</th><th>%s / RTN</th></tr>\n",
                  m < 10 ? m : 10, method_name(d), method_name(d));
    for (int k = 0; k < m && k < 10; k++) {
        const lin_row *r = &rows[k];
        qs_strbuf_fmt(b, "<tr><td>%d</td><td class=\"l\">", k + 1);
        put_esc(b, r->name);
        qs_strbuf_fmt(b, "</td><td>%d</td><td>%s</td><td>%s</td><td>", r->block, fmt_g(r->loss, b1, sizeof b1),
                      fmt_g(r->rtn, b2, sizeof b2));
        if (isfinite(r->rtn) && r->rtn > 0) qs_strbuf_fmt(b, "%.0f%%", 100 * r->loss / r->rtn);
        else qs_strbuf_str(b, "–");
        qs_strbuf_str(b, "</td></tr>\n");
    }
    qs_strbuf_str(b, "</table>\n");
    free(rows);
}

/* ---- page: timeline ------------------------------------------------------------------------------ */

static const char *fmt_tick(double s, double span, char *buf, size_t cap)
{
    if (span >= 2 * 3600) snprintf(buf, cap, "%.1f h", s / 3600);
    else if (span >= 300) snprintf(buf, cap, "%.0f min", s / 60);
    else snprintf(buf, cap, "%g s", s);
    return buf;
}

static void section_timeline(qs_strbuf *b, const rp_data *d)
{
    qs_strbuf_str(b, "<h2 id=\"timeline\">Timeline per rank</h2>\n");
    if (!d->run_start) {
        qs_strbuf_str(b, "<p class=\"note\">This work dir has no event stream (made by an older qshard): no "
                         "timeline.</p>\n");
        return;
    }
    qs_strbuf_str(b, "<p class=\"note\">Each bar is one block on its rank, from the end of the rank's previous "
                     "block (for its first block: from the start of its stage) to the end of its checkpoint and "
                     "exports, split in proportion to where the time went. Waiting for the previous rank is the "
                     "time until its first micro-batch arrived (a pipeline bubble); communication is the rest of "
                     "the time spent receiving and sending activations, including waiting for micro-batches the "
                     "previous rank is still computing. Time runs from the start of the last attempt.</p>\n");
    double t_end = d->t_last;
    if (d->run_end) t_end = num(d->run_end, "t", t_end);
    int drawn = 0, earlier = 0;
    for (int k = 0; k < d->n_blocks; k++) {
        const rp_block *x = &d->blocks[k];
        if (x->done && x->in_last) {
            drawn++;
            double te = num(x->done, "t_end", 0);
            if (te > t_end) t_end = te;
        } else if (x->done) {
            earlier++;
        }
        if (x->started) drawn++;
    }
    if (!drawn) {
        qs_strbuf_str(b, "<p class=\"note\">No block has started in the last attempt yet.</p>\n");
        return;
    }
    double span = t_end - d->t0;
    if (!(span > 0)) span = 1;
    double left = 128, top = 24, row = 28, pw = 900;
    int R = d->n_ranks > 0 ? d->n_ranks : 1;
    double height = top + R * row + 34, width = left + pw + 24;
    qs_scale xs = {0, span, left, left + pw, false};
    qs_scale_nice(&xs);
    qs_svg_begin(b, "chart-timeline", width, height, "Gantt chart: per rank, each block's time by phase");
    double ticks[32];
    char buf[512], t1[32];
    int nt = qs_scale_ticks(&xs, 8, ticks, 32);
    for (int t = 0; t < nt; t++) {
        double x = qs_scale_map(&xs, ticks[t]);
        qs_svg_line(b, x, top - 4, x, top + R * row, "#e3e6eb", 1, NULL);
        qs_svg_text(b, x, top + R * row + 16, "middle", "axis", 0, fmt_tick(ticks[t], xs.d1, t1, sizeof t1));
    }
    for (int r = 0; r < R; r++) {
        const char *host = NULL;
        for (int k = 0; k < d->n_blocks && !host; k++)
            if (d->blocks[k].done && (int)num(d->blocks[k].done, "rank", -1) == r) host = str(d->blocks[k].done, "host", NULL);
        snprintf(buf, sizeof buf, "rank %d", r);
        qs_svg_text(b, left - 8, top + r * row + row / 2 + 1, "end", "title", 0, buf);
        if (host) qs_svg_text(b, left - 8, top + r * row + row / 2 + 12, "end", "axis", 0, host);
    }
    for (int k = 0; k < d->n_blocks; k++) {
        const rp_block *x = &d->blocks[k];
        if (x->started && !x->done) {
            /* started in the last attempt, not finished: an outline up to the last event */
            double x0 = qs_scale_map(&xs, x->started - d->t0), x1 = qs_scale_map(&xs, d->t_last - d->t0);
            double y = top + x->started_rank * row + 4;
            snprintf(buf, sizeof buf, "rank %d block %d: started, not finished", x->started_rank, k);
            qs_strbuf_fmt(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"#c8423f\" "
                             "stroke-dasharray=\"4 3\" class=\"mark running\"><title>",
                          x0, y, x1 - x0 > 2 ? x1 - x0 : 2, row - 8);
            put_esc(b, buf);
            qs_strbuf_str(b, "</title></rect>\n");
            continue;
        }
        if (!x->done || !x->in_last) continue;
        const cJSON *e = x->done;
        int r = (int)num(e, "rank", 0);
        double ts = num(e, "t_start", d->t0) - d->t0, te = num(e, "t_end", ts + d->t0) - d->t0;
        double x0 = qs_scale_map(&xs, ts), x1 = qs_scale_map(&xs, te), y = top + r * row + 4, h = row - 8;
        const cJSON *ph = cJSON_GetObjectItemCaseSensitive(e, "phases");
        double secs[PH_N], sum = 0, interval = te - ts;
        for (int p = 0; p < PH_N; p++) {
            secs[p] = num(ph, ph_key[p], 0);
            if (!(secs[p] > 0)) secs[p] = 0;
            sum += secs[p];
        }
        double scale = interval > 0 && sum > interval ? interval / sum : 1; /* timer noise never overflows the bar */
        size_t n = (size_t)snprintf(buf, sizeof buf, "rank %d block %d (%s): %s", r, k,
                                    flag(e, "resumed") ? "resumed from its checkpoint" : "quantized",
                                    fmt_s(interval, t1, sizeof t1));
        for (int p = 0; p < PH_N && n < sizeof buf; p++)
            if (secs[p] > 0) n += (size_t)snprintf(buf + n, sizeof buf - n, "; %s %s", ph_label[p], fmt_s(secs[p], t1, sizeof t1));
        double xx = x0, px = interval > 0 ? (x1 - x0) / interval : 0;
        if (flag(e, "resumed")) {
            qs_svg_rect(b, x0, y, x1 - x0 > 1 ? x1 - x0 : 1, h, RESUMED_COLOR, "mark resumed", buf);
        } else {
            for (int p = 0; p < PH_N; p++) {
                double w = secs[p] * scale * px;
                char cls[32];
                snprintf(cls, sizeof cls, "mark ph-%s", ph_key[p]);
                qs_svg_rect(b, xx, y, w, h, ph_color[p], cls, buf);
                xx += w;
            }
            qs_svg_rect(b, xx, y, x1 - xx, h, IDLE_COLOR, "mark ph-idle", buf);
        }
        qs_svg_line(b, x1, y, x1, y + h, "#ffffff", 1, NULL);
        if (x1 - x0 >= 16) {
            snprintf(t1, sizeof t1, "%d", k);
            qs_strbuf_fmt(b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" class=\"bar\" "
                             "style=\"paint-order:stroke;stroke:#1d2330;stroke-width:2px\">%s</text>\n",
                          (x0 + x1) / 2, y + h / 2 + 4, t1);
        }
    }
    if (d->t_stop) {
        double x = qs_scale_map(&xs, d->t_stop - d->t0);
        qs_svg_line(b, x, top - 6, x, top + R * row, "#c8423f", 1.5, "5 3");
        qs_svg_text(b, x + 3, top - 8, "start", "axis", 0, "stop requested");
    }
    qs_svg_end(b);
    qs_strbuf_str(b, "<div class=\"legend\">");
    static const int order[] = {PH_FORWARD, PH_HESSIAN, PH_SOLVE, PH_COMM, PH_IO, PH_WAIT};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) legend_item(b, ph_color[order[i]], ph_label[order[i]]);
    legend_item(b, IDLE_COLOR, "idle (not accounted)");
    legend_item(b, RESUMED_COLOR, "resumed from a checkpoint (forward only)");
    qs_strbuf_str(b, "</div>\n");
    if (earlier)
        qs_strbuf_fmt(b, "<p class=\"note\">%d block(s) finished in earlier attempts and not reached again in "
                         "the last one are not drawn.</p>\n", earlier);

    /* per rank totals */
    qs_strbuf_str(b, "<table id=\"ranks\"><tr><th>rank</th><th class=\"l\">host</th><th>blocks</th><th>forward</th>"
                     "<th>Hessians</th><th>solve</th><th>comm</th><th>waiting</th><th>I/O</th><th>idle</th>"
                     "<th>total</th></tr>\n");
    for (int r = 0; r < R; r++) {
        double s[PH_N] = {0}, total = 0, idle = 0;
        int nblk = 0;
        const char *host = "–";
        for (int k = 0; k < d->n_blocks; k++) {
            const cJSON *e = d->blocks[k].done;
            if (!e || !d->blocks[k].in_last || (int)num(e, "rank", -1) != r) continue;
            nblk++;
            host = str(e, "host", host);
            const cJSON *ph = cJSON_GetObjectItemCaseSensitive(e, "phases");
            double sum = 0, iv = num(e, "t_end", 0) - num(e, "t_start", 0);
            for (int p = 0; p < PH_N; p++) s[p] += num(ph, ph_key[p], 0), sum += num(ph, ph_key[p], 0);
            total += iv;
            if (iv > sum) idle += iv - sum;
        }
        char c[PH_N + 2][32];
        qs_strbuf_fmt(b, "<tr><td>%d</td><td class=\"l\">", r);
        put_esc(b, host);
        qs_strbuf_fmt(b, "</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                         "<td>%s</td><td>%s</td></tr>\n",
                      nblk, fmt_s(s[PH_FORWARD], c[0], 32), fmt_s(s[PH_HESSIAN], c[1], 32), fmt_s(s[PH_SOLVE], c[2], 32),
                      fmt_s(s[PH_COMM], c[3], 32), fmt_s(s[PH_WAIT], c[4], 32), fmt_s(s[PH_IO], c[5], 32),
                      fmt_s(idle, c[6], 32), fmt_s(total, c[7], 32));
    }
    qs_strbuf_str(b, "</table>\n");
}

/* ---- page: memory ------------------------------------------------------------------------------------ */

static const cJSON *plan_of(const rp_data *d, int r)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d->run_start, "plan")) if ((int)num(e, "rank", -1) == r)
        return e;
    return NULL;
}

static double rank_rss_start(const rp_data *d, int r)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d->run_end, "per_rank")) if ((int)num(e, "rank", -1) == r)
        return num(e, "rss_start_bytes", NAN);
    return NAN;
}

static void section_memory(qs_strbuf *b, const rp_data *d)
{
    qs_strbuf_str(b, "<h2 id=\"memory\">Peak memory per rank</h2>\n");
    if (!d->run_start) {
        qs_strbuf_str(b, "<p class=\"note\">This work dir has no event stream: no memory figures.</p>\n");
        return;
    }
    qs_strbuf_str(b, "<p class=\"note\">Measured: the peak resident set (VmHWM) of each rank's process; it "
                     "includes the process's fixed cost (MPI, BLAS, the program), and the tick marks the "
                     "resident set when the run started. Plan: the cost model's prediction for this "
                     "calibration set (<code>qshard plan</code>): the device working set plus the host's "
                     "activations and weights — on the CPU backend both are host memory.</p>\n");
    int R = d->n_ranks > 0 ? d->n_ranks : 1;
    double hi = 0, peak[256], plan[256], start[256];
    if (R > 256) R = 256;
    for (int r = 0; r < R; r++) {
        const cJSON *p = plan_of(d, r);
        peak[r] = rank_peak(d, r);
        plan[r] = p ? num(p, "peak_device_bytes", 0) + num(p, "peak_host_bytes", 0) : NAN;
        start[r] = rank_rss_start(d, r);
        if (isfinite(peak[r]) && peak[r] > hi) hi = peak[r];
        if (isfinite(plan[r]) && plan[r] > hi) hi = plan[r];
    }
    if (!(hi > 0)) {
        qs_strbuf_str(b, "<p class=\"note\">No rank has reported its memory yet.</p>\n");
        return;
    }
    /* the axis counts in the largest binary unit the values reach, so ticks are round there */
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    double unit = 1;
    while (u < 4 && hi / (unit * 1024) >= 1) unit *= 1024, u++;
    double left = 128, top = 10, row = 40, pw = 700, width = left + pw + 110, height = top + R * row + 30;
    qs_scale xs = {0, hi * 1.02 / unit, left, left + pw, false};
    qs_scale_nice(&xs);
    xs.d0 *= unit, xs.d1 *= unit; /* map bytes; ticks below are made in the unit */
    qs_scale xu = {xs.d0 / unit, xs.d1 / unit, left, left + pw, false};
    qs_strbuf_str(b, "<div class=\"box\">\n");
    qs_svg_begin(b, "chart-memory", width, height, "Bar chart: measured peak memory per rank against the plan");
    double ticks[32];
    char buf[256], v1[32], v2[32];
    int nt = qs_scale_ticks(&xu, 6, ticks, 32);
    for (int t = 0; t < nt; t++) {
        double x = qs_scale_map(&xu, ticks[t]);
        qs_svg_line(b, x, top, x, top + R * row, "#e3e6eb", 1, NULL);
        if (ticks[t] == 0) snprintf(v1, sizeof v1, "0");
        else snprintf(v1, sizeof v1, "%g %s", ticks[t], units[u]);
        qs_svg_text(b, x, top + R * row + 16, "middle", "axis", 0, v1);
    }
    for (int r = 0; r < R; r++) {
        double y = top + r * row;
        snprintf(buf, sizeof buf, "rank %d", r);
        qs_svg_text(b, left - 8, y + row / 2 + 4, "end", "title", 0, buf);
        if (isfinite(peak[r])) {
            double x1 = qs_scale_map(&xs, peak[r]);
            snprintf(buf, sizeof buf, "rank %d: measured peak %s", r, fmt_bytes(peak[r], v1, sizeof v1));
            qs_svg_rect(b, left, y + 5, x1 - left, 14, MEM_PEAK_COLOR, "mark mem-peak", buf);
            qs_svg_text(b, x1 + 4, y + 16, "start", "axis", 0, fmt_bytes(peak[r], v1, sizeof v1));
        }
        if (isfinite(plan[r])) {
            double x1 = qs_scale_map(&xs, plan[r]);
            snprintf(buf, sizeof buf, "rank %d: plan %s", r, fmt_bytes(plan[r], v2, sizeof v2));
            qs_svg_rect(b, left, y + 21, x1 - left > 1 ? x1 - left : 1, 12, MEM_PLAN_COLOR, "mark mem-plan", buf);
            snprintf(buf, sizeof buf, "plan %s", fmt_bytes(plan[r], v2, sizeof v2));
            qs_svg_text(b, (x1 > left + 1 ? x1 : left + 1) + 4, y + 31, "start", "axis", 0, buf);
        }
        if (isfinite(start[r]) && start[r] > 0) {
            double x = qs_scale_map(&xs, start[r]);
            qs_svg_line(b, x, y + 2, x, y + 22, "#1d2330", 2, NULL);
        }
    }
    qs_svg_end(b);
    qs_strbuf_str(b, "<div class=\"legend\">");
    legend_item(b, MEM_PEAK_COLOR, "measured peak (VmHWM)");
    legend_item(b, MEM_PLAN_COLOR, "plan: device + host working set");
    qs_strbuf_str(b, "<span>▏ resident set at the start</span></div>\n</div>\n");
    qs_strbuf_str(b, "<table id=\"memtable\"><tr><th>rank</th><th>measured peak</th><th>at start</th>"
                     "<th>peak − start</th><th>plan: device</th><th>plan: host</th><th>plan: total</th></tr>\n");
    for (int r = 0; r < R; r++) {
        const cJSON *p = plan_of(d, r);
        char c[6][32];
        double grown = isfinite(peak[r]) && isfinite(start[r]) ? peak[r] - start[r] : NAN;
        qs_strbuf_fmt(b, "<tr><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n", r,
                      fmt_bytes(peak[r], c[0], 32), fmt_bytes(start[r], c[1], 32), fmt_bytes(grown, c[2], 32),
                      fmt_bytes(p ? num(p, "peak_device_bytes", NAN) : NAN, c[3], 32),
                      fmt_bytes(p ? num(p, "peak_host_bytes", NAN) : NAN, c[4], 32), fmt_bytes(plan[r], c[5], 32));
    }
    qs_strbuf_str(b, "</table>\n");
}

/* ---- page: eval -------------------------------------------------------------------------------------- */

static void section_eval(qs_strbuf *b, const rp_data *d)
{
    qs_strbuf_str(b, "<h2 id=\"eval\">Evaluation</h2>\n");
    if (cJSON_GetArraySize(d->evals) == 0) {
        qs_strbuf_fmt(b, "<p class=\"note\">No evaluation yet: <code>qshard eval --model OUT --ref MODEL --tokens "
                         "T.npy [--tokens T2.npy ...] --report ");
        put_esc(b, d->work);
        qs_strbuf_str(b, "</code> adds a row per token set here.</p>\n");
        return;
    }
    qs_strbuf_str(b, "<p class=\"note\">NLL in nats per scored token (positions 1..L−1 of each row), KL(ref ‖ "
                     "model) per token and top-1 agreement against the reference model.</p>\n");
    qs_strbuf_str(b, "<table id=\"evaltable\"><tr><th class=\"l\">model</th><th class=\"l\">token set</th>"
                     "<th>rows × L</th><th>tokens</th><th>NLL</th><th>perplexity</th><th>KL mean</th>"
                     "<th>KL p99</th><th>top-1</th><th class=\"l\">reference</th></tr>\n");
    const cJSON *e;
    cJSON_ArrayForEach(e, d->evals)
    {
        char c[6][32];
        qs_strbuf_str(b, "<tr><td class=\"l\">");
        put_esc(b, str(e, "model", "?"));
        if (str(e, "file", NULL)) {
            qs_strbuf_str(b, "/");
            put_esc(b, str(e, "file", ""));
        }
        qs_strbuf_str(b, "</td><td class=\"l\">");
        put_esc(b, str(e, "tokens", "?"));
        double kl = num(e, "kl_mean", NAN), p99 = num(e, "kl_p99", NAN), top1 = num(e, "top1", NAN);
        snprintf(c[0], 32, "%.4f", num(e, "nll", NAN));
        snprintf(c[1], 32, "%.3f", num(e, "ppl", NAN));
        if (isfinite(kl)) snprintf(c[2], 32, "%.4f", kl);
        else snprintf(c[2], 32, "–");
        if (isfinite(p99)) snprintf(c[3], 32, "%.4f", p99);
        else snprintf(c[3], 32, "–");
        if (isfinite(top1)) snprintf(c[4], 32, "%.4f", top1);
        else snprintf(c[4], 32, "–");
        qs_strbuf_fmt(b, "</td><td>%.0f × %.0f</td><td>%.0f</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                         "<td>%s</td><td class=\"l\">",
                      num(e, "rows", 0), num(e, "seq_len", 0), num(e, "tokens_scored", 0), c[0], c[1], c[2], c[3], c[4]);
        put_esc(b, str(e, "ref", "–"));
        qs_strbuf_str(b, "</td></tr>\n");
    }
    qs_strbuf_str(b, "</table>\n");
}

/* ---- page: the run ---------------------------------------------------------------------------------- */

static void kv_row(qs_strbuf *b, const char *k, const char *v)
{
    qs_strbuf_str(b, "<tr><th class=\"l\">");
    put_esc(b, k);
    qs_strbuf_str(b, "</th><td class=\"l\">");
    put_esc(b, v);
    qs_strbuf_str(b, "</td></tr>\n");
}

static void section_run(qs_strbuf *b, const rp_data *d)
{
    qs_strbuf_str(b, "<h2 id=\"run\">The run</h2>\n");
    const cJSON *rs = d->run_start;
    if (!rs) {
        qs_strbuf_str(b, "<p class=\"note\">No event stream: the options are in the work dir's "
                         "fingerprint.json.</p>\n");
        return;
    }
    qs_strbuf_str(b, "<h3>Command line</h3>\n<pre id=\"command\">");
    put_esc(b, str(rs, "command", "(not recorded)"));
    qs_strbuf_str(b, "</pre>\n<table id=\"where\">\n");
    kv_row(b, "model", str(rs, "model", "?"));
    kv_row(b, "work dir", str(rs, "work", d->work));
    kv_row(b, "output dir", str(rs, "out", "?"));
    kv_row(b, "exports written", d->exports[0] ? d->exports : "none yet");
    kv_row(b, "host of rank 0", str(rs, "host", "?"));
    if (str(rs, "slurm_job_id", NULL)) kv_row(b, "Slurm job", str(rs, "slurm_job_id", ""));
    if (str(rs, "slurm_restart_count", NULL)) kv_row(b, "Slurm restart count", str(rs, "slurm_restart_count", ""));
    char v[64];
    snprintf(v, sizeof v, "%d", d->attempts);
    kv_row(b, "attempts in this work dir", v);
    time_t t = (time_t)d->t0;
    struct tm tmv;
    if (gmtime_r(&t, &tmv)) {
        strftime(v, sizeof v, "%Y-%m-%d %H:%M:%S UTC", &tmv);
        kv_row(b, "last attempt started", v);
    }
    qs_strbuf_str(b, "</table>\n<h3>Plan</h3>\n<table id=\"plan\"><tr><th>rank</th><th>blocks</th><th class=\"l\">"
                     "stages</th><th>predicted time</th><th>predicted device</th><th>predicted host</th></tr>\n");
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(rs, "plan"))
    {
        char c[3][32];
        qs_strbuf_fmt(b, "<tr><td>%.0f</td><td>[%.0f, %.0f)</td><td class=\"l\">%s%s</td><td>%s</td><td>%s</td>"
                         "<td>%s</td></tr>\n",
                      num(p, "rank", 0), num(p, "first_block", 0), num(p, "end_block", 0),
                      flag(p, "embed") ? "embedding " : "", flag(p, "head") ? "head" : "",
                      fmt_s(num(p, "seconds", NAN), c[0], 32), fmt_bytes(num(p, "peak_device_bytes", NAN), c[1], 32),
                      fmt_bytes(num(p, "peak_host_bytes", NAN), c[2], 32));
    }
    qs_strbuf_str(b, "</table>\n<p class=\"note\">Predicted times assume the cost model's default device "
                     "(30 TFLOP/s); on CPUs the measured times are longer.</p>\n");
    qs_strbuf_str(b, "<h3>Options</h3>\n<table id=\"options\">\n");
    const cJSON *o;
    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(rs, "options"))
    {
        if (cJSON_IsString(o) && o->valuestring[0]) kv_row(b, o->string, o->valuestring);
    }
    qs_strbuf_str(b, "</table>\n<h3>Fingerprint</h3>\n<p class=\"note\">What makes the numbers; a resumed run must "
                     "match it. Id <code>");
    put_esc(b, str(rs, "fingerprint", "?"));
    qs_strbuf_str(b, "</code>.</p>\n");
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(rs, "fingerprint_record");
    if (fr) {
        char *txt = cJSON_Print(fr);
        qs_strbuf_str(b, "<details><summary>the fingerprint record</summary><pre id=\"fingerprint\">");
        put_esc(b, txt ? txt : "");
        qs_strbuf_str(b, "</pre></details>\n");
        free(txt);
    }
    qs_strbuf_str(b, "<h3>Versions</h3>\n<table id=\"versions\">\n");
    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(rs, "versions"))
    {
        if (cJSON_IsString(o)) kv_row(b, o->string, o->valuestring);
    }
    qs_strbuf_str(b, "</table>\n");
}

/* ---- the page ------------------------------------------------------------------------------------------ */

static void render(qs_strbuf *b, const rp_data *d)
{
    const char *model = str(d->run_start, "model", d->work);
    const char *base = strrchr(model, '/');
    qs_strbuf_str(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>qshard report: ");
    put_esc(b, base && base[1] ? base + 1 : model);
    qs_strbuf_fmt(b, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n", css);
    section_summary(b, d);
    section_loss(b, d);
    section_timeline(b, d);
    section_memory(b, d);
    section_eval(b, d);
    section_run(b, d);
    char when[64] = "?";
    time_t t = time(NULL);
    struct tm tmv;
    if (gmtime_r(&t, &tmv)) strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tmv);
    qs_strbuf_str(b, "<footer>Made by qshard ");
#ifdef QS_VERSION
    put_esc(b, QS_VERSION);
#endif
    qs_strbuf_fmt(b, " (<code>qshard report</code>) on %s from the work dir ", when);
    put_esc(b, d->work);
    qs_strbuf_str(b, ". One self-contained file: no scripts, nothing loaded from elsewhere.</footer>\n"
                     "</main>\n</body>\n</html>\n");
}

static bool is_dir(const char *p)
{
    struct stat sb;
    return p && *p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

qs_status qs_report_generate(const char *work_dir, const char *out_path, char *written, size_t cap, qs_error *err)
{
    rp_data d;
    qs_status st = rp_load(work_dir, &d, err);
    if (st != QS_OK) {
        rp_free(&d);
        return st;
    }
    char path[4200];
    if (out_path && *out_path) snprintf(path, sizeof path, "%s", out_path);
    else if (is_dir(str(d.run_start, "out", NULL))) snprintf(path, sizeof path, "%s/report.html", str(d.run_start, "out", ""));
    else snprintf(path, sizeof path, "%s/report.html", work_dir);
    qs_strbuf b = {0};
    render(&b, &d);
    rp_free(&d);
    if (b.oom) {
        qs_strbuf_free(&b);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory for the report", path);
    }
    st = qs_write_file_durable(path, b.p, b.len, err);
    qs_strbuf_free(&b);
    if (st == QS_OK && written) snprintf(written, cap, "%s", path);
    return st;
}

/* ---- eval rows ------------------------------------------------------------------------------------------- */

qs_status qs_report_add_eval(const char *work_dir, const qs_report_eval *row, qs_error *err)
{
    if (!qs_path_exists(work_dir)) return qs_error_set(err, QS_ERR_INPUT, "--report %s: no such work dir", work_dir);
    const qs_eval_result *r = row->r;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "t", qs_wall_clock());
    cJSON_AddStringToObject(o, "model", row->model ? row->model : "?");
    if (row->file) cJSON_AddStringToObject(o, "file", row->file);
    cJSON_AddStringToObject(o, "tokens", row->tokens ? row->tokens : "?");
    if (row->ref) cJSON_AddStringToObject(o, "ref", row->ref);
    cJSON_AddNumberToObject(o, "rows", (double)r->rows);
    cJSON_AddNumberToObject(o, "seq_len", (double)r->seq_len);
    cJSON_AddNumberToObject(o, "tokens_scored", (double)r->tokens);
    cJSON_AddNumberToObject(o, "nll", r->nll);
    cJSON_AddNumberToObject(o, "ppl", r->ppl);
    if (r->has_ref) {
        cJSON_AddNumberToObject(o, "kl_mean", r->kl_mean);
        cJSON_AddNumberToObject(o, "kl_p99", r->kl_p99);
        cJSON_AddNumberToObject(o, "top1", r->top1);
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt) return qs_error_set(err, QS_ERR_NOMEM, "eval row");
    char path[4200];
    snprintf(path, sizeof path, "%s/eval.jsonl", work_dir);
    FILE *f = fopen(path, "a");
    qs_status st = QS_OK;
    if (!f || fprintf(f, "%s\n", txt) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
        st = qs_error_set(err, QS_ERR_IO, "%s: cannot append the eval row", path);
    if (f) fclose(f);
    free(txt);
    return st;
}
