/*
 * The dependency structure of a graph as the `loom` tools need it (`loom profile --dot`, shapes
 * in the profile table): each node's name, op, input and output values, which node produces a
 * value, and which values are weights. Built on the public graph API (loom/graph.h) alone.
 */
#ifndef LOOM_TOOLS_GRAPH_VIEW_H
#define LOOM_TOOLS_GRAPH_VIEW_H

#include <loom/loom.h>

#include <stddef.h>

/* How many input and output handles a gv_node carries. The public API hands out one handle at a
 * time, so gv_node keeps its own copies; a node with more (a Concat of hundreds of tensors) is
 * shown with its first GV_MAX_INPUTS inputs / GV_MAX_OUTPUTS outputs only (n_inputs and
 * n_outputs say how many are here, *_total how many the node has). */
#define GV_MAX_INPUTS 256
#define GV_MAX_OUTPUTS 64

/* One node of a graph. NAME and OP are owned by the graph and valid while it lives; INPUTS and
 * OUTPUTS point into this struct (do not copy a gv_node and keep the copy's pointers). */
typedef struct gv_node {
    const char *name, *op;
    size_t n_inputs, n_outputs;
    const loom_value *inputs;  /* LOOM_NO_VALUE for an absent optional input */
    const loom_value *outputs;
    size_t n_inputs_total, n_outputs_total;
    loom_value input_store[GV_MAX_INPUTS];
    loom_value output_store[GV_MAX_OUTPUTS];
} gv_node;

/* Fill OUT with node I of G (in the order the nodes were added). Returns 0 when I is out of
 * range. */
int gv_node_get(const loom_graph *g, size_t i, gv_node *out);

/* Index of the node of G that produces VALUE, or -1 (a graph input, a constant, a bad handle).
 * Linear in the nodes. */
long gv_producer(const loom_graph *g, loom_value value);

/* Index of the node of G named NAME, or -1. Linear: callers that look up many names build their
 * own index. */
long gv_find_node(const loom_graph *g, const char *name);

/* Whether VALUE is a constant of G (weights): drawings leave those out. Linear in the nodes. */
int gv_is_constant(const loom_graph *g, loom_value value);

/* Write the shape of VALUE as "64x512" ("scalar" for rank 0, "?" for a bad handle) into BUF of
 * LEN bytes (truncated, always NUL-terminated). Returns BUF. */
char *gv_shape(const loom_graph *g, loom_value value, char *buf, size_t len);

#endif /* LOOM_TOOLS_GRAPH_VIEW_H */
