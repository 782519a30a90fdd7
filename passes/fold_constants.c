/*
 * The fold_constants pass: a node whose inputs are all constants (or whose result depends only
 * on its inputs' shapes, like Shape) is evaluated once with the reference evaluator and becomes
 * a constant, so no device runs it per request. Graphs the ONNX importer made are folded while
 * they are built; this pass folds graphs built in C without folding (loom_graph_set_folding).
 * Results over the builder's folding limit stay nodes.
 */
#include "passes.h"

#include <stdio.h>

/* Could the builder fold node N of G? The same test graph.c applies while building, without
 * the size limit (the rebuild applies it). */
static int foldable(const loom_graph *g, const graph_node *n)
{
    if (n->def->flags & LOOM_OPF_NO_FOLD)
        return 0;
    /* A node that only computes graph outputs gains nothing: a run writes every output, so a
     * folded output gets a copy node again. */
    int all_outputs = 1;
    for (uint32_t k = 0; k < n->n_outputs && all_outputs; k++)
        all_outputs = g->values[n->outputs[k]].output_index >= 0;
    if (all_outputs)
        return 0;
    int any_input = 0;
    for (uint32_t k = 0; k < n->n_inputs; k++) {
        loom_value v = n->inputs[k];
        if (v == LOOM_NO_VALUE)
            continue;
        any_input = 1;
        if (g->values[v].kind != GRAPH_VALUE_CONSTANT && !(n->def->flags & LOOM_OPF_SHAPE_ONLY))
            return 0;
    }
    return any_input || (n->def->flags & LOOM_OPF_SHAPE_ONLY) ||
           n->def->id == LOOM_OP_CONSTANT_OF_SHAPE || n->def->id == LOOM_OP_RANGE;
}

loom_status pass_fold_constants(const loom_graph *in, loom_graph **out, pass_ctx *ctx,
                                char *summary, size_t summary_len)
{
    *out = NULL;
    if (!ctx->fold || !ctx->eval) {
        snprintf(summary, summary_len, "off");
        return LOOM_OK;
    }
    size_t candidates = 0;
    for (size_t i = 0; i < in->n_nodes; i++)
        candidates += (size_t)foldable(in, &in->nodes[i]);
    if (!candidates) {
        snprintf(summary, summary_len, "nothing to fold");
        return LOOM_OK;
    }
    loom_graph *g;
    loom_status st = graph_rebuild(in, ctx->order, ctx->eval, &g);
    if (st != LOOM_OK)
        return st;
    if (g->n_nodes == in->n_nodes) { /* candidates the evaluator could not run, or too big */
        loom_graph_destroy(g);
        snprintf(summary, summary_len, "nothing folded (%zu candidate%s kept as nodes)",
                 candidates, candidates == 1 ? "" : "s");
        return LOOM_OK;
    }
    snprintf(summary, summary_len, "%zu node%s folded into constants", in->n_nodes - g->n_nodes,
             in->n_nodes - g->n_nodes == 1 ? "" : "s");
    *out = g;
    return LOOM_OK;
}
