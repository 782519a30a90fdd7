/*
 * Questions the rewriting passes ask of a graph: is a value an f32 constant, which node reads
 * a value, is that node its only reader; the scratch of the chain-fusing passes.
 */
#include "passes.h"

#include <stdlib.h>

const graph_value *passes_const_f32(const loom_graph *g, loom_value v)
{
    if (v == LOOM_NO_VALUE)
        return NULL;
    const graph_value *val = &g->values[v];
    return val->kind == GRAPH_VALUE_CONSTANT && val->data && val->desc.dtype == LOOM_DTYPE_F32
               ? val
               : NULL;
}

void passes_first_readers(const loom_graph *g, int32_t *reader)
{
    for (size_t v = 0; v < g->n_values; v++)
        reader[v] = -1;
    for (size_t i = 0; i < g->n_nodes; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++) {
            loom_value v = g->nodes[i].inputs[k];
            if (v != LOOM_NO_VALUE && reader[v] < 0)
                reader[v] = (int32_t)i;
        }
}

int32_t passes_only_reader(const loom_graph *g, const int32_t *reader, loom_value v)
{
    const graph_value *val = &g->values[v];
    if (val->output_index >= 0 || val->n_consumers != 1)
        return -1;
    return reader[v];
}

loom_status passes_chain_scratch(const loom_graph *g, size_t chain_size, const char *what,
                                 int32_t **reader, int32_t **role, void **chains)
{
    *reader = malloc((g->n_values + 1) * sizeof **reader);
    *role = malloc((g->n_nodes + 1) * sizeof **role);
    *chains = malloc((g->n_nodes + 1) * chain_size);
    if (!*reader || !*role || !*chains) {
        free(*reader);
        free(*role);
        free(*chains);
        *reader = *role = NULL;
        *chains = NULL;
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory %s graph '%s'", what,
                              g->name);
    }
    passes_first_readers(g, *reader);
    for (size_t i = 0; i < g->n_nodes; i++)
        (*role)[i] = -1;
    return LOOM_OK;
}

loom_value passes_other_input(const graph_node *n, loom_op_id id, loom_value v)
{
    if (n->def->id != id || n->n_inputs != 2 || n->n_outputs != 1)
        return LOOM_NO_VALUE;
    if (n->inputs[0] == v && n->inputs[1] != v)
        return n->inputs[1];
    if (n->inputs[1] == v && n->inputs[0] != v)
        return n->inputs[0];
    return LOOM_NO_VALUE;
}
