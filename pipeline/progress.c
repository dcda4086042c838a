/* progress.c — the live progress line and the plain per-block lines (see progress.h). */
#include "pipeline/progress.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- which mode -------------------------------------------------------------------------- */

/* Under Open MPI every rank's stdout is a pseudo-terminal of mpirun's; the
 * terminal that matters is mpirun's own fd (the rank's parent on its node). */
static bool launcher_fd_is_tty(int fd)
{
    if (!getenv("OMPI_COMM_WORLD_SIZE")) return true;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getppid(), fd);
    int t = open(path, O_WRONLY | O_NOCTTY | O_NONBLOCK);
    if (t < 0) return false;
    bool yes = isatty(t);
    close(t);
    return yes;
}

qs_progress_mode qs_progress_mode_for(FILE *f, const char *setting, bool quiet)
{
    if (quiet) return QS_PROGRESS_QUIET;
    if (setting && !strcmp(setting, "live")) return QS_PROGRESS_LIVE;
    if (setting && !strcmp(setting, "plain")) return QS_PROGRESS_PLAIN;
    int fd = fileno(f);
    const char *term = getenv("TERM");
    if (fd < 0 || !isatty(fd) || (term && !strcmp(term, "dumb"))) return QS_PROGRESS_PLAIN;
    return launcher_fd_is_tty(fd) ? QS_PROGRESS_LIVE : QS_PROGRESS_PLAIN;
}

/* ---- state -------------------------------------------------------------------------------- */

qs_status qs_progress_init(qs_progress *p, FILE *f, qs_progress_mode mode, const qs_stage_plan *stages, int n_ranks,
                           int n_blocks, bool pipelined, double tokens_per_block, qs_error *err)
{
    memset(p, 0, sizeof *p);
    p->f = f;
    p->mode = mode;
    p->n_ranks = n_ranks;
    p->n_blocks = n_blocks;
    p->pipelined = pipelined;
    p->tokens_per_block = tokens_per_block;
    p->t0 = mono();
    p->first = calloc((size_t)n_ranks, sizeof(int));
    p->end = calloc((size_t)n_ranks, sizeof(int));
    p->current = calloc((size_t)n_ranks, sizeof(int));
    p->done = calloc((size_t)n_ranks, sizeof(int));
    if (!p->first || !p->end || !p->current || !p->done) {
        qs_progress_free(p);
        return qs_error_set(err, QS_ERR_NOMEM, "progress of %d ranks", n_ranks);
    }
    for (int r = 0; r < n_ranks; r++) {
        p->first[r] = stages[r].first_block;
        p->end[r] = stages[r].end_block;
        p->current[r] = -1;
    }
    return QS_OK;
}

void qs_progress_free(qs_progress *p)
{
    free(p->first);
    free(p->end);
    free(p->current);
    free(p->done);
    p->first = p->end = p->current = p->done = NULL;
}

void qs_progress_fmt_eta(double s, char *buf, size_t cap)
{
    if (s < 90) snprintf(buf, cap, "%.0f s", s);
    else if (s < 5400) snprintf(buf, cap, "%.0f min", s / 60);
    else snprintf(buf, cap, "%.1f h", s / 3600);
}

static void fmt_rate(double v, char *buf, size_t cap)
{
    if (v >= 1e6) snprintf(buf, cap, "%.1fM", v / 1e6);
    else if (v >= 1e4) snprintf(buf, cap, "%.1fk", v / 1e3);
    else snprintf(buf, cap, "%.0f", v);
}

/* ETA and rate from what is known so far; false when nothing was computed yet. */
static bool estimate(const qs_progress *p, double *eta, double *rate)
{
    if (!p->computed) return false;
    double mean = p->block_seconds / p->computed;
    if (p->pipelined) {
        double worst = 0;
        for (int r = 0; r < p->n_ranks; r++) {
            double left = (p->end[r] - p->first[r] - p->done[r]) * mean;
            if (left > worst) worst = left;
        }
        *eta = worst;
    } else {
        *eta = (p->n_blocks - p->reported) * mean;
    }
    double el = mono() - p->t0;
    *rate = el > 0 ? p->tokens_per_block * p->computed / el : 0;
    return true;
}

/* ---- the live line ---------------------------------------------------------------------------- */

static int term_width(const qs_progress *p)
{
    struct winsize ws;
    if (ioctl(fileno(p->f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    const char *c = getenv("COLUMNS");
    int w = c ? atoi(c) : 0;
    return w >= 20 ? w : 100;
}

static void draw(qs_progress *p)
{
    if (p->mode != QS_PROGRESS_LIVE) return;
    char line[1024];
    size_t n = 0;
#define PUT(...)                                                                         \
    do {                                                                                 \
        if (n < sizeof line) n += (size_t)snprintf(line + n, sizeof line - n, __VA_ARGS__); \
    } while (0)
    char el[32];
    qs_progress_fmt_eta(mono() - p->t0, el, sizeof el);
    PUT("qshard run: %d/%d blocks, %s", p->reported, p->n_blocks, el);
    double eta, rate;
    if (estimate(p, &eta, &rate)) {
        char e[32], r[32];
        qs_progress_fmt_eta(eta, e, sizeof e);
        fmt_rate(rate, r, sizeof r);
        PUT(", %s tok/s, ETA %s", r, e);
    }
    for (int k = 0; k < p->n_ranks; k++) {
        int own = p->end[k] - p->first[k];
        if (p->current[k] >= 0) PUT(" | r%d %d/%d (block %d)", k, p->done[k], own, p->current[k] + 1);
        else if (p->done[k] == own) PUT(" | r%d done", k);
        else PUT(" | r%d %d/%d", k, p->done[k], own);
    }
#undef PUT
    if (n >= sizeof line) n = sizeof line - 1;
    /* never wrap: a wrapped line cannot be rewritten with "\r" */
    size_t w = (size_t)term_width(p) - 1;
    if (n > w) {
        n = w;
        if (n > 3) memcpy(line + n - 3, "...", 3);
    }
    line[n] = '\0';
    fprintf(p->f, "\r%s\033[K", line);
    fflush(p->f);
    p->shown = true;
    p->last_draw = mono();
}

void qs_progress_tick(qs_progress *p)
{
    if (p->mode == QS_PROGRESS_LIVE && mono() - p->last_draw >= 0.5) draw(p);
}

void qs_progress_message(qs_progress *p, const char *fmt, ...)
{
    if (p->mode == QS_PROGRESS_QUIET) return;
    if (p->shown) fputs("\r\033[K", p->f);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->f, fmt, ap);
    va_end(ap);
    fputc('\n', p->f);
    fflush(p->f);
    if (p->shown) draw(p);
}

void qs_progress_end(qs_progress *p)
{
    if (p->mode == QS_PROGRESS_LIVE && p->shown) {
        draw(p);
        fputc('\n', p->f);
        fflush(p->f);
        p->shown = false;
    }
}

/* ---- events ------------------------------------------------------------------------------------ */

void qs_progress_block_start(qs_progress *p, int rank, int layer)
{
    if (rank < 0 || rank >= p->n_ranks) return;
    p->current[rank] = layer;
    draw(p);
}

void qs_progress_block_done(qs_progress *p, int rank, int layer, double seconds, bool resumed)
{
    if (rank < 0 || rank >= p->n_ranks) return;
    p->reported++;
    p->done[rank]++;
    if (p->current[rank] == layer) p->current[rank] = -1;
    if (!resumed) {
        p->block_seconds += seconds;
        p->computed++;
    }
    if (p->mode == QS_PROGRESS_PLAIN) {
        char eta[32] = "-", rate[32] = "-";
        double e, r;
        if (estimate(p, &e, &r)) {
            qs_progress_fmt_eta(e, eta, sizeof eta);
            fmt_rate(r, rate, sizeof rate);
        }
        fprintf(p->f, "qshard run: block %d of %d %s (rank %d, %.2f s); %d/%d done after %.1f s, %s tok/s, ETA %s\n",
                layer + 1, p->n_blocks, resumed ? "resumed from its checkpoint" : "quantized", rank, seconds,
                p->reported, p->n_blocks, mono() - p->t0, rate, eta);
        fflush(p->f);
    } else {
        draw(p);
    }
}
