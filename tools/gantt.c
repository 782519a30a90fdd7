/*
 * `loom profile --gantt OUT.svg`: the last measured run as a standalone SVG Gantt chart (no
 * script, no external reference). See gantt.h.
 */
#include "gantt.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool_util.h"

/* Layout, in pixels. */
#define LEFT 170.0  /* lane labels (link ids are long) */
#define PLOT_W 1000.0
#define RIGHT 30.0
#define TOP 40.0
#define LANE_H 26.0
#define LANE_GAP 8.0

enum { CLASS_GEMM, CLASS_ELEMENTWISE, CLASS_NORM, CLASS_DATA, CLASS_OTHER, N_CLASSES };

static const struct {
    const char *css, *label, *colour;
} classes[N_CLASSES] = {
    {"gemm", "GEMM-like (MatMul, Gemm, Conv)", "#4e79a7"},
    {"elementwise", "elementwise", "#59a14f"},
    {"norm", "normalisation (Softmax, LayerNorm, BatchNorm, Reduce*)", "#f28e2b"},
    {"data", "data movement and copies (Reshape, Transpose, Concat, Gather, Copy...)", "#b07aa1"},
    {"other", "other", "#edc948"},
};
#define AGG_COLOUR "#9e9e9e"
#define TARGET_COLOUR "#d62728"

/* Whether OP is one of LIST (NULL-terminated). */
static int in_list(const char *op, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(op, *list))
            return 1;
    return 0;
}

/* The colour class of OP: what kind of work it is, at a glance. */
static int op_class(const char *op)
{
    static const char *const gemm[] = {"MatMul", "Gemm", "Conv", "ConvTranspose",
                                       "MatMulInteger", "QLinearMatMul", "QLinearConv",
                                       "ConvInteger", "Einsum", NULL};
    static const char *const norm[] = {"Softmax", "LogSoftmax", "LayerNormalization",
                                       "LayerNorm", "BatchNormalization", "BatchNorm",
                                       "InstanceNormalization", "GroupNormalization",
                                       "LpNormalization", "RMSNormalization", NULL};
    static const char *const data[] = {
        "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements",
        "GatherND", "Scatter", "ScatterElements", "ScatterND", "Squeeze", "Unsqueeze",
        "Flatten", "Expand", "Tile", "Pad", "Identity", "Cast", "Shape", "Resize",
        "DepthToSpace", "SpaceToDepth", "ConstantOfShape", "Copy", "Transfer", NULL};
    static const char *const ew[] = {
        "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Relu", "Sigmoid", "Tanh",
        "Gelu", "Erf", "Neg", "Abs", "Clip", "Max", "Min", "Sum", "Mean", "Where", "Equal",
        "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
        "LeakyRelu", "PRelu", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus",
        "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos", "Sign", "Mod", "Silu", "Swish",
        "Scale", "QuantizeLinear", "DequantizeLinear", NULL};
    if (!op)
        return CLASS_OTHER;
    if (in_list(op, gemm))
        return CLASS_GEMM;
    if (in_list(op, norm) || !strncmp(op, "Reduce", 6))
        return CLASS_NORM;
    if (in_list(op, data))
        return CLASS_DATA;
    if (in_list(op, ew))
        return CLASS_ELEMENTWISE;
    return CLASS_OTHER;
}

/* S as XML character data or attribute text: the five special characters escaped, control
 * characters XML 1.0 forbids and bytes that are not UTF-8 written as '?'. */
static void put_xml(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        unsigned c = *p;
        switch (c) {
        case '&': fputs("&amp;", f); p++; continue;
        case '<': fputs("&lt;", f); p++; continue;
        case '>': fputs("&gt;", f); p++; continue;
        case '"': fputs("&quot;", f); p++; continue;
        case '\'': fputs("&apos;", f); p++; continue;
        default: break;
        }
        if (c < 0x80) {
            fputc(c < 0x20 && c != '\t' && c != '\n' && c != '\r' ? '?' : (int)c, f);
            p++;
            continue;
        }
        /* Multi-byte UTF-8: copy a well-formed sequence, else one '?' for the lead byte. */
        int len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        int ok = len > 0;
        for (int k = 1; ok && k < len; k++)
            ok = (p[k] & 0xC0) == 0x80;
        if (ok && len == 3) { /* no overlongs, no surrogates */
            ok = !(c == 0xE0 && p[1] < 0xA0) && !(c == 0xED && p[1] >= 0xA0);
        } else if (ok && len == 4) {
            ok = !(c == 0xF0 && p[1] < 0x90) && !(c == 0xF4 && p[1] >= 0x90);
        }
        if (ok) {
            fwrite(p, 1, (size_t)len, f);
            p += len;
        } else {
            fputc('?', f);
            p++;
        }
    }
}

typedef struct item {
    uint64_t start, end;
    size_t node; /* index in the view */
    size_t lane; /* the node's track */
} item;

/* qsort order of items: by lane, then start, then node (a stable drawing order). */
static int cmp_item(const void *a, const void *b)
{
    const item *x = a, *y = b;
    if (x->lane != y->lane)
        return x->lane < y->lane ? -1 : 1;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->node < y->node ? -1 : x->node > y->node;
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about TARGET ticks over SPAN. */
static double nice_step(double span, double target)
{
    double raw = span / target, p = 1;
    while (p * 10 <= raw)
        p *= 10;
    while (p > raw)
        p /= 10;
    double m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/* One node's rectangle on its lane, with a tooltip and, when it fits, its name inside. */
static void put_node_rect(FILE *f, const profile_node *n, const item *it, double x, double w,
                          double y, uint64_t t0)
{
    int cls = op_class(n->op);
    fprintf(f, "<rect class=\"node %s%s\" x=\"%.3f\" y=\"%.1f\" width=\"%.3f\" height=\"%.1f\" "
               "fill=\"%s\" stroke=\"#ffffff\" stroke-width=\"0.5\"><title>",
            classes[cls].css, n->is_copy ? " copy" : "", x, y, w < 1 ? 1.0 : w, LANE_H,
            classes[cls].colour);
    put_xml(f, n->name);
    fputs(" (", f);
    put_xml(f, n->op);
    if (n->shape[0]) {
        fputs(", ", f);
        put_xml(f, n->shape);
    }
    fputs(") on ", f);
    put_xml(f, n->device);
    fprintf(f, ": %.4f ms (from %.4f to %.4f ms)", (double)(it->end - it->start) / 1e6,
            (double)(it->start - t0) / 1e6, (double)(it->end - t0) / 1e6);
    if (!isnan(n->predicted_ms))
        fprintf(f, "; predicted %.4f ms", n->predicted_ms);
    if (n->is_copy)
        fprintf(f, "; %.0f bytes", n->bytes_moved);
    if (n->decided_by[0]) {
        fputs("; decided by ", f);
        put_xml(f, n->decided_by);
    }
    fputs("</title></rect>\n", f);
    /* The node's name inside its rectangle when it fits (about 7 px a character). */
    size_t len = strlen(n->name);
    if (len && w >= 7.0 * (double)len + 8) {
        fprintf(f, "<text class=\"node-label\" x=\"%.3f\" y=\"%.1f\" fill=\"#ffffff\" "
                   "pointer-events=\"none\">", x + 4, y + LANE_H / 2 + 4);
        put_xml(f, n->name);
        fputs("</text>\n", f);
    }
}

/* A run of consecutive sub-pixel nodes of one lane, drawn as one grey rectangle. */
static void put_aggregate(FILE *f, size_t count, uint64_t start, uint64_t end, double x, double w,
                          double y, uint64_t t0)
{
    fprintf(f, "<rect class=\"aggregate\" data-nodes=\"%zu\" x=\"%.3f\" y=\"%.1f\" "
               "width=\"%.3f\" height=\"%.1f\" fill=\"%s\"><title>%zu nodes merged (each under "
               "1 px): %.4f ms to %.4f ms</title></rect>\n",
            count, x, y, w < 1 ? 1.0 : w, LANE_H, AGG_COLOUR, count,
            (double)(start - t0) / 1e6, (double)(end - t0) / 1e6);
}

int loom_gantt_write(const char *path, const profile_view *view)
{
    size_t n = 0;
    item *items = calloc(view->n_nodes + 1, sizeof *items);
    if (!items) {
        errno = ENOMEM;
        return 0;
    }
    /* Times are from the run's start (0), so the target line means what it says. */
    const uint64_t t0 = 0;
    uint64_t t1 = 0;
    for (size_t i = 0; i < view->n_nodes; i++) {
        const profile_node *p = &view->nodes[i];
        if (!p->timed)
            continue;
        items[n] = (item){p->start_ns, p->end_ns < p->start_ns ? p->start_ns : p->end_ns, i,
                          p->track};
        if (items[n].end > t1)
            t1 = items[n].end;
        n++;
    }
    qsort(items, n, sizeof *items, cmp_item);
    uint64_t run_end = t1;
    double target_ns = view->target_s > 0 ? view->target_s * 1e9 : 0;
    /* The axis covers the run. A target not far beyond it is drawn where it falls (the axis
     * stretched to it, with a little room); a target far beyond it (a 7 ms run under 300 ms)
     * would squeeze the run into a sliver, so it is only marked at the right edge. */
    double span = (double)(t1 - t0) * 1.03;
    int target_far = target_ns > 0 && target_ns > 1.5 * (double)(t1 - t0) && t1 > t0;
    if (target_ns > 0 && !target_far && target_ns * 1.03 > span)
        span = target_ns * 1.03;
    if (span <= 0)
        span = 1;
    double px_per_ns = PLOT_W / span;
    /* Units by span: microseconds below a millisecond, else milliseconds. */
    int use_us = span < 1e6;
    double unit_ns = use_us ? 1e3 : 1e6;
    const char *unit = use_us ? "\xc2\xb5s" : "ms";

    size_t n_lanes = view->n_tracks;
    double lanes_h = (double)(n_lanes ? n_lanes : 1) * (LANE_H + LANE_GAP);
    double axis_y = TOP + lanes_h;
    double legend_y = axis_y + 50;
    double height = legend_y + 22.0 * (N_CLASSES + 1 + (target_ns > 0)) + 10;
    double width = LEFT + PLOT_W + RIGHT;

    tool_out out;
    FILE *f = tool_out_open(&out, path);
    if (!f) {
        int e = errno;
        free(items);
        errno = e;
        return 0;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
               "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n",
            width, height, width, height);
    fprintf(f, "<rect class=\"background\" x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" "
               "fill=\"#ffffff\"/>\n", width, height);
    fputs("<text class=\"heading\" x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">", f);
    /* The model's file name, not its whole path. */
    const char *title = view->title ? view->title : "";
    const char *slash = strrchr(title, '/');
    put_xml(f, slash && slash[1] ? slash + 1 : title);
    fprintf(f, ": %zu nodes, %.4f ms", n, (double)(run_end - t0) / 1e6);
    if (target_ns > 0)
        fprintf(f, " (target %g ms: %s)", view->target_s * 1e3,
                (double)run_end <= target_ns ? "met" : "missed");
    fputs("</text>\n", f);

    /* Lanes: devices, then links (tinted: they carry the plan's copies). */
    for (size_t k = 0; k < n_lanes; k++) {
        double y = TOP + (double)k * (LANE_H + LANE_GAP);
        int link = view->tracks[k].is_link;
        fprintf(f, "<rect class=\"lane-bg%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                   "height=\"%.1f\" fill=\"%s\"/>\n",
                link ? " link" : "", LEFT, y, PLOT_W, LANE_H,
                link ? (k % 2 ? "#eef3f8" : "#e3ebf3") : (k % 2 ? "#f4f4f4" : "#ebebeb"));
        fprintf(f, "<text class=\"lane%s\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">",
                link ? " link" : "", LEFT - 8, y + LANE_H / 2 + 4);
        put_xml(f, view->tracks[k].name);
        fputs("</text>\n", f);
    }

    /* Nodes, lane by lane in start order; runs of sub-pixel nodes merge into aggregates. */
    size_t agg_count = 0, agg_first = 0;
    uint64_t agg_start = 0, agg_end = 0;
    for (size_t i = 0; i <= n; i++) {
        const item *it = i < n ? &items[i] : NULL;
        double w = it ? (double)(it->end - it->start) * px_per_ns : 0;
        int narrow = it && w < 1.0;
        int same_run = narrow && agg_count && it->lane == items[agg_first].lane &&
                       (double)(it->start > agg_end ? it->start - agg_end : 0) * px_per_ns < 1.0;
        if (agg_count && !same_run) { /* flush the pending run */
            const item *a = &items[agg_first];
            double y = TOP + (double)a->lane * (LANE_H + LANE_GAP);
            double ax = LEFT + (double)(agg_start - t0) * px_per_ns;
            double aw = (double)(agg_end - agg_start) * px_per_ns;
            if (agg_count == 1)
                put_node_rect(f, &view->nodes[a->node], a, ax, aw, y, t0);
            else
                put_aggregate(f, agg_count, agg_start, agg_end, ax, aw, y, t0);
            agg_count = 0;
        }
        if (!it)
            break;
        if (narrow) {
            if (!agg_count) {
                agg_first = i;
                agg_start = it->start;
                agg_end = it->end;
            } else if (it->end > agg_end) {
                agg_end = it->end;
            }
            agg_count++;
            continue;
        }
        double y = TOP + (double)it->lane * (LANE_H + LANE_GAP);
        put_node_rect(f, &view->nodes[it->node], it, LEFT + (double)(it->start - t0) * px_per_ns,
                      w, y, t0);
    }

    /* Time axis with ticks. */
    fprintf(f, "<g class=\"axis\"><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
               "stroke=\"#333333\"/>\n",
            LEFT, axis_y, LEFT + PLOT_W, axis_y);
    double span_u = span / unit_ns, step = nice_step(span_u, 8);
    for (int k = 0; k <= 1000; k++) {
        double v = step * k;
        if (v > span_u * (1 + 1e-9))
            break;
        double x = LEFT + v * unit_ns * px_per_ns;
        fprintf(f, "<line class=\"tick\" x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" "
                   "stroke=\"#333333\"/><line class=\"grid\" x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" "
                   "y2=\"%.1f\" stroke=\"#cccccc\" stroke-dasharray=\"2,3\"/>"
                   "<text class=\"tick-label\" x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\">%g"
                   "</text>\n",
                x, axis_y, x, axis_y + 5, x, TOP, x, axis_y, x, axis_y + 18, v);
    }
    fprintf(f, "<text class=\"axis-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">time "
               "since the run's start (%s)</text></g>\n",
            LEFT + PLOT_W / 2, axis_y + 36, unit);

    /* The latency target: a vertical line across every lane, or, far beyond the run, its value
     * at the right edge with an arrow pointing on. */
    if (target_far) {
        fprintf(f, "<g class=\"target far\"><text x=\"%.2f\" y=\"%.1f\" text-anchor=\"end\" "
                   "fill=\"%s\" font-weight=\"bold\">target %g ms \xe2\x86\x92</text></g>\n",
                LEFT + PLOT_W, TOP - 9, TARGET_COLOUR, view->target_s * 1e3);
    } else if (target_ns > 0) {
        double x = LEFT + (target_ns - (double)t0) * px_per_ns;
        fprintf(f, "<g class=\"target\"><line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" "
                   "stroke=\"%s\" stroke-width=\"2\" stroke-dasharray=\"6,3\"/>"
                   "<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"end\" fill=\"%s\">target %g ms"
                   "</text></g>\n",
                x, TOP - 6, x, axis_y, TARGET_COLOUR, x - 3, TOP - 9, TARGET_COLOUR,
                view->target_s * 1e3);
    }

    /* Legend. */
    fputs("<g class=\"legend\">\n", f);
    for (int c = 0; c <= N_CLASSES; c++) {
        double y = legend_y + 22.0 * c;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"14\" fill=\"%s\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                LEFT, y, c < N_CLASSES ? classes[c].colour : AGG_COLOUR, LEFT + 20, y + 11,
                c < N_CLASSES ? classes[c].label : "merged nodes, each under 1 px wide");
    }
    if (target_ns > 0) {
        double y = legend_y + 22.0 * (N_CLASSES + 1);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"2\" stroke-dasharray=\"6,3\"/><text x=\"%.1f\" y=\"%.1f\">"
                   "latency target</text>\n",
                LEFT + 7, y, LEFT + 7, y + 14, TARGET_COLOUR, LEFT + 20, y + 11);
    }
    fputs("</g>\n</svg>\n", f);

    free(items);
    return tool_out_commit(&out);
}
