/*
 * See graph_view.h. Everything goes through the public graph API; the only state is what a
 * gv_node carries.
 */
#include "graph_view.h"

#include <stdio.h>
#include <string.h>

int gv_node_get(const loom_graph *g, size_t i, gv_node *out)
{
    if (!g || i >= loom_graph_node_count(g))
        return 0;
    const char *op = loom_graph_node_op(g, i);
    out->name = loom_graph_node_name(g, i);
    out->op = op ? op : "?";
    out->n_inputs_total = loom_graph_node_input_count(g, i);
    out->n_outputs_total = loom_graph_node_output_count(g, i);
    out->n_inputs = out->n_inputs_total < GV_MAX_INPUTS ? out->n_inputs_total : GV_MAX_INPUTS;
    out->n_outputs =
        out->n_outputs_total < GV_MAX_OUTPUTS ? out->n_outputs_total : GV_MAX_OUTPUTS;
    for (size_t k = 0; k < out->n_inputs; k++)
        out->input_store[k] = loom_graph_node_input(g, i, k);
    for (size_t k = 0; k < out->n_outputs; k++)
        out->output_store[k] = loom_graph_node_output(g, i, k);
    out->inputs = out->input_store;
    out->outputs = out->output_store;
    return 1;
}

long gv_producer(const loom_graph *g, loom_value value)
{
    return loom_graph_value_producer(g, value);
}

long gv_find_node(const loom_graph *g, const char *name)
{
    size_t n = loom_graph_node_count(g);
    for (size_t i = 0; name && i < n; i++) {
        const char *s = loom_graph_node_name(g, i);
        if (s && !strcmp(s, name))
            return (long)i;
    }
    return -1;
}

/* A value is an input, a constant or a node's output: a valid handle that is neither of the
 * others is a constant. */
int gv_is_constant(const loom_graph *g, loom_value value)
{
    if (!loom_value_name(g, value))
        return 0;
    size_t n_in = loom_graph_input_count(g);
    for (size_t i = 0; i < n_in; i++)
        if (loom_graph_input(g, i) == value)
            return 0;
    return gv_producer(g, value) < 0;
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
