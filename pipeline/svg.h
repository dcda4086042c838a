/* svg.h — a small writer of inline SVG for the run report's charts.
 *
 * The report (pipeline/report.c) is one HTML file that must show its charts
 * with no JavaScript and nothing fetched, so charts are plain SVG elements
 * written into the page: rectangles, lines and text, each mark optionally
 * with a <title> (the browser shows it as a tooltip). Styling comes from
 * classes the page's <style> defines. Coordinates are in CSS pixels.
 *
 * Scales map data to pixels: linear (ticks at 1-2-5 steps) or log10 (ticks
 * at decades). Everything is appended to a qs_strbuf; text is escaped.
 */
#ifndef QS_SVG_H
#define QS_SVG_H

#include <stdbool.h>

#include "pipeline/formats/strbuf.h"

/* Appends s with &, <, >, " and ' escaped (valid in HTML text and attributes). */
void qs_xml_escape(qs_strbuf *b, const char *s);

/* <svg id=.. class="chart" width height viewBox role="img" aria-label=..> */
void qs_svg_begin(qs_strbuf *b, const char *id, double width, double height, const char *label);
void qs_svg_end(qs_strbuf *b);

/* A filled rectangle; cls and title may be NULL. Zero or negative sizes are skipped. */
void qs_svg_rect(qs_strbuf *b, double x, double y, double w, double h, const char *fill, const char *cls,
                 const char *title);
/* A line; dash may be NULL (solid). */
void qs_svg_line(qs_strbuf *b, double x1, double y1, double x2, double y2, const char *stroke, double width,
                 const char *dash);
/* Text at (x, y) (baseline); anchor "start", "middle" or "end"; cls may be NULL;
 * rotate (degrees) turns it about (x, y). */
void qs_svg_text(qs_strbuf *b, double x, double y, const char *anchor, const char *cls, double rotate,
                 const char *text);

/* ---- scales ------------------------------------------------------------------------ */

typedef struct qs_scale {
    double d0, d1; /* data domain (log: both > 0) */
    double r0, r1; /* pixel range */
    bool log;
} qs_scale;

/* Data value → pixel (clamped to the range; log of v <= 0 maps to r0). */
double qs_scale_map(const qs_scale *s, double v);

/* Widens a linear domain to nice bounds (0 stays 0) or a log domain to decades. */
void qs_scale_nice(qs_scale *s);

/* Tick values inside the domain: decades (log) or 1-2-5 steps (linear, about
 * `target` of them). Returns the count (at most max). */
int qs_scale_ticks(const qs_scale *s, int target, double *ticks, int max);

#endif
