/* report.h — the run report: one self-contained HTML file (report.html).
 *
 * Made from what the work dir holds, so it works for a finished run, an
 * interrupted one and one still going:
 *   WORK/events.jsonl      the event stream (pipeline/events.h): run_start (options,
 *                          fingerprint, plan, versions, command line), block_done
 *                          per block (phases, losses, peak memory), run_end
 *   WORK/eval.jsonl        rows `qshard eval --report WORK` added (one per token set)
 *   WORK/qshard_report.json  used when there is no event stream (runs made before it)
 * The page shows the per-layer loss of the method against RTN (log scale, the
 * ten worst named), a timeline per rank (forward, Hessians, solve,
 * communication, I/O, idle per block), peak memory per rank against the
 * plan, the eval table, and the options, fingerprint, versions and command
 * line. Charts are inline SVG (pipeline/svg.h); the page has no script and
 * refers to nothing outside itself.
 *
 * Written at the end of every run to OUT/report.html (and by `qshard report
 * WORKDIR [--out FILE]`).
 */
#ifndef QS_REPORT_H
#define QS_REPORT_H

#include <stddef.h>

#include "kernels/status.h"
#include "pipeline/eval.h"

/* Writes the report of work_dir durably to out_path; NULL: the run's --out
 * dir/report.html (from the last run_start), else WORK/report.html. The path
 * written goes to written (may be NULL). */
qs_status qs_report_generate(const char *work_dir, const char *out_path, char *written, size_t cap, qs_error *err);

/* One row of the eval table. */
typedef struct qs_report_eval {
    const char *model;   /* the evaluated model dir */
    const char *file;    /* its safetensors file, or NULL */
    const char *tokens;  /* the token set */
    const char *ref;     /* the reference model, or NULL */
    const qs_eval_result *r;
} qs_report_eval;

/* Appends a row to WORK/eval.jsonl. */
qs_status qs_report_add_eval(const char *work_dir, const qs_report_eval *row, qs_error *err);

#endif
