/*
 * Rebuilding a graph node by node into a new one: how graph passes rewrite. The copy keeps every
 * name (inputs, values, nodes, outputs) so pins, explanations and callers' tensors still match,
 * and borrows the source's constants instead of copying them (a plan copies what it keeps). A
 * pass may replace any node through a rewrite hook; constants enter the new graph only when a
 * node of it reads them, so weights a rewrite no longer needs are dropped.
 */
#include "graph_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct graph_rebuild_ctx {
    const loom_graph *src;
    loom_graph *dst;
    loom_value *map; /* src value -> dst value, LOOM_NO_VALUE until made */
};

/* Give V the name NAME, moving a made-up name out of the way when folding already gave it to
 * another value (folded constants are named after their node). */
loom_status graph_rebuild_take_name(loom_graph *g, loom_value v, const char *name)
{
    if (strcmp(g->values[v].name, name) == 0)
        return LOOM_OK;
    loom_value holder = loom_graph_find_value(g, name);
    if (holder != LOOM_NO_VALUE) {
        char tmp[320];
        for (unsigned k = 1;; k++) {
            snprintf(tmp, sizeof tmp, "%s~%u", name, k);
            if (loom_graph_find_value(g, tmp) == LOOM_NO_VALUE)
                break;
        }
        loom_status st = loom_value_set_name(g, holder, tmp);
        if (st != LOOM_OK)
            return st;
    }
    return loom_value_set_name(g, v, name);
}

void graph_rebuild_output(loom_graph *g, loom_value v, const char *name)
{
    if (g->values[v].kind != GRAPH_VALUE_NODE || g->values[v].output_index >= 0) {
        /* Folded into a constant (or an input that is also an output): a run still writes
         * every output, so it gets a node of its own. */
        loom_value copy;
        graph_eval_fn keep = g->eval;
        graph_set_folding(g, 0, NULL);
        if (loom_graph_op(g, "Identity", NULL, &v, 1, NULL, 0, &copy, 1) != LOOM_OK)
            return;
        if (keep)
            graph_set_folding(g, 1, keep);
        if (graph_rebuild_take_name(g, copy, name) != LOOM_OK)
            return;
        v = copy;
    }
    loom_output(g, v, name);
}

loom_graph *graph_rebuild_dst(graph_rebuild_ctx *rc)
{
    return rc->dst;
}

loom_value graph_rebuild_map(graph_rebuild_ctx *rc, loom_value v)
{
    if (v == LOOM_NO_VALUE)
        return LOOM_NO_VALUE;
    if (rc->map[v] != LOOM_NO_VALUE)
        return rc->map[v];
    const graph_value *val = &rc->src->values[v];
    if (val->kind != GRAPH_VALUE_CONSTANT)
        return LOOM_NO_VALUE; /* inputs are made first, node values in order */
    loom_value c = loom_constant_borrowed(rc->dst, val->name, val->desc.dtype, val->desc.rank,
                                          val->desc.dims, val->data);
    if (c != LOOM_NO_VALUE) {
        /* The source's constant lives as long as the source graph, or as long as its caller's
         * buffer: a plan copies the first kind, and borrows the second. */
        rc->dst->values[c].copy_in_plan = val->data_owned || val->copy_in_plan;
        rc->dst->values[c].folded_uses = val->folded_uses;
    }
    rc->map[v] = c;
    return c;
}

loom_status graph_rebuild_with(const loom_graph *src, const uint32_t *order, graph_eval_fn eval,
                               graph_rewrite_fn rewrite, void *user, loom_graph **out)
{
    *out = NULL;
    graph_rebuild_ctx rc = {.src = src};
    rc.dst = loom_graph_create(src->name);
    rc.map = malloc((src->n_values + 1) * sizeof *rc.map);
    loom_graph *g = rc.dst;
    size_t max_io = 1;
    for (size_t i = 0; i < src->n_nodes; i++) {
        if (src->nodes[i].n_inputs > max_io)
            max_io = src->nodes[i].n_inputs;
        if (src->nodes[i].n_outputs > max_io)
            max_io = src->nodes[i].n_outputs;
    }
    loom_value *ins = malloc(max_io * sizeof *ins);
    loom_value *outs = malloc(max_io * sizeof *outs);
    loom_status st = LOOM_OK;
    if (!g || !rc.map || !ins || !outs) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory rewriting graph '%s'",
                            src->name);
        goto done;
    }
    /* The map holds what the builder calls return: plain indices. */
    graph_raw_handles(g);
    if (eval)
        graph_set_folding(g, 1, eval);
    for (size_t v = 0; v < src->n_values; v++)
        rc.map[v] = LOOM_NO_VALUE;
    for (size_t i = 0; i < src->n_inputs; i++) {
        const graph_value *val = &src->values[src->inputs[i]];
        loom_value v = loom_input(g, val->name, val->desc.dtype, val->desc.rank, val->desc.dims);
        rc.map[src->inputs[i]] = v;
        /* Read by nodes the source already folded: still the graph's input. */
        if (v != LOOM_NO_VALUE)
            g->values[v].folded_uses = val->folded_uses;
    }
    /* Constants the source folded away entirely still count as read there. */
    for (size_t v = 0; v < src->n_values; v++) {
        const graph_value *val = &src->values[v];
        if (val->kind == GRAPH_VALUE_CONSTANT && val->data && !val->n_consumers &&
            val->output_index < 0 && val->folded_uses)
            graph_rebuild_map(&rc, (loom_value)v);
    }
    for (size_t p = 0; p < src->n_nodes && g->error == LOOM_OK; p++) {
        const graph_node *n = &src->nodes[order[p]];
        int done = 0;
        if (rewrite) {
            done = rewrite(user, &rc, n, outs);
            if (done < 0)
                break;
            if (done == 2)
                continue; /* absorbed into a node the hook makes later: nothing to map */
        }
        if (!done) {
            for (uint32_t k = 0; k < n->n_inputs; k++)
                ins[k] = graph_rebuild_map(&rc, n->inputs[k]);
            if (loom_graph_op(g, n->def->name, n->name, ins, n->n_inputs, n->attrs.items,
                              n->attrs.count, outs, n->n_outputs) != LOOM_OK)
                break;
        }
        for (uint32_t k = 0; k < n->n_outputs; k++) {
            rc.map[n->outputs[k]] = outs[k];
            if (graph_rebuild_take_name(g, outs[k], src->values[n->outputs[k]].name) != LOOM_OK)
                break;
        }
    }
    for (size_t i = 0; i < src->n_outputs && g->error == LOOM_OK; i++) {
        loom_value sv = src->outputs[i];
        loom_value v = graph_rebuild_map(&rc, sv);
        if (v == LOOM_NO_VALUE)
            break;
        graph_rebuild_output(g, v, src->values[sv].name);
    }
    if (g->error != LOOM_OK) {
        st = loom_set_error(g->error, "rewriting graph '%s': %s", src->name, g->error_msg);
        goto done;
    }
    st = loom_graph_check(g);
done:
    free(rc.map);
    free(ins);
    free(outs);
    if (st != LOOM_OK) {
        loom_graph_destroy(g);
        return st;
    }
    *out = g;
    return LOOM_OK;
}

loom_status graph_rebuild(const loom_graph *src, const uint32_t *order, graph_eval_fn eval,
                          loom_graph **out)
{
    return graph_rebuild_with(src, order, eval, NULL, NULL, out);
}
