/*
 * See graph_view.h. Reads struct loom_graph (graph/graph_internal.h) for nodes only; values go
 * through the public API.
 */
#include "graph_view.h"

#include <stdio.h>
#include <string.h>

#include "../graph/graph_internal.h"

int gv_node_get(const loom_graph *g, size_t i, gv_node *out)
{
    if (!g || i >= g->n_nodes)
        return 0;
    const lg_node *n = &g->nodes[i];
    *out = (gv_node){n->name, n->def ? n->def->name : "?", n->n_inputs, n->n_outputs,
                     n->inputs, n->outputs};
    return 1;
}

long gv_producer(const loom_graph *g, loom_value value)
{
    if (!g || value < 0 || (size_t)value >= g->n_values)
        return -1;
    const lg_value *v = &g->values[value];
    return v->kind == LG_VALUE_NODE ? (long)v->producer : -1;
}

long gv_find_node(const loom_graph *g, const char *name)
{
    for (size_t i = 0; g && name && i < g->n_nodes; i++)
        if (!strcmp(g->nodes[i].name, name))
            return (long)i;
    return -1;
}

int gv_is_constant(const loom_graph *g, loom_value value)
{
    return g && value >= 0 && (size_t)value < g->n_values &&
           g->values[value].kind == LG_VALUE_CONSTANT;
}

char *gv_shape(const loom_graph *g, loom_value value, char *buf, size_t len)
{
    uint32_t rank = 0;
    int64_t dims[LOOM_MAX_RANK];
    if (!len)
        return buf;
    if (loom_value_info(g, value, NULL, &rank, dims) != LOOM_OK) {
        snprintf(buf, len, "?");
        return buf;
    }
    if (rank == 0) {
        snprintf(buf, len, "scalar");
        return buf;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (uint32_t k = 0; k < rank && used < len; k++) {
        int n = snprintf(buf + used, len - used, "%s%lld", k ? "x" : "", (long long)dims[k]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return buf;
}
