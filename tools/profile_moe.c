/*
 * Per-expert token counts for `loom profile`: the router of every MoE of the graph run once on
 * the profile's inputs (profile_moe.h says how and why this way).
 */
#include "profile_moe.h"

#include "graph/graph_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the rebuild hook keeps: per MoE (in node order) its name and experts. */
typedef struct moe_probe {
    size_t n_moe;
    const char *names[64];
    int64_t experts[64];
    int failed;
} moe_probe;

/* Before each MoE node is copied, a MoERoute on its (mapped) router logits, its output a graph
 * output "<moe>/routing:profile"; then the node itself is copied as it is. */
static int add_router(void *user, graph_rebuild_ctx *rc, const graph_node *n, loom_value *out)
{
    (void)out;
    moe_probe *mp = user;
    if (n->def->id != LOOM_OP_MOE || mp->n_moe >= 64)
        return 0;
    loom_graph *g = graph_rebuild_dst(rc);
    const loom_attr *ka = loom_attr_list_get(&n->attrs, "k");
    const loom_attr *na = loom_attr_list_get(&n->attrs, "normalize_routing_weights");
    loom_attr attrs[2] = {loom_attr_int("k", ka ? ka->i : 1),
                          loom_attr_int("normalize_routing_weights", na ? na->i : 0)};
    loom_value logits = graph_rebuild_map(rc, n->inputs[1]), routing = LOOM_NO_VALUE;
    char name[240];
    snprintf(name, sizeof name, "%s/routing:profile", n->name);
    if (loom_graph_op(g, "MoERoute", name, &logits, 1, attrs, 2, &routing, 1) != LOOM_OK ||
        loom_output(g, routing, name) != LOOM_OK) {
        mp->failed = 1;
        return -1;
    }
    mp->names[mp->n_moe] = n->name;
    mp->experts[mp->n_moe++] = g->values[routing].desc.dims[1];
    return 0;
}

void profile_moe_tokens(loom_runtime *rt, const loom_graph *g, const loom_plan *plan,
                        loom_tensor *const *in, size_t n_in, profile_moe *out)
{
    memset(out, 0, sizeof *out);
    size_t n_experts = 0;
    for (size_t i = 0; i < loom_plan_node_count(plan); i++)
        n_experts += !loom_plan_node_is_copy(plan, i) &&
                     strcmp(loom_plan_node_op(plan, i), "MoEExpert") == 0;
    if (!n_experts)
        return;
    uint32_t *order = malloc((g->n_nodes + 1) * sizeof *order);
    moe_probe mp = {0};
    loom_graph *aux = NULL;
    loom_plan *ap = NULL;
    loom_tensor **outs = NULL;
    size_t n_out = 0;
    if (!order || graph_topo_order(g, order) != LOOM_OK ||
        graph_rebuild_with(g, order, NULL, add_router, &mp, &aux) != LOOM_OK) {
        snprintf(out->error, sizeof out->error, "no token counts: %s", loom_last_error());
        goto done;
    }
    loom_plan_options po = {.struct_size = sizeof po, .device = "cpu:0"};
    if (loom_plan_create(rt, aux, &po, &ap) != LOOM_OK) {
        snprintf(out->error, sizeof out->error, "no token counts: %s", loom_last_error());
        goto done;
    }
    n_out = loom_plan_output_count(ap);
    outs = calloc(n_out + 1, sizeof *outs);
    if (!outs || loom_plan_make_outputs(ap, outs, n_out) != LOOM_OK ||
        loom_plan_run(ap, (const loom_tensor *const *)in, n_in, outs, n_out, NULL) != LOOM_OK) {
        if (outs)
            memset(outs, 0, (n_out + 1) * sizeof *outs); /* make_outputs left none, or all */
        snprintf(out->error, sizeof out->error, "no token counts: %s", loom_last_error());
        goto done;
    }
    size_t total = 0;
    for (size_t m = 0; m < mp.n_moe; m++)
        total += (size_t)mp.experts[m];
    out->experts = calloc(total + 1, sizeof *out->experts);
    if (!out->experts) {
        snprintf(out->error, sizeof out->error, "no token counts: out of memory");
        goto done;
    }
    for (size_t m = 0; m < mp.n_moe; m++) {
        char oname[240];
        snprintf(oname, sizeof oname, "%s/routing:profile", mp.names[m]);
        const loom_tensor *rt_out = NULL;
        for (size_t o = 0; o < n_out; o++) {
            const char *nm = NULL;
            if (loom_plan_output_info(ap, o, &nm, NULL, NULL, NULL) == LOOM_OK && nm &&
                strcmp(nm, oname) == 0)
                rt_out = outs[o];
        }
        if (!rt_out)
            continue;
        const float *w = loom_tensor_data(rt_out);
        const int64_t E = mp.experts[m];
        const int64_t T = E ? (int64_t)(loom_tensor_nbytes(rt_out) / sizeof(float)) / E : 0;
        for (int64_t e = 0; e < E; e++) {
            profile_moe_expert *x = &out->experts[out->n++];
            snprintf(x->node, sizeof x->node, "%s/expert%lld", mp.names[m], (long long)e);
            for (int64_t t = 0; t < T; t++)
                x->tokens += w[t * E + e] > 0.0f;
        }
    }
done:
    for (size_t o = 0; outs && o < n_out; o++)
        loom_tensor_destroy(outs[o]);
    free(outs);
    loom_plan_destroy(ap);
    loom_graph_destroy(aux);
    free(order);
}

void profile_moe_free(profile_moe *m)
{
    if (!m)
        return;
    free(m->experts);
    m->experts = NULL;
    m->n = 0;
}
