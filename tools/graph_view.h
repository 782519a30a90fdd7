/*
 * The dependency structure of a graph as the `loom` tools need it (`loom profile --dot`, shapes
 * in the profile table): each node's name, op, input and output values. The public graph API
 * (loom/graph.h) gives values (names, shapes) but not yet nodes, so this one small adapter is
 * the only place in tools/ that reads the graph module's internal layout; when graph.h grows
 * node accessors it is rewritten on them and nothing else changes.
 */
#ifndef LOOM_TOOLS_GRAPH_VIEW_H
#define LOOM_TOOLS_GRAPH_VIEW_H

#include <loom/loom.h>

#include <stddef.h>

/* One node of a graph. Every pointer is owned by the graph and valid while it lives. */
typedef struct gv_node {
    const char *name, *op;
    size_t n_inputs, n_outputs;
    const loom_value *inputs;  /* LOOM_NO_VALUE for an absent optional input */
    const loom_value *outputs;
} gv_node;

/* Fill OUT with node I of G (in the order the nodes were added). Returns 0 when I is out of
 * range. */
int gv_node_get(const loom_graph *g, size_t i, gv_node *out);

/* Index of the node of G that produces VALUE, or -1 (a graph input, a constant, a bad handle). */
long gv_producer(const loom_graph *g, loom_value value);

/* Index of the node of G named NAME, or -1. Linear: callers that look up many names build their
 * own index. */
long gv_find_node(const loom_graph *g, const char *name);

/* Whether VALUE is a constant of G (weights): drawings leave those out. */
int gv_is_constant(const loom_graph *g, loom_value value);

/* Write the shape of VALUE as "64x512" ("scalar" for rank 0, "?" for a bad handle) into BUF of
 * LEN bytes (truncated, always NUL-terminated). Returns BUF. */
char *gv_shape(const loom_graph *g, loom_value value, char *buf, size_t len);

#endif /* LOOM_TOOLS_GRAPH_VIEW_H */
