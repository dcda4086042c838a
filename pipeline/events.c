/* events.c — the run's JSON-lines event stream (see events.h). */
#include "pipeline/events.h"

#include <cblas.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#ifndef QS_VERSION
#define QS_VERSION "unknown"
#endif

/* ---- the process ----------------------------------------------------------------------- */

double qs_wall_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A "Name:   123 kB" line of /proc/self/status, in bytes; 0 when absent. */
static uint64_t proc_status_kb(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t n = strlen(name);
    uint64_t v = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, name, n) && line[n] == ':') {
            v = strtoull(line + n + 1, NULL, 10) * 1024u;
            break;
        }
    fclose(f);
    return v;
}

uint64_t qs_mem_peak_rss(void)
{
    uint64_t v = proc_status_kb("VmHWM");
    if (v) return v;
    struct rusage ru; /* ru_maxrss is in KiB on Linux */
    if (getrusage(RUSAGE_SELF, &ru) == 0 && ru.ru_maxrss > 0) return (uint64_t)ru.ru_maxrss * 1024u;
    return 0;
}

uint64_t qs_mem_rss(void) { return proc_status_kb("VmRSS"); }

cJSON *qs_versions_json(void)
{
    cJSON *v = cJSON_CreateObject();
    char buf[128];
    cJSON_AddStringToObject(v, "qshard", QS_VERSION);
#ifdef __VERSION__
    cJSON_AddStringToObject(v, "compiler", __VERSION__);
#endif
    cJSON_AddStringToObject(v, "cjson", cJSON_Version());
    unsigned maj = 0, min = 0, rel = 0;
    if (H5get_libversion(&maj, &min, &rel) >= 0) {
        snprintf(buf, sizeof buf, "%u.%u.%u", maj, min, rel);
        cJSON_AddStringToObject(v, "hdf5", buf);
    }
    unsigned x = XXH_versionNumber();
    snprintf(buf, sizeof buf, "%u.%u.%u", x / 10000, x / 100 % 100, x % 100);
    cJSON_AddStringToObject(v, "xxhash", buf);
    const char *ob = openblas_get_config();
    if (ob) cJSON_AddStringToObject(v, "openblas", ob);
    return v;
}

/* ---- one block ---------------------------------------------------------------------------- */

void qs_block_event_from_outcome(qs_block_event *e, const qs_block_outcome *o, int rank, double tokens)
{
    memset(e, 0, sizeof *e);
    e->layer = o->layer;
    e->rank = rank;
    e->resumed = o->resumed;
    e->n_linears = o->blk->n_linears;
    e->timing = o->timing;
    e->seconds = o->seconds;
    e->tokens = tokens;
    for (int i = 0; i < e->n_linears && i < QS_MAX_BLOCK_LINEARS; i++) {
        e->loss[i] = o->stats[i].loss;
        e->loss_rtn[i] = o->stats[i].loss_rtn;
        e->h_trace[i] = o->stats[i].h_trace;
        e->lin_seconds[i] = o->stats[i].seconds;
        e->samples[i] = o->stats[i].samples;
    }
    if (gethostname(e->host, sizeof e->host - 1) != 0) snprintf(e->host, sizeof e->host, "?");
    e->peak_rss = (double)qs_mem_peak_rss();
}

/* NaN and infinities are not JSON: they become null. */
static void add_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

cJSON *qs_block_event_json(const qs_block_event *e, const char *const *names)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rank", e->rank);
    cJSON_AddNumberToObject(o, "block", e->layer);
    cJSON_AddBoolToObject(o, "resumed", e->resumed != 0);
    cJSON_AddStringToObject(o, "host", e->host);
    add_num(o, "t_start", e->timing.t_start);
    add_num(o, "t_end", e->timing.t_end);
    add_num(o, "seconds", e->seconds);
    cJSON *ph = cJSON_AddObjectToObject(o, "phases");
    add_num(ph, "forward", e->timing.forward);
    add_num(ph, "hessian", e->timing.hessian);
    add_num(ph, "solve", e->timing.solve);
    add_num(ph, "comm", e->timing.comm);
    add_num(ph, "wait", e->timing.wait);
    add_num(ph, "io", e->timing.io);
    add_num(o, "checkpoint_s", e->checkpoint_s);
    add_num(o, "export_s", e->export_s);
    add_num(o, "tokens", e->tokens);
    cJSON_AddNumberToObject(o, "peak_rss_bytes", e->peak_rss);
    double loss = 0, loss_rtn = 0;
    bool have_rtn = e->n_linears > 0;
    cJSON *lins = cJSON_AddArrayToObject(o, "linears");
    for (int i = 0; i < e->n_linears && i < QS_MAX_BLOCK_LINEARS; i++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "name", names && names[i] ? names[i] : "?");
        add_num(l, "loss", e->loss[i]);
        add_num(l, "loss_rtn", e->loss_rtn[i]);
        add_num(l, "h_trace", e->h_trace[i]);
        cJSON_AddNumberToObject(l, "samples", (double)e->samples[i]);
        add_num(l, "seconds", e->lin_seconds[i]);
        cJSON_AddItemToArray(lins, l);
        loss += e->loss[i];
        if (isfinite(e->loss_rtn[i])) loss_rtn += e->loss_rtn[i];
        else have_rtn = false;
    }
    add_num(o, "loss", loss);
    add_num(o, "loss_rtn", have_rtn ? loss_rtn : NAN);
    return o;
}

/* ---- the sinks -------------------------------------------------------------------------------- */

#define QS_EVENT_SINKS 2

struct qs_events {
    FILE *f[QS_EVENT_SINKS];
    char path[QS_EVENT_SINKS][4200];
};

qs_status qs_events_open(qs_events **out, const char *work_dir, const char *log_json, qs_error *err)
{
    qs_events *ev = calloc(1, sizeof *ev);
    if (!ev) return qs_error_set(err, QS_ERR_NOMEM, "event log");
    snprintf(ev->path[0], sizeof ev->path[0], "%s/events.jsonl", work_dir);
    ev->f[0] = fopen(ev->path[0], "a");
    if (!ev->f[0]) {
        qs_status s = qs_error_set(err, QS_ERR_IO, "%s: cannot open the event log for appending: %s", ev->path[0],
                                   strerror(errno));
        free(ev);
        return s;
    }
    if (log_json && *log_json) {
        snprintf(ev->path[1], sizeof ev->path[1], "%s", log_json);
        ev->f[1] = fopen(log_json, "w");
        if (!ev->f[1]) {
            qs_status s = qs_error_set(err, QS_ERR_INPUT, "--log-json %s: cannot open for writing: %s", log_json,
                                       strerror(errno));
            fclose(ev->f[0]);
            free(ev);
            return s;
        }
    }
    *out = ev;
    return QS_OK;
}

void qs_events_close(qs_events *ev)
{
    if (!ev) return;
    for (int i = 0; i < QS_EVENT_SINKS; i++)
        if (ev->f[i]) fclose(ev->f[i]);
    free(ev);
}

void qs_events_emit(qs_events *ev, const char *event, cJSON *obj)
{
    if (!ev) {
        cJSON_Delete(obj);
        return;
    }
    /* "event" and "t" first, so that a reader of the raw lines sees them first */
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "event", event);
    cJSON_AddNumberToObject(line, "t", qs_wall_clock());
    if (obj) {
        cJSON *it = obj->child;
        obj->child = NULL;
        while (it) {
            cJSON *next = it->next;
            it->prev = it->next = NULL;
            cJSON_AddItemToObject(line, it->string, it); /* cJSON copies the key */
            it = next;
        }
        cJSON_Delete(obj);
    }
    char *txt = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (!txt) return;
    for (int i = 0; i < QS_EVENT_SINKS; i++) {
        if (!ev->f[i]) continue;
        if (fprintf(ev->f[i], "%s\n", txt) < 0 || fflush(ev->f[i]) != 0) {
            fprintf(stderr, "qshard run: warning: %s: cannot write the event log (%s); no more events there\n",
                    ev->path[i], strerror(errno));
            fclose(ev->f[i]);
            ev->f[i] = NULL;
        }
    }
    free(txt);
}
