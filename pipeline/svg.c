/* svg.c — inline SVG marks and scales for the report (see svg.h). */
#include "pipeline/svg.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void qs_xml_escape(qs_strbuf *b, const char *s)
{
    if (!s) return;
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: break;
        }
        if (!rep) continue;
        qs_strbuf_put(b, run, (size_t)(p - run));
        qs_strbuf_str(b, rep);
        run = p + 1;
    }
    qs_strbuf_str(b, run);
}

void qs_svg_begin(qs_strbuf *b, const char *id, double width, double height, const char *label)
{
    qs_strbuf_str(b, "<svg id=\"");
    qs_xml_escape(b, id);
    qs_strbuf_fmt(b, "\" class=\"chart\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
                     "aria-label=\"", width, height, width, height);
    qs_xml_escape(b, label);
    qs_strbuf_str(b, "\">\n");
}

void qs_svg_end(qs_strbuf *b) { qs_strbuf_str(b, "</svg>\n"); }

void qs_svg_rect(qs_strbuf *b, double x, double y, double w, double h, const char *fill, const char *cls,
                 const char *title)
{
    if (!(w > 0) || !(h > 0)) return;
    qs_strbuf_fmt(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\"", x, y, w, h);
    if (fill) {
        qs_strbuf_str(b, " fill=\"");
        qs_xml_escape(b, fill);
        qs_strbuf_str(b, "\"");
    }
    if (cls) {
        qs_strbuf_str(b, " class=\"");
        qs_xml_escape(b, cls);
        qs_strbuf_str(b, "\"");
    }
    if (title) {
        qs_strbuf_str(b, "><title>");
        qs_xml_escape(b, title);
        qs_strbuf_str(b, "</title></rect>\n");
    } else {
        qs_strbuf_str(b, "/>\n");
    }
}

void qs_svg_line(qs_strbuf *b, double x1, double y1, double x2, double y2, const char *stroke, double width,
                 const char *dash)
{
    qs_strbuf_fmt(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"", x1, y1, x2, y2);
    qs_xml_escape(b, stroke);
    qs_strbuf_fmt(b, "\" stroke-width=\"%.2f\"", width);
    if (dash) {
        qs_strbuf_str(b, " stroke-dasharray=\"");
        qs_xml_escape(b, dash);
        qs_strbuf_str(b, "\"");
    }
    qs_strbuf_str(b, "/>\n");
}

void qs_svg_text(qs_strbuf *b, double x, double y, const char *anchor, const char *cls, double rotate,
                 const char *text)
{
    qs_strbuf_fmt(b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"%s\"", x, y, anchor ? anchor : "start");
    if (cls) {
        qs_strbuf_str(b, " class=\"");
        qs_xml_escape(b, cls);
        qs_strbuf_str(b, "\"");
    }
    if (rotate != 0) qs_strbuf_fmt(b, " transform=\"rotate(%.1f %.2f %.2f)\"", rotate, x, y);
    qs_strbuf_str(b, ">");
    qs_xml_escape(b, text);
    qs_strbuf_str(b, "</text>\n");
}

/* ---- scales ------------------------------------------------------------------------------ */

double qs_scale_map(const qs_scale *s, double v)
{
    double t;
    if (s->log) {
        if (!(v > 0) || !(s->d0 > 0) || !(s->d1 > s->d0)) return s->r0;
        t = (log10(v) - log10(s->d0)) / (log10(s->d1) - log10(s->d0));
    } else {
        if (!(s->d1 > s->d0)) return s->r0;
        t = (v - s->d0) / (s->d1 - s->d0);
    }
    if (!(t >= 0)) t = 0; /* NaN too */
    if (t > 1) t = 1;
    return s->r0 + t * (s->r1 - s->r0);
}

/* The 1-2-5 step that gives about `target` intervals over span. */
static double nice_step(double span, int target)
{
    if (!(span > 0) || target < 1) return 1;
    double raw = span / target;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

void qs_scale_nice(qs_scale *s)
{
    if (s->log) {
        if (!(s->d0 > 0)) s->d0 = s->d1 > 0 ? s->d1 / 10 : 1;
        if (!(s->d1 > 0)) s->d1 = s->d0 * 10;
        s->d0 = pow(10, floor(log10(s->d0)));
        s->d1 = pow(10, ceil(log10(s->d1)));
        if (s->d1 <= s->d0) s->d1 = s->d0 * 10;
        return;
    }
    if (!(s->d1 > s->d0)) s->d1 = s->d0 + 1;
    double step = nice_step(s->d1 - s->d0, 5);
    s->d0 = floor(s->d0 / step) * step;
    s->d1 = ceil(s->d1 / step) * step;
}

int qs_scale_ticks(const qs_scale *s, int target, double *ticks, int max)
{
    int n = 0;
    if (s->log) {
        if (!(s->d0 > 0) || !(s->d1 > s->d0)) return 0;
        int e0 = (int)ceil(log10(s->d0) - 1e-9), e1 = (int)floor(log10(s->d1) + 1e-9);
        int every = 1;
        while ((e1 - e0) / every + 1 > (target > 1 ? target * 2 : 2)) every++;
        for (int e = e0; e <= e1 && n < max; e += every) ticks[n++] = pow(10, e);
        return n;
    }
    double step = nice_step(s->d1 - s->d0, target);
    for (double v = ceil(s->d0 / step - 1e-9) * step; v <= s->d1 + step * 1e-9 && n < max; v += step)
        ticks[n++] = fabs(v) < step * 1e-9 ? 0 : v;
    return n;
}
