/*
 * `loom profile --dot OUT.dot`: the profiled graph for Graphviz (`dot -Tsvg OUT.dot > g.svg`).
 * Nodes are filled with their device's colour (a legend says which) and labelled with name, op,
 * shape and measured median time; the plan's copies are drawn as transfer nodes (shape cds,
 * dashed) between the producer and the consumer of the tensor they move, labelled with the bytes
 * moved; graph inputs and outputs are ellipses. docs/profile.md describes it.
 */
#ifndef LOOM_TOOLS_DOT_H
#define LOOM_TOOLS_DOT_H

#include "profile_view.h"

/* Write VIEW's graph to PATH. Returns 1 on success, 0 on failure with errno set (nothing
 * printed). */
int loom_dot_write(const char *path, const profile_view *view);

#endif /* LOOM_TOOLS_DOT_H */
