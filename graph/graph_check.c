/*
 * Checking a graph before it is planned: loom_graph_check (outputs marked, no cycle, nothing
 * unused; a checked graph is read-only) and the topological order every later stage walks.
 */
#include "graph_internal.h"

#include <stdlib.h>
#include <string.h>

static const char *value_kind_name(graph_value_kind k)
{
    return k == GRAPH_VALUE_INPUT ? "input" : k == GRAPH_VALUE_CONSTANT ? "constant" : "value";
}

/* Kahn's algorithm, taking ready nodes in graph order so the result is stable. Consumers are
 * gathered into one CSR array so the walk stays linear in the edges. */
loom_status graph_topo_order(const loom_graph *g, uint32_t *order)
{
    size_t n = g->n_nodes, nv = g->n_values;
    /* Graphs built through the builder are already in order: keep the author's order, which is
     * usually the memory-friendly one. */
    int in_order = 1;
    for (size_t i = 0; i < n && in_order; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++) {
            loom_value v = g->nodes[i].inputs[k];
            if (v != LOOM_NO_VALUE && g->values[v].kind == GRAPH_VALUE_NODE &&
                (size_t)g->values[v].producer >= i) {
                in_order = 0;
                break;
            }
        }
    if (in_order) {
        for (size_t i = 0; i < n; i++)
            order[i] = (uint32_t)i;
        return LOOM_OK;
    }
    uint32_t *pending = calloc(n + 1, sizeof *pending);
    size_t *first = calloc(nv + 2, sizeof *first);
    size_t n_edges = 0;
    for (size_t i = 0; i < n; i++)
        n_edges += g->nodes[i].n_inputs;
    uint32_t *consumers = malloc((n_edges + 1) * sizeof *consumers);
    if (!pending || !first || !consumers) {
        free(pending);
        free(first);
        free(consumers);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory ordering graph '%s'",
                              g->name);
    }
    for (size_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++) {
            loom_value v = g->nodes[i].inputs[k];
            if (v != LOOM_NO_VALUE && g->values[v].kind == GRAPH_VALUE_NODE) {
                pending[i]++;
                first[v + 1]++;
            }
        }
    for (size_t v = 0; v < nv; v++)
        first[v + 1] += first[v];
    /* first[v] is now the start of v's consumers; fill with a cursor per value */
    size_t *cursor = malloc((nv + 1) * sizeof *cursor);
    if (!cursor) {
        free(pending);
        free(first);
        free(consumers);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory ordering graph '%s'",
                              g->name);
    }
    memcpy(cursor, first, (nv + 1) * sizeof *cursor);
    for (size_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++) {
            loom_value v = g->nodes[i].inputs[k];
            if (v != LOOM_NO_VALUE && g->values[v].kind == GRAPH_VALUE_NODE)
                consumers[cursor[v]++] = (uint32_t)i;
        }
    free(cursor);
    /* A min-ordered ready set would need a heap; scanning in graph order with a moving start
     * keeps it linear for graphs built in order, which is the common case. */
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < n; i++)
        if (!pending[i])
            order[tail++] = (uint32_t)i;
    while (head < tail) {
        uint32_t i = order[head++];
        for (uint32_t o = 0; o < g->nodes[i].n_outputs; o++) {
            loom_value v = g->nodes[i].outputs[o];
            for (size_t e = first[v]; e < first[v + 1]; e++) {
                uint32_t j = consumers[e];
                if (--pending[j] == 0)
                    order[tail++] = j;
            }
        }
    }
    loom_status st = LOOM_OK;
    if (tail < n) {
        size_t culprit = 0;
        for (size_t i = 0; i < n; i++)
            if (pending[i]) {
                culprit = i;
                break;
            }
        st = loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                            "graph '%s' has a cycle through node '%s' (%s)", g->name,
                            g->nodes[culprit].name, g->nodes[culprit].def->name);
    }
    free(pending);
    free(first);
    free(consumers);
    return st;
}

loom_status loom_graph_check(loom_graph *g)
{
    if (!g)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "graph is NULL");
    loom_clear_error();
    if (g->error != LOOM_OK)
        return loom_set_error(g->error, "%s", g->error_msg);
    if (g->checked)
        return LOOM_OK;
    if (g->n_outputs == 0)
        return graph_fail(g, LOOM_ERR_INVALID_ARGUMENT,
                          "graph '%s' has no outputs: mark at least one with loom_output",
                          g->name);

    /* Cycles: the builder adds nodes in order, but loom_graph_replace_uses can point a node
     * at a value computed after it. */
    uint32_t *order = malloc((g->n_nodes + 1) * sizeof *order);
    if (!order)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory checking graph '%s'",
                              g->name);
    loom_status st = graph_topo_order(g, order);
    free(order);
    if (st != LOOM_OK)
        return st;
    size_t n = g->n_nodes;

    /* Unused values: an input or constant nothing reads, or a node none of whose outputs is
     * read or returned (dead code that would still cost time). */
    for (size_t v = 0; v < g->n_values; v++) {
        const graph_value *val = &g->values[v];
        if (val->kind != GRAPH_VALUE_NODE && !val->n_consumers && !val->folded_uses &&
            val->output_index < 0)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "graph '%s': %s '%s' is never used", g->name,
                                  value_kind_name(val->kind), val->name);
    }
    for (size_t i = 0; i < n; i++) {
        const graph_node *node = &g->nodes[i];
        int used = 0;
        for (uint32_t o = 0; o < node->n_outputs && !used; o++) {
            const graph_value *val = &g->values[node->outputs[o]];
            used = val->n_consumers || val->output_index >= 0;
        }
        if (!used)
            return loom_set_error(LOOM_ERR_INVALID_ARGUMENT,
                                  "graph '%s': node '%s' (%s): its result '%s' is never used "
                                  "(mark it as an output or remove the node)",
                                  g->name, node->name, node->def->name,
                                  g->values[node->outputs[0]].name);
    }
    g->checked = 1;
    return LOOM_OK;
}
