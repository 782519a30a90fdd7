/*
 * What `loom profile` measured, in the one shape its outputs read: the Chrome trace (trace.c),
 * the SVG Gantt chart (gantt.c) and the Graphviz drawing (dot.c). cmd_profile.c fills it from
 * the plan, its explanations and the runs; the writers only read it.
 *
 * Tracks: one per device that runs nodes and one per link ("cpu:0->npu-sim:0") that carries the
 * plan's copies; devices first in runtime order, then links in order of first use.
 */
#ifndef LOOM_TOOLS_PROFILE_VIEW_H
#define LOOM_TOOLS_PROFILE_VIEW_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>

/* One node of the plan (graph nodes and the copies the plan inserted), in plan order. Strings
 * are owned by the plan, which outlives the view. */
typedef struct profile_node {
    const char *name, *op;
    const char *device;       /* device id, or the link id "FROM->TO" of a copy */
    int is_copy;
    char shape[48];           /* first output ("64x512"); a copy's tensor; "" when unknown */
    double predicted_ms;      /* the cost model's time on its device; NAN when not given */
    double measured_ms;       /* median over the measured runs */
    const char *decided_by;   /* why there: pin, earliest-finish, ... (never NULL, "" unknown) */
    const char *reason;       /* one line for people (never NULL) */
    double bytes_moved;       /* copies: bytes copied; others: input bytes from another device */
    size_t track;             /* index into profile_view.tracks */
    long graph_node;          /* index of the graph node of that name, -1 (copies, unknown) */
    loom_value tensor;        /* copies: the value copied (LOOM_NO_VALUE when unknown) */
    int timed;                /* 1 when the last run's timeline has it */
    /* Why it ran elsewhere in some measured runs: "failed on devmem:0 (device lost: MESSAGE);
     * re-ran on cpu:0 (in 3 of 20 runs)"; "" when it never did. */
    char fallback[384];
    uint64_t start_ns, end_ns;/* last run, since its start */
} profile_node;

typedef struct profile_track {
    const char *name; /* device or link id */
    int is_link;
} profile_track;

typedef struct profile_view {
    const char *title;        /* the model */
    const loom_graph *graph;  /* the graph the plan was made from (dependency structure) */
    profile_node *nodes;
    size_t n_nodes;
    profile_track *tracks;
    size_t n_tracks;
    double target_s;          /* the latency target, 0 when none */
    /* The plan measured (node i of the view is its node i): its cross-worker dependencies
     * (loom_plan_dependency) for the trace's flow arrows; NULL: none drawn. */
    const loom_plan *plan;
} profile_view;

#endif /* LOOM_TOOLS_PROFILE_VIEW_H */
