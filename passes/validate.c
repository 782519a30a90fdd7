/*
 * The validate pass: the graph must be checked and free of a sticky error, and its nodes must
 * have a topological order (a cycle names a node on it). The order is what every later stage
 * walks.
 */
#include "passes.h"

#include <stdio.h>
#include <stdlib.h>

loom_status pass_validate(const loom_graph *in, loom_graph **out, pass_ctx *ctx, char *summary,
                          size_t summary_len)
{
    *out = NULL;
    if (in->error != LOOM_OK)
        return loom_set_error(in->error, "%s", in->error_msg);
    if (!in->checked)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                              "graph '%s' was not checked: call loom_graph_check first", in->name);
    uint32_t *order = malloc((in->n_nodes + 1) * sizeof *order);
    if (!order)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory ordering graph '%s'",
                              in->name);
    loom_status st = graph_topo_order(in, order);
    if (st != LOOM_OK) {
        free(order);
        return st;
    }
    free(ctx->order);
    ctx->order = order;
    snprintf(summary, summary_len, "%zu nodes, %zu inputs, %zu outputs in topological order",
             in->n_nodes, in->n_inputs, in->n_outputs);
    return LOOM_OK;
}
