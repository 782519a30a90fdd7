/*
 * The Graphviz drawing of `loom profile` (see dot.h). Graph nodes come from the profile view (one
 * per plan node, in plan order, as "n<index>"); edges from the graph's dependency structure
 * (graph_view.h), rerouted through a copy node where the plan moved the tensor to the consumer's
 * device.
 */
#include "dot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_view.h"
#include "tool_util.h"

/* Fill colours of devices, by device track; pastel, so black labels stay readable. */
static const char *const palette[] = {"#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#fb9a99",
                                      "#ffff99", "#8dd3c7", "#bebada", "#d9d9d9", "#ccebc5"};
#define N_PALETTE (sizeof palette / sizeof palette[0])
#define COPY_COLOUR "#ffffff"

/* S inside a DOT double-quoted string: quotes and backslashes escaped, control characters as
 * '?'. UTF-8 passes through (DOT files are UTF-8). */
static void put_dot(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc('\\', f);
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
    }
}

/* The destination device of a link id "FROM->TO" (the part after the last "->"). */
static const char *link_destination(const char *link)
{
    const char *to = NULL;
    for (const char *p = link ? strstr(link, "->") : NULL; p; p = strstr(p + 2, "->"))
        to = p + 2;
    return to ? to : "";
}

/* Colour of track T of VIEW: devices take the palette in order; links are white. */
static const char *track_colour(const profile_view *view, size_t t)
{
    if (t >= view->n_tracks || view->tracks[t].is_link)
        return COPY_COLOUR;
    size_t k = 0; /* devices before T */
    for (size_t i = 0; i < t; i++)
        k += !view->tracks[i].is_link;
    return palette[k % N_PALETTE];
}

/* Whether NAME is the id of a device track of VIEW (not a link, not "host"). */
static int is_device_track(const profile_view *view, const char *name)
{
    for (size_t t = 0; t < view->n_tracks; t++)
        if (!view->tracks[t].is_link && !strcmp(view->tracks[t].name, name))
            return 1;
    return 0;
}

/* The copy of VIEW that moves VALUE to DEST (the destination of its link), or -1. */
static long find_copy(const profile_view *view, loom_value value, const char *dest)
{
    for (size_t i = 0; value != LOOM_NO_VALUE && i < view->n_nodes; i++) {
        const profile_node *n = &view->nodes[i];
        if (n->is_copy && n->tensor == value && !strcmp(link_destination(n->device), dest))
            return (long)i;
    }
    return -1;
}

/* A copy of VALUE into staging memory that is no device of VIEW (e.g. "npu:0->host"), or -1. */
static long find_staging_copy(const profile_view *view, loom_value value)
{
    for (size_t i = 0; value != LOOM_NO_VALUE && i < view->n_nodes; i++) {
        const profile_node *n = &view->nodes[i];
        if (n->is_copy && n->tensor == value &&
            !is_device_track(view, link_destination(n->device)))
            return (long)i;
    }
    return -1;
}

/* What drawing the edges needs. */
typedef struct dot_edges {
    const profile_view *view;
    const long *plan_of; /* graph node -> plan node (-1) */
    char *copy_fed;      /* per plan node: 1 once the edge into that copy is written */
} dot_edges;

/* Where VALUE comes from: its producer's plan node into *NODE, or the graph input's name into
 * *INPUT (*NODE then -1). Returns 0 when it has no drawn source (a constant, an unmatched
 * producer). */
static int source_of(const dot_edges *e, loom_value value, long *node, const char **input)
{
    long prod = gv_producer(e->view->graph, value);
    *node = -1;
    *input = NULL;
    if (prod >= 0) {
        *node = e->plan_of[prod];
        return *node >= 0;
    }
    if (gv_is_constant(e->view->graph, value))
        return 0;
    *input = loom_value_name(e->view->graph, value);
    return *input != NULL;
}

/* Write "  SRC -> " for the source of VALUE; 0 (nothing written) when it has none. */
static int put_source(FILE *f, const dot_edges *e, loom_value value)
{
    long node;
    const char *input;
    if (!source_of(e, value, &node, &input))
        return 0;
    if (node >= 0) {
        fprintf(f, "  n%ld -> ", node);
    } else {
        fputs("  \"in:", f);
        put_dot(f, input);
        fputs("\" -> ", f);
    }
    return 1;
}

/* Write, once, the dashed edge into copy C (labelled with its bytes): from the copy of the same
 * tensor that brought it to C's link source (staging through the host), else from the tensor's
 * producer or graph input. */
static void feed_copy(FILE *f, dot_edges *e, long c)
{
    const profile_node *n = &e->view->nodes[c];
    if (e->copy_fed[c])
        return;
    e->copy_fed[c] = 1;
    char from[64];
    const char *arrow = strstr(n->device, "->");
    snprintf(from, sizeof from, "%.*s", arrow ? (int)(arrow - n->device) : 0, n->device);
    long prev = arrow ? find_copy(e->view, n->tensor, from) : -1;
    char b[32];
    tool_bytes_text(n->bytes_moved, b, sizeof b);
    if (prev >= 0 && prev != c) {
        feed_copy(f, e, prev);
        fprintf(f, "  n%ld -> n%ld [style=dashed, label=\"%s\"];\n", prev, c, b);
    } else if (put_source(f, e, n->tensor)) {
        fprintf(f, "n%ld [style=dashed, label=\"%s\"];\n", c, b);
    }
}

/* The copy through which the node on DEVICE reads VALUE, or -1: a copy to DEVICE, else a copy
 * to staging memory when VALUE was made on another device. */
static long copy_for(const dot_edges *e, loom_value value, const char *device)
{
    long c = find_copy(e->view, value, device);
    if (c >= 0)
        return c;
    long node;
    const char *input;
    if (source_of(e, value, &node, &input) && node >= 0 &&
        strcmp(e->view->nodes[node].device, device))
        return find_staging_copy(e->view, value);
    return -1;
}

/* The nodes: graph inputs, plan nodes (copies as transfers), graph outputs, and the legend. */
static void put_nodes(FILE *f, const profile_view *view)
{
    const loom_graph *g = view->graph;
    for (size_t i = 0; g && i < loom_graph_input_count(g); i++) {
        loom_value v = loom_graph_input(g, i);
        char shape[48];
        fputs("  \"in:", f);
        put_dot(f, loom_value_name(g, v));
        fputs("\" [shape=ellipse, style=solid, label=\"", f);
        put_dot(f, loom_value_name(g, v));
        fprintf(f, "\\n%s\"];\n", gv_shape(g, v, shape, sizeof shape));
    }
    for (size_t i = 0; i < view->n_nodes; i++) {
        const profile_node *n = &view->nodes[i];
        fprintf(f, "  n%zu [", i);
        if (n->is_copy) {
            char b[32];
            tool_bytes_text(n->bytes_moved, b, sizeof b);
            fputs("shape=cds, style=\"filled,dashed\", fillcolor=\"" COPY_COLOUR "\", label=\"",
                  f);
            put_dot(f, n->name);
            fputs("\\n", f);
            put_dot(f, n->device);
            fprintf(f, "\\n%s, %.3f ms\"", b, n->measured_ms);
        } else {
            fprintf(f, "fillcolor=\"%s\", label=\"", track_colour(view, n->track));
            put_dot(f, n->name);
            fputs("\\n", f);
            put_dot(f, n->op);
            if (n->shape[0]) {
                fputc(' ', f);
                put_dot(f, n->shape);
            }
            fprintf(f, "\\n%.3f ms\"", n->measured_ms);
        }
        fputs(", tooltip=\"", f);
        put_dot(f, n->device);
        if (n->decided_by[0]) {
            fputs(": ", f);
            put_dot(f, n->decided_by);
        }
        if (!isnan(n->predicted_ms))
            fprintf(f, ", predicted %.3f ms", n->predicted_ms);
        fputs("\"];\n", f);
    }
    for (size_t i = 0; g && i < loom_graph_output_count(g); i++) {
        loom_value v = loom_graph_output(g, i);
        char shape[48];
        fputs("  \"out:", f);
        put_dot(f, loom_value_name(g, v));
        fputs("\" [shape=ellipse, style=solid, label=\"", f);
        put_dot(f, loom_value_name(g, v));
        fprintf(f, "\\n%s\"];\n", gv_shape(g, v, shape, sizeof shape));
    }
    /* The legend: one swatch per device, and what a transfer looks like. */
    fputs("  subgraph cluster_legend {\n    label=\"devices\"; style=rounded; color=\"#999999\";\n",
          f);
    for (size_t t = 0; t < view->n_tracks; t++) {
        if (view->tracks[t].is_link)
            continue;
        fprintf(f, "    \"legend:%zu\" [fillcolor=\"%s\", label=\"", t, track_colour(view, t));
        put_dot(f, view->tracks[t].name);
        fputs("\"];\n", f);
    }
    fputs("    \"legend:copy\" [shape=cds, style=\"filled,dashed\", fillcolor=\"" COPY_COLOUR
          "\", label=\"transfer (copy)\"];\n  }\n",
          f);
}

/* The edges: every input of every graph node from its producer, through the copies that moved
 * it when there are some; copies whose tensor is unknown stay unconnected. */
static void put_edges(FILE *f, dot_edges *e)
{
    const profile_view *view = e->view;
    const loom_graph *g = view->graph;
    for (size_t i = 0; i < view->n_nodes; i++) {
        const profile_node *n = &view->nodes[i];
        gv_node gn;
        if (n->is_copy || n->graph_node < 0 || !gv_node_get(g, (size_t)n->graph_node, &gn))
            continue;
        for (size_t k = 0; k < gn.n_inputs; k++) {
            loom_value v = gn.inputs[k];
            int repeat = 0; /* x * x: one edge */
            for (size_t j = 0; j < k; j++)
                repeat |= gn.inputs[j] == v;
            if (v == LOOM_NO_VALUE || repeat)
                continue;
            long c = copy_for(e, v, n->device);
            if (c < 0) {
                if (put_source(f, e, v))
                    fprintf(f, "n%zu;\n", i);
                continue;
            }
            feed_copy(f, e, c);
            fprintf(f, "  n%ld -> n%zu [style=dashed];\n", c, i);
        }
    }
    /* Copies nobody above reads (e.g. an output brought back to the host) still show where
     * their data came from. */
    for (size_t i = 0; i < view->n_nodes; i++)
        if (view->nodes[i].is_copy && view->nodes[i].tensor != LOOM_NO_VALUE)
            feed_copy(f, e, (long)i);
    for (size_t i = 0; g && i < loom_graph_output_count(g); i++) {
        loom_value v = loom_graph_output(g, i);
        long via = find_staging_copy(view, v);
        if (via >= 0)
            fprintf(f, "  n%ld -> ", via);
        else if (!put_source(f, e, v))
            continue;
        fputs("\"out:", f);
        put_dot(f, loom_value_name(g, v));
        fprintf(f, "\"%s;\n", via >= 0 ? " [style=dashed]" : "");
    }
}

int loom_dot_write(const char *path, const profile_view *view)
{
    size_t n_graph = view->graph ? loom_graph_node_count(view->graph) : 0;
    long *plan_of = malloc((n_graph + 1) * sizeof *plan_of); /* graph node -> plan node */
    char *copy_fed = calloc(view->n_nodes + 1, 1); /* per node: edge into that copy written */
    if (!plan_of || !copy_fed) {
        free(plan_of);
        free(copy_fed);
        errno = ENOMEM;
        return 0;
    }
    for (size_t j = 0; j < n_graph; j++)
        plan_of[j] = -1;
    for (size_t i = 0; i < view->n_nodes; i++)
        if (view->nodes[i].graph_node >= 0 && (size_t)view->nodes[i].graph_node < n_graph)
            plan_of[view->nodes[i].graph_node] = (long)i;
    /* A graph node a pass absorbed (an activation or Add fused into the Conv/MatMul before it)
     * has no plan node: it stands for the plan node of what feeds it, so the edges out of the
     * fused node are drawn. Graph nodes come in order, so producers are mapped first. */
    for (size_t j = 0; j < n_graph; j++) {
        gv_node gn;
        if (plan_of[j] >= 0 || !gv_node_get(view->graph, j, &gn))
            continue;
        for (size_t k = 0; k < gn.n_inputs && plan_of[j] < 0; k++) {
            long prod = gn.inputs[k] == LOOM_NO_VALUE ? -1
                                                      : gv_producer(view->graph, gn.inputs[k]);
            if (prod >= 0 && (size_t)prod < j)
                plan_of[j] = plan_of[prod];
        }
    }
    tool_out out;
    FILE *f = tool_out_open(&out, path);
    if (!f) {
        int e = errno;
        free(plan_of);
        free(copy_fed);
        errno = e;
        return 0;
    }
    fputs("digraph \"", f);
    put_dot(f, view->title);
    fputs("\" {\n  graph [rankdir=TB, fontname=\"sans-serif\", labelloc=t, label=\"", f);
    put_dot(f, view->title);
    fputs(": nodes filled by device, transfers dashed, times are measured medians\"];\n"
          "  node [fontname=\"sans-serif\", fontsize=10, shape=box, style=\"filled,rounded\"];\n"
          "  edge [fontname=\"sans-serif\", fontsize=9];\n",
          f);
    put_nodes(f, view);
    dot_edges edges = {view, plan_of, copy_fed};
    if (view->graph)
        put_edges(f, &edges);
    fputs("}\n", f);
    free(plan_of);
    free(copy_fed);
    return tool_out_commit(&out);
}
