/* cmd_status.c — `qshard status WORKDIR [--json]`: how far a run has got.
 *
 * Reads only what the run and the batch script leave in the work dir:
 *   journal.log        the checkpoint journal (pipeline/checkpoint.h), one event
 *                      a line: JSON ({"block": N, "event": "done"}, "blocks": N
 *                      the total) or text ("... block N ... done", "N blocks")
 *   blocks/block_*.h5  one file per finished block
 *   qshard_report.json written when a run has finished ("blocks", "layers")
 *   fingerprint.json   the run's model dir: its config.json gives the total
 *                      while the journal has not said it yet
 *   slurm_job_id       the id of the Slurm job that last started (the batch script)
 *   slurm_submitted    the ids `qshard submit` got from sbatch
 *   slurm.log          the batch script's events (start, signal, requeue, finish)
 *   slurm_done         the batch script's mark of a finished run
 * A work dir without a journal says "no journal yet".
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pipeline/cli/cli.h"
#include "pipeline/formats/fsutil.h"
#include "pipeline/formats/model_config.h"

#define LAST_EVENTS 5

typedef struct status_info {
    bool journal;
    char journal_path[4200];
    int blocks_total;           /* -1 unknown */
    int blocks_done;            /* -1 unknown */
    char *events[LAST_EVENTS];  /* last journal lines, oldest first */
    int n_events;
    bool finished;              /* the report exists or the batch script marked it done */
    char report_path[4200];
    double report_seconds;
    int report_ranks;
    char job_id[64];
    char submitted[1024];       /* ids, blank-separated */
    char last_slurm_event[1024];
    bool slurm_failed;          /* the batch script's last event is a failure ("failed (exit N)...") */
    int restarts;               /* -1 unknown */
} status_info;

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
}

/* Whole small file into buf (trimmed); false when it is not there. */
static bool read_small(const char *dir, const char *name, char *buf, size_t n)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *data = NULL;
    size_t len = 0;
    qs_error err = {0};
    if (qs_read_file(path, &data, &len, &err) != QS_OK) return false;
    snprintf(buf, n, "%s", data);
    free(data);
    trim(buf);
    return true;
}

static void mark_block(bool **done, int *cap, int b)
{
    if (b < 0 || b > (1 << 24)) return;
    if (b >= *cap) {
        int nc = *cap ? *cap : 64;
        while (nc <= b) nc *= 2;
        bool *p = realloc(*done, (size_t)nc * sizeof *p);
        if (!p) return;
        memset(p + *cap, 0, (size_t)(nc - *cap) * sizeof *p);
        *done = p;
        *cap = nc;
    }
    (*done)[b] = true;
}

static bool event_means_done(const cJSON *obj)
{
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(obj, "event");
    if (!cJSON_IsString(ev)) ev = cJSON_GetObjectItemCaseSensitive(obj, "status");
    if (!cJSON_IsString(ev)) return true; /* a plain {"block": N} record */
    return strstr(ev->valuestring, "done") || strstr(ev->valuestring, "complete") || strstr(ev->valuestring, "finish");
}

/* A text journal line: "block N" with "done" in the line marks N done;
 * "N blocks" or "blocks N" / "blocks=N" gives the total. */
static void text_event(const char *line, bool **done, int *cap, int *total)
{
    char words[64][32];
    int nw = 0;
    for (const char *p = line; *p && nw < 64;) {
        while (*p && !isalnum((unsigned char)*p)) p++;
        size_t k = 0;
        while (isalnum((unsigned char)*p) || *p == '_') {
            if (k + 1 < sizeof words[0]) words[nw][k++] = (char)tolower((unsigned char)*p);
            p++;
        }
        if (k) words[nw][k] = '\0', nw++;
    }
    bool is_done = false;
    for (int i = 0; i < nw; i++) is_done |= !strcmp(words[i], "done") || !strcmp(words[i], "completed");
    for (int i = 0; i < nw; i++) {
        bool next_num = i + 1 < nw && isdigit((unsigned char)words[i + 1][0]);
        if (is_done && !strcmp(words[i], "block") && next_num) mark_block(done, cap, atoi(words[i + 1]));
        if (!strcmp(words[i], "blocks") && next_num) *total = atoi(words[i + 1]);
        if (!strcmp(words[i], "blocks") && i > 0 && isdigit((unsigned char)words[i - 1][0])) *total = atoi(words[i - 1]);
    }
}

/* Finished blocks on disk: WORK/blocks/block_*.h5. */
static int count_block_files(const char *work)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/blocks", work);
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        n += !strncmp(e->d_name, "block_", 6) && len > 9 && !strcmp(e->d_name + len - 3, ".h5");
    }
    closedir(d);
    return n;
}

static void read_journal(const char *work, status_info *s)
{
    static const char *names[] = {"journal.log", "journal.jsonl", "journal"};
    FILE *f = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !f; i++) {
        snprintf(s->journal_path, sizeof s->journal_path, "%s/%s", work, names[i]);
        struct stat sb;
        if (stat(s->journal_path, &sb) == 0 && S_ISREG(sb.st_mode)) f = fopen(s->journal_path, "r");
    }
    if (!f) return;
    s->journal = true;
    bool *done = NULL;
    int cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, f)) > 0) {
        trim(line);
        if (!line[0]) continue;
        if (s->n_events == LAST_EVENTS) {
            free(s->events[0]);
            memmove(s->events, s->events + 1, (LAST_EVENTS - 1) * sizeof s->events[0]);
            s->n_events--;
        }
        s->events[s->n_events++] = strdup(line);
        cJSON *obj = cJSON_Parse(line);
        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            text_event(line, &done, &cap, &s->blocks_total);
            continue;
        }
        const cJSON *total = cJSON_GetObjectItemCaseSensitive(obj, "blocks");
        if (cJSON_IsNumber(total)) s->blocks_total = total->valueint;
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(obj, "block");
        if (cJSON_IsNumber(b) && event_means_done(obj)) mark_block(&done, &cap, b->valueint);
        cJSON_Delete(obj);
    }
    free(line);
    fclose(f);
    s->blocks_done = 0;
    for (int i = 0; i < cap; i++) s->blocks_done += done[i];
    free(done);
    int files = count_block_files(work);
    if (files > s->blocks_done) s->blocks_done = files;
}

/* The total from the model's config.json (fingerprint.json names the model
 * dir; a relative one is tried against the current dir and the work dir's parent). */
static void total_from_fingerprint(const char *work, status_info *s)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fingerprint.json", work);
    char *data = NULL;
    size_t len = 0;
    qs_error err = {0};
    if (qs_read_file(path, &data, &len, &err) != QS_OK) return;
    cJSON *fp = cJSON_Parse(data);
    free(data);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(fp, "model");
    const cJSON *dir = cJSON_GetObjectItemCaseSensitive(model, "dir");
    if (cJSON_IsString(dir)) {
        char cand[2][4200];
        snprintf(cand[0], sizeof cand[0], "%s/config.json", dir->valuestring);
        snprintf(cand[1], sizeof cand[1], "%s/../%s/config.json", work, dir->valuestring);
        for (int i = 0; i < (dir->valuestring[0] == '/' ? 1 : 2); i++) {
            qs_model_config cfg;
            if (qs_path_exists(cand[i]) && qs_model_config_load(cand[i], &cfg, &err) == QS_OK) {
                s->blocks_total = cfg.n_layers;
                break;
            }
        }
    }
    cJSON_Delete(fp);
}

static void read_report(const char *work, status_info *s)
{
    snprintf(s->report_path, sizeof s->report_path, "%s/qshard_report.json", work);
    char *data = NULL;
    size_t len = 0;
    qs_error err = {0};
    if (qs_read_file(s->report_path, &data, &len, &err) != QS_OK) {
        s->report_path[0] = '\0';
        return;
    }
    cJSON *rep = cJSON_Parse(data);
    free(data);
    if (!cJSON_IsObject(rep)) {
        cJSON_Delete(rep);
        s->report_path[0] = '\0';
        return;
    }
    s->finished = true;
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(rep, "blocks");
    if (cJSON_IsNumber(blocks)) {
        s->blocks_total = blocks->valueint;
        s->blocks_done = blocks->valueint; /* a report is written only after every block */
    }
    const cJSON *secs = cJSON_GetObjectItemCaseSensitive(rep, "seconds");
    if (cJSON_IsNumber(secs)) s->report_seconds = secs->valuedouble;
    const cJSON *ranks = cJSON_GetObjectItemCaseSensitive(rep, "ranks");
    if (cJSON_IsNumber(ranks)) s->report_ranks = ranks->valueint;
    cJSON_Delete(rep);
}

static void read_slurm(const char *work, status_info *s)
{
    if (!read_small(work, "slurm_job_id", s->job_id, sizeof s->job_id)) s->job_id[0] = '\0';
    if (read_small(work, "slurm_submitted", s->submitted, sizeof s->submitted)) {
        for (char *p = s->submitted; *p; p++)
            if (*p == '\n') *p = ' ';
    } else {
        s->submitted[0] = '\0';
    }
    char done[64];
    if (read_small(work, "slurm_done", done, sizeof done)) s->finished = true;
    char path[4200];
    snprintf(path, sizeof path, "%s/slurm.log", work);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        trim(line);
        if (!line[0]) continue;
        snprintf(s->last_slurm_event, sizeof s->last_slurm_event, "%s", line);
        /* the batch script's own words for a job that ended in an error
         * (slurm/qshard.sbatch: "failed (exit N)...", one line) */
        s->slurm_failed = strstr(line, " failed (exit ") != NULL;
        const char *r = strstr(line, " restart=");
        if (r) s->restarts = atoi(r + 9);
    }
    free(line);
    fclose(f);
}

static void print_text(const char *work, const status_info *s)
{
    printf("work dir: %s\n", work);
    if (s->journal) {
        if (s->blocks_total >= 0) printf("blocks:   %d/%d done (journal %s)\n", s->blocks_done, s->blocks_total, s->journal_path);
        else printf("blocks:   %d done (journal %s)\n", s->blocks_done, s->journal_path);
    } else if (s->report_path[0] && s->blocks_total >= 0) {
        printf("blocks:   %d/%d done (no journal yet; from %s)\n", s->blocks_done, s->blocks_total, s->report_path);
    } else {
        printf("blocks:   no journal yet\n");
    }
    if (s->report_path[0])
        printf("finished: yes, in %.1f s on %d rank(s) (%s)\n", s->report_seconds, s->report_ranks, s->report_path);
    else
        printf("finished: %s\n", s->finished       ? "yes (the Slurm job marked it done)"
                                  : s->slurm_failed ? "no: the last Slurm job failed (its slurm log line below)"
                                                    : "no");
    if (s->n_events) {
        printf("last journal events:\n");
        for (int i = 0; i < s->n_events; i++) printf("  %s\n", s->events[i]);
    }
    if (s->job_id[0]) printf("slurm job: %s", s->job_id);
    else if (s->submitted[0]) printf("slurm job: submitted, not started yet");
    else printf("slurm job: none (not submitted with qshard submit)");
    if (s->restarts >= 0) printf(", restarts %d", s->restarts);
    printf("\n");
    if (s->submitted[0]) printf("submitted: %s\n", s->submitted);
    if (s->last_slurm_event[0]) printf("slurm log: %s\n", s->last_slurm_event);
}

static int print_json(const char *work, const status_info *s)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "work", work);
    cJSON_AddBoolToObject(j, "journal", s->journal);
    if (s->blocks_done >= 0) cJSON_AddNumberToObject(j, "blocks_done", s->blocks_done);
    else cJSON_AddNullToObject(j, "blocks_done");
    if (s->blocks_total >= 0) cJSON_AddNumberToObject(j, "blocks_total", s->blocks_total);
    else cJSON_AddNullToObject(j, "blocks_total");
    cJSON_AddBoolToObject(j, "finished", s->finished);
    cJSON *ev = cJSON_AddArrayToObject(j, "last_events");
    for (int i = 0; i < s->n_events; i++) cJSON_AddItemToArray(ev, cJSON_CreateString(s->events[i]));
    if (s->job_id[0]) cJSON_AddStringToObject(j, "slurm_job_id", s->job_id);
    else cJSON_AddNullToObject(j, "slurm_job_id");
    cJSON *sub = cJSON_AddArrayToObject(j, "slurm_submitted");
    char ids[sizeof s->submitted];
    snprintf(ids, sizeof ids, "%s", s->submitted);
    for (char *save = NULL, *t = strtok_r(ids, " ", &save); t; t = strtok_r(NULL, " ", &save))
        cJSON_AddItemToArray(sub, cJSON_CreateString(t));
    if (s->restarts >= 0) cJSON_AddNumberToObject(j, "slurm_restarts", s->restarts);
    else cJSON_AddNullToObject(j, "slurm_restarts");
    cJSON_AddBoolToObject(j, "slurm_failed", s->slurm_failed);
    if (s->last_slurm_event[0]) cJSON_AddStringToObject(j, "slurm_last_event", s->last_slurm_event);
    else cJSON_AddNullToObject(j, "slurm_last_event");
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    if (!txt) return qs_cli_report("status", &(qs_error){QS_ERR_NOMEM, "out of memory"});
    printf("%s\n", txt);
    free(txt);
    return 0;
}

int qs_cmd_status(int argc, char **argv)
{
    if (qs_cli_wants_help(argc, argv)) {
        printf("usage: qshard status WORKDIR [--json]\n\n"
               "How far the run in WORKDIR has got: blocks done / total from its journal, the last\n"
               "journal events, whether it has finished, and the Slurm job (id, restarts, last event)\n"
               "recorded by the batch script of `qshard submit`.\n");
        return 0;
    }
    const char *work = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] == '-') return qs_cli_usage_error("status", "unknown option '%s'", argv[i]);
        else if (work) return qs_cli_usage_error("status", "one WORKDIR expected, got '%s' and '%s'", work, argv[i]);
        else work = argv[i];
    }
    if (!work) return qs_cli_usage_error("status", "WORKDIR is required");
    struct stat sb;
    if (stat(work, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        qs_error err;
        qs_error_set(&err, QS_ERR_INPUT, "%s: no such work directory", work);
        return qs_cli_report("status", &err);
    }
    status_info s;
    memset(&s, 0, sizeof s);
    s.blocks_total = -1;
    s.blocks_done = -1;
    s.restarts = -1;
    read_journal(work, &s);
    if (s.journal && s.blocks_total < 0) total_from_fingerprint(work, &s);
    read_report(work, &s);
    read_slurm(work, &s);
    int code = json ? print_json(work, &s) : (print_text(work, &s), 0);
    for (int i = 0; i < s.n_events; i++) free(s.events[i]);
    return code;
}
