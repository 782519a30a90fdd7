/*
 * Walking a built graph's nodes through the public API (loom/graph.h): each node's name, op and
 * the values it reads and writes, for tools and bindings that must not depend on the layout in
 * graph_internal.h. Every accessor answers an out-of-range index with NULL, 0 or LOOM_NO_VALUE
 * rather than failing, so a caller can probe without checking counts first.
 */
#include "graph_internal.h"

static const graph_node *node_at(const loom_graph *g, size_t i)
{
    return g && i < g->n_nodes ? &g->nodes[i] : NULL;
}

const char *loom_graph_node_name(const loom_graph *g, size_t i)
{
    const graph_node *n = node_at(g, i);
    return n ? n->name : NULL;
}

const char *loom_graph_node_op(const loom_graph *g, size_t i)
{
    const graph_node *n = node_at(g, i);
    return n && n->def ? n->def->name : NULL;
}

size_t loom_graph_node_input_count(const loom_graph *g, size_t i)
{
    const graph_node *n = node_at(g, i);
    return n ? n->n_inputs : 0;
}

size_t loom_graph_node_output_count(const loom_graph *g, size_t i)
{
    const graph_node *n = node_at(g, i);
    return n ? n->n_outputs : 0;
}

loom_value loom_graph_node_input(const loom_graph *g, size_t i, size_t k)
{
    const graph_node *n = node_at(g, i);
    return n && k < n->n_inputs ? graph_handle(g, n->inputs[k]) : LOOM_NO_VALUE;
}

loom_value loom_graph_node_output(const loom_graph *g, size_t i, size_t k)
{
    const graph_node *n = node_at(g, i);
    return n && k < n->n_outputs ? graph_handle(g, n->outputs[k]) : LOOM_NO_VALUE;
}

long loom_graph_value_producer(const loom_graph *g, loom_value value)
{
    int32_t i = graph_index(g, value);
    if (i < 0)
        return -1;
    const graph_value *v = &g->values[i];
    return v->kind == GRAPH_VALUE_NODE ? (long)v->producer : -1;
}
